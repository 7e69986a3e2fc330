"""Multi-process training, merged export, model card and hub push. Run: pytest tests/test_scaleout.py"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmft import LlmftError, get_task
from llmft.cli import main
from llmft.config import EvalConfig
from llmft.context import Context
from llmft.data import load_examples
from llmft.errors import hide_paths
from llmft.export import export_run, push_run
from llmft.loading import load_model
from llmft.pipeline import evaluate
from llmft.training import TrainConfig, train
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"],
    # --multi_gpu is accelerate's switch for its torchrun-based launcher; on a machine without GPUs it runs
    # DDP over gloo on CPU. Without it, `accelerate launch --num_processes 2` starts one process on a CPU.
    "accelerate": [
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
    ],
}


@pytest.mark.parametrize("launcher,task", [("torchrun", "sentiment"), ("accelerate", "dialogue")])
def test_two_processes_write_one_run_and_one_adapter(launcher, task, tiny_distilbert, tiny_t5, tmp_path):
    model = tiny_distilbert if task == "sentiment" else tiny_t5
    port = ["--master_port" if launcher == "torchrun" else "--main_process_port", str(free_port())]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_CONFIG_FILE", None)
    proc = subprocess.run(
        [sys.executable, *LAUNCHERS[launcher], *port, "-m", "llmft", "train", "--task", task, "--model", model,
         "--max-steps", "4", "--batch-size", "8", "--train-samples", "64", "--run-name", "ddp",
         "--runs-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    assert proc.stdout.count("run ddp: completed") == 1  # only the main process reports
    info = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert info["status"] == "completed" and info["world_size"] == 2 and info["step"] == 4
    # Each process takes its own shard: 4 steps of 2 x 8 examples are one pass over the 64 training examples
    # (without sharding, each process would see all 64 and 4 steps would be half a pass).
    assert info["epochs"] == pytest.approx(1.0)
    adapters = list(tmp_path.rglob("adapter_model.safetensors"))
    assert [p.parent.name for p in adapters if "checkpoint" not in str(p)] == ["adapter"]
    loaded = load_model(get_task(task), model, str(tmp_path / "ddp"), head_seed=info["head_seed"])
    assert loaded.adapter.endswith("ddp/adapter")


def test_several_processes_need_a_run_name(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LlmftError, match="give --run-name"):
        train(TrainConfig(task="sentiment", runs_dir=str(tmp_path)))


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory, tiny_distilbert):
    runs = tmp_path_factory.mktemp("export-runs")
    info = train(
        TrainConfig(
            task="sentiment",
            model=tiny_distilbert,
            runs_dir=str(runs),
            run_name="exp",
            max_steps=10,
            train_samples=64,
            learning_rate=0.05,
        ),
        show_progress=False,
    )
    evaluate(Context.create(runs), EvalConfig(task="sentiment", run="exp", n=20, runs_dir=str(runs)), progress=False)
    return runs, info


def test_merged_classifier_equals_base_plus_adapter(sentiment_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    runs, info = sentiment_run
    out = export_run("exp", tmp_path / "merged", merge=True, runs_dir=str(runs))
    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()  # plain transformers, no peft
    assert not list(out.glob("adapter_*")) and (out / "model.safetensors").is_file()
    task = get_task("sentiment")
    loaded = load_model(task, info["base_model"], info["dir"], head_seed=info["head_seed"])
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = [ex.text for ex in load_examples(task, None, "test")[:8]]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = loaded.model(**batch).logits
        with loaded.rows([False] * len(texts)) as selection:
            base = loaded.model(**batch, **selection).logits
        got = merged(**batch).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-3)  # the adapter changed something worth merging


def test_merged_seq2seq_equals_base_plus_adapter(tiny_t5, constant_summaries, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    info = train(
        TrainConfig(
            task="dialogue",
            model=tiny_t5,
            data=constant_summaries,
            runs_dir=str(tmp_path),
            run_name="t5",
            max_steps=10,
            learning_rate=3e-2,
        ),
        show_progress=False,
    )
    out = export_run("t5", tmp_path / "merged", merge=True, runs_dir=str(tmp_path))
    merged = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    loaded = load_model(get_task("dialogue"), tiny_t5, info["dir"])
    enc = loaded.tokenizer(["apple river cloud stone"], return_tensors="pt")
    enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        expected = loaded.model.generate(**enc, max_new_tokens=8, do_sample=False)
        got = merged.generate(**enc, max_new_tokens=8, do_sample=False)
    assert torch.equal(got, expected)


def test_adapter_export_and_model_card(sentiment_run, tmp_path):
    runs, info = sentiment_run
    out = export_run("exp", tmp_path / "adapter-export", runs_dir=str(runs))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    summary = json.loads(next((Path(info["dir"]) / "evaluations").glob("*/summary.json")).read_text())
    for needle in (
        "library_name: peft",
        "pipeline_tag: text-classification",
        "sentiment",
        f"`{Path(info['base_model']).name}`",  # a local base model by its folder's name
        "data: `sample`",
        "| lora_r | 8 |",
        "| learning_rate | 0.05 |",
        hide_paths(info["command"]),
        "n = 20 test examples",
        "| metric | base | tuned | delta | 95% CI | p-value | win/tie/loss |",
    ):
        assert needle in card, needle
    assert str(tmp_path.parent) not in card and "[More Information Needed]" not in card  # no server path, no template
    # The hub's eval-results metadata, as huggingface_hub reads it back.
    from huggingface_hub import ModelCard

    results = ModelCard.load(out / "README.md").data.eval_results
    macro = next(r for r in results if r.metric_type == "macro_f1")
    assert macro.task_type == "text-classification" and macro.dataset_split == "test"
    f1 = summary["metrics"]["macro_f1"]
    assert macro.metric_value == round(f1["tuned_mean"], 4)
    assert (
        f"| macro_f1 | {f1['base_mean']:.4f} | {f1['tuned_mean']:.4f} | {f1['delta_mean']:+.4f} | "
        f"[{f1['ci95'][0]:+.4f}, {f1['ci95'][1]:+.4f}] | {f1['p_value']:.3g} (permutation)"
    ) in card


def test_the_cards_lora_targets_name_what_they_are_in_this_model(tmp_path):
    """The sentiment preset asks for q_lin,v_lin (DistilBERT's names); in MiniLM they are query and value. The card's
    table says both, so it agrees with its training details."""
    from llmft.packaged import MINILM

    config = TrainConfig(task="sentiment", model=MINILM, runs_dir=str(tmp_path), run_name="mini", max_steps=1)
    train(config, show_progress=False)
    card = (export_run("mini", tmp_path / "out", runs_dir=str(tmp_path)) / "README.md").read_text()
    assert "| target_modules | q_lin,v_lin (in this model: query, value) |" in card, card
    assert "LoRA target modules: query, value" in card


def test_export_refuses_a_non_empty_folder_and_leaves_nothing_behind(sentiment_run, tmp_path, capsys):
    runs, _ = sentiment_run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert main(["export", "--run", "exp", "--out", str(tmp_path / "busy"), "--runs-dir", str(runs)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["busy"] and (tmp_path / "busy" / "keep.txt").read_text() == "mine"


class FakeHub:
    """A LOCAL STAND-IN for the Hugging Face hub API: these machines cannot reach the hub, so the two HfApi
    calls push_run makes are replaced by this recorder, which copies the uploaded folder into a local
    directory. It checks what llmft sends, not the hub's behaviour."""

    def __init__(self, root: Path):
        self.root, self.calls = root, []

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None, **_):
        self.calls.append(("create_repo", repo_id, private, repo_type))

    def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None, **_):
        import shutil

        shutil.copytree(folder_path, self.root / repo_id, dirs_exist_ok=True)
        self.calls.append(("upload_folder", repo_id, commit_message))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


