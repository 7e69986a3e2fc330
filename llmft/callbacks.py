"""The Trainer callbacks of a training run: progress into run.json (and to the caller), cancellation, and the
time budget that fits the step count to a number of seconds."""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

from transformers import TrainerCallback

from .runs import update_run


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


def scheduler_type(config) -> str:
    """Trainer's schedule name: `constant` becomes `constant_with_warmup` when there is a warmup."""
    name = config.lr_scheduler or "linear"
    return "constant_with_warmup" if name == "constant" and config.warmup_ratio else name


class TimeBudget(TrainerCallback):
    """Fits training into `budget` seconds of the training loop: the first steps are timed, then the step count
    is set to what fits (validations included: up to five, within `VALIDATION_SHARE` of the budget, first
    estimated at a forward pass a third of a training step, then timed at each validation and thinned out when
    they take longer), the learning-rate schedule is stretched to it, and training stops there. The planned steps
    stay an upper bound."""

    CALIBRATION_STEPS = 3
    RECHECK_STEPS = 10
    VALIDATION_SHARE = 0.15
    """The budget's share validations may take (measured on the real SmolLM2 before they were timed: a third)."""

    def __init__(self, budget: float, config, val_rows: int, planned: int):
        self.budget, self.config, self.val_rows, self.planned = budget, config, val_rows, planned
        self.began = None
        self.mark = self.first = None
        self.target = self.upper = None
        self.evals = 0
        self.per_step = self.step_ended = None
        self.validations = []
        """Seconds each validation took."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.time()

    def _spread(self, state) -> None:
        """Space the validations (and checkpoints, on the same steps) the budget chose over the fitted length."""
        if self.evals:
            state.eval_steps = state.save_steps = max(1, -(-self.target // self.evals))

    def record(self) -> dict:
        """run.json's account of the budget: the seconds, the steps planned, and the steps fitted to it."""
        return {
            "seconds": self.budget,
            "planned_steps": self.upper or self.planned,
            "fitted_steps": self.target,
            "validation_s": self.validations,
        }

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
            share = self.VALIDATION_SHARE * left
            evals = (max(1, min(5, int(share / per_eval))) if chosen else 5) if validating else 0
            fits = max(0, int((left - evals * per_eval) / per_step))
            self.upper, self.per_step = state.max_steps, per_step
            self.target = max(step + 1, min(self.upper, step + fits))
            state.max_steps = self.target
            self.evals = evals if validating and chosen else 0
            self._spread(state)
            _stretch_schedule(lr_scheduler, self.config, self.target)
        elif self.target is not None and (step - self.first) % self.RECHECK_STEPS == 0 and step < self.target:
            # Timed again over every step so far (validations included): the first few steps on a busy machine
            # can be far slower or faster than the rest.
            per_step = (now - self.mark) / (step - self.first)
            self.per_step = per_step
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
        self.step_ended = time.time()

    def on_evaluate(self, args, state, control, **kwargs):
        """Time the validation that just ran; when the ones still to come would take more than their share of
        the time left, fewer of them (at least the last, which picks the kept step), and the steps re-fitted."""
        if self.step_ended is None:
            return
        now = time.time()
        self.validations.append(round(now - self.step_ended, 3))
        self.step_ended = now  # a checkpoint may follow; the next step's timing starts here
        if not self.evals or self.target is None or state.global_step >= self.target:
            return
        took, step = self.validations[-1], state.global_step
        left = self.budget - (now - self.began)
        coming = max(1, -(-(self.target - step) // max(1, state.eval_steps)))
        fitting = max(1, min(coming, int(self.VALIDATION_SHARE * max(left, 0.0) / max(took, 1e-6))))
        if fitting < coming:
            fits = max(0, int((left - fitting * took) / max(self.per_step or 1e-6, 1e-6)))
            self.target = state.max_steps = max(step + 1, min(self.upper, step + fits))
            self.evals = len(self.validations) + fitting
            self._spread(state)
            _stretch_schedule(kwargs.get("lr_scheduler"), self.config, self.target)


def _stretch_schedule(scheduler, config, total: int) -> None:
    """Point a LambdaLR warmup/decay schedule at `total` steps (the time budget's step count)."""
    from transformers import optimization

    if scheduler is None or not hasattr(scheduler, "lr_lambdas"):
        return
    warmup = int(math.ceil((config.warmup_ratio or 0.0) * total))
    name = scheduler_type(config)
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


class ProgressCallback(TrainerCallback):
    """Records losses in run.json, reports progress, and stops training when cancel is set."""

    def __init__(self, run_dir, total, on_progress, cancel, started, info, selection, budget=None):
        """`info`: run.json so far (a resumed run's loss and validation histories); `selection`: the validation
        metric that picks the kept step (None: no validation); `budget`: the time budget in seconds, which bounds
        the time to go (before the budget has fitted the steps, the planned steps would say minutes)."""
        self.run_dir, self.total, self.on_progress, self.cancel = run_dir, total, on_progress, cancel
        self.budget = budget
        self.started, self.last_loss, self.tokens = started, None, 0
        self.history, self.val_history = list(info.get("loss_history", [])), list(info.get("val_history") or [])
        self.selection = selection

    def on_train_begin(self, args, state, control, **kwargs):
        if args.process_index == 0:  # what the page shows before the first step's loss
            update_run(self.run_dir, phase="first step (it carries one-time costs)", total_steps=state.max_steps)

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
        if eta is not None and self.budget:
            eta = min(eta, max(0.0, self.budget - elapsed))
        if args.process_index == 0:
            update_run(
                self.run_dir,
                phase="training",
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


def early_stopped(trainer) -> bool:
    """Whether early stopping ended training (not the time budget, a cancel or the planned end)."""
    from transformers import EarlyStoppingCallback

    return any(
        isinstance(cb, EarlyStoppingCallback) and cb.early_stopping_patience_counter >= cb.early_stopping_patience
        for cb in trainer.callback_handler.callbacks
    )
