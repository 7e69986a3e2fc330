"""Fine-tune tab: a form derived from `TrainConfig`'s fields, training in a child process, live progress, cancel."""

from __future__ import annotations

import html
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from ..access import qualified
from ..config import TrainConfig, field_type, form_fields, label_of, schema
from ..errors import LlmftError, hide_paths
from ..jobs import ANY, Job, SearchJob, Waiting
from ..loading import offline_choice
from ..plots import loss_curve
from ..runs import list_runs, read_run
from ..tasks import builtin_task_names, get_task, task_names
from .common import user_errors, visible_runs, visible_task, with_user
from .datapicker import DataPicker

OWN = "your own task"
"""The task choice that opens the own-task fields; the task is saved as a task file when training starts."""
OWN_FIELDS = ("own_name", "own_type", "own_prompt", "own_labels")
"""The own-task widgets' names in the form (and in the /train endpoint's inputs)."""


def own_task_file(ctx, user, form: dict) -> str:
    """Save the own-task fields and the picked columns as a task file in `user`'s task folder
    (`Access.task_home`); its path. On a Space the task is named `<visitor>.<name>` (`access.qualified`): each
    visitor's names are their own, and nobody learns another's."""
    from ..tasks import save_task_definition

    kind_type = form.get("own_type") or "classify"
    name = (form.get("own_name") or "").strip()
    name = qualified(user.name if ctx.access.space else None, name) if name else name
    definition = {"name": name, "type": kind_type}
    prompt = (form.get("own_prompt") or "").strip() or "{text}"
    definition["prompt"] = prompt
    if "{text}" in prompt:
        definition["text_column"] = form.get("text_column") or "text"
    if kind_type == "generate":
        definition["target_columns"] = [form.get("target_columns") or "summary"]
    else:
        definition["label_column"] = form.get("label_column") or "label"
        labels = [v.strip() for v in (form.get("own_labels") or "").split(",") if v.strip()]
        if labels:
            definition["labels"] = labels
    return str(save_task_definition(definition, ctx.access.task_home(ctx.runs_dir, user)))


def preset_values(task_name: str, preset_name: str, config_cls=TrainConfig, own_type: str = "classify") -> list:
    """Form values of the preset's hyperparameters, in the order of the form's `hyper` fields (your own task:
    its type's presets)."""
    if task_name == OWN:
        task_name = "sentiment" if own_type == "classify" else "dialogue"
    preset = get_task(task_name).preset(preset_name)
    values, taken = [], set()
    for f in form_fields(config_cls, "hyper"):
        value = getattr(preset, f.name, f.default)
        group = f.metadata["exclusive"]
        if group and value is not None:  # of max steps and epochs, only the one the preset uses
            value = None if group in taken else value
            taken.add(group)
        values.append(",".join(value) if isinstance(value, list | tuple) else "" if value is None else str(value))
    return values


def preset_updates(task_name: str, preset_name: str, config_cls=TrainConfig, own_type: str = "classify") -> list:
    """The hyperparameter fields for a preset: a choice shows the preset's value; a text field is left blank, with
    the preset's value as its placeholder ("quick preset: 0.0003"), so blank visibly means the preset's value and
    only what the user typed is sent."""
    updates = []
    fields = form_fields(config_cls, "hyper")
    for f, value in zip(fields, preset_values(task_name, preset_name, config_cls, own_type)):
        if f.metadata["choices"]:
            updates.append(gr.update(value=value or None))
        else:
            updates.append(gr.update(value="", placeholder=_placeholder(f, value, preset_name)))
    return updates


def _placeholder(f, value: str, preset_name: str) -> str:
    if value:
        return f"{preset_name} preset: {value}"
    if f.metadata["exclusive"]:
        return "blank: the preset sets the length another way"
    return "blank: the default"


