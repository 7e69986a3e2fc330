"""Export a run (adapter, or base+adapter merged into one model) with a model card, and push it to the hub."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .config import TrainConfig, hyperparameters
from .errors import LlmftError, first_line
from .loading import load_model, resolve_model
from .packaged import SMOLLM2
from .refs import is_hub_id
from .results import EvalResult, latest_evaluation, markdown_safe
from .runs import COMPLETED, find_run, read_run
from .tasks import task_of_run
from .votes import source_text, tallies, tally_text


def model_card(
    info: dict, evaluation: EvalResult | None, merged: bool, gguf: bool = False, votes: list[dict] | None = None
) -> str:
    """README.md for an exported run: what it is, how it was made, and its latest evaluation."""
    task = task_of_run(info)
    cfg = info.get("config", {})
    rows = "\n".join(f"| {k} | {v} |" for k, v in hyperparameters(TrainConfig, cfg))
    library = "transformers" if merged else "peft"
    source = info.get("base_model_source") or {}
    base = source.get("model") or info["base_model"]  # a packaged model by its hub id, not this machine's path
    weights = (
        [
            f"- base weights: `{source['gguf_file']}` from `{source['package']}` ({source['quantization']}), "
            f"{source['converted']}"
        ]
        if source
        else []
    )
    files = (
        [
            "",
            "GGUF files for llama.cpp and Ollama: `model-f16.gguf`, `model-q8_0.gguf` (`ollama create NAME -f "
            "Modelfile`).",
        ]
        if gguf
        else []
    )
    lines = [
        "---",
        f"library_name: {library}",
        f"base_model: {base}",
        "tags:",
        "- llmft",
        "- lora",
        f"- {info.get('kind', task.kind.name)}",
        "---",
        "",
        f"# {info['name']}",
        "",
        f"A LoRA fine-tune of `{base}` for **{task.name}**: {task.description}",
        "This folder holds "
        + (
            "the base model with the adapter merged in (plain transformers, safetensors)."
            if merged
            else "the LoRA adapter (load it with peft on top of the base model)."
        ),
        *files,
        "",
        "## Training",
        *weights,
        f"- data: `{info.get('data')}` ({info.get('train_examples')} examples)",
        f"- LoRA target modules: {', '.join(info.get('lora_target_modules_resolved', []))}",
        f"- trained in full (head, modules the checkpoint lacked): {', '.join(info.get('trained_in_full') or ['-'])}",
        f"- steps: {info.get('step')}, final loss {info.get('final_loss')}, duration {info.get('duration_s')} s",
        f"- library versions: {info.get('versions')}",
        "",
        "| hyperparameter | value |",
        "|---|---|",
        rows,
        "",
        "Reproduce with:",
        "",
        "```",
        info.get("command", ""),
        "```",
        "",
        "## Evaluation (base vs tuned, same examples)",
    ]
    if not evaluation:
        lines += ["", f"Not evaluated yet: `python -m llmft evaluate --task {task.name} --run {info['name']}`."]
    else:
        scorer = f", BERTScore scorer `{evaluation.scorer}`" if evaluation.scorer else ""
        lines += [
            "",
            f"n = {evaluation.n} test examples ({evaluation.data_name()}, split {evaluation.split}, seed "
            f"{evaluation.seed}, {evaluation.dtype} weights){scorer}. Headline metric: {evaluation.headline}.",
            "",
            f"**Verdict: {evaluation.verdict}** — {markdown_safe(evaluation.verdict_text())}",
            *([f"- Selection: {markdown_safe(evaluation.selection)}"] if evaluation.selection else []),
            *(f"- Warning: {markdown_safe(w)}" for w in evaluation.warnings),
            "",
            evaluation.markdown_table(),
        ]
    if votes:
        lines += ["", "## Blind human votes (tuned vs base, shown as A and B in a random order)", ""]
        lines += [f"- {source_text(t['source'])}: {tally_text(t)}" for t in votes]
    return "\n".join(lines) + "\n"


def export_run(
    run: str, out: str | os.PathLike, merge: bool = False, runs_dir: str | None = None, gguf: bool = False
) -> Path:
    """Write run `run`'s adapter (or the merged model when `merge`) and a model card into `out`; with `gguf`,
    the merged model also as GGUF files (f16, q8_0) with an Ollama `Modelfile`.

    The folder is assembled next to `out` and renamed into place, so a failed export leaves nothing behind.
    """
    merge = merge or gguf
    run_dir = find_run(run, runs_dir)
    info = read_run(run_dir)
    if info.get("status") != COMPLETED or not (run_dir / "adapter").is_dir():
        raise LlmftError(f"run {run} has no final adapter (status {info.get('status')}): nothing to export")
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise LlmftError(f"{out} is a file; --out needs a new or empty folder")
    if out.exists() and any(out.iterdir()):
        raise LlmftError(f"{out} exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if merge:
            task = task_of_run(info)
            loaded = load_model(
                task,
                resolve_model(task, info["base_model"]),
                str(run_dir / "adapter"),
                head_seed=int(info.get("head_seed", 0)),
            )
            merged = loaded.model.merge_and_unload()
            merged.save_pretrained(staging, safe_serialization=True)
            loaded.tokenizer.save_pretrained(staging)
            if gguf:
                _write_gguf(merged, loaded.tokenizer, staging, info)
        else:
            shutil.copytree(run_dir / "adapter", staging, dirs_exist_ok=True)
        card = model_card(info, latest_evaluation(run_dir), merge, gguf, tallies(run_dir))
        (staging / "README.md").write_text(card, encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write_gguf(merged, tokenizer, folder: Path, info: dict) -> None:
    """The merged model as GGUF files and an Ollama Modelfile for the smaller one."""
    from .gguf_export import modelfile, write_gguf

    source = info.get("base_model_source") or {}
    pre = "smollm" if source.get("alias") == SMOLLM2 else "default"  # llama.cpp's pre-tokenizer name
    written = write_gguf(merged, tokenizer, folder, name=info["name"], pre=pre)
    stops = list(dict.fromkeys(t for t in (tokenizer.eos_token, "<|im_end|>") if t and t in tokenizer.get_vocab()))
    text = modelfile(written[-1].name, tokenizer, stops)
    (folder / "Modelfile").write_text(f"# ollama create {info['name']} -f Modelfile\n" + text, encoding="utf-8")


def push_run(
    run: str,
    repo_id: str,
    private: bool = False,
    merge: bool = False,
    runs_dir: str | None = None,
    token: str | None = None,
) -> str:
    """Export run `run` and upload it to the hub repo `repo_id` (token from HF_TOKEN or `hf auth login`).

    Returns the URL of the uploaded commit.
    """
    from huggingface_hub import HfApi

    if not is_hub_id(repo_id, needs_owner=True):
        raise LlmftError(f"--repo-id must look like user/name, got {repo_id!r}")
    with tempfile.TemporaryDirectory(prefix="llmft-push-") as tmp:
        folder = export_run(run, Path(tmp) / "export", merge=merge, runs_dir=runs_dir)
        api = HfApi(token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(
                folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=f"llmft: upload run {run}"
            )
        except Exception as err:  # network, auth and permission errors come in many types
            raise LlmftError(f"could not push to {repo_id}: {first_line(err)}") from None
    return str(getattr(commit, "commit_url", commit))
