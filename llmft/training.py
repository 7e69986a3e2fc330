"""LoRA fine-tuning with transformers `Trainer` + peft, writing a run directory.

The same `train()` serves the CLI and the app: progress and cancellation go through callbacks (`callbacks.py`),
and the run directory's run.json is updated as training goes, so any reader (another process, a reloaded
page) sees the state. `prepare` checks a run against the world once (task, model, data); `train` then loads,
builds the Trainer, trains and records.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .callbacks import Progress, ProgressCallback, TimeBudget, early_stopped, scheduler_type
from .config import TrainConfig
from .data import (
    carve_validation,
    describe_source,
    infer_labels,
    is_hub_source,
    load_examples,
    sample_examples,
    validation_size,
)
from .errors import LlmftError
from .examples import Example, text_hash
from .files import free_mb, is_disk_full, write_json_atomic
from .kinds import tie_broken
from .loading import load_base, resolve_model, task_for_model
from .models import (
    device_and_dtype,
    dtype_name,
    dtype_reason,
    input_limit,
    lora_update_is_zero,
    model_config,
    resolve_target_modules,
)
from .packaged import model_source
from .runs import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    TRAIN_HASHES,
    mark_failed_on_full_disk,
    new_run_name,
    process_identity,
    read_run,
    runs_home,
    update_run,
)
from .tasks import TASK_FILE, TaskSpec, use_task, write_task_file

__all__ = ["PreparedRun", "Progress", "TrainConfig", "prepare", "train"]


def library_versions() -> dict:
    import peft
    import torch
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


@dataclass
class PreparedRun:
    """A checked training run, ready to start: everything that can fail on user input has been done."""

    config: TrainConfig
    task: TaskSpec
    """The config's task with the kind that fits the model (`loading.task_for_model`)."""
    model_ref: str
    """An absolute local folder or a hub id (see `refs.check_model_ref`)."""
    examples: list[Example]
    run_dir: Path
    dtype: str
    """The weights' dtype name this run trains with (`float32` or `bfloat16`)."""
    val_examples: list[Example] = field(default_factory=list)
    """Validation rows: carved from the training data, or a hub dataset's own validation split; never test rows."""
    val_source: str = "none"
    """Where the validation rows came from, in words (run.json `validation.source`)."""
    model_config: object = None
    """The model's transformers config, read once here."""


def prepare(config: TrainConfig, resume: bool = False, roots: list[Path] | None = None) -> PreparedRun:
    """Check `config` against the world once: the run name, the model reference, the data.

    Args:
        config: the run's definition (a missing run name is filled in); its task is resolved already.
        resume: the run must exist (to continue it) rather than not exist.
        roots: folders local models may come from (None: anywhere).
    Raises:
        LlmftError: for anything the user can fix; nothing has been written then.
    """
    task = config.task_spec
    run_dir = _claim_run_dir(config, task, resume)
    model_ref = resolve_model(task, config.model, roots)
    hf_config = model_config(model_ref)
    task = task_for_model(task, model_ref, hf_config)
    if task.labels_from_data:  # a task file without labels: they are the training data's
        task = use_task(task.with_labels(infer_labels(task, config.data, task.train_split, config.label_column)))
    examples = load_examples(
        task,
        config.data,
        task.train_split,
        config.text_column,
        config.target_columns,
        config.label_column,
        config.label_map,
    )
    examples = sample_examples(examples, config.train_samples or None, config.seed)
    examples, val_examples, val_source = _validation(task, config, examples)
    dtype = dtype_name(device_and_dtype(config.dtype)[1])
    return PreparedRun(config, task, model_ref, examples, run_dir, dtype, val_examples, val_source, hf_config)


