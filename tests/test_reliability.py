"""Bad input, hostile ids, faults, concurrency: each protection with a test. Run: pytest tests/test_reliability.py"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llmft import LlmftError, get_task
from llmft import data as data_module
from llmft.context import Context
from llmft.data import load_examples, normalize_label, normalize_text, read_rows
from llmft.jobs import Jobs
from llmft.loading import load_model
from llmft.refs import adapter_dir, check_model_ref
from llmft.results import EvalResult
from llmft.runs import read_run
from llmft.training import TrainConfig, complete_checkpoints, train
from llmft.ui.common import word_diff_html
from llmft.ui.evaluate import example_detail

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = get_task("sentiment")


# 1. Bad data files -------------------------------------------------------------------------------------
def test_a_file_over_the_size_limit_is_refused_and_no_run_is_written(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    path.write_text("text,label\n" + "good film,1\n" * 200)
    monkeypatch.setattr(data_module, "MAX_FILE_BYTES", 1000)
    with pytest.raises(LlmftError, match=r"big.csv is \d+ MB, over the 0 MB limit"):
        train(TrainConfig(task="sentiment", data=str(path), runs_dir=str(tmp_path / "runs"), run_name="x"))
    assert not (tmp_path / "runs" / "x").exists()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([".csv", ".tsv", ".jsonl", ".json"]))
def test_arbitrary_bytes_give_rows_or_a_clear_error(tmp_path_factory, payload, suffix):
    path = tmp_path_factory.mktemp("fuzz") / f"data{suffix}"
    path.write_bytes(payload)
    try:
        rows = read_rows(path)
    except LlmftError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert all(isinstance(row, dict) for _, row in rows)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)))
@example("¹")  # str.isdigit() accepts it, int() does not (found by hypothesis)
@example("٣")
def test_any_label_value_maps_to_a_valid_id_or_a_clear_error(value):
    try:
        assert normalize_label(value, ("Negative", "Positive")) in (0, 1)
    except LlmftError as err:
        assert "unknown label" in str(err)


# 2. Hostile model and dataset ids ------------------------------------------------------------------------
@pytest.fixture
def as_the_app(tmp_path):
    """Local folders restricted as the app restricts them."""
    return [tmp_path.resolve()]


@pytest.mark.parametrize(
    "ref,message",
    [
        ("../../etc", "outside the folders this server allows"),
        ("../../no/such/place", "outside the folders this server allows"),
        ("/no/such/place", "outside the folders this server allows"),
        ("https://evil.example/model", "not a URL"),
        ("file:///etc/passwd", "not a URL"),
        ("org/model; rm -rf /", "model folder not found"),
        ("org/model;reboot", "not a model folder nor a valid hub model id"),
        ("$(curl x)", "not a model folder nor a valid hub model id"),
        ("a" * 300, "too long"),
    ],
)
def test_hostile_model_ids_are_rejected_before_any_load(ref, message, as_the_app):
    with pytest.raises(LlmftError, match=message):
        check_model_ref(ref, as_the_app)


def test_a_missing_folder_inside_the_allowed_roots_is_reported_as_missing(tmp_path, as_the_app):
    with pytest.raises(LlmftError, match="model folder not found"):
        check_model_ref(str(tmp_path / "nope"), as_the_app)
    with pytest.raises(LlmftError, match="adapter folder not found"):
        adapter_dir(str(tmp_path / "nope"), as_the_app)


@pytest.mark.parametrize("dataset", ["../../etc/passwd", "https://x.y/data.csv", "org/data`id`", "a/b/c"])
def test_hostile_dataset_ids_are_rejected(dataset):
    with pytest.raises(LlmftError):
        load_examples(SENTIMENT, dataset)


def test_local_folders_outside_the_allowed_roots_are_refused(tiny_distilbert, tmp_path):
    roots = [tmp_path.resolve()]
    with pytest.raises(LlmftError, match="outside the folders this server allows"):
        check_model_ref(tiny_distilbert, roots)
    with pytest.raises(LlmftError, match="outside the folders"):
        check_model_ref("/etc", roots)
    assert check_model_ref(tiny_distilbert) == str(Path(tiny_distilbert).resolve())


def test_pickle_only_and_remote_code_models_are_refused(tiny_distilbert, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((Path(tiny_distilbert) / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(LlmftError, match="no .safetensors weights; pickle weights"):
        check_model_ref(str(pickled))
    remote = tmp_path / "remote"
    remote.mkdir()
    config = json.loads((Path(tiny_distilbert) / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "evil.Model"}}))
    (remote / "model.safetensors").write_bytes((Path(tiny_distilbert) / "model.safetensors").read_bytes())
    with pytest.raises(LlmftError, match="never runs remote code"):
        check_model_ref(str(remote))


# 4. Text inputs ------------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
@example("\xa0")  # a non-breaking space alone is empty text (once failed the test's own oracle)
def test_normalize_text_returns_clean_text_or_a_clear_notice(text):
    try:
        clean, notice = normalize_text(text, max_chars=1000)
    except LlmftError as err:
        # Only whitespace (any Unicode space, e.g. U+00A0) and ASCII control characters count as empty.
        assert "empty" in str(err) and all(c.isspace() or ord(c) < 32 or c == "\x7f" for c in text)
        return
    assert clean and len(clean) <= 1000 and clean == clean.strip()
    assert not any(ord(c) < 32 and c not in "\n\t\r" for c in clean) and "\x7f" not in clean
    if len(text) <= 1000:
        assert notice is None
    if notice is not None:
        assert len(clean) == 1000 and "cut to its first 1,000 characters" in notice


def test_huge_text_is_cut_with_a_notice():
    clean, notice = normalize_text("é🙂 " * 400_000)
    assert len(clean) == 20_000 and "cut to its first 20,000 characters" in notice


def test_predict_handles_emoji_control_characters_and_huge_text(tiny_distilbert, tmp_path):
    info = train(
        TrainConfig(
            task="sentiment", model=tiny_distilbert, runs_dir=str(tmp_path), run_name="p", max_steps=1, train_samples=8
        ),
        show_progress=False,
    )
    from llmft.cli import main

    for text in ["🙂🎬 great\x00\x07 film", "x" * 1_000_000]:
        assert main(["predict", "--task", "sentiment", "--run", "p", "--runs-dir", str(tmp_path), "--text", text]) == 0
    assert info["status"] == "completed"


# 5. Nothing the user typed is rendered as HTML ---------------------------------------------------------------
def test_user_text_is_escaped_in_diffs_and_example_details():
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    diff = word_diff_html(hostile, hostile + " more")
    assert "<script>" not in diff and "&lt;script&gt;" in diff and "<img" not in diff
    result = EvalResult(
        task="dialogue",
        kind="seq2seq",
        n=1,
        headline="overall",
        metrics={"overall": {}},
        per_example=["overall"],
        example_metric="overall",
        rows=[
            {
                "id": "e1",
                "input": hostile,
                "reference_1": hostile,
                "base_output": hostile,
                "tuned_output": "ok",
                "base_overall": 0.1,
                "tuned_overall": 0.2,
            }
        ],
    )
    html = example_detail(result, "e1")
    assert "<script>" not in html and "<img" not in html and html.count("&lt;script&gt;") >= 3


# 6. Faults -------------------------------------------------------------------------------------------------
def test_cancelled_run_keeps_a_loadable_checkpoint(tiny_distilbert, tmp_path):
    cancel = threading.Event()
    info = train(
        TrainConfig(
            task="sentiment",
            model=tiny_distilbert,
            runs_dir=str(tmp_path),
            run_name="c",
            max_steps=40,
            train_samples=64,
            save_steps=2,
        ),
        on_progress=lambda p: p.step == 5 and cancel.set(),
        cancel=cancel,
        show_progress=False,
    )
    assert info["status"] == "cancelled"
    checkpoints = complete_checkpoints(Path(info["dir"]) / "checkpoints")
    assert checkpoints and checkpoints[-1].name == "checkpoint-4"
    loaded = load_model(SENTIMENT, tiny_distilbert, str(checkpoints[-1]), head_seed=info["head_seed"])
    assert loaded.adapter == str(checkpoints[-1])


KILL_DURING_SAVE = """
import os, signal, sys
import peft.peft_model
from llmft.training import TrainConfig, train
real = peft.peft_model.safe_save_file
def dying_save(tensors, filename, metadata=None):
    if "adapter_model" in str(filename) and "checkpoint" not in str(filename):
        with open(filename, "wb") as f:
            f.write(b"half an adapter")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(tensors, filename, metadata=metadata)
