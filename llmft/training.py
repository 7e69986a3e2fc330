"""LoRA fine-tuning with transformers `Trainer` + peft, writing a run directory.

The same `train()` serves the CLI and the app: progress and cancellation go through callbacks, and the run
directory's run.json is updated as training goes, so any reader (another process, a reloaded page) sees
the state.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import math
import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from .config import TrainConfig
from .data import (
    Example,
    carve_validation,
    describe_source,
    infer_labels,
    is_hub_source,
    load_examples,
    sample_examples,
    text_hash,
    validation_size,
)
from .errors import LlmftError
from .kinds import tie_broken
from .models import (
    device_and_dtype,
    dtype_name,
    input_limit,
    load_base,
    resolve_model,
    resolve_target_modules,
    task_for_model,
)
from .runs import (
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    free_mb,
    is_disk_full,
    mark_failed_on_full_disk,
    new_run_name,
    process_identity,
    read_run,
    runs_home,
    update_run,
    write_json_atomic,
)
from .tasks import TASK_FILE, TaskSpec, get_task, use_task, write_task_file

__all__ = ["PreparedRun", "Progress", "TrainConfig", "prepare", "train"]
TRAIN_HASHES = "train_texts.json"
"""Fingerprints of the training inputs (`data.text_hash`), kept beside run.json."""


@dataclass
class Progress:
    """One training progress report."""

    step: int
    total: int
    loss: float | None
    elapsed_s: float
    eta_s: float | None
    run_dir: str
    loss_history: list = field(default_factory=list)


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
    model_ref: str
    """An absolute local folder or a hub id (see `models.check_model_ref`)."""
    examples: list[Example]
    run_dir: Path
    dtype: str
    """The weights' dtype name this run trains with (`float32` or `bfloat16`)."""
    val_examples: list[Example] = field(default_factory=list)
    """Validation rows: carved from the training data, or a hub dataset's own validation split; never test rows."""
    val_source: str = "none"
    """Where the validation rows came from, in words (run.json `validation.source`)."""


def prepare(config: TrainConfig, resume: bool = False, roots: list[Path] | None = None) -> PreparedRun:
    """Check `config` against the world once: the run name, the model reference, the data.

    Args:
        config: the run's definition (a missing run name is filled in).
        resume: the run must exist (to continue it) rather than not exist.
        roots: folders local models may come from (None: anywhere).
    Raises:
        LlmftError: for anything the user can fix; nothing has been written then.
    """
    task = get_task(config.task)
    run_dir = _claim_run_dir(config, resume)
    model_ref = resolve_model(task, config.model, roots)
    task = task_for_model(task, model_ref)
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
    return PreparedRun(config, task, model_ref, examples, run_dir, dtype, val_examples, val_source)