def _claim_run_dir(config: TrainConfig, task: TaskSpec, resume: bool) -> Path:
    """The run's folder: a new name that is free (filled in when missing), or an existing run to resume."""
    home = runs_home(config.runs_dir)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if config.run_name is None:
        if world_size > 1:
            raise LlmftError("give --run-name when training with several processes: they must share one run")
        config.run_name = new_run_name(task.name)
    run_dir = home / config.run_name
    if resume:
        if not (run_dir / "run.json").is_file():
            raise LlmftError(f"run {config.run_name!r} not found in {home}: nothing to resume")
        live = read_run(run_dir) if int(os.environ.get("RANK", "0")) == 0 else {}
        if live.get("status") == RUNNING:  # read_run reports a dead trainer's run as failed
            raise LlmftError(
                f"run {config.run_name} is still training (pid {live.get('pid')} on {live.get('host')}); "
                "cancel it before resuming"
            )
    elif int(os.environ.get("RANK", "0")) == 0 and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()  # an empty folder (a start that died before writing anything) does not take the name
    elif int(os.environ.get("RANK", "0")) == 0 and run_dir.exists():
        raise LlmftError(f"run {config.run_name!r} already exists in {home}; choose another --run-name")
    return run_dir


DATA_FIELDS = (
    "task",
    "model",
    "data",
    "train_samples",
    "val_split",
    "seed",
    "text_column",
    "target_columns",
    "label_column",
    "label_map",
    "dtype",
    "runs_dir",
)
"""TrainConfig fields that decide the model and which rows train and validate (what `prepare` reads)."""


def prepare_next(prepared: PreparedRun, config: TrainConfig) -> PreparedRun:
    """Another run on the rows `prepared` already read, with other hyperparameters (a search's next trial):
    only its name is checked; the data is not read again unless `config` changes what `prepare` reads."""
    if any(getattr(config, name) != getattr(prepared.config, name) for name in DATA_FIELDS):
        return prepare(config)
    return dataclasses.replace(prepared, config=config, run_dir=_claim_run_dir(config, prepared.task, False))


def plan(config: TrainConfig, rows: int | None, seconds_per_step: float | None = None, pace_of: str = "") -> str:
    """What training `config` will do, in words, before it starts: the rows it trains on (`rows`: the data's, None
    when unknown until it is read, as a hub dataset's), the validation rows, the steps and passes over the data, and
    where the time budget will stop it (`seconds_per_step`: this server's pace for this model and batch size, from
    run `pace_of`; None: not measured yet). The same arithmetic as `prepare` and Trainer; the budget's fit is an
    estimate, measured again when training starts (`callbacks.TimeBudget`)."""
    import math

    batch = config.batch_size * (config.grad_accum or 1)
    if rows is None:
        used, train, val = None, None, None
        data = "as many rows as the data has (counted when training reads them)"
    else:
        used = min(rows, config.train_samples) if config.train_samples else rows
        val = validation_size(used, config.val_split) if config.val_split else 0
        train = max(0, used - val)
        data = f"{train} training rows" + (f" (+{val} held out to validate)" if val else "")
        if config.train_samples and config.train_samples > rows:
            data += f", all the data has (train samples, {config.train_samples}, is an upper bound)"
    if config.max_steps:
        steps = config.max_steps
        epochs = f", {steps * batch / train:.2g} passes over them" if train else ""
    elif train:
        per_epoch = math.ceil(math.ceil(train / config.batch_size) / (config.grad_accum or 1))
        steps = math.ceil((config.epochs or 1) * per_epoch)
        epochs = f" ({config.epochs:g} epochs of {per_epoch} batches of {batch})"
    else:
        steps, epochs = None, f"{config.epochs:g} epochs"
    text = f"**{config.preset} preset**: {data}; " + (f"{steps} steps{epochs}" if steps else epochs)
    budget = config.time_budget
    if budget and seconds_per_step and steps:
        fits = int(budget / seconds_per_step)
        if fits < steps:
            passes = f" ({fits * batch / train:.2g} passes over the rows)" if train else ""
            text += (
                f". Its {budget:g} s budget stops it after about {fits} steps{passes} at this server's pace "
                f"({seconds_per_step:.2g} s a step in run {pace_of})"
            )
        else:
            text += f", about {steps * seconds_per_step:.0f} s at this server's pace (within its {budget:g} s budget)"
    elif budget:
        text += f", or fewer: it stops at its {budget:g} s budget (this server's pace is measured at the start)"
    return text + "."


