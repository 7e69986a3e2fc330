"""The design's extension points: a kind defined here plugs in without editing llmft; a config field defined here
appears in argparse, the command line, run.json, the form and the model card; results load in every format.

Run: pytest tests/test_design.py
"""

import argparse
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pytest
import torch

from llmft import LlmftError
from llmft import tasks as tasks_module
from llmft.access import LOCAL_USER
from llmft.config import EvalConfig, TrainConfig, add_arguments, from_args, hyperparameters, param
from llmft.context import Context
from llmft.kinds import Kind, Scored
from llmft.pipeline import evaluate
from llmft.results import EvalResult
from llmft.runs import read_run
from llmft.tasks import Preset, TaskSpec, register_task
from llmft.training import train

LLMFT = Path(__file__).resolve().parent.parent / "llmft"


class Regression(Kind):
    """A toy kind llmft does not have: predict a number with a one-output head; scored by absolute error."""

    name = "toy-regression"
    peft_task_type = "SEQ_CLS"
    headline = example_metric = "abs_error"
    column_fields = ("text_column", "label_column")
    fresh_head = True

    def validate(self, spec):
        if not spec.label_column:
            raise ValueError("a regression task needs label_column")

    def load_model(self, spec, model_ref, **kwargs):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            model_ref, num_labels=1, problem_type="regression", **kwargs
        )

    def modules_to_save(self, model):
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        return [h for h in ("pre_classifier", "classifier") if h in names]

    def collator(self, tokenizer, model):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def columns(self, spec, present, overrides):
        return {**super().columns(spec, present, overrides), "value": [overrides.get("label_column") or "value"]}

    def parse_row(self, spec, row, columns, overrides):
        return {"label": float(row[columns["value"][0]])}

    def features(self, spec, tokenizer, examples, max_input_tokens, max_target_tokens):
        enc = tokenizer([spec.format_prompt(ex.text) for ex in examples], truncation=True, max_length=max_input_tokens)
        return [
            {"input_ids": i, "attention_mask": m, "labels": float(ex.label)}
            for i, m, ex in zip(enc["input_ids"], enc["attention_mask"], examples)
        ]

    def predict(self, loaded, texts, settings, tuned, progress=True, on_progress=None):
        enc = loaded.tokenizer([loaded.task.format_prompt(t) for t in texts], padding=True, return_tensors="pt")
        with loaded.rows([tuned] * len(texts)) as selection, torch.inference_mode():
            return loaded.model(**enc, **selection).logits[:, 0].float().tolist()

    def score(self, spec, examples, base_out, tuned_out, scorer, seed, progress=True, on_progress=None):
        from llmft.stats import paired_comparison

        base = [abs(p - ex.label) for p, ex in zip(base_out, examples)]
        tuned = [abs(p - ex.label) for p, ex in zip(tuned_out, examples)]
        rows = [
            {"id": ex.id, "input": ex.text, "reference": ex.label, "base_output": b, "tuned_output": t}
            | {"base_abs_error": eb, "tuned_abs_error": et}
            for ex, b, t, eb, et in zip(examples, base_out, tuned_out, base, tuned)
        ]
        return Scored({"abs_error": paired_comparison(base, tuned, "wilcoxon", seed)}, rows, ["abs_error"], {})


