"""Validation, model selection, schedules, time budget and trackers in training.

Run: pytest tests/test_validation.py
"""

import json
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from llmft import LlmftError
from llmft.data import load_examples
from llmft.examples import text_hash
from llmft.runs import TRAIN_HASHES
from llmft.tasks import get_task
from llmft.training import TrainConfig, prepare, train


def config(tiny_distilbert, runs_dir, name, **kwargs):
    kwargs = {"max_steps": 12, "train_samples": 64, "eval_steps": 3, "base_dropout": 0.0, **kwargs}
    return TrainConfig(task="sentiment", model=tiny_distilbert, runs_dir=runs_dir, run_name=name, **kwargs)


def test_validation_is_logged_and_the_best_steps_adapter_is_kept(tiny_distilbert, runs_dir):
    """A learning rate far too high makes validation worse as training goes on: the kept adapter must be the
    best validation step's, not the last step's."""
    info = train(config(tiny_distilbert, runs_dir, "best", learning_rate=0.5, val_split=16), show_progress=False)
    history = info["val_history"]
    assert [h["step"] for h in history] == [3, 6, 9, 12]
    assert all({"loss", "macro_f1", "accuracy", "selection"} <= set(h) for h in history)
    best = info["best"]
    assert best["metric"] == "selection" and best["kept"] is True
    # Macro-F1 first; among the steps with the top F1, the lowest validation loss.
    top = max(h["macro_f1"] for h in history)
    chosen = min((h for h in history if h["macro_f1"] == top), key=lambda h: h["loss"])
    assert best["step"] == chosen["step"] and best["value"] == pytest.approx(chosen["selection"])
    run_dir = Path(info["dir"])
    kept = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    chosen = load_file(run_dir / "checkpoints" / f"checkpoint-{best['step']}" / "adapter_model.safetensors")
    assert kept.keys() == chosen.keys() and all((kept[k] == chosen[k]).all() for k in kept)
    if best["step"] != 12:  # the last step's weights differ from the kept ones
        last = load_file(run_dir / "checkpoints" / "checkpoint-12" / "adapter_model.safetensors")
        assert any(not (kept[k] == last[k]).all() for k in kept)
    saved = json.loads((run_dir / "run.json").read_text())
    assert saved["val_history"] == history and saved["best"] == best


def test_early_stopping_stops_after_patience_validations_without_improvement(tiny_distilbert, runs_dir):
    info = train(
        config(tiny_distilbert, runs_dir, "early", learning_rate=0.5, max_steps=60, early_stopping=1, val_split=16),
        show_progress=False,
    )
    steps = [h["step"] for h in info["val_history"]]
    assert info["step"] < 60 and info["best"]["early_stopped"] is True
    # Stopped at the first validation that did not beat the best one before it.
    scores = [h["selection"] for h in info["val_history"]]
    assert scores[-1] <= max(scores[:-1]) and steps[-1] == info["step"]


def test_test_rows_never_reach_the_trainer(tiny_distilbert, runs_dir, loaded_splits):
    """Training reads only the train split; the validation rows are carved from it; the test split's rows
    are not among the trained or validated texts."""
    prepared = prepare(config(tiny_distilbert, runs_dir, "split", train_samples=0))
    assert set(loaded_splits) == {"train"}
    task = get_task("sentiment")
    test_texts = {text_hash(ex.text) for ex in load_examples(task, None, task.test_split)}
    train_texts = {text_hash(ex.text) for ex in prepared.examples}
    val_texts = {text_hash(ex.text) for ex in prepared.val_examples}
    assert val_texts and not val_texts & train_texts
    assert not (train_texts | val_texts) & test_texts
    info = train(prepared, show_progress=False)
    hashes = set(json.loads((Path(info["dir"]) / TRAIN_HASHES).read_text()))
    assert hashes == train_texts | val_texts  # evaluating on validation rows is flagged like training rows


def test_a_hub_datasets_own_validation_split_is_used(tiny_distilbert, runs_dir, monkeypatch):
    """A LOCAL STAND-IN for a hub dataset with train, validation and test splits (no hub here)."""
    import llmft.data as data

    task = get_task("sentiment")
    sample = {split: data.source_rows(task, None, split)[0] for split in ("train", "test")}
    val_rows = sample["test"][:20]
    splits = {"train": sample["train"], "validation": val_rows, "test": []}

    def read_hub(dataset_id, split, counter):
        if split not in splits or split == "test":
            raise LlmftError(f"no split {split!r}")
        return splits[split]

    monkeypatch.setattr(data, "_read_hub", read_hub)
    prepared = prepare(config(tiny_distilbert, runs_dir, "hubval", data="someone/reviews", val_split=0.1))
    assert "'validation' split" in prepared.val_source and len(prepared.val_examples) == 6  # 10% of 64
    assert {ex.id for ex in prepared.val_examples} <= {str(row.get("id")) for _, row in val_rows}


def test_bad_validation_settings_are_one_line_errors(tiny_distilbert, runs_dir):
    with pytest.raises(LlmftError, match="val-split 64 holds out 64 of 64 training rows, leaving none"):
        prepare(config(tiny_distilbert, runs_dir, "bad", val_split=64))
    with pytest.raises(LlmftError, match="lr-scheduler must be one of linear, cosine, constant"):
        config(tiny_distilbert, runs_dir, "bad", lr_scheduler="exponential")
    with pytest.raises(LlmftError, match=r"warmup-ratio must be in \[0, 1\)"):
        config(tiny_distilbert, runs_dir, "bad", warmup_ratio=1.0)
    assert not (Path(runs_dir) / "bad").exists()


