"""End-to-end jobs shared by the CLI and the app: open a run's model, evaluate a run or an adapter."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from .config import EvalConfig
from .context import Context
from .data import SAMPLE, bundled_path, describe_source, load_examples, sample_examples
from .errors import LlmftError, hide_paths
from .evaluation import GenerationSettings, ProgressFn, evaluate_pair
from .examples import text_hash
from .files import free_mb, is_disk_full
from .kinds import get_kind
from .loading import load_model, resolve_model
from .models import LoadedModel
from .refs import check_model_ref
from .results import EvalResult, data_label
from .runs import COMPLETED, TRAIN_HASHES, find_run, list_runs, read_run
from .tasks import TASK_FILE_SUFFIXES, TaskSpec, builtin_task_names, get_task, task_of_run, use_task


def open_model(
    ctx: Context,
    task: TaskSpec,
    run: str | None = None,
    adapter: str | None = None,
    model: str | None = None,
    cached: bool = False,
) -> tuple[LoadedModel, dict | None]:
    """Base model with the adapter of `run` (a completed run) or `adapter` attached, and the run's info.

    With `cached`, the model comes from (and stays in) the context's model cache.
    """
    run_info, head_seed = None, 0
    if run:
        task, run_info = run_task(ctx, task, run)
        run_dir = Path(run_info["dir"])
        if run_info.get("status") != COMPLETED or not (run_dir / "adapter").is_dir():
            raise LlmftError(
                f"run {run} has no final adapter (status {run_info.get('status')}); "
                f"pass --adapter with one of its checkpoints under {run_dir / 'checkpoints'}"
            )
        adapter, head_seed = str(run_dir / "adapter"), int(run_info.get("head_seed", 0))
        model_ref = resolve_model(task, model or run_info["base_model"], ctx.allowed_roots)
    elif adapter:
        model_ref = resolve_model(task, model, ctx.allowed_roots)
    else:
        raise LlmftError("give a run or an adapter to compare with the base model")

    def load():
        return load_model(task, model_ref, adapter, head_seed=head_seed, dtype=ctx.dtype, roots=ctx.allowed_roots)

    if not cached:
        return load(), run_info
    return ctx.model_cache.get((task.name, model_ref, adapter, head_seed, ctx.dtype), load), run_info


def run_task(ctx: Context, task: TaskSpec | str, run: str) -> tuple[TaskSpec, dict]:
    """The task of run `run` as it was trained (a file task's stored definition, labels included) and the
    run's info; refuses a run of another task."""
    run_dir = find_run(run, ctx.runs_dir)
    run_info = {**read_run(run_dir), "dir": str(run_dir)}
    name = task if isinstance(task, str) else task.name
    if run_info.get("task") != name:
        raise LlmftError(f"run {run} is a {run_info.get('task')!r} run, not {name!r}")
    return task_of_run(run_info), run_info


def default_test_data(task: TaskSpec, run_info: dict | None) -> str | None:
    """The data an evaluation reads when none is named: the task's bundled test sample (None); for a task without
    one (your own), the hub dataset the run trained on, whose test split is read. A run trained on a file has no
    test data but the file the user holds out: one line saying so, naming no server path."""
    if bundled_path(task, task.test_split).is_file():
        return None
    trained_on = ((run_info or {}).get("config") or {}).get("data")
    if trained_on and trained_on != SAMPLE and not Path(str(trained_on)).is_absolute():
        return trained_on  # a hub dataset: its own test split
    what = f"your file {data_label(trained_on)}" if trained_on else "no bundled sample"
    name = (run_info or {}).get("name", "this run")
    raise LlmftError(
        f"run {name} was trained on {what}, and its task {task.name!r} has no test sample of its own: evaluate it on "
        "a held-out file (in the app: Test data → upload; CLI: --data FILE) or a hub dataset split"
    )


def known_tasks(ctx: Context, runs: list[dict] | None = None) -> list[str]:
    """The built-in tasks and the file tasks of `runs` (default: every run in the runs home), made known by name.
    On a Space the app passes the runs a visitor may see: another visitor's own task stays theirs."""
    names = set(builtin_task_names())
    for info in list_runs(ctx.runs_dir) if runs is None else runs:
        if isinstance(info.get("task_def"), dict):
            try:
                names.add(use_task(task_of_run(info)).name)
            except LlmftError:
                pass  # a name defined twice: each run still evaluates with its own stored definition
    return sorted(names)


HEADLINE_WORDS = {"macro_f1": "macro-F1", "overall": "overall score (mean of ROUGE and BERTScore)"}


def metric_text(metric: str | None, headline: str) -> str:
    """A validation metric in words (`selection` is the kind's `headline` with ties broken by the loss)."""
    if metric == "selection":
        return f"{HEADLINE_WORDS.get(headline, headline)} (ties broken by the lower loss)"
    return str(metric)


def selection_note(info: dict) -> str | None:
    """How a search chose this run, for its evaluation (None: not a search's trial)."""
    search = info.get("search")
    if not search:
        return None
    validation = (info.get("validation") or {}).get("source") or "the validation split"
    rank = "the best" if search.get("best") else "one"
    headline = get_kind(info["kind"]).headline if info.get("kind") else "macro_f1"
    return (
        f"{rank} of {search.get('trials', '?')} trials of search {search.get('study')}, chosen by validation "
        f"{metric_text(search.get('metric'), headline)} on {validation}; the test split was not used in the search"
    )


def generation_cap(task: TaskSpec, run_info: dict | None, asked: int | None) -> tuple[int, str]:
    """(max new tokens, where the number comes from), the same for base and tuned: the one asked for, else the
    cap fitted to the run's training references (run.json `max_new_tokens`), else the task's target length."""
    fitted = ((run_info or {}).get("max_new_tokens") or {}).get("value")
    if asked:
        return asked, "asked for (--max-new-tokens)"
    if fitted:
        p95 = run_info["max_new_tokens"].get("reference_tokens_p95")
        return fitted, f"fitted to the run's training references (95th percentile {p95} tokens, +25% +4)"
    return task.max_target_tokens, "the task's max_target_tokens"


def resolve_task(ctx: Context, task_ref: str, run: str | None = None) -> TaskSpec:
    """The task named by `task_ref` (a name or a task file); with a run, the run's own task, which keeps a
    file task's definition and labels, so its name is enough."""
    if not run:
        return get_task(task_ref)
    is_file = task_ref.lower().endswith(TASK_FILE_SUFFIXES)
    return run_task(ctx, get_task(task_ref).name if is_file else task_ref, run)[0]


def evaluate(
    ctx: Context,
    config: EvalConfig,
    progress: bool = True,
    on_progress: ProgressFn | None = None,
    cached_model: bool = False,
    evaluations_dir: Path | None = None,
) -> tuple[EvalResult, list[dict]]:
    """Evaluate base vs tuned and write the results (into the run's evaluations/, or `evaluations_dir`, and
    `config.out`).

    Returns:
        The result, and the paths written (one dict per folder).
    """
    task = resolve_task(ctx, config.task, config.run)
    if config.scorer:
        check_model_ref(config.scorer, ctx.allowed_roots)
    if config.out:
        _check_out(Path(config.out).expanduser(), config.overwrite)
    # Read the data first: a bad file should fail before minutes of model loading.
    split = config.split or task.test_split
    data = config.data
    if not data and config.run:  # the run's test data: the task's sample, else the hub dataset it trained on
        data = default_test_data(task, read_run(find_run(config.run, ctx.runs_dir)))
    examples = load_examples(task, data, split, **config.columns())
    loaded, run_info = open_model(ctx, task, config.run, config.adapter, config.model, cached=cached_model)
    preset = (run_info or {}).get("config", {}).get("preset", "quick")
    n = config.n if config.n is not None else task.preset(preset).eval_n
    examples = sample_examples(examples, n, config.seed)
    overlap = _training_overlap(run_info, examples)
    max_new_tokens, cap_source = generation_cap(task, run_info, config.max_new_tokens)
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, batch_size=config.batch_size, max_input_tokens=task.max_input_tokens
    )
    result = evaluate_pair(
        loaded,
        examples,
        settings,
        scorer=config.scorer,
        seed=config.seed,
        cache_dir=ctx.runs_dir / ".base-cache",
        progress=progress,
        on_progress=on_progress,
    )
    if task.kind.generates:
        result.generation["max_new_tokens_source"] = cap_source
    result.data = describe_source(data)
    result.split = "whole file" if Path(result.data).is_absolute() else split  # a local file is used whole
    if ctx.access.space:  # a visitor's summary.json names their file and folders, not where the server keeps them
        result.data, result.model, result.adapter = (
            hide_paths(v) if v else v for v in (result.data, result.model, result.adapter)
        )
    result.run = (run_info or {}).get("name")
    result.selection = selection_note(run_info or {})
    result.evaluated_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    result.fingerprint = evaluation_fingerprint(loaded, examples, result)
    if overlap:
        line = f"{overlap} of {len(examples)} evaluation examples were training examples of this run"
        result.warnings.append(line + ": they flatter the tuned model")
        result.judge(line)
    written = []
    home = evaluations_dir or (Path(run_info["dir"]) / "evaluations" if run_info else None)
    targets = [_new_evaluation_folder(home)] if home else []
    targets += [Path(config.out)] if config.out else []
    for folder in targets:
        try:
            written.append(result.write(folder))
        except (OSError, RuntimeError) as err:
            if not is_disk_full(err):
                raise
            if folder.parent.name == "evaluations":
                shutil.rmtree(folder, ignore_errors=True)  # never half an evaluation folder
            raise LlmftError(
                f"the disk is full: {free_mb(folder.parent):.0f} MB free in {folder.parent}; the evaluation "
                f"ran but its results could not be saved in {folder}"
            ) from None
    return result, written


