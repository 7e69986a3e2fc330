"""Fine-tune tab: configure and launch a LoRA run off the request thread, follow it live, cancel it."""

from __future__ import annotations

import hashlib
import html
import shutil
import time
from pathlib import Path

import gradio as gr

from .. import jobs
from ..data import HUB_ID_RE, SAMPLE, read_rows
from ..errors import LlmftError
from ..plots import loss_curve
from ..runs import read_run, runs_home
from ..tasks import CLASSIFICATION, get_task
from ..training import TrainConfig
from .common import MAX_UPLOAD, TASKS, runs_dir, server_dtype, user_errors

SOURCES = ["bundled sample", "hub dataset", "upload"]
UPLOAD_TYPES = [".csv", ".jsonl", ".json", ".tsv", ".parquet"]


def preset_values(task_name: str, preset_name: str) -> list:
    """Form values of a preset: steps, lr, batch, r, alpha, dropout, targets, train samples."""
    p = get_task(task_name).preset(preset_name)
    steps = p.max_steps or 0
    return [
        steps,
        p.learning_rate,
        p.batch_size,
        p.lora_r,
        p.lora_alpha,
        p.lora_dropout,
        ",".join(p.target_modules),
        p.train_samples or 0,
    ]


def preview(path):
    """First rows of an uploaded file and its columns for the mapping pickers."""
    if not path:
        return gr.update(value=None), *(gr.update(choices=[], value=None) for _ in range(3))
    rows = read_rows(Path(path))
    if not rows:
        raise LlmftError(f"{Path(path).name} has no rows")
    import pandas as pd

    frame = pd.DataFrame([r for _, r in rows[:5]]).astype(str)
    cols = list(frame.columns)
    return frame, *(gr.update(choices=cols, value=None) for _ in range(3))


def _keep_upload(path: str) -> str:
    """Copy an upload into the runs home so run.json points at a file that outlives the request."""
    src = Path(path)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    dest = runs_home(runs_dir()) / ".uploads" / f"{digest}-{src.name}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copyfile(src, dest)
    return str(dest)


def make_config(
    task,
    model,
    source,
    hub_id,
    upload,
    text_col,
    target_col,
    label_col,
    preset,
    steps,
    lr,
    batch,
    r,
    alpha,
    dropout,
    targets,
    train_samples,
    seed,
    run_name,
    no_base_dropout=False,
) -> TrainConfig:
    if source == "hub dataset":
        if not (hub_id or "").strip():
            raise LlmftError("enter a hub dataset id, or choose another data source")
        data = hub_id.strip()
        if not HUB_ID_RE.match(data) or ".." in data:
            raise LlmftError(f"not a hub dataset id: {data[:80]!r} (owner/name; local files go through Upload)")
    elif source == "upload":
        if not upload:
            raise LlmftError("upload a data file, or choose another data source")
        data = _keep_upload(upload)
    else:
        data = SAMPLE
    is_cls = get_task(task).kind == CLASSIFICATION
    return TrainConfig(
        task=task,
        preset=preset,
        model=(model or "").strip() or None,
        data=data,
        train_samples=int(train_samples) if train_samples else None,
        max_steps=int(steps) if steps else None,
        epochs=None if steps else 1.0,
        learning_rate=float(lr),
        batch_size=int(batch),
        lora_r=int(r),
        lora_alpha=int(alpha),
        lora_dropout=float(dropout),
        target_modules=[t.strip() for t in (targets or "").split(",") if t.strip()],
        seed=int(seed),
        run_name=(run_name or "").strip() or None,
        runs_dir=runs_dir(),
        text_column=text_col or None,
        target_columns=[target_col] if target_col and not is_cls else None,
        label_column=label_col if label_col and is_cls else None,
        dtype=server_dtype(),
        base_dropout=0.0 if no_base_dropout else None,
    )


def start(*form):
    config = make_config(*form)
    job = jobs.start(config)
    return f"Started run **{job.config.run_name}**.", f"```\n{config.cli_command()}\n```"


def cancel():
    return "Cancelling after the current step…" if jobs.cancel() else "No run is in progress."


