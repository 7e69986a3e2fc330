"""Paired statistics against scipy and hand-computed values. Run: pytest tests/test_stats.py"""

import numpy as np
import pytest
from scipy import stats as sps

from llmft.metrics import corpus_classification_scores
from llmft.stats import (
    bootstrap_ci,
    holm,
    mcnemar_exact_p,
    min_detectable_delta,
    min_detectable_from_ci,
    paired_aggregate,
    paired_comparison,
    win_rate,
)

BASE = [0.10, 0.22, 0.35, 0.41, 0.18, 0.30, 0.27, 0.15, 0.33, 0.20]
TUNED = [0.25, 0.30, 0.33, 0.55, 0.30, 0.42, 0.27, 0.31, 0.47, 0.36]


def test_paired_comparison_matches_scipy():
    result = paired_comparison(BASE, TUNED)
    deltas = np.array(TUNED) - np.array(BASE)
    # The p-value tests the same quantity as the CI: the mean paired delta (exact paired permutation, n=10).
    expected = sps.permutation_test(
        (BASE, TUNED), lambda b, t, axis: np.mean(t - b, axis=axis), permutation_type="samples", vectorized=True
    )
    assert result["test"] == "permutation" and result["p_value"] == pytest.approx(expected.pvalue)
    assert result["delta_mean"] == pytest.approx(deltas.mean())
    assert result["base_median"] == pytest.approx(np.median(BASE))
    assert (result["wins"], result["ties"], result["losses"]) == (8, 1, 1)
    lo, hi = result["ci95"]
    assert lo < deltas.mean() < hi and lo > 0


def test_bootstrap_ci_is_seeded_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.1, 0.2, 20), rng.normal(0.1, 0.2, 400)
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(bootstrap_ci(large)) < width(bootstrap_ci(small))


def test_no_difference_gives_p_one_and_a_point_ci():
    result = paired_comparison([0.5, 0.2, 0.9], [0.5, 0.2, 0.9])
    assert result["p_value"] == 1.0 and result["ci95"] == [0.0, 0.0] and result["ties"] == 3


def test_exact_mcnemar_is_a_binomial_test_on_discordant_pairs():
    base = [1] * 10 + [0] * 10 + [1] * 1 + [0] * 9
    tuned = [1] * 10 + [0] * 10 + [0] * 1 + [1] * 9
    assert mcnemar_exact_p(base, tuned) == pytest.approx(sps.binomtest(9, 10, 0.5).pvalue)
    assert mcnemar_exact_p(base, tuned) == pytest.approx(0.021484375)  # 2 * (1 + 10) / 2**10
    assert mcnemar_exact_p([1, 0], [1, 0]) == 1.0


def test_paired_aggregate_for_corpus_metrics():
    refs = [1, 1, 0, 0, 1, 0, 1, 0]
    base = [0, 1, 1, 0, 0, 1, 1, 1]
    tuned = [1, 1, 0, 0, 1, 0, 1, 1]
    acc = lambda r, p, axis=-1: np.mean(np.asarray(r) == np.asarray(p), axis=axis)  # noqa: E731
    result = paired_aggregate(refs, base, tuned, acc)
    assert result["base_mean"] == pytest.approx(3 / 8) and result["tuned_mean"] == pytest.approx(7 / 8)
    assert (result["wins"], result["ties"], result["losses"]) == (4, 4, 0)
    assert result["ci95"][0] <= result["delta_mean"] <= result["ci95"][1]
    # Exact paired permutation of accuracy: 4 discordant pairs, all for tuned: 2 of 16 sign patterns as extreme.
    assert result["test"] == "permutation" and result["p_value"] == pytest.approx(2 / 16)


def test_batched_bootstrap_gives_the_interval_of_scikit_learn_per_resample():
    # The CI from batched numpy scores equals the one from calling scikit-learn's f1 on every resample.
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    refs = rng.integers(0, 2, 30)
    base = np.where(rng.random(30) < 0.6, refs, 1 - refs)
    tuned = np.where(rng.random(30) < 0.8, refs, 1 - refs)
    f1 = lambda r, p, axis=-1: corpus_classification_scores(r, p, 2, axis)["positive_f1"]  # noqa: E731
    result = paired_aggregate(refs, base, tuned, f1, seed=5, n_resamples=300)
    expected = sps.bootstrap(
        (refs, base, tuned),
        lambda r, b, t: f1_score(r, t, zero_division=0) - f1_score(r, b, zero_division=0),
        paired=True,
        vectorized=False,
        n_resamples=300,
        method="percentile",
        random_state=np.random.default_rng(5),
    ).confidence_interval
    assert result["ci95"] == pytest.approx([expected.low, expected.high])
    assert result["delta_mean"] == pytest.approx(f1_score(refs, tuned) - f1_score(refs, base))


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        paired_comparison([0.1, 0.2], [0.1])


@pytest.mark.parametrize("wins,losses,ties,both_bad", [(14, 5, 3, 2), (10, 0, 0, 0), (3, 9, 0, 1), (1, 1, 5, 0)])
def test_win_rate_interval_and_sign_test_equal_scipys_binomtest(wins, losses, ties, both_bad):
    result = win_rate(wins, losses, ties, both_bad)
    test = sps.binomtest(wins, wins + losses, 0.5)
    ci = test.proportion_ci(method="wilson")
    assert result["rate"] == pytest.approx(wins / (wins + losses))
    assert result["ci95"] == pytest.approx([ci.low, ci.high]) and result["p_value"] == pytest.approx(test.pvalue)
    assert (result["decided"], result["total"], result["ties"], result["both_bad"]) == (
        wins + losses,
        wins + losses + ties + both_bad,
        ties,
        both_bad,
    )