def _convert(config_cls, f, value):
    """A form value as the field's type: blank is None (the preset's or the task's value)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    base = field_type(config_cls, f)
    if base is list:
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        return items or None
    if base in (int, float):
        try:
            number = float(value)
        except ValueError:
            raise LlmftError(f"{label_of(f)} must be a number, got {str(value)[:40]!r}") from None
        if base is int and number != int(number):
            raise LlmftError(f"{label_of(f)} must be a whole number, got {value}")
        return int(number) if base is int else number
    if base is bool:
        return bool(value)
    return str(value).strip()


def _typed_fields(config_cls, form: dict) -> dict:
    """The config fields the form's own widgets hold, as their types (blank: None, the preset's or the task's);
    the data picker's fields are resolved apart."""
    kwargs = {}
    for f in schema(config_cls):
        if f.name in form and f.metadata["group"] not in ("data", "columns"):
            value = _convert(config_cls, f, form[f.name])
            if value is not None or f.default is None:
                kwargs[f.name] = value
    return kwargs


def form_to_config(ctx, user, picker, names: list[str], values: list, config_cls=TrainConfig) -> TrainConfig:
    """The config the form describes for `user` (`names[i]` is the field or picker key of `values[i]`)."""
    form = dict(zip(names, values))
    if form.get("task") == OWN:
        form["task"] = own_task_file(ctx, user, form)
    kwargs = _typed_fields(config_cls, form)
    kwargs.update(picker.resolve(user, form["task"], form))
    kwargs.update(runs_dir=str(ctx.runs_dir), dtype=ctx.dtype)
    return config_cls(**kwargs)


def describe_plan(ctx, user, picker, names: list[str], values: list, config_cls=TrainConfig) -> str:
    """What Start will do with the form as it is, in words (`training.plan`), or the one line that would refuse
    it; it writes nothing (no task file, no upload kept)."""
    form = dict(zip(names, values))
    task_name = form.get("task")
    if task_name == OWN:  # your own task: its type's presets, and the columns you picked
        task_name = "sentiment" if (form.get("own_type") or "classify") == "classify" else "dialogue"
        task = None
    else:
        task = visible_task(ctx, user, task_name)
        if task is None:
            return ""
    try:
        kwargs = {**_typed_fields(config_cls, form), "task": task_name}
        kwargs.update(preset=form.get("preset") or "quick", model=(form.get("model") or "").strip() or None)
        config = config_cls(**kwargs)
        rows = picker.rows(task, form)
    except LlmftError as err:
        return f"⚠ {err}"
    from ..training import plan, seconds_per_step  # deferred: training imports torch

    if config.run_name:  # the name as it will be (a visitor's own on a Space): an existing run is never overwritten
        name = qualified(user.name if ctx.access.space else None, config.run_name)
        if (ctx.runs_dir / name).exists():
            return f"⚠ run {name!r} already exists; choose another name"
    pace, of = seconds_per_step(visible_runs(ctx, user), config)
    return plan(config, rows, pace, of)


def restore(ctx, user, names: list[str], config_cls=TrainConfig) -> list:
    """The form's values and command for `user`'s running job (after a page reload), else no change."""
    job = ctx.jobs.current(owner_key(ctx, user))
    config = (job.info().get("config") if isinstance(job, Job) and job.running else None) or {}
    if not config:
        return [gr.update() for _ in names] + [gr.update()]
    fields = {f.name for f in schema(config_cls)}
    own = _own_values(config.get("task", ""))
    values = []
    for name in names:
        value = config.get(name)
        if name == "task" and own:
            value = OWN
        elif name in OWN_FIELDS:
            values.append(gr.update(value=own[name]) if own else gr.update())
            continue
        if name == "source":
            data = config.get("data") or "sample"
            value = "bundled sample" if data == "sample" else "upload" if Path(data).is_absolute() else "hub dataset"
        elif name == "hub_id":
            data = str(config.get("data") or "")
            value = data if data != "sample" and not Path(data).is_absolute() else ""
        elif name not in fields:
            values.append(gr.update())
            continue
        if isinstance(value, list):
            value = ",".join(map(str, value)) if name != "target_columns" else value[0]
        values.append(gr.update(value=value))
    return values + [f"```\n{job.command}\n```"]


