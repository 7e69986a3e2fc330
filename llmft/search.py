"""Hyperparameter search with Optuna: every trial is an ordinary run; the study lives in an RDB storage.

A study samples `TrainConfig` fields (TPE), trains one run per trial, reports each validation to Optuna so the
median pruner can stop poor trials early, and scores a trial by its best validation metric (macro-F1 for
classification, the validation loss for generation). The test split is never read during a search: only the
best trial's run is evaluated on it, afterwards, and that evaluation says how it was chosen.

The default storage is an SQLite file in the runs home (`<runs>/.search/studies.db`); any Optuna RDB URL
(PostgreSQL, MySQL) lets workers on several machines run trials of one study at once.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from .config import TrainConfig
from .errors import LlmftError, first_line
from .pipeline import metric_text
from .runs import check_run_name, runs_home, update_run
from .schema import bound_error, field_type, flag_of, schema
from .training import prepare, prepare_next, train

SEARCHABLE = {f.name for f in schema(TrainConfig) if f.metadata["group"] == "hyper"} - {"time_budget"}
"""The TrainConfig fields a search space may name."""


@dataclass(frozen=True)
class Dimension:
    """One searched field: a range (low, high; log scale or not) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if field_type(TrainConfig, _field(self.name)) is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def _field(name: str):
    return next(f for f in schema(TrainConfig) if f.name == name)


def default_space(base: TrainConfig) -> dict[str, Dimension]:
    """Learning rate, LoRA r, alpha, dropout, targets and the run's length (unless a time budget sets it), each
    holding the starting settings (`base`), so that trial 0 can train them as they are (`first_trial`)."""

    def choices(name, options):
        value = getattr(base, name)
        value = ",".join(value) if isinstance(value, list | tuple) else value
        # Appended, the standard choices keep their order: a study made before resumes with the same space.
        return Dimension(name, choices=options + (value,) if value is not None and value not in options else options)

    def span(name, low, high, log=False):
        value = getattr(base, name)
        if isinstance(value, int | float) and not isinstance(value, bool) and (value > 0 or not log):
            low, high = min(low, value), max(high, value)
        return Dimension(name, low, high, log=log)

    space = {
        "learning_rate": span("learning_rate", 1e-4, 1e-2, log=True),
        "lora_r": choices("lora_r", (4, 8, 16, 32)),
        "lora_alpha": choices("lora_alpha", (8, 16, 32, 64)),
        "lora_dropout": span("lora_dropout", 0.0, 0.2),
        "target_modules": choices("target_modules", ("q,v", "q,k,v", "all-linear")),
    }
    if not base.time_budget:
        if base.max_steps:
            space["max_steps"] = Dimension("max_steps", max(2, base.max_steps // 2), base.max_steps * 2, log=True)
        else:
            space["epochs"] = Dimension("epochs", max(0.5, base.epochs / 2), base.epochs * 2)
    return space


def load_space(path: str | Path | None, base: TrainConfig) -> dict[str, Dimension | object]:
    """The default space with a space file's entries over it (YAML or JSON), checked; one-line errors.

    Each entry is `name: [choice, ...]`, `name: {low: L, high: H, log: true}`, a single value (fixed for every
    trial), or `name: null` (not searched: the base config's value).
    """
    space: dict[str, Dimension | object] = dict(default_space(base))
    if path is None:
        return space
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LlmftError(f"search space file not found: {path}")
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise LlmftError(f"search space {path.name} is not valid YAML or JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(entries, dict) or not entries:
        raise LlmftError(f"search space {path.name} must map field names to ranges or choices")
    for name, spec in entries.items():
        where = f"search space {path.name}: {name}"
        if name not in SEARCHABLE:
            raise LlmftError(f"{where}: not a searchable field; use one of {', '.join(sorted(SEARCHABLE))}")
        if spec is None:
            space.pop(name, None)
        elif isinstance(spec, list):
            if not spec:
                raise LlmftError(f"{where}: an empty list of choices")
            for choice in spec:
                _check_value(name, choice, where)
            space[name] = Dimension(name, choices=tuple(spec))
        elif isinstance(spec, dict):
            space[name] = _range(name, spec, where)
        else:
            _check_value(name, spec, where)
            space[name] = spec
    # A run's length is steps or epochs: the one the file names wins over the default one.
    if "max_steps" in space and "epochs" in space:
        space.pop("epochs" if entries.get("max_steps") is not None else "max_steps")
    return space


def _range(name: str, spec: dict, where: str) -> Dimension:
    unknown = set(spec) - {"low", "high", "log"}
    if unknown:
        raise LlmftError(f"{where}: unknown key {sorted(unknown)[0]!r} (a range has low, high and log)")
    if "low" not in spec or "high" not in spec:
        raise LlmftError(f"{where}: a range needs low and high")
    base = field_type(TrainConfig, _field(name))
    if base not in (int, float):
        raise LlmftError(f"{where}: not a number, so give a list of choices instead of a range")
    low, high = spec["low"], spec["high"]
    for value in (low, high):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LlmftError(f"{where}: low and high must be numbers, got {value!r}")
        _check_value(name, value, where)
    if not low < high:
        raise LlmftError(f"{where}: low ({low}) must be below high ({high})")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise LlmftError(f"{where}: a log range needs low above 0")
    return Dimension(name, low, high, log)


def _check_value(name: str, value, where: str) -> None:
    """A value the field accepts: its type, bounds and choices (TrainConfig's own, one line)."""
    f = _field(name)
    base = field_type(TrainConfig, f)
    if base is list:
        value = [v.strip() for v in str(value).split(",") if v.strip()]
    elif base is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise LlmftError(f"{where}: {value!r} is not a whole number")
    elif base is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise LlmftError(f"{where}: {value!r} is not a number")
    problem = bound_error(TrainConfig, f, value)
    if problem:
        raise LlmftError(f"{where}: {flag_of(f).lstrip('-')} {problem}")


class _Report(TrainerCallback):
    """Reports each validation's selection metric to the trial; stops training when Optuna prunes it."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(f"eval_{self.metric}")
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), state.global_step)
        if self.trial.should_prune():
            self.pruned = True
            control.should_training_stop = True


@dataclass
class SearchResult:
    """What a search did: its study, the runs of its trials, and the best one."""

    study: str
    storage: str
    trials: list[dict] = field(default_factory=list)
    """Every finished trial of the study (all workers): number, state, value, params, run."""
    best: dict | None = None
    metric: str = ""
    direction: str = "maximize"


def default_storage(runs_dir) -> str:
    folder = runs_home(runs_dir) / ".search"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'studies.db'}"


def shown_storage(url: str) -> str:
    """The storage URL without a password (it goes into run.json and the output)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _open_study(optuna, storage: str, study_name: str, direction: str, seed: int):
    """Create or load the study. Workers that start together race to create the schema and the study: the
    loser of a race tries again (up to 5 times) instead of failing."""
    import random

    for attempt in range(5):
        try:
            rdb = storage
            if storage.startswith("sqlite"):  # several workers on one file: wait for the lock instead of failing
                rdb = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 120}})
            return optuna.create_study(
                storage=rdb,
                study_name=study_name,
                direction=direction,
                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
                load_if_exists=True,
            )
        except Exception as err:
            if attempt == 4 or not storage.startswith("sqlite") and "already exists" not in str(err):
                raise LlmftError(
                    f"cannot open the study storage {shown_storage(storage)}: {first_line(err)}"
                ) from None
            time.sleep(0.5 + random.random())


