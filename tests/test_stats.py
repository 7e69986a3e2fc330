"""Paired statistics against scipy and hand-computed values. Run: pytest tests/test_stats.py"""

import numpy as np
import pytest
from scipy import stats as sps

from llmft.metrics import corpus_classification_scores
from llmft.stats import bootstrap_ci, mcnemar_exact_p, paired_aggregate, paired_comparison

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
