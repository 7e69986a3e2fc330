"""Hyperparameter search: trials are runs, a best trial, a resumable study shared by workers, checked spaces.

Run: pytest tests/test_search.py
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from llmft import LlmftError
from llmft.cli import main
from llmft.runs import list_runs, read_run
from llmft.search import load_space, search
from llmft.training import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def base(tiny_distilbert, runs_dir, **kwargs):
    kwargs = {"max_steps": 6, "train_samples": 48, "eval_steps": 3, "val_split": 8, "base_dropout": 0.0, **kwargs}
    return TrainConfig(task="sentiment", model=tiny_distilbert, runs_dir=runs_dir, **kwargs)


def study_trials(runs_dir, name):
    storage = f"sqlite:///{Path(runs_dir) / '.search' / 'studies.db'}"
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def test_a_search_of_four_trials_makes_four_runs_a_best_trial_and_resumes(tiny_distilbert, runs_dir, loaded_splits):
    seen = []
    result = search(base(tiny_distilbert, runs_dir), trials=4, study_name="s4", on_trial=seen.append)
    # The training rows are read once for the four trials; the test split is never read during a search.
    assert loaded_splits == ["train"]
    assert [t["trial"] for t in seen] == [0, 1, 2, 3] and len(result.trials) == 4
    runs = {r["name"]: r for r in list_runs(runs_dir)}
    assert {f"s4-t00{i}" for i in range(4)} <= set(runs)
    marks = [runs[f"s4-t00{i}"]["search"] for i in range(4)]
    assert sum(m["best"] for m in marks) == 1 and all(m["trials"] == 4 and m["study"] == "s4" for m in marks)
    best = next(m for m in marks if m["best"])
    assert result.best["run"] == f"s4-t00{best['trial']}" and best["metric"] == "selection"
    complete = [t for t in result.trials if t["state"] == "complete"]
    assert result.best["value"] == max(t["value"] for t in complete)
    # Each trial's sampled settings are the run's settings.
    first = runs["s4-t000"]
    assert first["config"]["learning_rate"] == pytest.approx(marks[0]["params"]["learning_rate"])
    assert first["config"]["lora_r"] == marks[0]["params"]["lora_r"]
    # Trial 0 is the starting settings themselves (what a run without a search would train): a search cannot
    # end worse than not searching, on the validation split.
    start = base(tiny_distilbert, runs_dir)
    assert marks[0]["params"]["learning_rate"] == pytest.approx(start.learning_rate)
    assert marks[0]["params"]["lora_r"] == start.lora_r and marks[0]["params"]["lora_dropout"] == start.lora_dropout
    assert marks[0]["params"]["target_modules"] == ",".join(start.target_modules)  # even when not a standard choice
    assert first["config"]["target_modules"] == start.target_modules
    assert result.best["value"] >= seen[0]["value"]

    again = search(base(tiny_distilbert, runs_dir), trials=2, study_name="s4")  # the same study, resumed
    assert len(again.trials) == 6 and (Path(runs_dir) / "s4-t005").is_dir()
    assert read_run(Path(runs_dir) / "s4-t000")["search"]["trials"] == 6


def test_two_worker_processes_share_one_sqlite_study_without_losing_a_trial(tiny_distilbert, runs_dir):
    command = [
        sys.executable, "-m", "llmft", "search", "--task", "sentiment", "--model", tiny_distilbert,
        "--runs-dir", runs_dir, "--study", "shared", "--trials", "2", "--max-steps", "4", "--train-samples", "48",
        "--eval-steps", "2", "--val-split", "8", "--no-evaluate",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0].decode() for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    trials = study_trials(runs_dir, "shared")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and all(t.state.is_finished() for t in trials)
    assert {f"shared-t00{i}" for i in range(4)} <= {r["name"] for r in list_runs(runs_dir)}


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("lora_rank: [4, 8]", "lora_rank: not a searchable field"),
        ("learning_rate: {low: 0.01, high: 0.001}", r"learning_rate: low \(0.01\) must be below high \(0.001\)"),
        ("lora_dropout: {low: 0, high: 0.1, log: true}", "a log range needs low above 0"),
        ("learning_rate: {low: 0, high: 0.1}", r"learning_rate: lr must be in \(0, 1\], got 0"),
        ("lora_r: [4, eight]", "lora_r: 'eight' is not a whole number"),
        ("lora_dropout: {low: 0.1, high: 1.5}", "lora_dropout: lora-dropout must be in"),
        ("lora_r: []", "an empty list of choices"),
        ("target_modules: {low: 1, high: 2}", "not a number, so give a list of choices"),
        ("learning_rate: {low: 0.001, high: 0.01, step: 2}", "unknown key 'step'"),
        ("[1, 2", "is not valid YAML or JSON"),
    ],
)
def test_bad_search_spaces_are_one_line_errors(space, message, tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text(space, encoding="utf-8")
    args = [
        "search",
        "--task",
        "sentiment",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--trials",
        "1",
        "--space",
        str(path),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "runs").exists() or not list_runs(tmp_path / "runs")


def test_a_space_file_narrows_and_fixes_the_search(tiny_distilbert, runs_dir, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lora_r: [4]\nlearning_rate: {low: 0.001, high: 0.002}\nlora_dropout: 0.0\nmax_steps: null\n")
    space = load_space(path, base(tiny_distilbert, runs_dir))
    assert space["lora_r"].choices == (4,) and space["lora_dropout"] == 0.0 and "max_steps" not in space
    search(base(tiny_distilbert, runs_dir), trials=2, space=space, study_name="narrow")
    for run in ("narrow-t000", "narrow-t001"):
        config = read_run(Path(runs_dir) / run)["config"]
        assert config["lora_r"] == 4 and config["lora_dropout"] == 0.0 and config["max_steps"] == 6
        assert 0.001 <= config["learning_rate"] <= 0.002


def test_a_search_needs_validation_and_trials(tiny_distilbert, runs_dir):
    with pytest.raises(LlmftError, match="chooses on the validation split: val-split must be above 0"):
        search(base(tiny_distilbert, runs_dir, val_split=0), trials=1)
    with pytest.raises(LlmftError, match="give --trials or --time-budget"):
        search(base(tiny_distilbert, runs_dir))
    assert not json.dumps(list_runs(runs_dir)).count("search")


def test_a_search_from_the_app_runs_its_trials_and_offers_the_best(tiny_distilbert, tmp_path):
    """The Fine-tune tab's search through the real app: a child process runs the study; the progress line
    counts the trials and, once it has finished, names the best trial's run for Evaluate."""
    import time

    from gradio_client import Client

    from llmft.ui import build_app, launch
    from tests.conftest import free_port
    from tests.test_app import form

    runs = tmp_path / "runs"
    app = build_app(str(runs), model_dirs=[tiny_distilbert])
    _, url, _ = launch(app, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        values = form(model=tiny_distilbert, steps=4, train_samples=48)
        values.update(val_split="8", eval_steps="2")
        fields = [values[name] for name in app.llmft_form_fields]
        message, command, *_ = client.predict(2, 0, "app-study", *fields, api_name="/search")
        assert "Started search **app-study**" in message and "python -m llmft search" in command
        # The form's time budget (the preset's minute) is each trial's, not the whole search's.
        assert "--trial-time-budget 60" in command and " --time-budget" not in command
        # From the first second the page says what the search is doing, not "0 of 2 trials finished" alone.
        early = client.predict(api_name="/progress")[0]
        assert "Preparing" in early or "Trial 0" in early, early
        seen_trial = False
        deadline = time.time() + 300
        while time.time() < deadline:
            state = client.predict(api_name="/progress")
            seen_trial |= "Trial 0 (app-study-t000, the starting settings)" in state[0]
            if "completed" in state[0] or "failed" in state[0]:
                break
            time.sleep(1)
        assert "completed: 2 of 2 trials finished" in state[0], state[0]
        assert seen_trial  # the running trial's progress was shown while it ran
        best = state[3]
        assert best.startswith("app-study-t00") and read_run(runs / best)["search"]["best"] is True
    finally:
        app.close()