def start_training(ctx, user, picker, names: list[str], values: list, config_cls=TrainConfig):
    """Start (or put in line) the training the form describes, for `user`: on a Space only a signed-in
    visitor within their quotas may train, and the run is theirs."""
    form = dict(zip(names, values))
    repeat = int(form.get("repeat") or 1) if str(form.get("repeat") or "1").isdigit() else 1
    return ctx.jobs.start(_checked_config(ctx, user, picker, names, values, config_cls, new_runs=repeat))


def _checked_config(ctx, user, picker, names, values, config_cls, new_runs: int = 1, own: bool = True):
    """The form's config for `user`, after every check that can refuse the request, so a refused request
    writes nothing (an own task's file, a kept upload): sign-in and quotas, one run per user, the task (on a
    Space, another visitor's own task stays theirs), a model folder typed into the runs home."""
    ctx.access.check_may_train(user, list_runs(ctx.runs_dir), new_runs=new_runs, runs_dir=ctx.runs_dir)
    owner = user.name if ctx.access.space else None
    ctx.jobs.check_one_per_owner(owner)
    form = dict(zip(names, values))
    if form.get("task") == OWN and not own:
        raise LlmftError("train your own task once first, then search it by its name")
    if ctx.access.space and form.get("task") not in (*builtin_task_names(), OWN):
        raise LlmftError(f"unknown task {form.get('task')!r}")
    ctx.access.check_local_ref(ctx.runs_dir, user, form.get("model"))
    config = form_to_config(ctx, user, picker, names, values, config_cls)
    config.owner = owner
    return config


def start_search_job(ctx, user, picker, names, values, trials, seconds, study, config_cls=TrainConfig):
    """Start a search as the form describes it (the same checks as a run; its trials count against quotas)."""
    trials = int(trials) if trials else None
    seconds = float(seconds) if seconds else None
    if trials is not None and not 1 <= trials <= 200:
        raise LlmftError(f"trials must be between 1 and 200, got {trials}")
    config = _checked_config(ctx, user, picker, names, values, config_cls, new_runs=trials or 1, own=False)
    return ctx.jobs.start_search(config, trials, seconds, (study or "").strip() or None)


def cancel(ctx, user, run_name: str | None) -> str:
    """Cancel `run_name` (blank: the caller's current run), if the caller may."""
    ctx.access.check_signed_in(user, "cancel runs")
    run_name = (run_name or "").strip()
    if not run_name:
        job = ctx.jobs.current(owner_key(ctx, user))
        if job is None or not (job.running or ctx.jobs.position(job.run_name)):
            return "No run is in progress."
        run_name = job.run_name
    job = ctx.jobs.find(run_name)
    if job is None:
        ctx.access.find(ctx.runs_dir, user, run_name)  # "not found" for a run the caller may not see
        return f"Run {run_name} is not in progress."
    ctx.access.check_owner(user, {"name": run_name, "config": {"owner": job.owner}}, "cancel")
    if not ctx.jobs.cancel(run_name):
        return f"Run {run_name} is not in progress."
    if isinstance(job, Waiting):
        return f"Run {run_name} left the line; it never started."
    return "Cancelling after the current step…"


def _own_values(task_ref: str) -> dict:
    """The own-task fields of a task file's run (empty for a registered task)."""
    from ..tasks import TASK_FILE_SUFFIXES, get_task

    if not str(task_ref).lower().endswith(TASK_FILE_SUFFIXES):
        return {}
    try:
        definition = get_task(task_ref).definition or {}
    except LlmftError:
        return {}
    return {
        "own_name": definition.get("name", ""),
        "own_type": definition.get("type", "classify"),
        "own_prompt": definition.get("prompt", "{text}"),
        "own_labels": ", ".join(definition.get("labels") or []),
    }