def search(
    base: TrainConfig,
    trials: int | None = None,
    timeout: float | None = None,
    space: dict | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    on_trial=None,
    show_progress: bool = False,
    cancel=None,
) -> SearchResult:
    """Run `trials` trials (or until `timeout` seconds) of the study `study_name` over `space`.

    Args:
        base: the settings every trial starts from (task, model, data, validation, ...); its run name is unused.
        trials: trials this worker runs (other workers of the same study add theirs).
        timeout: seconds after which this worker starts no new trial.
        space: from `load_space` (default: `default_space(base)`).
        storage: an Optuna RDB URL (default: SQLite in the runs home).
        study_name: the study (created, or resumed when it exists); default `<task>-search-<time>`.
        on_trial: called with each finished trial's summary (the app's live table).
        cancel: a `threading.Event`; once set, the running trial stops after its step (its run is kept,
            cancelled) and no further trial starts.
    Raises:
        LlmftError: no validation split, a bad space, a bad storage URL.
    """
    import optuna

    if not trials and not timeout:
        raise LlmftError("give --trials or --time-budget for the search")
    if base.repeat > 1:
        raise LlmftError("--repeat is for train: a search's trials are single runs")
    if not base.val_split:
        raise LlmftError("a search chooses on the validation split: val-split must be above 0")
    task = base.task_spec
    metric = task.kind.selection(base.val_generate)
    direction = "minimize" if metric == "loss" else "maximize"
    space = default_space(base) if space is None else space
    study_name = study_name or f"{task.name}-search-{time.strftime('%Y%m%d-%H%M%S')}"
    check_run_name(f"{study_name}-t000")
    storage = storage or default_storage(base.runs_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(optuna, storage, study_name, direction, base.seed)
    if study.direction.name.lower() != direction:
        raise LlmftError(f"study {study_name} was created to {study.direction.name.lower()}, not {direction}")
    study.set_user_attr("task", task.name)
    study.set_user_attr("metric", metric)
    study.set_user_attr("metric_words", metric_text(metric, task.kind.headline))  # the figures' axis
    if not study.trials:  # trial 0 is the starting settings themselves: the search can only add to them
        study.enqueue_trial(first_trial(base, space))
    # Data, model and names checked before trial 1; the rows read once serve every trial that keeps them.
    checked = prepare(base.replace(run_name=f"{study_name}-check"))

    def objective(trial):
        params = {}
        for name, dim in space.items():
            params[name] = dim.suggest(trial) if isinstance(dim, Dimension) else dim
        values = dict(params)
        if "target_modules" in values:
            values["target_modules"] = [v.strip() for v in str(values["target_modules"]).split(",") if v.strip()]
        if "max_steps" in values:
            values["epochs"] = None
        elif "epochs" in values:
            values["max_steps"] = None
        run_name = f"{study_name}-t{trial.number:03d}"
        trial.set_user_attr("run", run_name)
        config = base.replace(**values, run_name=run_name)
        report = _Report(trial, metric)
        info = train(prepare_next(checked, config), callbacks=[report], show_progress=show_progress, cancel=cancel)
        if cancel is not None and cancel.is_set():
            trial.study.stop()
            update_run(Path(info["dir"]), search={"study": study_name, "trial": trial.number, "state": "cancelled"})
            raise optuna.TrialPruned()  # not a result: the search was stopped
        best = info.get("best") or {}
        state = "pruned" if report.pruned else "complete"
        update_run(
            Path(info["dir"]),
            search={
                "study": study_name,
                "storage": shown_storage(storage),
                "trial": trial.number,
                "params": params,
                "state": state,
                "metric": metric,
                "value": best.get("value"),
            },
        )
        if report.pruned:
            raise optuna.TrialPruned()
        if best.get("value") is None:
            raise LlmftError(f"trial {trial.number} ({run_name}) recorded no validation metric")
        return best["value"]

    def finished(study, frozen):
        if on_trial is not None:
            on_trial(_trial_summary(frozen))

    if cancel is not None and cancel.is_set():
        raise LlmftError("the search was cancelled before it started")
    study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[finished], catch=())
    return _mark_best(study, storage, metric, direction, base.runs_dir)