def _claim_run_dir(config: TrainConfig, resume: bool) -> Path:
    """The run's folder: a new name that is free (filled in when missing), or an existing run to resume."""
    home = runs_home(config.runs_dir)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if config.run_name is None:
        if world_size > 1:
            raise LlmftError("give --run-name when training with several processes: they must share one run")
        config.run_name = new_run_name(get_task(config.task).name)
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
    return dataclasses.replace(prepared, config=config, run_dir=_claim_run_dir(config, resume=False))


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
    config, task, model_ref, examples, run_dir = (
        prepared.config,
        prepared.task,
        prepared.model_ref,
        prepared.examples,
        prepared.run_dir,
    )
    # Under torchrun / accelerate launch every process runs this function; only the main one writes.
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    is_main = rank == 0
    checkpoints = run_dir / "checkpoints"
    model, tokenizer = load_base(
        task, model_ref, head_seed=config.seed, dtype=config.dtype, dropout=config.base_dropout
    )
    targets = resolve_target_modules(model, config.target_modules)

    started = time.time()
    info = {
        "name": config.run_name,
        "task": task.name,
        "task_def": task.definition,
        "kind": task.kind.name,
        "base_model": model_ref,
        "data": describe_source(config.data),
        "train_examples": len(examples),
        "validation": {"source": prepared.val_source, "examples": len(prepared.val_examples)},
        "config": asdict(config),
        "lora_target_modules_resolved": targets,
        "trained_in_full": task.kind.modules_to_save(model),
        **task.kind.run_info(tokenizer),
        "head_seed": config.seed,
        "dtype": prepared.dtype,
        "versions": library_versions(),
        "command": config.cli_command(),
        "argv": shlex.join(sys.argv),
        "status": RUNNING,
        **process_identity(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loss_history": [],
        "step": 0,
        "world_size": world_size,
    }
    if resume:
        info = {
            **read_run(run_dir),
            "status": RUNNING,
            **process_identity(),
            "resumed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "error": None,
            "world_size": world_size,
        }

    def record(**fields) -> dict:
        """Write fields into run.json (main process); other processes only keep their local copy."""
        info.update(fields)
        return update_run(run_dir, **fields) if is_main else dict(info)

    try:
        record(**info)
    except OSError as err:
        if is_main and not resume and is_disk_full(err):  # nothing was started: the name stays free
            shutil.rmtree(run_dir, ignore_errors=True)
            raise LlmftError(f"the disk is full: {free_mb(run_dir.parent):.0f} MB free in {run_dir.parent}") from None
        raise
    if is_main and not resume:  # which texts were trained on: an evaluation on them is flagged or refused
        # Validation rows too: they chose the kept step, so an evaluation on them would flatter the run.
        seen = [*examples, *prepared.val_examples]
        write_json_atomic(run_dir / TRAIN_HASHES, sorted({text_hash(ex.text) for ex in seen}))
        if task.definition is not None:  # the task file beside the run, labels filled in
            write_task_file(task, run_dir / TASK_FILE)
    try:
        trainer, progress_cb = _build_trainer(
            prepared, model, tokenizer, targets, on_progress, cancel, show_progress, started, info
        )
        for extra in callbacks or []:
            trainer.add_callback(extra)
        last = _last_checkpoint(checkpoints) if resume else None
        result = trainer.train(resume_from_checkpoint=last)
        cancelled = bool(cancel and cancel.is_set())
        if not cancelled and trainer.is_world_process_zero():
            _save_adapter_atomically(trainer.model, tokenizer, run_dir / "adapter")
        elapsed = time.time() - started
        final = record(
            status=CANCELLED if cancelled else COMPLETED,
            step=trainer.state.global_step,
            epochs=round(trainer.state.epoch or 0.0, 3),  # passes over the training data, all processes together
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            duration_s=round(elapsed, 2),
            train_loss=result.training_loss,
            final_loss=progress_cb.last_loss,
            loss_history=progress_cb.history,
            val_history=progress_cb.val_history,
            **_best(trainer, progress_cb),
            time_budget=next(
                (cb.record() for cb in trainer.callback_handler.callbacks if isinstance(cb, _TimeBudget)), None
            ),
            tokens_seen=progress_cb.tokens,
            train_runtime_s=round(result.metrics["train_runtime"], 3),
            # Real (non-padding) input tokens per second of the training loop itself.
            tokens_per_s=round(progress_cb.tokens / max(result.metrics["train_runtime"], 1e-9), 1),
        )
    except KeyboardInterrupt:
        record(status=CANCELLED, error="interrupted by the user")
        raise
    except BaseException as err:
        if not is_disk_full(err):
            record(status=FAILED, error=f"{type(err).__name__}: {err}")
            raise
        message = (
            f"the disk is full: {free_mb(run_dir):.0f} MB free in {run_dir.parent}; run {config.run_name} "
            "stopped (free space, then --resume it from its last checkpoint, or delete it)"
        )
        for partial in set((run_dir / "checkpoints").glob("checkpoint-*")) - set(complete_checkpoints(checkpoints)):
            shutil.rmtree(partial, ignore_errors=True)  # nothing half-written is left
        if is_main:
            mark_failed_on_full_disk(run_dir, status=FAILED, error=message)
        raise LlmftError(message) from None
    return {**final, "dir": str(run_dir)}


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
    return {
        "best": {
            "step": step,
            "metric": callback.selection,
            "value": None if state.best_metric is None else round(float(state.best_metric), 6),
            "kept": bool(checkpoint) and trainer.args.load_best_model_at_end,
            "early_stopped": _early_stopped(trainer),
        }
    }


def _early_stopped(trainer) -> bool:
    """Whether early stopping ended training (not the time budget, a cancel or the planned end)."""
    from transformers import EarlyStoppingCallback

    return any(
        isinstance(cb, EarlyStoppingCallback) and cb.early_stopping_patience_counter >= cb.early_stopping_patience
        for cb in trainer.callback_handler.callbacks
    )


def _build_trainer(
    prepared: PreparedRun, model, tokenizer, targets, on_progress, cancel, show_progress, started, info
):
    config, task, examples, val_examples, run_dir = (
        prepared.config,
        prepared.task,
        prepared.examples,
        prepared.val_examples,
        prepared.run_dir,
    )
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import TrainingArguments

    lora = task.kind.lora_config(model, targets, config.lora_r, config.lora_alpha, config.lora_dropout)
    collator = task.kind.collator(tokenizer, model)
    import torch

    torch.manual_seed(config.seed)  # LoRA A-matrix init
    model = get_peft_model(model, lora)
    for param in model.parameters():
        if param.requires_grad:  # LoRA and head weights train in fp32 whatever the base weights' dtype
            param.data = param.data.float()
    max_input = input_limit(tokenizer, config.max_input_tokens)
    rows = task.kind.features(task, tokenizer, examples, max_input, config.max_target_tokens)
    dataset = Dataset.from_list(rows)
    val_rows = (
        task.kind.features(task, tokenizer, val_examples, max_input, config.max_target_tokens) if val_examples else []
    )
    validating = bool(val_rows)

    steps_per_epoch = max(1, -(-len(rows) // (config.batch_size * config.grad_accum)))
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
    selection = task.kind.selection(config.val_generate) if validating else None
    compute_metrics = task.kind.validation_metrics(task) if validating else None
    generated = (
        task.kind.validation_generator(
            task, tokenizer, val_examples[: config.val_generate], max_input, config.max_target_tokens
        )
        if validating and config.val_generate
        else None
    )
    metric = {}
    if validating:
        metric = dict(
            eval_strategy="epoch" if by_epoch else "steps",
            eval_steps=None if by_epoch else eval_steps,
            load_best_model_at_end=True,
            metric_for_best_model=selection,
            greater_is_better=selection != "loss",
            prediction_loss_only=compute_metrics is None,
            per_device_eval_batch_size=config.batch_size,
        )
    if config.report_to == "tensorboard":  # its files beside the run, not inside the checkpoints
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=_scheduler_type(config),
        warmup_steps=config.warmup_ratio or 0.0,  # a float below 1 is a share of the steps
        weight_decay=config.weight_decay or 0.0,
        max_steps=config.max_steps or -1,
        num_train_epochs=config.epochs or 1.0,
        logging_steps=1,
        save_strategy="epoch" if by_epoch else "steps",
        save_steps=save_steps,
        save_total_limit=2,  # with load_best_model_at_end the best checkpoint is always kept as well
        report_to=config.report_to,
        **metric,
        seed=config.seed,
        data_seed=config.seed,
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=not show_progress,
        use_cpu=not torch.cuda.is_available(),
        bf16=device_and_dtype(config.dtype)[1] == torch.bfloat16,
        dataloader_pin_memory=False,
        ddp_find_unused_parameters=False,  # LoRA uses every trainable weight; the extra graph walk only costs
        include_num_input_tokens_seen="non_padding",
    )
    callback = _ProgressCallback(run_dir, total, on_progress, cancel, started, info, selection)
    callbacks = [callback]
    if validating and config.early_stopping:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping))
    if config.time_budget:
        callbacks.append(_TimeBudget(config.time_budget, config, len(val_rows), total))
    trainer = _trainer_class()(
        generated,
        model=model,
        args=args,
        train_dataset=dataset,
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
    `validation_generator`), so a generation task's headline is logged and can pick the kept step. Built on
    first use: importing Trainer is slow and most importers of this module never train."""
    from transformers import Trainer

    class GeneratingTrainer(Trainer):
        def __init__(self, generated, **kwargs):
            super().__init__(**kwargs)
            self.generated = generated

        def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
            output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
            if self.generated is not None and metric_key_prefix == "eval":
                # Before Trainer logs the metrics and picks the best step from them.
                scores = {f"eval_{k}": float(v) for k, v in self.generated(self.model).items()}
                loss = output.metrics.get("eval_loss", 0.0)
                output.metrics.update(scores, eval_selection=tie_broken(scores["eval_overall"], loss))
            return output

    return GeneratingTrainer


def _scheduler_type(config) -> str:
    """Trainer's schedule name: `constant` becomes `constant_with_warmup` when there is a warmup."""
    name = config.lr_scheduler or "linear"
    return "constant_with_warmup" if name == "constant" and config.warmup_ratio else name


