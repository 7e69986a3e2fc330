"""Fine-tune tab: a form derived from `TrainConfig`'s fields, training in a child process, live progress, cancel."""

from __future__ import annotations

import hashlib
import html
import shutil
import time
from pathlib import Path

import gradio as gr

from ..config import TrainConfig, field_type, form_fields, label_of
from ..data import SAMPLE, read_rows
from ..errors import LlmftError
from ..plots import loss_curve
from ..refs import is_hub_id
from ..tasks import get_task, task_names
from .common import MAX_UPLOAD, user_errors

SOURCES = ["bundled sample", "hub dataset", "upload"]
UPLOAD_TYPES = [".csv", ".jsonl", ".json", ".tsv", ".parquet"]
COLUMN_LABELS = {"text_column": "Text column", "target_columns": "Summary column", "label_column": "Label column"}


def preset_values(task_name: str, preset_name: str, config_cls=TrainConfig) -> list:
    """Form values of the preset's hyperparameters, in the order of the form's `hyper` fields."""
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


def preview(path):
    """First rows of an uploaded file and its columns for the mapping pickers."""
    if not path:
        return gr.update(value=None), *(gr.update(choices=[], value=None) for _ in COLUMN_LABELS)
    rows = read_rows(Path(path))
    if not rows:
        raise LlmftError(f"{Path(path).name} has no rows")
    import pandas as pd

    frame = pd.DataFrame([r for _, r in rows[:5]]).astype(str)
    cols = list(frame.columns)
    return frame, *(gr.update(choices=cols, value=None) for _ in COLUMN_LABELS)


def _keep_upload(ctx, path: str) -> str:
    """Copy an upload into the runs home so run.json points at a file that outlives the request."""
    src = Path(path)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    dest = ctx.runs_dir / ".uploads" / f"{digest}-{src.name}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copyfile(src, dest)
    return str(dest)


def _data_source(ctx, source, hub_id, upload) -> str:
    if source == "hub dataset":
        data = (hub_id or "").strip()
        if not data:
            raise LlmftError("enter a hub dataset id, or choose another data source")
        if not is_hub_id(data):
            raise LlmftError(f"not a hub dataset id: {data[:80]!r} (owner/name; local files go through Upload)")
        return data
    if source == "upload":
        if not upload:
            raise LlmftError("upload a data file, or choose another data source")
        return _keep_upload(ctx, upload)
    return SAMPLE


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


def form_to_config(ctx, names: list[str], values: list, config_cls=TrainConfig) -> TrainConfig:
    """The config the form describes (`names[i]` is the field or form key of `values[i]`)."""
    form = dict(zip(names, values))
    by_name = {f.name: f for f in form_fields(config_cls, None, all_groups=True)}
    task = get_task(form["task"])
    kwargs = {}
    for name, f in by_name.items():
        if name in form and f.metadata["group"] not in ("data", "columns"):
            value = _convert(config_cls, f, form[name])
            if value is not None or f.default is None:
                kwargs[name] = value
    for name in COLUMN_LABELS:
        if name in task.kind.column_fields and form.get(name):
            kwargs[name] = [form[name]] if field_type(config_cls, by_name[name]) is list else form[name]
    kwargs["data"] = _data_source(ctx, form["source"], form["hub_id"], form["upload"])
    kwargs.update(runs_dir=str(ctx.runs_dir), dtype=ctx.dtype)
    return config_cls(**kwargs)


def _widget(config_cls, f, value):
    """The form widget of one config field (elem_id `ft-<field>`), from its type, bounds and choices."""
    meta, base = f.metadata, field_type(config_cls, f)
    common = dict(label=label_of(f), elem_id=f"ft-{f.name}")
    if f.name == "task":
        return gr.Dropdown(task_names(), value=value, **common)
    common["info"] = meta["help"]
    if meta["choices"]:
        return gr.Radio(list(meta["choices"]), value=value, **common)
    if base is bool:
        return gr.Checkbox(bool(value), **common)
    if base in (int, float) and f.default is not None:
        low, high = meta["bounds"] or (None, None)
        return gr.Number(value, minimum=low, maximum=high, precision=0 if base is int else None, **common)
    # A field that may be blank is a text box: a gr.Number cannot be empty (the browser sends 0).
    return gr.Textbox("" if value is None else str(value), placeholder="blank: the default", **common)