peft.peft_model.safe_save_file = dying_save  # the name peft saves adapters with
train(TrainConfig(task="sentiment", model=sys.argv[1], runs_dir=sys.argv[2], run_name="killed", max_steps=3,
                  train_samples=16), show_progress=False)
"""


def test_sigkill_while_saving_leaves_no_half_adapter_and_earlier_runs_intact(tiny_distilbert, tmp_path):
    earlier = train(
        TrainConfig(
            task="sentiment",
            model=tiny_distilbert,
            runs_dir=str(tmp_path),
            run_name="earlier",
            max_steps=1,
            train_samples=8,
        ),
        show_progress=False,
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, tiny_distilbert, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    killed = tmp_path / "killed"
    assert not (killed / "adapter").exists()  # only the hidden temporary folder holds the half file
    info = read_run(killed)
    assert info["status"] == "failed" and "interrupted" in info["error"]
    from llmft.pipeline import open_model

    with pytest.raises(LlmftError, match="has no final adapter"):
        open_model(Context.create(tmp_path), SENTIMENT, run="killed")
    assert read_run(Path(earlier["dir"]))["status"] == "completed"
    assert (Path(earlier["dir"]) / "adapter" / "adapter_model.safetensors").is_file()


def test_resume_skips_a_half_written_checkpoint(tiny_distilbert, tmp_path):
    config = dict(
        task="sentiment",
        model=tiny_distilbert,
        runs_dir=str(tmp_path),
        run_name="r",
        max_steps=8,
        train_samples=32,
        save_steps=3,
    )
    cancel = threading.Event()
    train(
        TrainConfig(**config), on_progress=lambda p: p.step == 4 and cancel.set(), cancel=cancel, show_progress=False
    )
    broken = tmp_path / "r" / "checkpoints" / "checkpoint-7"
    broken.mkdir()
    (broken / "adapter_model.safetensors").write_bytes(b"")  # a save cut short
    assert [p.name for p in complete_checkpoints(tmp_path / "r" / "checkpoints")] == ["checkpoint-3"]
    info = train(TrainConfig(**config), resume=True, show_progress=False)
    assert info["status"] == "completed" and [h["step"] for h in info["loss_history"]][-5:] == [4, 5, 6, 7, 8]


def test_disk_full_while_saving_is_a_clear_error_and_keeps_old_artifacts(tiny_distilbert, tmp_path, monkeypatch):
    import errno

    from peft import PeftModel

    earlier = train(
        TrainConfig(
            task="sentiment",
            model=tiny_distilbert,
            runs_dir=str(tmp_path),
            run_name="old",
            max_steps=1,
            train_samples=8,
        ),
        show_progress=False,
    )

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PeftModel, "save_pretrained", full)
    with pytest.raises(LlmftError, match="the disk is full"):
        train(
            TrainConfig(
                task="sentiment",
                model=tiny_distilbert,
                runs_dir=str(tmp_path),
                run_name="full",
                max_steps=1,
                train_samples=8,
            ),
            show_progress=False,
        )
    assert read_run(tmp_path / "full")["status"] == "failed"
    assert not (tmp_path / "full" / "adapter").exists() and not (tmp_path / "full" / ".adapter.tmp").exists()
    assert (Path(earlier["dir"]) / "adapter" / "adapter_model.safetensors").is_file()


# 7. Concurrency ------------------------------------------------------------------------------------------
def test_two_simultaneous_starts_run_exactly_one(tiny_distilbert, tmp_path):
    barrier, outcomes = threading.Barrier(2), []
    jobs = Jobs(Context.create(tmp_path))

    def start(name):
        barrier.wait()
        try:
            jobs.start(
                TrainConfig(
                    task="sentiment",
                    model=tiny_distilbert,
                    runs_dir=str(tmp_path),
                    run_name=name,
                    max_steps=30,
                    train_samples=64,
                )
            )
            outcomes.append(("started", name))
        except LlmftError as err:
            outcomes.append(("refused", str(err)))

    threads = [threading.Thread(target=start, args=(n,)) for n in ("u1", "u2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(kind for kind, _ in outcomes) == ["refused", "started"]
    assert "a run is in progress" in next(msg for kind, msg in outcomes if kind == "refused")
    job = jobs.current()
    deadline = time.time() + 120
    while job.running and time.time() < deadline:
        time.sleep(0.2)
    winner = next(name for kind, name in outcomes if kind == "started")
    loser = "u2" if winner == "u1" else "u1"
    assert read_run(tmp_path / winner)["status"] == "completed" and not (tmp_path / loser).exists()


def test_a_slow_model_load_stalls_no_request_for_another_model_and_one_model_loads_once():
    """The app's model cache: while one model loads (a large hub id anyone may type), a request for another model
    is answered; two requests for the loading model wait for one load, not two."""
    from llmft.context import ModelCache

    cache, release, loads = ModelCache(size=2), threading.Event(), []

    def slow():
        loads.append("slow")
        release.wait(30)
        return "slow model"

    cache.get("fast", lambda: "fast model")
    waiting = [threading.Thread(target=cache.get, args=("slow", slow)) for _ in range(2)]
    for t in waiting:
        t.start()
    time.sleep(0.2)
    started = time.perf_counter()
    assert cache.get("fast", lambda: "reloaded") == "fast model"  # from the cache, not behind the slow load
    assert cache.get("other", lambda: "other model") == "other model"  # a new load runs beside it
    assert time.perf_counter() - started < 1.0
    release.set()
    for t in waiting:
        t.join(10)
    assert loads == ["slow"] and cache.get("slow", lambda: "again") == "slow model"
