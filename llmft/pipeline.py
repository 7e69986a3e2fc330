"""End-to-end jobs shared by the CLI and the app: open a run's model, evaluate a run or an adapter."""

from __future__ import annotations

import time
from pathlib import Path

from .data import load_examples, sample_examples
from .errors import LlmftError
from .evaluation import GenerationSettings, ProgressFn, evaluate_pair, write_results
from .models import LoadedModel, get_model, load_model, resolve_model
from .runs import COMPLETED, find_run, read_run, runs_home
from .tasks import TaskSpec, get_task


def open_model(
    task: TaskSpec,
    run: str | None = None,
    adapter: str | None = None,
    model: str | None = None,
    runs_dir: str | None = None,
    cached: bool = False,
    dtype: str = "auto",
) -> tuple[LoadedModel, dict | None]:
    """Base model with the adapter of `run` (a completed run) or `adapter` attached, and the run's info."""
    run_info, head_seed = None, 0
    if run:
        run_dir = find_run(run, runs_dir)
        run_info = {**read_run(run_dir), "dir": str(run_dir)}
        if run_info.get("task") != task.name:
            raise LlmftError(f"run {run} is a {run_info.get('task')!r} run, not {task.name!r}")
        if run_info.get("status") != COMPLETED or not (run_dir / "adapter").is_dir():
            raise LlmftError(
                f"run {run} has no final adapter (status {run_info.get('status')}); "
                f"pass --adapter with one of its checkpoints under {run_dir / 'checkpoints'}"
            )
        adapter, head_seed = str(run_dir / "adapter"), int(run_info.get("head_seed", 0))
        model_ref = resolve_model(task, model or run_info["base_model"])
    elif adapter:
        model_ref = resolve_model(task, model)
    else:
        raise LlmftError("give a run or an adapter to compare with the base model")
    loader = get_model if cached else load_model
    return loader(task, model_ref, adapter, head_seed=head_seed, dtype=dtype), run_info


def evaluate(
    task_name: str,
    run: str | None = None,
    adapter: str | None = None,
    model: str | None = None,
    data: str | None = None,
    split: str | None = None,
    n: int | None = None,
    seed: int = 0,
    scorer: str | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 32,
    out: str | None = None,
    runs_dir: str | None = None,
    columns: dict | None = None,
    progress: bool = True,
    on_progress: ProgressFn | None = None,
    cached_model: bool = False,
    dtype: str = "auto",
) -> dict:
    """Evaluate base vs tuned and write the results (into the run's evaluations/ and `out`).

    Returns the result dict with `written`: the folders written.
    """
    task = get_task(task_name)
    columns = columns or {}
    # Read the data first: a bad file should fail before minutes of model loading.
    examples = load_examples(task, data, split or task.test_split, **columns)
    loaded, run_info = open_model(task, run, adapter, model, runs_dir, cached=cached_model, dtype=dtype)
    preset = (run_info or {}).get("config", {}).get("preset", "quick")
    n = n if n is not None else task.preset(preset).eval_n
    if n < 1:
        raise LlmftError(f"n must be at least 1, got {n}")
    examples = sample_examples(examples, n, seed)
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens or task.max_target_tokens,
        batch_size=batch_size,
        max_input_tokens=task.max_input_tokens,
    )
    result = evaluate_pair(
        loaded,
        examples,
        settings,
        scorer=scorer,
        seed=seed,
        cache_dir=runs_home(runs_dir) / ".base-cache",
        progress=progress,
        on_progress=on_progress,
    )
    result.update(
        data=data or "sample",
        split=split or task.test_split,
        seed=seed,
        run=(run_info or {}).get("name"),
        evaluated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    written = []
    if run_info:
        folder = Path(run_info["dir"]) / "evaluations" / time.strftime("%Y%m%d-%H%M%S")
        written.append(write_results(result, folder))
    if out:
        written.append(write_results(result, out))
    result["written"] = written
    return result