def poll():
    """(progress html, loss figure, log tail, run name) of this server's current or last job."""
    job = jobs.current()
    if job is None:
        return "<p>No run yet. Configure one and press Start.</p>", None, "", ""
    run_dir = Path(job.run_dir)
    info = read_run(run_dir) if (run_dir / "run.json").is_file() else {}
    step, total = info.get("step", 0), info.get("total_steps") or job.config.max_steps or 0
    status = "running" if job.running else info.get("status", "failed")
    if job.error and not job.running:
        status = f"failed: {job.error}"
    eta = info.get("eta_s")
    started = time.strftime("%H:%M:%S", time.localtime(job.started_at))
    bar = (
        f"<p><b>{html.escape(job.config.run_name)}</b> — {html.escape(status)} (started {started})</p>"
        f"<progress value='{step}' max='{max(total, 1)}' style='width:100%'></progress>"
        f"<p>step {step} / {total}"
        + (f" · ETA {eta:.0f} s" if eta is not None and job.running else "")
        + (f" · loss {info['loss_history'][-1]['loss']:.4f}" if info.get("loss_history") else "")
        + "</p>"
    )
    history = info.get("loss_history", [])
    log = "\n".join(f"step {h['step']:>5}  loss {h['loss']:.4f}" for h in history[-12:])
    figure = loss_curve(history, f"Training loss — {job.config.run_name}") if history else None
    return bar, figure, log, job.config.run_name if status == "completed" else ""


def build():
    with gr.Tab("Fine-tune", id="finetune"):
        gr.Markdown(
            "Train a LoRA adapter. Training runs in the background: reload the page and it is still here. "
            "One run at a time per server."
        )
        with gr.Row():
            task = gr.Dropdown(TASKS, value="sentiment", label="Task")
            model = gr.Textbox(
                label="Base model (blank = the task's; offline: minilm for sentiment)",
                placeholder="hub id, local folder or minilm",
            )
            preset = gr.Radio(["quick", "full"], value="quick", label="Preset")
        source = gr.Radio(SOURCES, value=SOURCES[0], label="Training data")
        with gr.Row():
            hub_id = gr.Textbox(label="Hub dataset id", placeholder="stanfordnlp/imdb")
            upload = gr.File(
                label=f"Upload ({', '.join(UPLOAD_TYPES)}; max {MAX_UPLOAD})", file_types=UPLOAD_TYPES, type="filepath"
            )
        table = gr.Dataframe(label="Preview (first rows)", interactive=False, max_height=220)
        with gr.Row():
            text_col = gr.Dropdown([], label="Text column (blank = task default)", allow_custom_value=True)
            target_col = gr.Dropdown([], label="Summary column", allow_custom_value=True)
            label_col = gr.Dropdown([], label="Label column", allow_custom_value=True)
        with gr.Accordion("Hyperparameters", open=True):
            defaults = preset_values("sentiment", "quick")
            with gr.Row():
                steps = gr.Number(
                    defaults[0], label="Max steps (0 = one epoch)", minimum=0, maximum=100_000, precision=0
                )
                lr = gr.Number(defaults[1], label="Learning rate", minimum=1e-7, maximum=1.0)
                batch = gr.Slider(1, 128, value=defaults[2], step=1, label="Batch size")
                train_samples = gr.Number(defaults[7], label="Train samples (0 = all)", minimum=0, precision=0)
            with gr.Row():
                r = gr.Slider(1, 256, value=defaults[3], step=1, label="LoRA r")
                alpha = gr.Number(defaults[4], label="LoRA alpha", minimum=1, maximum=4096, precision=0)
                dropout = gr.Slider(0.0, 0.9, value=defaults[5], step=0.01, label="LoRA dropout")
                targets = gr.Textbox(defaults[6], label="Target modules")
            with gr.Row():
                seed = gr.Number(42, label="Seed", precision=0)
                run_name = gr.Textbox(label="Run name (blank = automatic)")
                no_base_dropout = gr.Checkbox(
                    False,
                    label="No dropout in the frozen model",
                    info="Faster on CPU (MiniLM 2x on long reviews), but one regulariser fewer",
                )
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

        hyper = [steps, lr, batch, r, alpha, dropout, targets, train_samples]
        form = [task, model, source, hub_id, upload, text_col, target_col, label_col, preset]
        form += [*hyper, seed, run_name, no_base_dropout]
        for trigger in (task.change, preset.change):
            trigger(user_errors(preset_values), [task, preset], hyper, api_name=False)
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
        upload.change(user_errors(preview), upload, [table, text_col, target_col, label_col], api_name="preview")
        start_btn.click(user_errors(start), form, [message, command], api_name="train")
        cancel_btn.click(cancel, None, message, api_name="cancel")
        timer = gr.Timer(1.0)
        timer.tick(
            user_errors(poll), None, [progress, loss, log, finished], api_name="progress", show_progress="hidden"
        )
        finished.change(lambda name: gr.update(visible=bool(name)), finished, evaluate_btn, api_name=False)
    return {"evaluate_btn": evaluate_btn, "finished": finished, "task": task}