def test_schedule_settings_reach_the_trainer(tiny_distilbert, runs_dir):
    info = train(
        config(
            tiny_distilbert,
            runs_dir,
            "sched",
            lr_scheduler="cosine",
            warmup_ratio=0.25,
            weight_decay=0.01,
            grad_accum=2,
            val_split=0,
        ),
        show_progress=False,
    )
    state = json.loads((Path(info["dir"]) / "checkpoints" / "checkpoint-12" / "trainer_state.json").read_text())
    rates = [h["learning_rate"] for h in state["log_history"] if "learning_rate" in h]
    peak = max(rates)
    assert rates.index(peak) in (2, 3) and rates[0] < peak  # warmup over a quarter of 12 steps
    assert rates[-1] < 0.1 * peak  # cosine decays towards 0
    args = json.loads((Path(info["dir"]) / "run.json").read_text())["config"]
    assert args["grad_accum"] == 2 and args["weight_decay"] == 0.01 and info["validation"]["examples"] == 0
    assert "--lr-scheduler cosine" in info["command"] and "--grad-accum 2" in info["command"]


def test_a_time_budget_is_kept_within_20_percent(tiny_distilbert, runs_dir):
    budget = 8.0
    started = time.time()
    info = train(
        config(tiny_distilbert, runs_dir, "budget", max_steps=100_000, time_budget=budget, eval_steps=None),
        show_progress=False,
    )
    loop = info["train_runtime_s"]
    assert info["status"] == "completed" and 3 < info["step"] < 100_000
    assert abs(loop - budget) <= 0.2 * budget, (loop, info["step"])
    assert time.time() - started < budget * 3  # model loading and saving on top, not a runaway
    assert info["val_history"] and info["best"]["kept"]
    # The budget ended it, not early stopping; run.json says what the budget fitted.
    assert info["best"]["early_stopped"] is False
    assert info["time_budget"]["seconds"] == budget and info["step"] <= info["time_budget"]["fitted_steps"] < 100_000
    # Half the budget fits about half the steps: the budget, not the planned length, sets how long it trains.
    half = train(
        config(tiny_distilbert, runs_dir, "half", max_steps=100_000, time_budget=budget / 2, eval_steps=None),
        show_progress=False,
    )
    assert 0.3 * info["step"] < half["step"] < 0.75 * info["step"], (half["step"], info["step"])


def test_tensorboard_receives_the_losses(tiny_distilbert, runs_dir):
    info = train(config(tiny_distilbert, runs_dir, "tb", max_steps=4, report_to="tensorboard"), show_progress=False)
    events = list((Path(info["dir"]) / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert {"train/loss", "eval/loss"} <= set(acc.Tags()["scalars"])
    assert "--report-to tensorboard" in info["command"]


def summaries(tiny_t5, data, runs_dir, name, **kwargs):
    """A dialogue run of the tiny T5 on `data`: 8 validation rows, no time budget."""
    # q,v: the tiny T5's learning rate is sized for these (the quick preset trains every linear layer).
    kwargs = {"learning_rate": 5e-2, "val_split": 8, "time_budget": 0, "target_modules": ["q", "v"], **kwargs}
    return TrainConfig(task="dialogue", model=tiny_t5, data=data, runs_dir=runs_dir, run_name=name, **kwargs)


def test_a_generation_task_validates_on_its_headline_and_keeps_that_step(tiny_t5, constant_summaries, runs_dir):
    """With val-generate, each validation generates summaries for validation rows and scores them as an
    evaluation does: the headline (`overall`, ROUGE and BERTScore) is logged and picks the kept step, equal
    headlines ordered by the validation loss."""
    info = train(
        summaries(tiny_t5, constant_summaries, runs_dir, "gen-val", max_steps=60, eval_steps=4, val_generate=4),
        show_progress=False,
    )
    history = info["val_history"]
    assert [h["step"] for h in history] == list(range(4, 61, 4))  # early: random batches learn it within 20 steps
    assert all({"loss", "overall", "rouge1", "rougeL", "bertscore_f1", "selection"} <= set(h) for h in history)
    # The constant summary is learned: the generated validation summaries come to match it.
    assert history[0]["rougeL"] < 0.9 < history[-1]["rougeL"]
    best = info["best"]
    assert best["metric"] == "selection" and best["kept"] is True
    top = max(h["overall"] for h in history)
    chosen = min((h for h in history if h["overall"] == top), key=lambda h: h["loss"])
    assert best["step"] == chosen["step"] and best["value"] == pytest.approx(chosen["selection"])


def test_without_generated_rows_a_generation_task_keeps_the_lowest_validation_loss(
    tiny_t5, constant_summaries, runs_dir
):
    info = train(
        summaries(tiny_t5, constant_summaries, runs_dir, "loss-val", max_steps=6, eval_steps=3, val_generate=0),
        show_progress=False,
    )
    assert info["best"]["metric"] == "loss" and "overall" not in info["val_history"][0]
    assert info["best"]["value"] == pytest.approx(min(h["loss"] for h in info["val_history"]))
