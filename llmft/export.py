"""Export a run (adapter, or base+adapter merged into one model) with a model card, and push it to the hub."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .config import TrainConfig, hyperparameters
from .errors import LlmftError, first_line, hide_paths
from .loading import load_model, resolve_model
from .packaged import SMOLLM2, packaged_hub_id
from .refs import is_hub_id
from .results import EvalResult, data_label, latest_evaluation, markdown_safe
from .runs import COMPLETED, find_run, read_run
from .tasks import task_of_run
from .votes import source_text, tallies, tally_text

PIPELINE_TAGS = {"classification": "text-classification", "seq2seq": "summarization", "causal_lm": "text-generation"}
"""The hub's pipeline tag of each kind (a generation task on a decoder-only model is text generation)."""


def card_name(ref: str | None) -> str:
    """A model or data reference as a card shows it: a hub id as it is, a local folder or file by its name (never
    where this machine keeps it), the packaged models by their hub ids."""
    if not ref:
        return "-"
    if hub_id := packaged_hub_id(ref):
        return hub_id
    path = Path(ref)
    if path.is_absolute():
        return data_label(ref) if path.suffix else path.name
    return ref


def _rounded(value, digits: int = 4):
    return round(value, digits) if isinstance(value, float) else value


def model_card(
    info: dict, evaluation: EvalResult | None, merged: bool, gguf: bool = False, votes: list[dict] | None = None
):
    """The model card (a `huggingface_hub.ModelCard`, README.md) of an exported or downloaded run: what it is, how
    it was made (task, data, hyperparameters), and its latest evaluation, as text and as the hub's eval-results
    metadata. Models and data are named by hub id or by file and folder name, never by this machine's paths."""
    from huggingface_hub import EvalResult as HubEvalResult
    from huggingface_hub import ModelCard, ModelCardData

    task = task_of_run(info)
    cfg = info.get("config", {})
    resolved = info.get("lora_target_modules_resolved") or []

    def shown(name, value):
        """A setting as asked, and for the LoRA targets also what they are called in this model (q_lin is
        `query` in MiniLM), so the table agrees with the training details below."""
        if name == "target_modules" and resolved and sorted(value or []) != sorted(resolved):
            return f"{','.join(value)} (in this model: {', '.join(resolved)})"
        return value

    rows = "\n".join(f"| {k} | {markdown_safe(shown(k, v))} |" for k, v in hyperparameters(TrainConfig, cfg))
    library = "transformers" if merged else "peft"
    source = info.get("base_model_source") or {}
    base = source.get("model") or card_name(info["base_model"])  # a packaged model by its hub id
    data = card_name(info.get("data") or cfg.get("data"))
    kind = info.get("kind", task.kind.name)
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
    results = []
    if evaluation:
        evaluated_on = card_name(evaluation.data) if evaluation.data != "sample" else f"{task.name} sample"
        for row in evaluation.table():
            value = evaluation.metrics.get(row["metric"], {}).get("tuned_mean")
            if isinstance(value, int | float):
                results.append(
                    HubEvalResult(
                        task_type=PIPELINE_TAGS.get(kind, "text-generation"),
                        dataset_type=evaluated_on if is_hub_id(evaluated_on, needs_owner=True) else "local",
                        dataset_name=evaluated_on,
                        dataset_split=str(evaluation.split),
                        metric_type=row["metric"],
                        metric_value=round(float(value), 4),
                        metric_name=f"{row['metric']} (tuned; base {row['base']}, delta 95% CI {row['95% CI']})",
                    )
                )
    local_data = not cfg.get("data") or cfg.get("data") == "sample" or Path(str(cfg.get("data"))).is_absolute()
    hub_base = source or packaged_hub_id(info["base_model"]) or not Path(info["base_model"]).is_absolute()
    card_data = ModelCardData(
        base_model=base if hub_base else None,  # a hub id (a packaged model's too), never a folder's name
        library_name=library,
        pipeline_tag=PIPELINE_TAGS.get(kind),
        tags=["llmft", "lora", kind],
        datasets=None if local_data else [data],
        model_name=info["name"],
        eval_results=results or None,
    )
    lines = [
        f"# {info['name']}",
        "",
        f"A LoRA fine-tune of `{base}` for **{markdown_safe(task.name)}**: {markdown_safe(task.description)}",
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
        f"- data: `{data}` ({info.get('train_examples')} examples)",
        f"- LoRA target modules: {', '.join(info.get('lora_target_modules_resolved', []))}",
        f"- trained in full (head, modules the checkpoint lacked): {', '.join(info.get('trained_in_full') or ['-'])}",
        f"- steps: {info.get('step')}, final loss {_rounded(info.get('final_loss'))}, "
        f"duration {_rounded(info.get('duration_s'), 1)} s",
        f"- library versions: {info.get('versions')}",
        "",
        "| hyperparameter | value |",
        "|---|---|",
        rows,
        "",
        "Reproduce with (files and folders by name):",
        "",
        "```",
        hide_paths(info.get("command", "")),
        "```",
        "",
        "## Evaluation (base vs tuned, same examples)",
    ]
    if not evaluation:
        lines += ["", f"Not evaluated yet: `python -m llmft evaluate --task {task.name} --run {info['name']}`."]
    else:
        scorer = f", BERTScore scorer `{card_name(evaluation.scorer)}`" if evaluation.scorer else ""
        lines += [
            "",
            f"n = {evaluation.n} test examples ({markdown_safe(evaluation.data_name())}, split {evaluation.split}, "
            f"seed {evaluation.seed}, {evaluation.dtype} weights){scorer}. Headline metric: {evaluation.headline}.",
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
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


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
            _name_base_model(staging / "adapter_config.json", info)
        model_card(info, latest_evaluation(run_dir), merge, gguf, tallies(run_dir)).save(staging / "README.md")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _name_base_model(config_file: Path, info: dict) -> None:
    """peft records the base model as this machine loaded it: in an export, its hub id (a packaged model's too), or
    a local folder's name, never this machine's path."""
    import json

    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = (info.get("base_model_source") or {}).get("model") or card_name(
        info["base_model"]
    )
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


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