def _widget(config_cls, f, value, space: bool = False, placeholder: str = "blank: the default"):
    """The form widget of one config field (elem_id `ft-<field>`), from its type, bounds and choices."""
    meta, base = f.metadata, field_type(config_cls, f)
    common = dict(label=label_of(f), elem_id=f"ft-{f.name}")
    if f.name == "task":
        # On a Space, the built-in tasks (another visitor's own task is theirs); locally, your task files too.
        # The handler, not the session's list of choices, decides which tasks a caller may train.
        choices = [*(builtin_task_names() if space else task_names()), OWN]
        return gr.Dropdown(choices, value=value, allow_custom_value=True, **common)
    common["info"] = meta["help"]
    if meta["choices"]:
        return gr.Radio(list(meta["choices"]), value=value, **common)
    if base is bool:
        return gr.Checkbox(bool(value), **common)
    if base in (int, float) and f.default is not None:
        low, high = meta["bounds"] or (None, None)
        return gr.Number(value, minimum=low, maximum=high, precision=0 if base is int else None, **common)
    # A field that may be blank is a text box: a gr.Number cannot be empty (the browser sends 0).
    return gr.Textbox("" if value is None else str(value), placeholder=placeholder, **common)


def owner_key(ctx, user):
    """Whose jobs a visitor sees in Fine-tune: on a Space their own (anonymous: none); locally every job."""
    return user.name if ctx.access.space else ANY


def poll(ctx, user):
    """(progress html, loss figure, log tail, finished run name, Cancel button, message, timer, job name) of
    `user`'s current job. The timer keeps ticking while the job is live or waiting; `running` is read once,
    before the status, so the last tick always shows the final status."""
    job = ctx.jobs.current(owner_key(ctx, user)) if user.signed_in else None
    if job is None:
        idle = "<p>No run yet. Configure one and press Start.</p>"
        if ctx.access.space and not user.signed_in:
            idle = "<p>Sign in with Hugging Face (top of the page) to train your own runs.</p>"
        return idle, None, "", "", gr.update(interactive=False), gr.update(), gr.Timer(active=False), ""
    if isinstance(job, Waiting):
        return waiting_status(ctx, job)
    if isinstance(job, SearchJob):
        return search_status(ctx, job)
    running = job.running
    info = job.info()
    status = job.status()
    step, total = info.get("step", 0), info.get("total_steps") or 0
    eta = info.get("eta_s")
    started = time.strftime("%H:%M:%S", time.localtime(job.started_at))
    duration = f" in {info['duration_s']:.0f} s" if info.get("duration_s") else ""
    history = info.get("loss_history", [])
    bar = (
        f"<p><b>{html.escape(job.run_name)}</b> — {html.escape(status)}{duration} (started {started})</p>"
        f"<progress value='{step}' max='{max(total, 1)}' style='width:100%'></progress>"
        + (
            f"<p>{html.escape(str(info.get('phase') or 'starting: loading the model, reading the data'))}…</p>"
            if running and not step
            else ""
        )
        + (f"<p>step {step} / {total}" if total else "<p>")
        + (f" · {info['elapsed_s']:.0f} s so far · about {eta:.0f} s to go" if eta is not None and job.running else "")
        + (f" · loss {history[-1]['loss']:.4f}" if history else "")
        + "</p>"
    )
    if status.startswith("failed"):
        log = info.get("log_tail") or job.tail()
    else:
        log = "\n".join(f"step {h['step']:>5}  loss {h['loss']:.4f}" for h in history[-12:])
    figure = loss_curve(history, f"Loss — {job.run_name}", info.get("val_history")) if history else None
    # The action line ("Started…", "Cancelling…") gives way to the status line once the run has ended.
    message = gr.update() if running else gr.update(value="")
    finished = job.run_name if status == "completed" else ""
    name = job.run_name if running else ""
    return bar, figure, log, finished, gr.update(interactive=running), message, gr.Timer(active=running), name