def poll(ctx):
    """(progress html, loss figure, log tail, finished run name) of this server's current or last job."""
    job = ctx.jobs.current()
    if job is None:
        return "<p>No run yet. Configure one and press Start.</p>", None, "", ""
    info = job.info()
    status = job.status()
    step, total = info.get("step", 0), info.get("total_steps") or 0
    eta = info.get("eta_s")
    started = time.strftime("%H:%M:%S", time.localtime(job.started_at))
    duration = f" in {info['duration_s']:.0f} s" if info.get("duration_s") and status == "completed" else ""
    history = info.get("loss_history", [])
    bar = (
        f"<p><b>{html.escape(job.run_name)}</b> — {html.escape(status)}{duration} (started {started})</p>"
        f"<progress value='{step}' max='{max(total, 1)}' style='width:100%'></progress>"
        f"<p>step {step} / {total}"
        + (f" · ETA {eta:.0f} s" if eta is not None and status == "running" else "")
        + (f" · loss {history[-1]['loss']:.4f}" if history else "")
        + "</p>"
    )
    if status.startswith("failed"):
        log = info.get("log_tail") or job.tail()
    else:
        log = "\n".join(f"step {h['step']:>5}  loss {h['loss']:.4f}" for h in history[-12:])
    figure = loss_curve(history, f"Training loss — {job.run_name}") if history else None
    return bar, figure, log, job.run_name if status == "completed" else ""


def build(ctx, config_cls=TrainConfig):
    with gr.Tab("Fine-tune", id="finetune"):
        gr.Markdown(
            "Train a LoRA adapter. Training runs in its own process (the command below): reload the page, or "
            "restart the app, and it is still here. One run at a time per server."
        )
        widgets: dict[str, gr.components.Component] = {}
        with gr.Row():
            for f in form_fields(config_cls, "task"):
                default = "sentiment" if f.name == "task" else f.default
                widgets[f.name] = _widget(config_cls, f, default)
        source = gr.Radio(SOURCES, value=SOURCES[0], label="Training data")
        with gr.Row():
            hub_id = gr.Textbox(label="Hub dataset id", placeholder="stanfordnlp/imdb", visible=False)
            upload = gr.File(
                label=f"Upload ({', '.join(UPLOAD_TYPES)}; max {MAX_UPLOAD})",
                file_types=UPLOAD_TYPES,
                type="filepath",
                visible=False,
            )
        table = gr.Dataframe(label="Preview (first rows)", interactive=False, max_height=220, visible=False)
        with gr.Row():
            for name, label in COLUMN_LABELS.items():
                widgets[name] = gr.Dropdown([], label=f"{label} (blank = task default)", allow_custom_value=True)
        hyper = form_fields(config_cls, "hyper")
        with gr.Accordion("Hyperparameters (blank = the preset's)", open=True):
            defaults = preset_values("sentiment", "quick", config_cls)
            for start in range(0, len(hyper), 4):
                with gr.Row():
                    for f, value in zip(hyper[start : start + 4], defaults[start : start + 4]):
                        widgets[f.name] = _widget(config_cls, f, value)
            with gr.Row():
                for f in form_fields(config_cls, "run"):
                    widgets[f.name] = _widget(config_cls, f, f.default)
        with gr.Row():
            start_btn = gr.Button("Start", variant="primary")
            cancel_btn = gr.Button("Cancel", variant="stop")
        message = gr.Markdown()
        command = gr.Markdown()
        progress = gr.HTML()
        with gr.Row():
            loss = gr.Plot(label="Loss")
            log = gr.Textbox(label="Log (last steps)", lines=12, interactive=False)
        finished = gr.Textbox(visible=False)
        evaluate_btn = gr.Button("Evaluate this run", visible=False)

        names = [*widgets, "source", "hub_id", "upload"]
        inputs = [*widgets.values(), source, hub_id, upload]
        hyper_widgets = [widgets[f.name] for f in hyper]

        def start(*values):
            job = ctx.jobs.start(form_to_config(ctx, names, list(values), config_cls))
            return f"Started run **{job.run_name}**.", f"```\n{job.command}\n```"

        def on_preset(task_name, preset_name):
            return preset_values(task_name, preset_name, config_cls)

        for trigger in (widgets["task"].change, widgets["preset"].change):
            trigger(user_errors(on_preset), [widgets["task"], widgets["preset"]], hyper_widgets, api_name=False)
        source.change(
            lambda s: (
                gr.update(visible=s == "hub dataset"),
                gr.update(visible=s == "upload"),
                gr.update(visible=s == "upload"),
            ),
            source,
            [hub_id, upload, table],
            api_name=False,
        )
        upload.change(user_errors(preview), upload, [table, *(widgets[n] for n in COLUMN_LABELS)], api_name="preview")
        start_btn.click(user_errors(start), inputs, [message, command], api_name="train")
        cancel_btn.click(
            lambda: "Cancelling after the current step…" if ctx.jobs.cancel() else "No run is in progress.",
            None,
            message,
            api_name="cancel",
        )
        timer = gr.Timer(1.0)
        timer.tick(
            user_errors(lambda: poll(ctx)),
            None,
            [progress, loss, log, finished],
            api_name="progress",
            show_progress="hidden",
        )
        finished.change(lambda name: gr.update(visible=bool(name)), finished, evaluate_btn, api_name=False)
    return {"evaluate_btn": evaluate_btn, "finished": finished, "task": widgets["task"], "fields": names}