def _trial_summary(frozen) -> dict:
    return {
        "trial": frozen.number,
        "state": frozen.state.name.lower(),
        "value": frozen.value,
        "params": dict(frozen.params),
        "run": frozen.user_attrs.get("run"),
        "seconds": None
        if frozen.datetime_complete is None or frozen.datetime_start is None
        else round((frozen.datetime_complete - frozen.datetime_start).total_seconds(), 1),
    }


def _mark_best(study, storage: str, metric: str, direction: str, runs_dir) -> SearchResult:
    """Record in every trial's run.json whether it is the study's best so far, and how many trials ran."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    home = runs_home(runs_dir)
    for t in done:
        run = t.user_attrs.get("run")
        if run and (home / run / "run.json").is_file():
            info = json.loads((home / run / "run.json").read_text(encoding="utf-8"))
            marks = {**(info.get("search") or {}), "best": best is not None and t.number == best.number}
            marks["trials"] = len(done)
            update_run(home / run, search=marks)
    return SearchResult(
        study.study_name,
        shown_storage(storage),
        [_trial_summary(t) for t in done],
        _trial_summary(best) if best else None,
        metric,
        direction,
    )


def existing_study(study_name: str, storage: str):
    """The study, or None while it does not exist yet: a reader (the app's trials table, a restarted server) must
    not create the storage, nor fail while the search child is creating its schema."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        return None
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except (KeyError, IntegrityError, OperationalError):  # no such study yet, or its schema is being written
        return None


def trial_rows(study_name: str, storage: str) -> list[dict]:
    """Every trial of a study (running ones too) with its run and whether it is the best so far; [] before the
    study exists."""
    import optuna

    study = existing_study(study_name, storage)
    if study is None:
        return []
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial.number if complete else None
    return [{**_trial_summary(t), "best": t.number == best} for t in trials]


MIN_TRIALS_FOR_IMPORTANCE = 5
"""Parameter importances are a forest fitted to the finished trials: from fewer than this they are noise."""


def first_trial(base: TrainConfig, space: dict) -> dict:
    """The parameters of `base` (the form's or the preset's settings) that the space can hold: a search's first
    trial, so that it cannot end worse than not searching."""
    params = {}
    for name, dim in space.items():
        if not isinstance(dim, Dimension):
            continue
        value = getattr(base, name, None)
        if isinstance(value, list | tuple):
            value = ",".join(value)
        if dim.choices is not None:
            if value in dim.choices:
                params[name] = value
        elif isinstance(value, int | float) and dim.low <= value <= dim.high:
            params[name] = value
    return params


def study_figures(study_name: str, storage: str) -> dict:
    """Optuna's plotly figures of a study: optimization history, parallel coordinates, parameter importances
    (the last two once there are enough finished trials)."""
    import optuna
    from optuna import visualization as vis

    study = existing_study(study_name, storage)
    if study is None:
        return {}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return {}  # an empty history (axes -1..6) says nothing
    metric = study.user_attrs.get("metric_words") or study.user_attrs.get("metric") or "objective"
    history = vis.plot_optimization_history(study, target_name=f"validation {metric}")
    figures = {"history": history}
    if len(complete) >= 2:
        figures["parallel"] = vis.plot_parallel_coordinate(study, target_name=f"validation {metric}")
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
        try:
            figures["importances"] = vis.plot_param_importances(study, target_name=f"validation {metric}")
        except (RuntimeError, ValueError, ZeroDivisionError):
            pass  # every trial had the same parameters, or the same value
    return figures