def search_status(ctx, job):
    """poll's outputs for a search, from its first second: what it is doing (reading the data; trial k of n with
    the running trial's step, loss curve and log), the trials done, the best so far; the best run once it ended."""
    from ..search import trial_rows

    running = job.running
    status = job.status()
    rows = trial_rows(job.study, job.storage)
    done = [r for r in rows if r["state"] in ("complete", "pruned", "fail")]
    best = next((r for r in rows if r.get("best")), None)
    planned = f" of {job.trials}" if job.trials else ""
    line = f"<p><b>search {html.escape(job.study)}</b> — {html.escape(status)}: {len(done)}{planned} trials finished"
    if best:
        words = "best so far" if running else "best"
        line += f"; {words}: trial {best['trial']} ({html.escape(str(best['run']))}), validation {best['value']:.4f}"
    line += "</p>"
    figure = None
    current = next((r for r in rows if r["state"] == "running" and r.get("run")), None)
    if running and current is None and not done:
        line += "<p>Preparing: reading the data and checking the model before trial 0 (the form's settings)…</p>"
    elif running and current is None:
        line += "<p>Between trials…</p>"
    elif running:
        try:
            info = read_run(ctx.runs_dir / current["run"])
        except LlmftError:
            info = {}
        step, total = info.get("step", 0), info.get("total_steps") or 0
        history = info.get("loss_history", [])
        what = "the starting settings" if current["trial"] == 0 else "sampled settings"
        line += (
            f"<p>Trial {current['trial']} ({html.escape(current['run'])}, {what}): "
            + (html.escape(str(info.get("phase", "starting"))) + "…" if not step else f"step {step} / {total}")
            + (f" · loss {history[-1]['loss']:.4f}" if history else "")
            + f"</p><progress value='{step}' max='{max(total, 1)}' style='width:100%'></progress>"
        )
        if history:
            figure = loss_curve(history, f"Loss — {current['run']}", info.get("val_history"))
    elif best:  # finished: the best trial's curve stays
        try:
            info = read_run(ctx.runs_dir / best["run"])
            if info.get("loss_history"):
                figure = loss_curve(info["loss_history"], f"Loss — {best['run']} (best)", info.get("val_history"))
        except LlmftError:
            pass
    log = hide_paths(job.tail()) if ctx.access.space else job.tail()
    finished = best["run"] if best and status == "completed" else ""
    name = job.run_name if running else ""
    return line, figure, log, finished, gr.update(interactive=running), gr.update(), gr.Timer(active=running), name


def search_view(ctx, user):
    """(trials table, optimization history, parallel coordinates, parameter importances) of the visitor's
    current or last search (hidden when there is none)."""
    from ..search import study_figures, trial_rows

    job = ctx.jobs.current(owner_key(ctx, user)) if user.signed_in else None
    if not isinstance(job, SearchJob):
        return [gr.update(visible=False)] * 4
    rows = trial_rows(job.study, job.storage)
    table = pd.DataFrame(
        [
            {
                "trial": r["trial"],
                "state": r["state"]
                + (" (best)" if r.get("best") else "")
                + (" · the starting settings" if r["trial"] == 0 else ""),
                "value": None if r["value"] is None else round(r["value"], 4),
                "run": r["run"],
                **{k: round(v, 6) if isinstance(v, float) else v for k, v in r["params"].items()},
            }
            for r in rows
        ]
    )
    figures = study_figures(job.study, job.storage) if rows else {}

    def plot(name):
        return gr.update(value=figures.get(name), visible=name in figures)

    return gr.update(value=table, visible=True), plot("history"), plot("parallel"), plot("importances")


def waiting_text(ctx, waiting) -> str:
    """ "Run X is waiting: 2nd in line ..." for a request in the line (or why it never started)."""
    place = ctx.jobs.position(waiting.run_name)
    if place is None:
        return f"Run {waiting.run_name} never started: {waiting.error or 'it left the line'}."
    slots = ctx.jobs.slots
    return (
        f"Run {waiting.run_name} is waiting: number {place[0]} of {place[1]} in line. This server trains "
        f"{slots} run{'s' if slots > 1 else ''} at a time; yours starts by itself when its turn comes."
    )