def test_push_uploads_the_export_through_the_hub_api(sentiment_run, tmp_path, monkeypatch):
    import huggingface_hub

    runs, _ = sentiment_run
    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, *a, **k: fake.create_repo(*a, **k))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, *a, **k: fake.upload_folder(*a, **k))
    url = push_run("exp", "someone/llmft-sentiment", private=True, runs_dir=str(runs))
    assert url == "https://huggingface.co/someone/llmft-sentiment/commit/abc"
    assert fake.calls[0] == ("create_repo", "someone/llmft-sentiment", True, "model")
    assert fake.calls[1][0] == "upload_folder" and "exp" in fake.calls[1][2]
    uploaded = tmp_path / "hub" / "someone" / "llmft-sentiment"
    assert (uploaded / "adapter_model.safetensors").is_file() and "## Evaluation" in (
        uploaded / "README.md"
    ).read_text()


def test_push_errors_are_one_line(sentiment_run, monkeypatch, capsys):
    import huggingface_hub

    runs, _ = sentiment_run
    assert main(["push", "--run", "exp", "--repo-id", "../evil", "--runs-dir", str(runs)]) == 2
    assert "must look like user/name" in capsys.readouterr().err

    def refuse(self, *args, **kwargs):
        raise PermissionError("401 Unauthorized: invalid token\nmore detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)  # stand-in for a hub refusal
    assert main(["push", "--run", "exp", "--repo-id", "someone/x", "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "could not push to someone/x: 401 Unauthorized: invalid token" in err and "more detail" not in err