def seconds_per_step(runs: list[dict], config: TrainConfig) -> tuple[float | None, str]:
    """This server's pace for `config`'s model and batch size: seconds a step in the newest completed run of
    both (`runs`: run infos, newest first), and its name; (None, "") when none has run."""
    for info in runs:
        cfg = info.get("config") or {}
        same = cfg.get("model") == config.model and cfg.get("batch_size") == config.batch_size
        if same and info.get("status") == COMPLETED and info.get("step") and info.get("train_runtime_s"):
            return float(info["train_runtime_s"]) / int(info["step"]), str(info["name"])
    return None, ""


def _validation(task: TaskSpec, config: TrainConfig, examples: list[Example]):
    """(training rows, validation rows, their source in words). A hub dataset's own validation split is used
    when it has one; otherwise `val_split` rows are carved from the training rows by seed. The test split is
    never read here."""
    if not config.val_split:
        return examples, [], "none"
    if is_hub_source(config.data) and task.validation_split:
        try:
            own = load_examples(
                task,
                config.data,
                task.validation_split,
                config.text_column,
                config.target_columns,
                config.label_column,
                config.label_map,
            )
        except LlmftError:
            own = []  # no such split: carve one
        if own:
            # As many rows as carving would hold out (a fraction of the training rows, or the count).
            own = sample_examples(own, validation_size(len(examples), config.val_split), config.seed)
            return examples, own, f"{len(own)} rows of the dataset's {task.validation_split!r} split"
    train_rows, val_rows = carve_validation(examples, config.val_split, config.seed)
    return train_rows, val_rows, f"{len(val_rows)} rows carved from the training data (seed {config.seed})"