def waiting_status(ctx, waiting):
    """poll's outputs for a request in the waiting line."""
    place = ctx.jobs.position(waiting.run_name)
    text = html.escape(waiting_text(ctx, waiting))
    live = place is not None
    cancel = gr.update(interactive=live)
    return f"<p>{text}</p>", None, "", "", cancel, gr.update(), gr.Timer(active=live), waiting.run_name if live else ""


def _form(ctx, config_cls):
    """The task row, the own-task box, the data picker and the hyperparameter fields: (widgets by field name,
    own-task widgets, own-task box, data picker)."""
    widgets: dict[str, gr.components.Component] = {}
    with gr.Row():
        for f in form_fields(config_cls, "task"):
            default = "sentiment" if f.name == "task" else f.default
            widgets[f.name] = _widget(config_cls, f, default, ctx.access.space)
    with gr.Group(visible=False) as own_box:
        gr.Markdown(
            "**Your own task**: name it, say whether it labels texts or writes an answer, and write the prompt "
            "(`{text}` is the text column; or name your columns, `{question}`, `{context}`). Upload your data "
            "below and pick its columns. The task is saved as a task file beside the run."
        )
        with gr.Row():
            own = {
                "own_name": gr.Textbox(label="Task name", placeholder="my-topics", elem_id="ft-own_name"),
                "own_type": gr.Radio(["classify", "generate"], value="classify", label="Type", elem_id="ft-own_type"),
                "own_prompt": gr.Textbox("{text}", label="Prompt", elem_id="ft-own_prompt"),
                "own_labels": gr.Textbox(
                    label="Labels (blank: read from the data)",
                    placeholder="Food, Sports, Tech",
                    elem_id="ft-own_labels",
                ),
            }
    picker = DataPicker(ctx, "Training data", ("bundled sample", "hub dataset", "upload"), "ft")
    hyper = form_fields(config_cls, "hyper")
    with gr.Accordion("Hyperparameters (blank = the preset's value, shown in grey)", open=False):
        defaults = preset_values("sentiment", "quick", config_cls)
        for start in range(0, len(hyper), 4):
            with gr.Row():
                for f, value in zip(hyper[start : start + 4], defaults[start : start + 4]):
                    shown = value if f.metadata["choices"] else None  # a text field stays blank: the preset's
                    hint = _placeholder(f, value, "quick")
                    widgets[f.name] = _widget(config_cls, f, shown, placeholder=hint)
    with gr.Row():  # the run's own settings stay in view
        for f in form_fields(config_cls, "run"):
            widgets[f.name] = _widget(config_cls, f, f.default)
    return widgets, own, own_box, picker


def _search_panel() -> dict:
    """The search accordion: the switch that makes Start start a search, its settings, the trials table and
    Optuna's figures."""
    with gr.Accordion("Hyperparameter search (Optuna) instead of one run", open=False):
        gr.Markdown(
            "Several runs: trial 0 trains the settings above as they are, then each trial samples learning rate, "
            "LoRA r, alpha, dropout, targets and length (TPE; poor trials pruned early). Each trial is a run, "
            "scored on the validation split; the test split is never used to choose, so the best cannot be worse "
            "than the settings above on validation. When it ends, evaluate the best."
        )
        label = "Search instead of one run (Start below starts it)"
        panel = {"on": gr.Checkbox(False, label=label, elem_id="ft-search")}
        with gr.Row():
            panel |= {
                "trials": gr.Number(8, label="Trials", minimum=1, maximum=200, precision=0, elem_id="ft-trials"),
                "seconds": gr.Number(
                    0,
                    label="Whole search, s (0 = no limit)",
                    info="each trial keeps the form's time budget",
                    minimum=0,
                    maximum=86_400,
                    elem_id="ft-search-seconds",
                ),
                "study": gr.Textbox(
                    label="Study (blank: task and time; a study that exists is resumed)", elem_id="ft-study"
                ),
            }
        panel["table"] = gr.Dataframe(label="Trials", interactive=False, visible=False, elem_id="ft-trials-table")
        with gr.Row():
            panel["history"] = gr.Plot(label="Optimization history", visible=False)
            panel["importance"] = gr.Plot(label="Parameter importances", visible=False)
        # Full width: one axis per searched setting does not fit a third of the page.
        panel["parallel"] = gr.Plot(label="Parallel coordinates", visible=False)
    return panel