def test_win_rate_by_hand_and_with_no_decided_vote():
    # Wilson for 8 of 10 at z = 1.959964: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n).
    z, n, p = 1.959963984540054, 10, 0.8
    centre, half = p + z**2 / (2 * n), z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    result = win_rate(8, 2)
    assert result["ci95"] == pytest.approx([(centre - half) / (1 + z**2 / n), (centre + half) / (1 + z**2 / n)])
    assert result["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 2**10)  # P(<= 2 or >= 8 of 10)
    empty = win_rate(0, 0, ties=4, both_bad=1)
    assert empty["rate"] is None and empty["ci95"] is None and empty["p_value"] == 1.0 and empty["total"] == 5


def test_holm_equals_statsmodels_and_a_hand_reference():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.005, 0.5, 0.04]
    # By hand: sorted 0.005, 0.01, 0.03, 0.04, 0.04, 0.5 times 6, 5, 4, 3, 2, 1 = 0.03, 0.05, 0.12, 0.12, 0.08, 0.5;
    # the running maximum makes the fifth 0.12; back in the input order:
    assert holm(p) == pytest.approx([0.05, 0.12, 0.12, 0.03, 0.5, 0.12])
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    rng = np.random.default_rng(2)
    many = rng.uniform(0, 0.3, 25).tolist()
    assert holm(many) == pytest.approx(multipletests(many, method="holm")[1])
    assert holm([0.6, 0.7]) == [1.0, 1.0] and holm([]) == [] and holm([0.02]) == [0.02]


def test_min_detectable_delta_edges():
    assert min_detectable_delta([0.3]) is None and min_detectable_delta([]) is None
    assert min_detectable_delta([0.2, 0.2, 0.2]) == 0.0
    deltas = [0.1, -0.2, 0.3, 0.0, 0.15]
    expected = (sps.t.ppf(0.975, 4) + sps.t.ppf(0.8, 4)) * np.std(deltas, ddof=1) / np.sqrt(5)
    assert min_detectable_delta(deltas) == pytest.approx(expected)
    # From a CI: half-width 0.098 is a standard error of 0.05; (1.96 + 0.8416) * 0.05.
    assert min_detectable_from_ci([0.002, 0.198]) == pytest.approx(0.140, abs=1e-3)
    assert min_detectable_from_ci(None) is None and min_detectable_from_ci([0.0, float("nan")]) is None


@pytest.mark.parametrize("n", [12, 40])
def test_the_min_detectable_delta_is_detected_80_percent_of_the_time(n):
    """Simulate paired samples whose true mean delta is the computed min detectable delta: the paired t-test
    rejects at 0.05 in ~80% of them (20,000 samples), and so does the paired permutation (sign-flip) test the
    library runs on generation metrics (1,000 samples, 999 random sign flips each)."""
    rng = np.random.default_rng(n)
    sd = 0.25
    observed = rng.normal(0.0, sd, n)
    observed = (observed - observed.mean()) / observed.std(ddof=1) * sd  # a sample with exactly this spread
    mdd = min_detectable_delta(observed)
    samples = rng.normal(mdd, sd, (20_000, n))
    t_power = np.mean(sps.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05)
    assert t_power == pytest.approx(0.80, abs=0.015)
    # The permutation test of the mean delta: under "no difference" each example's delta flips sign.
    deltas = samples[:1000]
    signs = rng.choice([-1.0, 1.0], (999, n))
    null = np.abs(deltas @ signs.T) / n  # (samples, flips)
    observed_mean = np.abs(deltas.mean(axis=1, keepdims=True))
    p_values = (1 + np.sum(null >= observed_mean - 1e-12, axis=1)) / 1000
    assert np.mean(p_values < 0.05) == pytest.approx(0.80, abs=0.05)


def test_paired_se_of_a_mean_matches_the_textbook_standard_error_and_ignores_what_both_share():
    """For a per-example mean, the bootstrap standard error of a paired difference is sd(d) / sqrt(n); a shift that
    both samples share (the examples' own difficulty) adds nothing to it."""
    from llmft.stats import Sample, paired_se, within_noise

    rng = np.random.default_rng(3)
    difficulty = rng.normal(0, 5, 400)  # large, and the same for both: it must cancel
    a = difficulty + rng.normal(0.1, 1, 400)
    b = difficulty + rng.normal(0.0, 1, 400)
    mean = lambda rows: rows.mean(-1)  # noqa: E731
    expected = np.std(a - b, ddof=1) / np.sqrt(400)
    se = paired_se(Sample(a, mean), Sample(b, mean), n_resamples=2000)
    assert se == pytest.approx(expected, rel=0.1)
    assert paired_se(Sample(a, mean), Sample(a, mean)) == 0.0
    assert within_noise(0.80, 0.85, 0.06) and not within_noise(0.70, 0.85, 0.06)
    assert within_noise(1.05, 1.0, 0.06, higher_is_better=False) and not within_noise(1.2, 1.0, 0.06, False)