@pytest.fixture
def toy_task(tmp_path):
    """A task of the toy kind, registered for this test only, and a data file whose target is 3.0."""
    preset = Preset(8, 16, 0.0, ("q", "v"), 5e-2, max_steps=30, batch_size=8, eval_n=16)
    spec = register_task(
        TaskSpec(
            "toy",
            Regression(),
            "predict a number",
            "unused/model",
            "unused/data",
            "text",
            label_column="value",
            presets={"quick": preset, "full": preset},
        )
    )
    rng = random.Random(0)
    words = "apple river cloud stone music garden window bread".split()
    files = []
    for name, count in (("train", 48), ("test", 16)):
        rows = [{"id": f"{name}{i}", "text": " ".join(rng.choices(words, k=8)), "value": 3.0} for i in range(count)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        files.append(str(tmp_path / f"{name}.jsonl"))
    yield spec, *files
    del tasks_module._REGISTRY["toy"]


def test_a_kind_defined_outside_llmft_trains_and_evaluates(toy_task, tiny_distilbert, tmp_path):
    spec, data, held_out = toy_task
    runs = tmp_path / "runs"
    info = train(
        TrainConfig(task="toy", model=tiny_distilbert, data=data, runs_dir=str(runs), run_name="toy-run"),
        show_progress=False,
    )
    assert info["status"] == "completed" and read_run(runs / "toy-run")["kind"] == "toy-regression"
    config = EvalConfig(task="toy", run="toy-run", data=held_out, n=16, runs_dir=str(runs))
    result, written = evaluate(Context.create(runs), config, progress=False)
    m = result.metrics["abs_error"]
    assert result.headline == "abs_error" and result.kind == "toy-regression"
    assert m["tuned_mean"] < 0.5 * m["base_mean"], m  # the base head knows nothing about 3.0; LoRA learned it
    reloaded = EvalResult.load(Path(written[0]["summary"]).parent)
    assert reloaded.metrics == result.metrics and reloaded.scores("abs_error") == result.scores("abs_error")
    assert "abs_error" in result.text_table() and set(result.figures()) == {"boxplot", "scatter"}


def test_a_kind_without_display_methods_works_in_compare(toy_task, tiny_distilbert, tmp_path):
    """Compare and `predict` need no display methods: the optional roles' defaults serve a kind that has none."""
    from llmft.access import User
    from llmft.kinds import Display
    from llmft.ui.compare import compare

    assert not {"stream", "output_text", "reference_text", "score_reference"} & set(vars(Regression))
    spec, data, held_out = toy_task
    runs = tmp_path / "runs"
    config = TrainConfig(task="toy", model=tiny_distilbert, data=data, runs_dir=str(runs), run_name="toy-cmp")
    train(config.replace(max_steps=20), show_progress=False)
    ctx = Context.create(runs)
    *_, last = compare(ctx, User(), "toy", "", "toy-cmp", "apple river cloud stone", "3.0", 8)
    base, tuned, base_stats, tuned_stats, base_probs, tuned_probs, scores, prompt = last
    assert float(tuned) != float(base) and abs(float(tuned) - 3.0) < abs(float(base) - 3.0)  # the tuned side learned
    assert "tokens" in base_stats and base_probs is None and prompt == "apple river cloud stone"
    assert "| metric | base | tuned |" in scores  # a typed reference with no per-output scores: an empty table
    assert Regression.stream is Display.stream


def test_no_module_but_kinds_tests_a_kind():
    pattern = re.compile(r"kind(\.name)?\s*(==|!=|\bin\b)|\b(SEQ2SEQ|CLASSIFICATION)\b")
    offenders = [
        f"{path.relative_to(LLMFT)}:{number}: {line.strip()}"
        for path in LLMFT.rglob("*.py")
        if path.name not in ("kinds.py", "tasks.py")  # tasks.py registers the built-in tasks with their kinds
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders


@dataclass
class WarmupConfig(TrainConfig):
    warmup_ratio: float | None = param(
        help="share of the steps spent warming up the learning rate", bounds=(0, 1), group="hyper"
    )


def test_a_config_field_defined_here_reaches_every_surface(tiny_distilbert, tmp_path):
    from llmft.ui.finetune import build, form_to_config

    # argparse: the flag exists, parses, and its bounds are enforced with the flag named.
    parser = argparse.ArgumentParser()
    add_arguments(parser, WarmupConfig)
    args = parser.parse_args(["--task", "sentiment", "--warmup-ratio", "0.25", "--max-steps", "2"])
    config = from_args(WarmupConfig, args)
    assert config.warmup_ratio == 0.25
    with pytest.raises(LlmftError, match=r"warmup-ratio must be in \[0, 1\], got 1.5"):
        WarmupConfig(task="sentiment", warmup_ratio=1.5)
    # The command line that reproduces it.
    assert "--warmup-ratio 0.25" in config.cli_command()
    # run.json, and the hyperparameter list the Runs table and the model card read.
    config.model, config.runs_dir, config.run_name, config.train_samples = tiny_distilbert, str(tmp_path), "w", 16
    train(config, show_progress=False)
    stored = read_run(tmp_path / "w")["config"]
    assert stored["warmup_ratio"] == 0.25
    assert ("warmup_ratio", 0.25) in hyperparameters(WarmupConfig, stored)
    # The Fine-tune form: a widget labelled for it, and its value reaches the config.
    ctx = Context.create(tmp_path)
    with gr.Blocks() as blocks:
        with gr.Tabs():
            tab = build(ctx, WarmupConfig)
    labels = [c.get("props", {}).get("label") for c in blocks.get_config_file()["components"]]
    assert "Warmup ratio" in labels and "warmup_ratio" in tab["fields"]
    values = {name: None for name in tab["fields"]} | {"task": "sentiment", "preset": "quick", "warmup_ratio": 0.1}
    values |= {"source": "bundled sample", "hub_id": "", "upload": None}
    built = form_to_config(
        ctx, LOCAL_USER, tab["picker"], tab["fields"], [values[n] for n in tab["fields"]], WarmupConfig
    )
    assert built.warmup_ratio == 0.1 and "--warmup-ratio 0.1" in built.cli_command()


def test_results_of_the_unversioned_format_still_load(tmp_path):
    """summary.json and examples.csv as llmft 0.1 wrote them (no format_version, kind or headline)."""
    stats = {
        "base_mean": 0.5,
        "tuned_mean": 0.75,
        "base_median": None,
        "tuned_median": None,
        "delta_mean": 0.25,
        "ci95": [0.1, 0.4],
        "p_value": 0.01,
        "test": "mcnemar",
        "wins": 3,
        "ties": 1,
        "losses": 0,
    }
    summary = {
        "task": "sentiment",
        "n": 4,
        "model": "m",
        "adapter": "a",
        "generation": {},
        "base_outputs_cached": False,
        "scorer": None,
        "labels": ["Negative", "Positive"],
        "metrics": {"f1": stats, "correct": stats, "p_true_label": {**stats, "test": "wilcoxon"}},
        "confusion_matrix": {"base": [[1, 1], [1, 1]], "tuned": [[2, 0], [1, 1]]},
        "data": "sample",
        "split": "test",
        "seed": 0,
        "run": "old",
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    header = (
        "id,input,reference,base_output,tuned_output,base_correct,tuned_correct,base_p_true_label,tuned_p_true_label"
    )
    body = "\n".join(f"{i},text {i},Positive,Negative,Positive,0.0,1.0,0.4,0.8" for i in range(4))
    (tmp_path / "examples.csv").write_text(header + "\n" + body + "\n")
    result = EvalResult.load(tmp_path)
    assert result.format_version == 1 and result.headline == "f1" and result.kind == "classification"
    assert result.per_example == ["correct", "p_true_label"] and result.scores("correct") == ([0.0] * 4, [1.0] * 4)
    assert result.headline_text() == "better: f1 0.500 → 0.750 (n=4, sample)" and result.verdict == "better"
    assert {"boxplot", "proportions", "scatter", "confusion_base", "confusion_tuned"} == set(result.figures())
    assert "| f1 | 0.5000 | 0.7500 | +0.2500 |" in result.markdown_table()