def train(
    config: TrainConfig | PreparedRun,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    resume: bool = False,
    show_progress: bool = True,
    callbacks: list | None = None,
) -> dict:
    """Fine-tune a LoRA adapter as `config` says and return the final run.json content.

    Args:
        config: the run's definition, or a run `prepare` already checked.
        on_progress: called after every optimizer step.
        cancel: set it to stop training after the current step; the run ends `cancelled`.
        resume: continue the existing run `config.run_name` from its last checkpoint.
        show_progress: show the Trainer's progress bar on the terminal.
        callbacks: more Trainer callbacks (a search's trial reporter).
    """
    prepared = config if isinstance(config, PreparedRun) else prepare(config, resume)
    config, task, run_dir = prepared.config, prepared.task, prepared.run_dir
    # Under torchrun / accelerate launch every process runs this function; only the main one writes.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    is_main = int(os.environ.get("RANK", "0")) == 0
    base = load_base(
        task,
        prepared.model_ref,
        head_seed=config.seed,
        dtype=prepared.dtype,
        dropout=config.base_dropout,
        config=prepared.model_config,
    )
    targets = resolve_target_modules(base.model, config.target_modules)
    trained_in_full = task.kind.trained_in_full(base.model, base.fresh_modules)
    started = time.time()
    if resume:
        info = {**read_run(run_dir), "status": RUNNING, **process_identity(), "error": None, "world_size": world_size}
        info["resumed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    else:
        info = _new_record(prepared, base.tokenizer, targets, trained_in_full, world_size)

    def record(**fields) -> dict:
        """Write fields into run.json (main process); other processes only keep their local copy."""
        info.update(fields)
        return update_run(run_dir, **fields) if is_main else dict(info)

    _start_record(prepared, record, info, is_main, resume)
    try:
        trainer, progress_cb = _build_trainer(
            prepared, base, targets, on_progress, cancel, show_progress, started, info
        )
        for extra in callbacks or []:
            trainer.add_callback(extra)
        last = _last_checkpoint(run_dir / "checkpoints") if resume else None
        result = trainer.train(resume_from_checkpoint=last)
        cancelled = bool(cancel and cancel.is_set())
        if not cancelled and trainer.is_world_process_zero():
            _save_adapter_atomically(trainer.model, base.tokenizer, run_dir / "adapter")
        final = record(
            status=CANCELLED if cancelled else COMPLETED,
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            duration_s=round(time.time() - started, 2),
            **_outcome(trainer, result, progress_cb),
        )
    except KeyboardInterrupt:
        record(status=CANCELLED, error="interrupted by the user")
        raise
    except BaseException as err:
        if not is_disk_full(err):
            record(status=FAILED, error=f"{type(err).__name__}: {err}")
            raise
        raise _full_disk_error(prepared, is_main) from None
    return {**final, "dir": str(run_dir)}


def _new_record(prepared: PreparedRun, tokenizer, targets, trained_in_full, world_size: int) -> dict:
    """run.json of a run about to start: what it trains, on what, how, and where it runs."""
    config, task = prepared.config, prepared.task
    return {
        "name": config.run_name,
        "task": task.name,
        "task_def": task.definition,
        "kind": task.kind.name,
        "base_model": prepared.model_ref,
        "base_model_source": model_source(prepared.model_ref),  # a packaged model: its file and conversion
        "data": describe_source(config.data),
        "train_examples": len(prepared.examples),
        "validation": {"source": prepared.val_source, "examples": len(prepared.val_examples)},
        "config": asdict(config),
        "lora_target_modules_resolved": targets,
        "trained_in_full": trained_in_full,
        **task.kind.run_info(tokenizer),
        # The generation cap for validation, evaluation and predict: fitted to the training references.
        "max_new_tokens": task.kind.fitted_max_new_tokens(tokenizer, prepared.examples, config.max_target_tokens),
        "head_seed": config.seed,
        "dtype": prepared.dtype,
        "dtype_reason": dtype_reason(prepared.config.dtype, prepared.dtype),
        "versions": library_versions(),
        "command": config.cli_command(),
        "argv": shlex.join(sys.argv),
        "status": RUNNING,
        **process_identity(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loss_history": [],
        "step": 0,
        "phase": f"model loaded; tokenizing {len(prepared.examples)} rows and adding the LoRA adapter",
        "world_size": world_size,
    }


def _start_record(prepared: PreparedRun, record, info: dict, is_main: bool, resume: bool) -> None:
    """Write run.json, and for a new run the fingerprints of the texts it trains on and a file task's definition.
    A full disk before anything started frees the name again."""
    run_dir = prepared.run_dir
    try:
        record(**info)
    except OSError as err:
        if is_main and not resume and is_disk_full(err):  # nothing was started: the name stays free
            shutil.rmtree(run_dir, ignore_errors=True)
            raise LlmftError(f"the disk is full: {free_mb(run_dir.parent):.0f} MB free in {run_dir.parent}") from None
        raise
    if is_main and not resume:  # which texts were trained on: an evaluation on them is flagged or refused
        # Validation rows too: they chose the kept step, so an evaluation on them would flatter the run.
        seen = [*prepared.examples, *prepared.val_examples]
        write_json_atomic(run_dir / TRAIN_HASHES, sorted({text_hash(ex.text) for ex in seen}))
        if prepared.task.definition is not None:  # the task file beside the run, labels filled in
            write_task_file(prepared.task, run_dir / TASK_FILE)


def _outcome(trainer, result, progress_cb: ProgressCallback) -> dict:
    """run.json's account of a finished training loop: steps, losses, validations, the kept step, the budget."""
    runtime = result.metrics["train_runtime"]
    return dict(
        step=trainer.state.global_step,
        epochs=round(trainer.state.epoch or 0.0, 3),  # passes over the training data, all processes together
        train_loss=result.training_loss,
        final_loss=progress_cb.last_loss,
        loss_history=progress_cb.history,
        val_history=progress_cb.val_history,
        **_best(trainer, progress_cb),
        time_budget=next(
            (cb.record() for cb in trainer.callback_handler.callbacks if isinstance(cb, TimeBudget)), None
        ),
        tokens_seen=progress_cb.tokens,
        train_runtime_s=round(runtime, 3),
        # Real (non-padding) input tokens per second of the training loop itself.
        tokens_per_s=round(progress_cb.tokens / max(runtime, 1e-9), 1),
    )


def _full_disk_error(prepared: PreparedRun, is_main: bool) -> LlmftError:
    """A full disk during training: no half-written checkpoint is left, the run is marked failed (it can be
    resumed once there is room), and the error tells the user in one line."""
    run_dir, checkpoints = prepared.run_dir, prepared.run_dir / "checkpoints"
    message = (
        f"the disk is full: {free_mb(run_dir):.0f} MB free in {run_dir.parent}; run {prepared.config.run_name} "
        "stopped (free space, then --resume it from its last checkpoint, or delete it)"
    )
    for partial in set(checkpoints.glob("checkpoint-*")) - set(complete_checkpoints(checkpoints)):
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left
    if is_main:
        mark_failed_on_full_disk(run_dir, status=FAILED, error=message)
    return LlmftError(message)


CHECKPOINT_FILES = ("trainer_state.json", "adapter_model.safetensors", "optimizer.pt")


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """Checkpoint folders that were fully written, oldest first.

    The Trainer writes trainer_state.json last, but a process killed mid-save can leave a folder with some
    files missing; such a folder is never resumed from.
    """
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    complete = [p for p in found if all((p / f).is_file() and (p / f).stat().st_size > 0 for f in CHECKPOINT_FILES)]
    return sorted(complete, key=lambda p: int(p.name.split("-")[-1]))


def _last_checkpoint(checkpoints: Path) -> str | None:
    complete = complete_checkpoints(checkpoints)
    return str(complete[-1]) if complete else None


def _save_adapter_atomically(model, tokenizer, dest: Path) -> None:
    """Write the adapter into a temporary folder, then rename it into place: never half an adapter."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = "the disk is full" if err.errno == errno.ENOSPC else err.strerror or str(err)
        raise LlmftError(f"could not save the adapter to {dest.parent}: {reason}") from None
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def _best(trainer, callback) -> dict:
    """run.json's record of the kept step: which validation step was best, by what, and whether the saved
    adapter is that step's (Trainer's `load_best_model_at_end`)."""
    if not callback.val_history:
        return {"best": None}
    state = trainer.state
    checkpoint = state.best_model_checkpoint
    step = int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None
    value = trainer.kept[1] if trainer.kept and trainer.kept[0] == step else state.best_metric
    best = {
        "step": step,
        "metric": callback.selection,
        "value": None if value is None else round(float(value), 6),
        "kept": bool(checkpoint) and trainer.args.load_best_model_at_end,
        "early_stopped": early_stopped(trainer),
    }
    if trainer.top and trainer.top[0] != step:  # a later step within noise of the best score was kept
        best["top"] = {"step": trainer.top[0], "value": round(trainer.top[1], 6), "rule": "within one standard error"}
    return {"best": best}


FIXED_ARGUMENTS = dict(
    logging_steps=1,
    save_total_limit=2,  # with load_best_model_at_end the best checkpoint is always kept as well
    remove_unused_columns=False,
    label_names=["labels"],
    dataloader_pin_memory=False,
    ddp_find_unused_parameters=False,  # LoRA uses every trainable weight; the extra graph walk only costs
    include_num_input_tokens_seen="non_padding",
)
"""TrainingArguments every run uses."""
FROM_CONFIG = {
    "per_device_train_batch_size": ("batch_size", None),
    "gradient_accumulation_steps": ("grad_accum", None),
    "learning_rate": ("learning_rate", None),
    "warmup_steps": ("warmup_ratio", 0.0),  # a float below 1 is a share of the steps
    "weight_decay": ("weight_decay", 0.0),
    "max_steps": ("max_steps", -1),
    "num_train_epochs": ("epochs", 1.0),
    "report_to": ("report_to", None),
    "seed": ("seed", None),
    "data_seed": ("seed", None),
}
"""TrainingArguments name -> (the TrainConfig field it takes, its value when the field is None)."""


@dataclass
class _Schedule:
    """When a run validates and checkpoints, derived from its length and the config."""

    total: int
    """Planned optimizer steps."""
    by_epoch: bool
    eval_steps: int
    save_steps: int
    selection: str | None
    """The validation metric that picks the kept step (None: no validation)."""


def _schedule(config: TrainConfig, kind, n_rows: int, validating: bool) -> _Schedule:
    steps_per_epoch = max(1, -(-n_rows // (config.batch_size * config.grad_accum)))
    total = config.max_steps or max(1, int(round(config.epochs * steps_per_epoch)))
    by_epoch = validating and config.eval_steps is None and config.max_steps is None and not config.time_budget
    eval_steps = config.eval_steps or config.save_steps or max(1, total // 5)
    save_steps = config.save_steps or (eval_steps if validating else max(10, total // 5))
    if validating and save_steps % eval_steps:
        # Checkpoints must fall on validation steps, so the best one can be kept (load_best_model_at_end).
        raise LlmftError(
            f"save-steps ({save_steps}) must be a multiple of eval-steps ({eval_steps}) so the best validated step "
            "has a checkpoint; or give --val-split 0"
        )
    selection = kind.selection(config.val_generate) if validating else None
    return _Schedule(total, by_epoch, eval_steps, save_steps, selection)


def _training_arguments(prepared: PreparedRun, schedule: _Schedule, metrics: bool, show_progress: bool):
    """TrainingArguments: `FROM_CONFIG`'s fields, `FIXED_ARGUMENTS`, and what the schedule and device decide."""
    import torch
    from transformers import TrainingArguments

    config = prepared.config
    args = {
        name: default if getattr(config, f) is None else getattr(config, f)
        for name, (f, default) in FROM_CONFIG.items()
    }
    if schedule.selection is not None:
        args.update(
            eval_strategy="epoch" if schedule.by_epoch else "steps",
            eval_steps=None if schedule.by_epoch else schedule.eval_steps,
            load_best_model_at_end=True,
            metric_for_best_model=schedule.selection,
            greater_is_better=schedule.selection != "loss",
            prediction_loss_only=not metrics,
            per_device_eval_batch_size=config.batch_size,
        )
    if config.report_to == "tensorboard":  # its files beside the run, not inside the checkpoints
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(prepared.run_dir / "tensorboard")
    return TrainingArguments(
        output_dir=str(prepared.run_dir / "checkpoints"),
        lr_scheduler_type=scheduler_type(config),
        save_strategy="epoch" if schedule.by_epoch else "steps",
        save_steps=schedule.save_steps,
        disable_tqdm=not show_progress,
        use_cpu=not torch.cuda.is_available(),
        bf16=prepared.dtype == "bfloat16",
        **FIXED_ARGUMENTS,
        # Random batches unless asked: grouping by length is faster but changes what a short run learns.
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        **args,
    )


def _peft_model(prepared: PreparedRun, base, targets):
    """The base model wrapped with a fresh LoRA adapter (seeded), its trainable weights in fp32."""
    import torch
    from peft import get_peft_model

    config, kind = prepared.config, prepared.task.kind
    lora = kind.lora_config(
        base.model, targets, config.lora_r, config.lora_alpha, config.lora_dropout, base.fresh_modules
    )
    torch.manual_seed(config.seed)  # LoRA A-matrix init
    model = get_peft_model(base.model, lora)
    for param in model.parameters():
        if param.requires_grad:  # LoRA and head weights train in fp32 whatever the base weights' dtype
            param.data = param.data.float()
    return model


def _build_trainer(prepared: PreparedRun, base, targets, on_progress, cancel, show_progress, started, info):
    """The Trainer of a prepared run: LoRA model, tokenized rows, schedule, arguments and callbacks."""
    from datasets import Dataset

    config, task, val_examples = prepared.config, prepared.task, prepared.val_examples
    tokenizer, kind = base.tokenizer, prepared.task.kind
    collator = kind.collator(tokenizer, base.model)
    model = _peft_model(prepared, base, targets)
    max_input = input_limit(tokenizer, config.max_input_tokens)
    rows = kind.features(task, tokenizer, prepared.examples, max_input, config.max_target_tokens)
    val_rows = (
        kind.features(task, tokenizer, val_examples, max_input, config.max_target_tokens) if val_examples else []
    )
    validating = bool(val_rows)
    schedule = _schedule(config, kind, len(rows), validating)
    compute_metrics = kind.validation_metrics(task) if validating else None
    generated = None
    if validating and config.val_generate:
        cap = (info.get("max_new_tokens") or {}).get("value") or config.max_target_tokens
        generated = kind.validation_generator(task, tokenizer, val_examples[: config.val_generate], max_input, cap)
    args = _training_arguments(prepared, schedule, compute_metrics is not None, show_progress)
    callback = ProgressCallback(
        prepared.run_dir, schedule.total, on_progress, cancel, started, info, schedule.selection, config.time_budget
    )
    callbacks = [callback]
    if validating and config.early_stopping:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping))
    if config.time_budget:
        callbacks.append(TimeBudget(config.time_budget, config, len(val_rows), schedule.total))
    trainer = _trainer_class()(
        generated,
        kind,
        task,
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(val_rows) if validating else None,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
        compute_metrics=compute_metrics,
    )
    if not show_progress:  # no progress bar, and no log dict printed per step in its place
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer, callback


