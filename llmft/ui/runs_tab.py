"""Runs tab: history of runs, one run's details and loss curve, delete, download the adapter."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pandas as pd

from ..config import TrainConfig, hyperparameters
from ..errors import LlmftError
from ..jobs import log_path, log_tail
from ..models import minilm_path
from ..plots import loss_curve
from ..results import data_label
from ..runs import FAILED, delete_run, find_run, latest_evaluation, list_runs, read_run
from .common import user_errors, zip_for_download


def model_label(ref: str) -> str:
    """A short name for the table: the hub id, or the packaged MiniLM, or a folder's last two parts."""
    path = Path(ref)
    if not path.is_absolute():
        return ref
    if path == Path(minilm_path()):
        return "all-MiniLM-L6-v2 (packaged)"
    return "/".join(path.parts[-2:])


def runs_table(ctx) -> pd.DataFrame:
    rows, hyper = [], {}
    for run in list_runs(ctx.runs_dir):
        params = dict(hyperparameters(TrainConfig, run.get("config", {})))
        hyper.update(dict.fromkeys(params))
        evaluation = latest_evaluation(Path(run["dir"]))
        rows.append(
            {
                "run": run["name"],
                "status": run.get("status"),
                "task": run.get("task"),
                "model": model_label(str(run.get("base_model", ""))),
                "data": data_label(run.get("data")),
                **params,
                "duration s": run.get("duration_s"),
                "final loss": None if run.get("final_loss") is None else round(run["final_loss"], 4),
                "latest evaluation": evaluation.headline_text() if evaluation else "",
            }
        )
    columns = ["run", "status", "task", "model", "data", *hyper, "duration s", "final loss", "latest evaluation"]
    return pd.DataFrame(rows, columns=columns)


def refresh(ctx):
    """The runs table, the picker, and the first run's details (set here: a picker update alone may not
    trigger its change event)."""
    table = runs_table(ctx)
    names = table["run"].tolist()
    first = names[0] if names else None
    return table, gr.update(choices=names, value=first), *details(ctx, first)


def details(ctx, name):
    if not name:
        return "", None
    info = read_run(find_run(name, ctx.runs_dir))
    shown = {
        k: info.get(k)
        for k in (
            "name",
            "status",
            "task",
            "base_model",
            "data",
            "train_examples",
            "config",
            "lora_target_modules_resolved",
            "command",
            "started_at",
            "finished_at",
            "duration_s",
            "final_loss",
            "tokens_per_s",
            "versions",
            "error",
        )
    }
    if info.get("status") == FAILED:  # what the training process printed last
        shown["log_tail"] = info.get("log_tail") or log_tail(log_path(ctx.runs_dir, name))
    history = info.get("loss_history", [])
    return json.dumps(shown, indent=2, default=str), loss_curve(history, f"Loss — {name}") if history else None


def delete(ctx, name):
    """Delete run `name` (the API's one-step delete: the caller names the run)."""
    if not name:
        raise LlmftError("pick a run to delete")
    delete_run(find_run(name, ctx.runs_dir))
    return f"Deleted run {name}."


def ask_delete(name):
    """First step of Delete in the page: name the run and show the confirmation, nothing is deleted yet."""
    if not name:
        raise LlmftError("pick a run to delete")
    question = f"Delete run **{name}** and its adapter, checkpoints and evaluations? This cannot be undone."
    return name, gr.update(value=question, visible=True), gr.update(visible=True), gr.update(visible=True)


def confirm_delete(ctx, pending):
    """Second step: delete the run named at the first step (never whatever the picker shows now), then show
    no run selected, so a further click cannot delete another one."""
    if not pending:
        raise LlmftError("nothing to delete: press Delete run first")
    message = delete(ctx, pending)
    table, _, *shown = refresh(ctx)
    names = table["run"].tolist()
    hidden = [gr.update(visible=False)] * 3
    return None, *hidden, message, table, gr.update(choices=names, value=None), "", None


def download_adapter(ctx, name):
    if not name:
        raise LlmftError("pick a run")
    run_dir = find_run(name, ctx.runs_dir)
    if not (run_dir / "adapter").is_dir():
        raise LlmftError(f"run {name} has no final adapter")
    return zip_for_download(ctx, run_dir / "adapter", f"{name}-adapter")


def push(ctx, name, repo_id, private, merge):
    from ..export import push_run

    if not name:
        raise LlmftError("pick a run to push")
    url = push_run(name, (repo_id or "").strip(), private=bool(private), merge=bool(merge), runs_dir=ctx.runs_dir)
    return f"Pushed run {name} to {repo_id}: {url}"


def build(ctx):
    with gr.Tab("Runs", id="runs") as tab:
        refresh_btn = gr.Button("Refresh", size="sm")
        table = gr.Dataframe(runs_table(ctx), label="Runs", interactive=False, max_height=320, elem_id="runs-table")
        names = table.value["data"] if isinstance(table.value, dict) else []
        pick = gr.Dropdown([row[0] for row in names], label="Run", elem_id="runs-pick")
        with gr.Row():
            info = gr.Code(label="run.json", language="json")
            loss = gr.Plot(label="Loss")
        with gr.Row():
            download_btn = gr.Button("Download adapter (.zip)")
            delete_btn = gr.Button("Delete run…", variant="stop")
        with gr.Row():
            question = gr.Markdown(visible=False)
            confirm_btn = gr.Button("Yes, delete it", variant="stop", visible=False)
            keep_btn = gr.Button("No, keep it", visible=False)
        pending = gr.State(None)
        with gr.Row():
            repo_id = gr.Textbox(label="Hub repo id (user/name; token from HF_TOKEN)")
            private = gr.Checkbox(label="Private", value=True)
            merge = gr.Checkbox(label="Merge into the base model", value=False)
            push_btn = gr.Button("Push to the hub")
        message = gr.Markdown()
        file = gr.File(label="Adapter", interactive=False)
        # Errors show as a toast and, at most, on the message line: never as badges over the table or fields.
        on_message = dict(show_progress_on=[message])
        refresh_btn.click(
            user_errors(lambda: refresh(ctx)), None, [table, pick, info, loss], api_name="runs", show_progress="hidden"
        )
        pick.change(
            user_errors(lambda n: details(ctx, n)), pick, [info, loss], api_name="run_details", show_progress="hidden"
        )
        confirmation = [question, confirm_btn, keep_btn]
        delete_btn.click(
            user_errors(ask_delete), pick, [pending, *confirmation], api_name=False, show_progress="hidden"
        )
        confirm_btn.click(
            user_errors(lambda p: confirm_delete(ctx, p)),
            pending,
            [pending, *confirmation, message, table, pick, info, loss],
            api_name=False,
            **on_message,
        )
        keep_btn.click(lambda: (None, *[gr.update(visible=False)] * 3), None, [pending, *confirmation], api_name=False)
        # The API's delete names its run explicitly; the page goes through the confirmation above.
        api_delete = gr.Button(visible=False)
        api_delete.click(user_errors(lambda n: delete(ctx, n)), pick, message, api_name="delete_run", **on_message)
        push_btn.click(
            user_errors(lambda *a: push(ctx, *a)),
            [pick, repo_id, private, merge],
            message,
            api_name="push",
            **on_message,
        )
        download_btn.click(user_errors(lambda n: download_adapter(ctx, n)), pick, file, api_name="download_adapter")
    return {"outputs": [table, pick, info, loss], "refresh": lambda: refresh(ctx), "tab": tab}
