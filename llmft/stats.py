"""Paired statistics for base vs tuned on the same examples (scipy does the tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _scipy_stats():
    """scipy.stats, imported when first needed: serving base and tuned never needs it (it costs ~60 MB)."""
    from scipy import stats

    return stats


TIE_TOLERANCE = 1e-9


def bootstrap_ci(deltas, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap confidence interval of the mean paired delta."""
    deltas = np.asarray(deltas, dtype=float)
    if len(deltas) < 2 or np.ptp(deltas) <= TIE_TOLERANCE:
        # No spread: every resample has the same mean.
        mean = float(deltas.mean()) if len(deltas) else float("nan")
        return mean, mean
    # BCa is the better interval; it is undefined for some degenerate samples, then percentile is used.
    for method in ("BCa", "percentile"):
        res = _scipy_stats().bootstrap(
            (deltas,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method=method,
            random_state=np.random.default_rng(seed),
        )
        lo, hi = res.confidence_interval
        if np.isfinite(lo) and np.isfinite(hi):
            break
    return float(lo), float(hi)


def permutation_p(base, tuned, statistic, n_resamples: int = 4999, seed: int = 0) -> float:
    """Two-sided paired permutation p-value of `statistic(base, tuned, axis)`: under "no difference" base and
    tuned are exchangeable within each example, so every resample swaps them at random per example (scipy's
    `permutation_type="samples"`; exact when 2**n <= n_resamples). 1.0 when the two sides are identical."""
    base, tuned = np.asarray(base), np.asarray(tuned)
    if np.array_equal(base, tuned):
        return 1.0
    res = _scipy_stats().permutation_test(
        (base, tuned),
        statistic,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, res.pvalue))


def mean_delta(base, tuned, axis=-1):
    """The statistic of a per-example metric: mean of tuned minus base."""
    return np.mean(np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float), axis=axis)


def mcnemar_exact_p(base_correct, tuned_correct) -> float:
    """Exact McNemar test: a two-sided binomial test on the discordant pairs."""
    base_correct = np.asarray(base_correct, dtype=bool)
    tuned_correct = np.asarray(tuned_correct, dtype=bool)
    only_base = int(np.sum(base_correct & ~tuned_correct))
    only_tuned = int(np.sum(~base_correct & tuned_correct))
    if only_base + only_tuned == 0:
        return 1.0
    return float(_scipy_stats().binomtest(only_tuned, only_base + only_tuned, 0.5).pvalue)


def paired_comparison(base, tuned, test: str = "permutation", seed: int = 0, higher_is_better: bool = True) -> dict:
    """Summary of tuned minus base over paired per-example scores.

    The CI (BCa bootstrap) and the p-value are both about the same quantity, the mean paired delta: the
    p-value comes from a paired permutation test of that mean (`permutation`), or, for 0/1 correctness, from
    the exact McNemar test (`mcnemar`), which tests the same difference of proportions.

    Args:
        base, tuned: per-example scores, same order.
        test: `permutation` (any score) or `mcnemar` (0/1 correctness).
        higher_is_better: recorded with the result; the verdict reads it.
    Returns:
        base/tuned mean and median, delta_mean with ci95, p_value, test, wins/ties/losses (tuned vs base).
    """
    base = np.asarray(base, dtype=float)
    tuned = np.asarray(tuned, dtype=float)
    if base.shape != tuned.shape or base.ndim != 1 or len(base) == 0:
        raise ValueError(f"need two equal-length non-empty score lists, got {base.shape} and {tuned.shape}")
    deltas = tuned - base
    if test == "mcnemar":
        p_value = mcnemar_exact_p(base > 0.5, tuned > 0.5)
    else:
        p_value = permutation_p(base, tuned, mean_delta, seed=seed)
    lo, hi = bootstrap_ci(deltas, seed=seed)
    return {
        "base_mean": float(base.mean()),
        "tuned_mean": float(tuned.mean()),
        "base_median": float(np.median(base)),
        "tuned_median": float(np.median(tuned)),
        "delta_mean": float(deltas.mean()),
        "ci95": [lo, hi],
        "p_value": p_value,
        "test": test,
        "wins": int(np.sum(deltas > TIE_TOLERANCE)),
        "ties": int(np.sum(np.abs(deltas) <= TIE_TOLERANCE)),
        "losses": int(np.sum(deltas < -TIE_TOLERANCE)),
        "higher_is_better": higher_is_better,
    }


