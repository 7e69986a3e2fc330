"""Metric functions against hand-computed values. Run: pytest tests/test_metrics.py"""

import pytest

from llmft.metrics import BertScorer, classification_report, rouge1, rouge2, rougeL, summary_scores


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
    report = classification_report([1, 0, 1, 1, 0], [1, 1, 1, 0, 0], ("Negative", "Positive"))
    assert report["precision"] == pytest.approx(2 / 3) and report["recall"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(2 / 3) and report["accuracy"] == pytest.approx(3 / 5)
    assert report["confusion_matrix"] == [[1, 1], [1, 2]]