def evaluation_fingerprint(loaded: LoadedModel, examples, result: EvalResult) -> dict:
    """What two evaluations must share to be ranked together: the task, the data (by name and by the hash of
    every row's input and reference), n, the sample seed, the generation settings, the prompt and chat
    template, the labels and the scorer. No server path: a local file is named by its file name; its rows
    say the rest. `id` is the hash of all of it."""
    import hashlib
    import json

    rows = hashlib.sha256(
        json.dumps([[text_hash(ex.text), ex.label, list(ex.references or [])] for ex in examples]).encode()
    ).hexdigest()
    kind = loaded.task.kind
    template = kind.run_info(loaded.tokenizer).get("chat_template")
    fingerprint = {
        "task": loaded.task.name,
        "data": result.data_name(),
        "split": result.split,
        "rows_sha256": rows,
        "n": len(examples),
        "seed": result.seed,
        "generation": {k: v for k, v in result.generation.items() if k not in ("batch_size", "max_new_tokens_source")},
        "prompt": loaded.task.prompt,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
        "labels": list(loaded.task.labels) or None,
        "scorer": result.scorer,
    }
    fingerprint["id"] = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    return fingerprint


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse to write into a file, or over earlier results unless asked to."""
    if out.exists() and not out.is_dir():
        raise LlmftError(f"{out} is a file; --out needs a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise LlmftError(f"{out} is not empty: choose a new folder, or pass --overwrite to replace its results")


MAX_TRAINING_OVERLAP = 0.5
"""Refuse an evaluation whose examples are at least this share of the run's own training inputs."""


def _training_overlap(run_info: dict | None, examples) -> int:
    """How many `examples` the run trained on; raises when they are mostly training examples."""
    import json

    if not run_info:
        return 0
    path = Path(run_info["dir"]) / TRAIN_HASHES
    try:
        trained = set(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return 0  # a run from before llmft kept its training fingerprints
    overlap = sum(text_hash(ex.text) in trained for ex in examples)
    if overlap >= MAX_TRAINING_OVERLAP * len(examples):
        raise LlmftError(
            f"{overlap} of {len(examples)} evaluation examples are training examples of run {run_info['name']}: "
            "evaluate on held-out data (the test split, or a file the run did not train on)"
        )
    return overlap


def _new_evaluation_folder(parent: Path) -> Path:
    """A folder named by the time that no other evaluation uses (two in one second get -2, -3, ...)."""
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        folder = parent / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise LlmftError(f"too many evaluations in one second under {parent}")