def _status_area() -> dict:
    """Start and Cancel, the messages, the live progress, loss chart and log, and the hidden job state."""
    plan = gr.Markdown(elem_id="ft-plan")  # what Start will do, kept current as the form changes
    with gr.Row():
        area = {
            "start": gr.Button("Start", variant="primary"),
            "cancel": gr.Button("Cancel", variant="stop", interactive=False),
        }
    area["plan"] = plan
    area["message"], area["command"] = gr.Markdown(), gr.Markdown()
    area["progress"] = gr.HTML(elem_id="ft-progress")
    with gr.Row():
        area["loss"] = gr.Plot(label="Loss")
        area["log"] = gr.Textbox(label="Log (last steps)", lines=12, interactive=False)
    area["finished"] = gr.Textbox(visible=False)
    area["job_name"] = gr.Textbox("", visible=False, label="run")  # the run Cancel stops (API: blank = your own)
    # Ticks only while a run is live (started here, or found running when the page loads): an idle tab sends
    # nothing.
    area["timer"] = gr.Timer(1.0, active=False)
    area["evaluate"] = gr.Button("Evaluate this run", visible=False)
    return area


def build(ctx, config_cls=TrainConfig):
    with gr.Tab("Fine-tune", id="finetune"):
        gr.Markdown(
            "Train a LoRA adapter. Training runs in its own process (the command below): reload the page, or "
            "restart the app, and it is still here. One run per user at a time; when the server is busy, yours "
            "waits in line and starts by itself."
        )
        widgets, own, own_box, picker = _form(ctx, config_cls)
        panel = _search_panel()
        area = _status_area()
        names = [*widgets, *own, *picker.names]
        inputs = [*widgets.values(), *own.values(), *picker.inputs]
        started_outputs = [area["message"], area["command"], area["cancel"], area["timer"], area["job_name"]]

        def shown(job, what: str) -> tuple:
            """The page once a run or search started (its command; on a Space without the server's paths), or a
            run waits in line."""
            if isinstance(job, Waiting):
                return waiting_text(ctx, job), "", gr.update(interactive=True), gr.Timer(active=True), job.run_name
            command = f"```\n{hide_paths(job.command) if ctx.access.space else job.command}\n```"
            return f"Started {what}.", command, gr.update(interactive=True), gr.Timer(active=True), job.run_name

        def start(user, *values):
            job = start_training(ctx, user, picker, names, list(values), config_cls)
            return shown(job, f"run **{job.run_name}**")

        def start_search(user, trials, seconds, study, *values):
            job = start_search_job(ctx, user, picker, names, list(values), trials, seconds, study, config_cls)
            return shown(job, f"search **{job.study}**")

        def on_preset(user, task_name, preset_name, own_type):
            if task_name != OWN and visible_task(ctx, user, task_name) is None:
                raise LlmftError(f"unknown task {task_name!r}")  # and no list of the tasks there are
            return preset_updates(task_name, preset_name, config_cls, own_type)

        hyper_widgets = [widgets[f.name] for f in form_fields(config_cls, "hyper")]
        preset_inputs = [widgets["task"], widgets["preset"], own["own_type"]]
        for trigger in (widgets["task"].change, widgets["preset"].change, own["own_type"].change):
            trigger(with_user(ctx, on_preset), preset_inputs, hyper_widgets, api_name=False)
        widgets["task"].change(lambda t: gr.update(visible=t == OWN), widgets["task"], own_box, api_name=False)
        model_help = widgets["model"].info

        def on_task_model(task_name):
            """Offline, a generation task's default model cannot load: preselect the packaged chat LLM, and say so."""
            model, note = offline_choice(get_task(task_name)) if task_name in task_names() else (None, "")
            return gr.update(value=model or "", info=f"{note} {model_help}" if note else model_help)

        # On a pick (not a page restore, which sets the task and its run's model together).
        widgets["task"].input(user_errors(on_task_model), widgets["task"], widgets["model"], api_name=False)
        picker.wire(widgets["task"], own["own_type"])
        # Scroll the progress into view, then hand the form's values on unchanged.
        follow = "(...a) => { document.getElementById('ft-plan')?.scrollIntoView({block: 'start'}); return a; }"
        search_inputs = [panel["trials"], panel["seconds"], panel["study"]]

        def start_either(user, search, trials, seconds, study, *values):
            return start_search(user, trials, seconds, study, *values) if search else start(user, *values)

        # One Start: a run, or a search when its box is ticked (the button says which).
        area["start"].click(
            with_user(ctx, start_either),
            [panel["on"], *search_inputs, *inputs],
            started_outputs,
            api_name=False,
            show_progress_on=[area["message"]],
            js=follow,  # the progress comes into view, wherever Start was pressed from
        )
        panel["on"].change(
            lambda on: gr.update(value="Start search" if on else "Start"), panel["on"], area["start"], api_name=False
        )
        # The API's two ways to start, each with its own inputs.
        api_train, api_search = gr.Button(visible=False), gr.Button(visible=False)
        api_train.click(with_user(ctx, start), inputs, started_outputs, api_name="train")
        api_search.click(with_user(ctx, start_search), [*search_inputs, *inputs], started_outputs, api_name="search")
        area["cancel"].click(
            with_user(ctx, lambda user, name: cancel(ctx, user, name)),
            area["job_name"],
            area["message"],
            api_name="cancel",
        )
        _wire_polling(ctx, area, panel)

        def on_form(user, *values):
            return describe_plan(ctx, user, picker, names, list(values), config_cls)

        # Typed fields count when left (blur) or submitted, not at every keystroke; choices at once.
        typed = [w for w in inputs if isinstance(w, gr.Textbox)]
        triggers = [e for w in typed for e in (w.blur, w.submit)]
        triggers += [w.change for w in inputs if not isinstance(w, gr.Textbox)]
        gr.on(triggers, with_user(ctx, on_form), inputs, area["plan"], api_name="plan", show_progress="hidden")
        restored = [*widgets.values(), *own.values(), *picker.inputs, area["command"], area["timer"], area["progress"]]

        def on_page_load(user):
            job = ctx.jobs.current(owner_key(ctx, user)) if user.signed_in else None
            live = job is not None and (job.running or ctx.jobs.position(job.run_name) is not None)
            # The progress line at once (and, on a Space, the sign-in hint), not at the first tick.
            return [*restore(ctx, user, names, config_cls), gr.Timer(active=live), poll(ctx, user)[0]]

        on_load = (with_user(ctx, on_page_load), restored)
        plan_on_load = (with_user(ctx, on_form), inputs, area["plan"])
    return {
        "evaluate_btn": area["evaluate"],
        "finished": area["finished"],
        "task": widgets["task"],
        "fields": names,
        "picker": picker,
        "own_type": own["own_type"],
        "on_load": on_load,
        "plan_on_load": plan_on_load,
    }


def _wire_polling(ctx, area: dict, panel: dict) -> None:
    """While a run or search is live, each tick refreshes the search's table and figures and the run's progress."""
    timer = area["timer"]
    timer.tick(
        with_user(ctx, lambda user: search_view(ctx, user)),
        None,
        [panel["table"], panel["history"], panel["parallel"], panel["importance"]],
        api_name=False,
        show_progress="hidden",
    )
    polled = ["progress", "loss", "log", "finished", "cancel", "message", "timer", "job_name"]
    timer.tick(
        with_user(ctx, lambda user: poll(ctx, user)),
        None,
        [area[name] for name in polled],
        api_name="progress",
        show_progress="hidden",
    )
    area["finished"].change(
        lambda name: gr.update(visible=bool(name)), area["finished"], area["evaluate"], api_name=False
    )