@functools.cache
def _trainer_class():
    """Trainer whose validation also generates for some validation rows and scores them (`generated`: a kind's
    `validation_generator`), so a generation task's headline is logged and can pick the kept step, and whose
    training steps take the batch as the kind shapes it (`Kind.training_batch`). Built on first use: importing
    Trainer is slow and most importers of this module never train."""
    import numpy as np
    from transformers import Trainer

    from .stats import Sample, paired_se, within_noise  # deferred with numpy

    class GeneratingTrainer(Trainer):
        sample = None
        """The latest validation's per-example results (`stats.Sample`), None where only a score is known."""
        top = None
        """(step, value, sample) of the best-scoring validation so far."""
        kept = None
        """(step, value) of the kept step: the latest one within noise of the best."""

        def __init__(self, generated, kind, spec, **kwargs):
            super().__init__(**kwargs)
            self.generated, self.kind, self.spec = generated, kind, spec

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training and not return_outputs:  # a training step: the kind may ask for less work
                inputs = self.kind.training_batch(inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def _determine_best_metric(self, metrics, trial):
            # A step whose LoRA update is still zero (a first step inside warmup runs at learning rate 0) is the
            # base model: it is never the kept step, whatever its validation score.
            if lora_update_is_zero(self.model):
                return False
            sample, self.sample = self.sample, None
            step, key = self.state.global_step, self.args.metric_for_best_model
            value = float(metrics[key if key.startswith("eval_") else f"eval_{key}"])
            if super()._determine_best_metric(metrics, trial):  # a new best score: Trainer keeps this step
                self.top, self.kept = (step, value, sample), (step, value)
                return True
            # Not the best score. On a small validation set an earlier step often scores higher by noise alone
            # (benchmarks/bench_selection.py): a later step that falls short of the best by no more than one
            # standard error of their paired difference is kept instead, since it has trained longer.
            if sample is None or self.top is None or self.top[2] is None:
                return False
            if within_noise(value, self.top[1], paired_se(sample, self.top[2]), self.args.greater_is_better):
                self.state.best_global_step, self.kept = step, (step, value)
                return True
            return False

        def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
            output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
            if metric_key_prefix != "eval":
                return output
            if self.generated is not None:
                # Before Trainer logs the metrics and picks the best step from them.
                per_example = self.generated(self.model)
                scores = {f"eval_{k}": sum(v) / len(v) for k, v in per_example.items()}
                loss = output.metrics.get("eval_loss", 0.0)
                output.metrics.update(scores, eval_selection=tie_broken(scores["eval_overall"], loss))
                self.sample = Sample(np.asarray(per_example["overall"], dtype=float), lambda rows: rows.mean(-1))
            elif output.predictions is not None and output.label_ids is not None:
                self.sample = self.kind.validation_sample(self.spec, output.predictions, output.label_ids)
            return output

    return GeneratingTrainer