def paired_aggregate(references, base_pred, tuned_pred, metric, seed: int = 0, n_resamples: int = 1000) -> dict:
    """Compare a corpus-level metric (macro-F1, accuracy, ...) of two classifiers on the same examples.

    `metric(references, predictions, axis=-1) -> values` scores every sample along the last axis (resamples
    are scored all at once). The CI and the p-value are both about the metric itself: the CI resamples
    examples jointly (paired bootstrap, percentile), the p-value swaps the two models' predictions at random
    per example (paired permutation test of the metric's delta). wins/ties/losses count examples only tuned /
    both or neither / only base got right. Medians do not exist for a corpus metric.
    """
    references, base_pred, tuned_pred = (np.asarray(a) for a in (references, base_pred, tuned_pred))
    base_value, tuned_value = float(metric(references, base_pred)), float(metric(references, tuned_pred))

    def delta(ref, b, t, axis=-1):
        return metric(ref, t, axis=axis) - metric(ref, b, axis=axis)

    if len(references) >= 2:
        res = _scipy_stats().bootstrap(
            (references, base_pred, tuned_pred),
            delta,
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
        ci = [float(res.confidence_interval.low), float(res.confidence_interval.high)]
    else:
        ci = [tuned_value - base_value] * 2
    base_ok, tuned_ok = base_pred == references, tuned_pred == references

    def permuted(b, t, axis=-1):
        return metric(references, t, axis=axis) - metric(references, b, axis=axis)

    return {
        "base_mean": base_value,
        "tuned_mean": tuned_value,
        "base_median": None,
        "tuned_median": None,
        "delta_mean": tuned_value - base_value,
        "ci95": ci,
        "p_value": permutation_p(base_pred, tuned_pred, permuted, seed=seed),
        "test": "permutation",
        "wins": int(np.sum(tuned_ok & ~base_ok)),
        "ties": int(np.sum(tuned_ok == base_ok)),
        "losses": int(np.sum(base_ok & ~tuned_ok)),
        "higher_is_better": True,
    }


def win_rate(wins: int, losses: int, ties: int = 0, both_bad: int = 0) -> dict:
    """Tuned's win rate over the decided votes of a blind A/B review, with its Wilson 95% interval and a
    two-sided sign test (a binomial test of wins among decided votes against 1/2). Ties and "both bad" are
    counted and reported, never decided.

    Args:
        wins, losses: votes for tuned / for base.
        ties, both_bad: votes that decide nothing.
    Returns:
        rate (None with no decided vote), ci95 ([low, high] or None), p_value (1.0 with no decided vote), test,
        and the counts: wins, losses, ties, both_bad, decided, total.
    """
    counts = {"wins": wins, "losses": losses, "ties": ties, "both_bad": both_bad}
    if any(int(c) != c or c < 0 for c in counts.values()):
        raise ValueError(f"vote counts must be non-negative integers, got {counts}")
    decided = wins + losses
    out = {"rate": None, "ci95": None, "p_value": 1.0, "test": "sign test"}
    if decided:
        test = _scipy_stats().binomtest(int(wins), int(decided), 0.5)
        ci = test.proportion_ci(confidence_level=0.95, method="wilson")
        out.update(rate=wins / decided, ci95=[float(ci.low), float(ci.high)], p_value=float(test.pvalue))
    return out | counts | {"decided": decided, "total": decided + ties + both_bad}


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the i-th smallest of m p-values is multiplied by
    (m - i + 1), the running maximum keeps them monotone, and none exceeds 1. Rejecting where the adjusted value
    is below alpha controls the family-wise error rate at alpha."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"need a flat list of p-values, got shape {p.shape}")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return [float(v) for v in adjusted]


def min_detectable_delta(deltas, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest true mean paired difference a two-sided paired test at level `alpha` detects with
    probability `power`, given the observed per-example deltas' spread and n.

    Uses the t approximation (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n): for a paired t-test it is
    within 0.01 of the exact (noncentral t) power for n >= 5, and the paired permutation test the library runs
    on generation metrics has nearly the same power (tests/test_stats.py checks both by simulation) -- except at
    n <= 5, where no sign pattern is rare enough for it to reject at 0.05 at all (the smallest p is 2 / 2**n).

    Args:
        deltas: per-example tuned minus base.
    Returns:
        the difference (>= 0; 0.0 when every delta is the same), or None when n < 2.
    """
    deltas = np.asarray(deltas, dtype=float)
    n = len(deltas)
    if n < 2:
        return None
    if np.ptp(deltas) <= TIE_TOLERANCE:
        return 0.0  # no spread: any difference at all shows
    t = _scipy_stats().t
    sd = float(deltas.std(ddof=1))
    return float((t.ppf(1 - alpha / 2, n - 1) + t.ppf(power, n - 1)) * sd / np.sqrt(n))


def min_detectable_from_ci(ci95, alpha: float = 0.05, power: float = 0.8, confidence: float = 0.95) -> float | None:
    """The smallest detectable difference of a corpus-level metric (macro-F1: no per-example deltas), with the
    standard error taken from its paired bootstrap interval: half its width over z_{(1+confidence)/2}. Normal
    approximation: (z_{1-alpha/2} + z_{power}) * se.

    Args:
        ci95: [low, high] of the metric's paired delta at `confidence`.
    Returns:
        the difference (>= 0), or None when the interval is missing or not finite.
    """
    if ci95 is None or len(ci95) != 2 or not np.all(np.isfinite(ci95)):
        return None
    norm = _scipy_stats().norm
    se = abs(float(ci95[1]) - float(ci95[0])) / 2 / norm.ppf((1 + confidence) / 2)
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


@dataclass
class Sample:
    """One validation's per-example results and the statistic that makes its score (the kept step's metric).

    `rows` holds the examples along axis 0 (for a classifier: label and prediction per row; for generation: each
    row's score); `statistic(resampled)` scores many resamples at once, rows of shape (B, n, ...) -> (B,)."""

    rows: np.ndarray
    statistic: Callable[[np.ndarray], np.ndarray]


def paired_se(later: Sample, earlier: Sample, n_resamples: int = 400, seed: int = 0) -> float:
    """Bootstrap standard error of `later`'s score minus `earlier`'s on the same validation rows: the example
    indices are resampled jointly, so what both steps got right or wrong together does not count as noise."""
    n = len(later.rows)
    if n != len(earlier.rows) or n < 2:
        return 0.0
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    deltas = later.statistic(later.rows[idx]) - earlier.statistic(earlier.rows[idx])
    return float(np.std(deltas, ddof=1))


def within_noise(value: float, top: float, se: float, higher_is_better: bool = True) -> bool:
    """Whether a later validation's `value` is no worse than the best so far (`top`) by more than one standard
    error of their difference: then the later, longer-trained step is kept, and noise alone cannot make an early
    step win."""
    shortfall = (top - value) if higher_is_better else (value - top)
    return shortfall <= se
