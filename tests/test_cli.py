"""The CLI contract: commands, outputs, and one-line errors with exit status 2. Run: pytest tests/test_cli.py"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from llmft.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "llmft", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )


def test_sentiment_train_evaluate_predict_end_to_end(tmp_path):
    runs, out = str(tmp_path / "runs"), tmp_path / "eval"
    data = tmp_path / "train.csv"
    pd.read_json(ROOT / "assets/sentiment/train.jsonl", lines=True).to_csv(data, index=False)

    trained = run_cli(
        "train",
        "--task",
        "sentiment",
        "--model",
        "minilm",
        "--data",
        str(data),
        "--max-steps",
        "40",
        "--run-name",
        "cli",
        "--runs-dir",
        runs,
    )
    assert trained.returncode == 0, trained.stderr
    assert "run cli: completed" in trained.stdout

    evaluated = run_cli(
        "evaluate", "--task", "sentiment", "--run", "cli", "--runs-dir", runs, "--n", "60", "--out", str(out)
    )
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "sentiment" and summary["n"] == 60
    for name in ("macro_f1", "accuracy", "macro_precision", "macro_recall", "positive_f1", "correct"):
        assert set(summary["metrics"][name]) >= {
            "base_mean",
            "tuned_mean",
            "base_median",
            "tuned_median",
            "delta_mean",
            "ci95",
            "p_value",
            "wins",
            "ties",
            "losses",
        }
    assert summary["metrics"]["macro_f1"]["tuned_mean"] > summary["metrics"]["macro_f1"]["base_mean"] + 0.2
    assert summary["headline"] == "macro_f1" and summary["verdict"] == "better"
    # The one warning: the base it beat had an untrained head (chance), which the verdict must not hide.
    assert len(summary["warnings"]) == 1 and "classification head is untrained" in summary["warnings"][0]
    assert summary["format_version"] == 2 and summary["data"] == "sample"
    assert "verdict: tuned is better than base on macro_f1" in evaluated.stdout
    rows = pd.read_csv(out / "examples.csv")
    assert len(rows) == 60 and {
        "id",
        "input",
        "reference",
        "base_output",
        "tuned_output",
        "base_correct",
        "tuned_correct",
    } <= set(rows.columns)
    page = (out / "plots.html").read_text()
    assert page.count("plotly.js v") == 1 and page.count("Plotly.newPlot") >= 2  # plotly.js once, every figure
    assert sum(f.stat().st_size for f in out.iterdir()) < 6_000_000
    assert list((Path(runs) / "cli" / "evaluations").glob("*/summary.json"))  # recorded with the run too

    predicted = run_cli(
        "predict",
        "--task",
        "sentiment",
        "--run",
        "cli",
        "--runs-dir",
        runs,
        "--text",
        "A wonderful film, the acting was superb.",
    )
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.strip().splitlines()
    assert lines[0].startswith("base: ") and lines[1].startswith("tuned: Positive")


def test_seq2seq_train_and_evaluate_with_a_local_model_folder(tiny_t5, constant_summaries, tmp_path, capsys):
    runs, out = str(tmp_path / "runs"), tmp_path / "eval"
    assert (
        main(
            [
                "train",
                "--task",
                "dialogue",
                "--model",
                tiny_t5,
                "--data",
                constant_summaries,
                "--max-steps",
                "30",
                "--lr",
                "0.03",
                "--run-name",
                "d",
                "--runs-dir",
                runs,
            ]
        )
        == 0
    )
    # Evaluating on the rows the run trained on is refused; held-out rows (new texts, same summary) are used.
    args = ["evaluate", "--task", "dialogue", "--run", "d", "--runs-dir", runs, "--n", "8"]
    assert main([*args, "--data", constant_summaries]) == 2
    assert "8 of 8 evaluation examples are training examples of run d" in capsys.readouterr().err
    held_out = tmp_path / "held-out.jsonl"
    rows = [json.loads(line) for line in Path(constant_summaries).read_text().splitlines()]
    held_out.write_text("".join(json.dumps({**r, "dialogue": "again: " + r["dialogue"]}) + "\n" for r in rows))
    assert (
        main(
            [
                "evaluate",
                "--task",
                "dialogue",
                "--run",
                "d",
                "--runs-dir",
                runs,
                "--data",
                str(held_out),
                "--n",
                "8",
                "--max-new-tokens",
                "10",
                "--bertscore-model",
                "minilm",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["metrics"]) == {"rouge1", "rouge2", "rougeL", "bertscore_f1", "overall"}
    assert summary["scorer"].startswith("sentence-transformers/all-MiniLM-L6-v2")
    assert summary["generation"]["max_new_tokens"] == 10
    assert summary["metrics"]["rouge1"]["tuned_mean"] > summary["metrics"]["rouge1"]["base_mean"]
    rows = pd.read_csv(out / "examples.csv")
    assert {"reference_1", "base_rouge1", "tuned_rouge1", "base_bertscore_f1", "tuned_overall"} <= set(rows.columns)
    assert "rouge1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--task", "poetry"], "unknown task 'poetry'"),
        (["train", "--task", "sentiment", "--data", "missing.csv"], "data file not found: missing.csv"),
        (["train", "--task", "sentiment", "--lr", "-0.1"], "lr must be in (0, 1]"),
        (["train", "--task", "sentiment", "--lora-r", "0"], "lora-r must be between 1 and 1024"),
        (["train", "--task", "sentiment", "--lora-dropout", "1.5"], "lora-dropout must be in [0, 1)"),
        (["train", "--task", "sentiment", "--max-steps", "0"], "max-steps must be between"),
        (["train", "--task", "sentiment", "--batch-size", "1000000"], "batch-size must be between"),
        (["train", "--task", "sentiment", "--model", "./no/such/folder"], "model folder not found"),
        (["train", "--task", "sentiment", "--model", "someone/missing-model"], "not in the local cache"),
        (["train", "--task", "dialogue"], "pass --model smollm2 (the packaged SmolLM2-135M-Instruct chat LLM"),
        (["train", "--task", "dialogue", "--model", "minilm"], "a bert model cannot generate text"),
        (["train", "--task", "sentiment", "--model", "minilm", "--target-modules", "nope"], "match no linear layer"),
        (["train", "--task", "sentiment", "--max-steps", "5", "--epochs", "1"], "not allowed with argument"),
        (["train", "--task", "sentiment", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
        (["evaluate", "--task", "sentiment", "--run", "ghost"], "run 'ghost' not found"),
        (["predict", "--task", "sentiment", "--adapter", "./nowhere", "--text", "hi"], "adapter folder not found"),
        (["predict", "--task", "sentiment", "--adapter", "x/y", "--text", "  "], "--text is empty"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    try:
        code = main([*args, "--runs-dir", str(tmp_path / "runs")])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    # Progress bars may precede it; the problem itself is one line, and no traceback.
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not list((tmp_path / "runs").glob("*/run.json"))  # no half-written run left behind


def test_missing_column_and_bad_label_in_a_file(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("review,label\ngood,1\n")
    assert main(["train", "--task", "sentiment", "--data", str(bad), "--runs-dir", str(tmp_path)]) == 2
    assert "column 'text' not found" in capsys.readouterr().err
    bad.write_text("text,label\ngood,1\nfine,maybe\n")
    assert main(["train", "--task", "sentiment", "--data", str(bad), "--runs-dir", str(tmp_path)]) == 2
    assert "line 3: unknown label 'maybe'" in capsys.readouterr().err


def test_entry_point_exit_status_and_tasks_listing():
    listed = run_cli("tasks")
    assert listed.returncode == 0 and "dialogue" in listed.stdout and "r=32 alpha=64" in listed.stdout
    bad = run_cli("train", "--task", "nope")
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "error: unknown task 'nope'; choose from dialogue, document, sentiment"
    )
