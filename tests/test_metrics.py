"""Metric functions against hand-computed values. Run: pytest tests/test_metrics.py"""

import numpy as np
import pytest

from llmft.metrics import (
    BertScorer,
    classification_report,
    corpus_classification_scores,
    corpus_metric_names,
    rouge1,
    rouge2,
    rougeL,
    summary_scores,
)


def test_rouge_matches_hand_computed_values():
    # 3 of 3 predicted unigrams match; 3 of 6 reference unigrams are covered: F = 2*1*0.5/1.5.
    assert rouge1(["the cat sat"], [("the cat sat on the mat",)]) == [pytest.approx(2 / 3)]
    # bigrams: "the cat", "cat sat" both in the reference (5 bigrams): P=1, R=2/5.
    assert rouge2(["the cat sat"], [("the cat sat on the mat",)]) == [pytest.approx(2 * 0.4 / 1.4)]
    assert rougeL(["mat the"], [("the mat",)]) == [pytest.approx(0.5)]


def test_rouge_stems_words():
    assert rouge1(["cats running"], [("cat runs",)]) == [pytest.approx(1.0)]


def test_rouge_takes_the_best_reference():
    scores = rouge1(["the cat sat", "dogs bark"], [("a dog", "the cat sat"), ("dogs bark loudly", "cats")])
    assert scores == [pytest.approx(1.0), pytest.approx(0.8)]


def test_bertscore_orders_similarity_and_guards_empty_outputs():
    scorer = BertScorer.get("minilm")
    same, near, far, empty = scorer.f1(
        ["the meeting is on friday", "the meeting moved to friday", "bananas are yellow", ""],
        [("the meeting is on friday",)] * 4,
    )
    assert same == pytest.approx(1.0, abs=1e-4)
    assert 1.0 > near > far > 0.0
    assert empty == 0.0


def test_bertscore_takes_the_best_reference():
    scorer = BertScorer.get("minilm")
    (single,) = scorer.f1(["the cat sat on the mat"], [("stock prices fell",)])
    (multi,) = scorer.f1(["the cat sat on the mat"], [("stock prices fell", "the cat sat on the mat")])
    assert multi == pytest.approx(1.0, abs=1e-4) and single < 0.9


def test_overall_is_the_mean_of_the_summary_metrics():
    scores = summary_scores(["the cat sat"], [("the cat sat on the mat",)], scorer="minilm")
    parts = [scores[m][0] for m in ("rouge1", "rouge2", "rougeL", "bertscore_f1")]
    assert scores["overall"][0] == pytest.approx(sum(parts) / 4)


def test_classification_report_by_hand():
    # true: 1 1 1 0 0 ; pred: 1 0 1 1 0 -> TP=2 FN=1 FP=1 TN=1
    # Positive class: P = R = F1 = 2/3; negative class: TP=1 FP=1 FN=1, P = R = F1 = 1/2.
    report = classification_report([1, 0, 1, 1, 0], [1, 1, 1, 0, 0], ("Negative", "Positive"))
    assert report["macro_precision"] == pytest.approx(7 / 12) and report["macro_recall"] == pytest.approx(7 / 12)
    assert report["macro_f1"] == pytest.approx(7 / 12) and report["accuracy"] == pytest.approx(3 / 5)
    assert report["positive_f1"] == pytest.approx(2 / 3)
    assert report["confusion_matrix"] == [[1, 1], [1, 2]]


@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_batched_corpus_scores_agree_with_scikit_learn(n_classes):
    # Short samples make the edge cases common: a class absent from both sides, no positive predicted.
    rng = np.random.default_rng(n_classes)
    labels = tuple(f"c{k}" for k in range(n_classes))
    for n in (1, 2, 3, 5, 12, 40):
        refs = rng.integers(0, n_classes, size=(60, n))
        preds = np.where(rng.random((60, n)) < 0.5, refs, rng.integers(0, n_classes, size=(60, n)))
        batched = corpus_classification_scores(refs, preds, n_classes)
        for i in range(len(refs)):
            expected = classification_report(preds[i].tolist(), refs[i].tolist(), labels)
            for name in corpus_metric_names(n_classes):
                assert batched[name][i] == pytest.approx(expected[name]), (name, refs[i], preds[i])
        # The same along another axis (as the bootstrap may pass it).
        along_0 = corpus_classification_scores(refs.T, preds.T, n_classes, axis=0)
        assert np.allclose(along_0["macro_f1"], batched["macro_f1"])