class _TimeBudget(TrainerCallback):
    """Fits training into `budget` seconds of the training loop: the first steps are timed, then the step count
    is set to what fits (validations included, at a forward pass a third of a training step: up to five, within
    a quarter of the budget), the learning-rate schedule is stretched to it, and training stops there. The
    planned steps stay an upper bound."""

    CALIBRATION_STEPS = 3
    RECHECK_STEPS = 10

    def __init__(self, budget: float, config, val_rows: int, planned: int):
        self.budget, self.config, self.val_rows, self.planned = budget, config, val_rows, planned
        self.began = None
        self.mark = self.first = None
        self.target = self.upper = None
        self.evals = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.time()

    def _spread(self, state) -> None:
        """Space the validations (and checkpoints, on the same steps) the budget chose over the fitted length."""
        if self.evals:
            state.eval_steps = state.save_steps = max(1, -(-self.target // self.evals))

    def record(self) -> dict:
        """run.json's account of the budget: the seconds, the steps planned, and the steps fitted to it."""
        return {"seconds": self.budget, "planned_steps": self.upper or self.planned, "fitted_steps": self.target}

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        now, step = time.time(), state.global_step
        if self.mark is None:  # this process's first step (1, or the step a resumed run starts after)
            self.mark, self.first = now, step  # it carries one-time costs: time the ones after it
        elif self.target is None and step == self.first + self.CALIBRATION_STEPS:
            per_step = (now - self.mark) / self.CALIBRATION_STEPS
            left = self.budget - (now - self.began)
            validating = self.val_rows > 0
            # A validation is a forward pass over the validation rows (~1/3 of a step per batch). Up to five a
            # run, as many as fit in a quarter of the budget (at least the last one, which picks the kept step).
            per_eval = -(-self.val_rows // self.config.batch_size) * per_step / 3
            chosen = self.config.eval_steps is None and self.config.save_steps is None
            evals = (max(1, min(5, int(0.25 * left / per_eval))) if chosen else 5) if validating else 0
            fits = max(0, int((left - evals * per_eval) / per_step))
            self.upper = state.max_steps
            self.target = max(step + 1, min(self.upper, step + fits))
            state.max_steps = self.target
            self.evals = evals if validating and chosen else 0
            self._spread(state)
            _stretch_schedule(lr_scheduler, self.config, self.target)
        elif self.target is not None and (step - self.first) % self.RECHECK_STEPS == 0 and step < self.target:
            # Timed again over every step so far (validations included): the first few steps on a busy machine
            # can be far slower or faster than the rest.
            per_step = (now - self.mark) / (step - self.first)
            fits = int((self.budget - (now - self.began)) / per_step)
            target = max(step + 1, min(self.upper, step + fits))
            if abs(target - self.target) > max(2, 0.05 * self.target):
                self.target = state.max_steps = target
                self._spread(state)
                _stretch_schedule(lr_scheduler, self.config, self.target)
        if self.target is not None and step >= self.target:
            control.should_training_stop = True
        elif time.time() - self.began > self.budget:  # slower than timed (another process took the cores)
            control.should_training_stop = True
        if control.should_training_stop:
            control.should_save = True  # the last step is a checkpoint, as at the end of a planned run
            control.should_evaluate = control.should_evaluate or self.val_rows > 0


def _stretch_schedule(scheduler, config, total: int) -> None:
    """Point a LambdaLR warmup/decay schedule at `total` steps (the time budget's step count)."""
    from transformers import optimization

    if scheduler is None or not hasattr(scheduler, "lr_lambdas"):
        return
    warmup = int(math.ceil((config.warmup_ratio or 0.0) * total))
    name = _scheduler_type(config)
    if name == "linear":
        fn = functools.partial(
            optimization._get_linear_schedule_with_warmup_lr_lambda, num_warmup_steps=warmup, num_training_steps=total
        )
    elif name == "cosine":
        fn = functools.partial(
            optimization._get_cosine_schedule_with_warmup_lr_lambda,
            num_warmup_steps=warmup,
            num_training_steps=total,
            num_cycles=0.5,
        )
    elif name == "constant_with_warmup":
        fn = functools.partial(optimization._get_constant_schedule_with_warmup_lr_lambda, num_warmup_steps=warmup)
    else:
        return
    scheduler.lr_lambdas = [fn for _ in scheduler.lr_lambdas]


class _ProgressCallback(TrainerCallback):
    """Records losses in run.json, reports progress, and stops training when cancel is set."""

    def __init__(self, run_dir, total, on_progress, cancel, started, info, selection):
        """`info`: run.json so far (a resumed run's loss and validation histories); `selection`: the validation
        metric that picks the kept step (None: no validation)."""
        self.run_dir, self.total, self.on_progress, self.cancel = run_dir, total, on_progress, cancel
        self.started, self.last_loss, self.tokens = started, None, 0
        self.history, self.val_history = list(info.get("loss_history", [])), list(info.get("val_history") or [])
        self.selection = selection

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics:
            return
        entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 3)}
        entry.update({k.removeprefix("eval_"): round(float(v), 6) for k, v in metrics.items() if _is_metric(k)})
        self.val_history = [h for h in self.val_history if h["step"] < state.global_step] + [entry]
        if args.process_index == 0:
            update_run(self.run_dir, val_history=self.val_history)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.cancel is not None and self.cancel.is_set():
            control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.cancel is not None and self.cancel.is_set():
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        # logging_steps=1, so this runs once per optimizer step, after the step's loss is known.
        if not logs or "loss" not in logs:
            return
        self.last_loss = float(logs["loss"])
        # A resumed run repeats the steps after its last checkpoint: keep one entry per step, the newest.
        self.history = [h for h in self.history if h["step"] < state.global_step]
        self.history.append({"step": state.global_step, "loss": round(self.last_loss, 5)})
        self.tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        elapsed = time.time() - self.started
        step, total = state.global_step, state.max_steps or self.total
        eta = elapsed / step * (total - step) if step else None
        if args.process_index == 0:
            update_run(
                self.run_dir,
                step=step,
                total_steps=total,
                loss_history=self.history,
                elapsed_s=round(elapsed, 2),
                eta_s=None if eta is None else round(eta, 1),
            )
        if self.on_progress is not None:
            self.on_progress(
                Progress(step, total, self.last_loss, elapsed, eta, str(self.run_dir), list(self.history))
            )
        # Checked here too, so a cancel during the report stops before the next step starts.
        if self.cancel is not None and self.cancel.is_set():
            control.should_training_stop = True


def _is_metric(key: str) -> bool:
    """A validation metric worth keeping (not Trainer's timing entries)."""
    return key.startswith("eval_") and not key.endswith(("_runtime", "_per_second")) and key != "eval_epoch"
