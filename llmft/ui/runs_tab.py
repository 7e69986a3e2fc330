"""Runs tab: history of runs, one run's details and loss curve, delete, share, download, push to the hub.

Every handler takes the caller (`with_user`): a visitor sees the runs they may see, and changes only their own.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import gradio as gr
import pandas as pd

from ..access import owner_of
from ..config import TrainConfig, hyperparameters
from ..errors import LlmftError, hide_paths
from ..jobs import log_path, log_tail
from ..leaderboard import common_evaluations, leaderboard, rank, spread_text
from ..packaged import minilm_path, smollm2_dir
from ..plots import loss_curve
from ..results import data_label, latest_evaluation
from ..runs import FAILED, RUNNING, delete_run, update_run
from ..tasks import task_of_run
from ..votes import tallies, tally_brief
from .common import visible_runs, with_user, zip_for_download
from .guard import MODEL_WORK


def model_label(ref: str) -> str:
    """A short name for the table: the hub id, or the packaged MiniLM, or a folder's last two parts."""
    path = Path(ref)
    if not path.is_absolute():
        return ref
    if path == Path(minilm_path()):
        return "all-MiniLM-L6-v2 (packaged)"
    if path == smollm2_dir():
        return "SmolLM2-135M-Instruct (packaged)"
    return "/".join(path.parts[-2:])


def number(value) -> str:
    """A setting as a person reads it: 0.0003, not 0.00030000000000000003."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def trained_text(info: dict) -> str:
    """What training did (not what the form asked for): rows, steps, passes over the data, time."""
    if info.get("step") is None or info.get("train_examples") is None:
        return ""
    parts = [f"{info['train_examples']} rows", f"{info['step']} steps"]
    parts += [f"{info['epochs']:.2g} epochs"] if isinstance(info.get("epochs"), int | float) else []
    parts += [f"{info['duration_s']:.0f} s"] if info.get("duration_s") else []
    return " · ".join(parts)


def settings_text(info: dict) -> str:
    """The run's preset and what differs from it ("quick preset: learning_rate 0.003, lora_r 16"); every setting
    is in the run's details."""
    cfg = info.get("config") or {}
    name = cfg.get("preset") or "quick"
    try:
        preset = task_of_run(info).preset(name)
    except LlmftError:
        preset = None
    changed = []
    for key, value in hyperparameters(TrainConfig, cfg):
        if key in ("preset", "seed") or not hasattr(preset, key):
            continue
        default = getattr(preset, key)
        if number(default if not isinstance(default, tuple) else list(default)) != number(value):
            changed.append(f"{key} {number(value)}")
    return f"{name} preset" + (f": {', '.join(changed)}" if changed else "")


def _ordered(runs: list[dict]) -> list[dict]:
    """Newest first, a search's trials together under the study's newest place, its best trial first."""
    groups: dict[str, list[dict]] = {}
    for run in runs:  # newest first already
        study = (run.get("search") or {}).get("study")
        groups.setdefault(f"study:{study}" if study else f"run:{run['name']}", []).append(run)
    ordered = []
    for members in groups.values():
        members.sort(key=lambda r: (not (r.get("search") or {}).get("best"), (r.get("search") or {}).get("trial", 0)))
        ordered += members
    return ordered


def runs_table(ctx, user) -> pd.DataFrame:
    """One row per run, readable at a glance: what it is, what training did, what its latest evaluation said;
    a search's trials grouped under their study with the best first. Every setting is in the run's details."""
    rows = []
    for run in _ordered(visible_runs(ctx, user)):
        evaluation = latest_evaluation(Path(run["dir"]))
        rows.append(
            {
                "run": run["name"],
                "status": run.get("status"),
                **({"owner": _owner_label(run)} if ctx.access.space else {}),
                "task": run.get("task"),
                "model": model_label(str(run.get("base_model", ""))),
                "data": data_label(run.get("data")),
                "trained": trained_text(run),
                "final loss": None if run.get("final_loss") is None else f"{run['final_loss']:.4f}",
                "latest evaluation": evaluation.headline_text() if evaluation else "",
                "settings": settings_text(run),
                "search": _search_label(run),
                "blind votes": "; ".join(f"{t['source']}: {tally_brief(t)}" for t in tallies(run["dir"])),
            }
        )
    columns = ["run", "status", *(["owner"] if ctx.access.space else []), "task", "latest evaluation", "trained"]
    columns += ["model", "data", "final loss", "settings", "search", "blind votes"]
    table = pd.DataFrame(rows, columns=columns)
    empty = [c for c in ("search", "blind votes") if not table[c].astype(bool).any()]
    return table.drop(columns=empty)  # a column nobody filled says nothing


def _search_label(info: dict) -> str:
    """ "study #3 (best)" for a search's trial, else ""."""
    search = info.get("search") or {}
    if not search:
        return ""
    state = search.get("state")
    mark = " (best)" if search.get("best") else f" ({state})" if state and state != "complete" else ""
    return f"{search.get('study')} #{search.get('trial')}{mark}"


def _owner_label(info: dict) -> str:
    owner = owner_of(info)
    return (owner or "the Space") + (" (shared)" if owner and info.get("shared") else "")


def refresh(ctx, user):
    """The runs table, the picker, and the first run's details and download (set here: a picker update alone may
    not trigger its change event)."""
    table = runs_table(ctx, user)
    names = table["run"].tolist()
    first = names[0] if names else None
    return table, gr.update(choices=names, value=first), *details(ctx, user, first), download_button(ctx, user, first)


def details(ctx, user, name):
    if not name:
        return "", None
    info = ctx.access.find(ctx.runs_dir, user, name)
    shown = {
        k: info.get(k)
        for k in (
            "name",
            "status",
            "shared",
            "task",
            "base_model",
            "data",
            "train_examples",
            "config",
            "lora_target_modules_resolved",
            "trained_in_full",
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
    text = json.dumps(shown, indent=2, default=str)
    return hide_paths(text) if ctx.access.space else text, loss_curve(  # strangers see file names, not the server's
        history, f"Loss — {name}", info.get("val_history")
    ) if history else None


def delete(ctx, user, name):
    """Delete run `name` (the API's one-step delete: the caller names the run)."""
    if not name:
        raise LlmftError("pick a run to delete")
    info = ctx.access.find(ctx.runs_dir, user, name)
    ctx.access.check_owner(user, info, "delete")
    delete_run(Path(info["dir"]))
    return f"Deleted run {name}."


def share(ctx, user, name, shared):
    """Let every visitor see, compare, evaluate and download run `name` (or stop: `shared` False)."""
    info = ctx.access.find(ctx.runs_dir, user, name)
    ctx.access.check_owner(user, info, "share")
    if info.get("status") == RUNNING:
        raise LlmftError(f"run {name} is still running; share it once it has finished")
    update_run(Path(info["dir"]), shared=bool(shared))
    return f"Run {name} is {'now visible to every visitor' if shared else 'visible to you only again'}."


def ask_delete(ctx, user, name):
    """First step of Delete in the page: name the run and show the confirmation, nothing is deleted yet."""
    if not name:
        raise LlmftError("pick a run to delete")
    ctx.access.check_owner(user, ctx.access.find(ctx.runs_dir, user, name), "delete")
    question = f"Delete run **{name}** and its adapter, checkpoints and evaluations? This cannot be undone."
    return name, gr.update(value=question, visible=True), gr.update(visible=True), gr.update(visible=True)


def confirm_delete(ctx, user, pending):
    """Second step: delete the run named at the first step (never whatever the picker shows now), then show
    no run selected, so a further click cannot delete another one."""
    if not pending:
        raise LlmftError("nothing to delete: press Delete run first")
    message = delete(ctx, user, pending)
    table = runs_table(ctx, user)
    hidden, picked = [gr.update(visible=False)] * 3, gr.update(choices=table["run"].tolist(), value=None)
    return None, *hidden, message, table, picked, "", None, download_button(ctx, user, None)


_ZIPS: dict[str, tuple[int, str]] = {}  # run folder -> (its newest change, the zip built for that version)
_ZIPS_LOCK = threading.Lock()


def _with_adapter(ctx, user, name) -> Path | None:
    """Run `name`'s folder if `user` may see it and it has a final adapter, else None."""
    run_dir = Path(ctx.access.find(ctx.runs_dir, user, name)["dir"])
    return run_dir if (run_dir / "adapter").is_dir() else None


def _adapter_zip(ctx, name: str, run_dir: Path) -> str:
    """A zip of the run's adapter with llmft's model card (`export.export_run`, as the CLI's export writes it), not
    the template peft saved beside the weights. Built once per version of the run (a new evaluation changes the
    card) and reused, so picking runs back and forth builds nothing twice."""
    import tempfile

    from ..export import export_run

    version = max(p.stat().st_mtime_ns for p in [run_dir, *run_dir.rglob("*")])
    with _ZIPS_LOCK:
        built = _ZIPS.get(str(run_dir))
        if built and built[0] == version and Path(built[1]).is_file():
            return built[1]
        with tempfile.TemporaryDirectory(prefix="llmft-card-") as tmp:
            folder = export_run(name, Path(tmp) / f"{name}-adapter", runs_dir=str(ctx.runs_dir))
            _ZIPS[str(run_dir)] = version, zip_for_download(ctx, folder, f"{name}-adapter")
        return _ZIPS[str(run_dir)][1]


def download_adapter(ctx, user, name):
    """Run `name`'s adapter zip (the API's download)."""
    run_dir = _with_adapter(ctx, user, name)
    if run_dir is None:
        raise LlmftError(f"run {name} has no final adapter")
    return _adapter_zip(ctx, name, run_dir)


def download_button(ctx, user, name):
    """The Download button for the picked run: its zip ready, so one click downloads it; off without an adapter."""
    run_dir = _with_adapter(ctx, user, name) if name else None
    if run_dir is None:
        return gr.update(value=None, interactive=False)
    return gr.update(value=_adapter_zip(ctx, name, run_dir), interactive=True)


def push(ctx, user, name, repo_id, private, merge):
    """Push run `name` to the hub: locally with this machine's token; on a Space with the visitor's own token,
    into their own namespace (see `Access.push_target`)."""
    from ..export import push_run

    if not name:
        raise LlmftError("pick a run to push")
    info = ctx.access.find(ctx.runs_dir, user, name)
    ctx.access.check_owner(user, info, "push")
    repo_id, token = ctx.access.push_target(user, repo_id)
    url = push_run(
        Path(info["dir"]).name, repo_id, private=bool(private), merge=bool(merge), runs_dir=ctx.runs_dir, token=token
    )
    return f"Pushed run {name} to {repo_id}: {url}"


def _board_view(board):
    """(summary Markdown, table, plot) of a `Leaderboard`."""
    fp = board.fingerprint
    lines = [
        f"**{len(board.rows)} runs on {board.headline}**, n = {fp['n']} examples of {fp['data']} [{fp['split']}], "
        f"evaluation fingerprint `{fp['id']}`. p-values Holm-corrected across the runs.",
        *(spread_text(g) for g in board.groups),
    ]
    return "\n\n".join(lines), pd.DataFrame(board.table()), board.figure()


def rank_selected(ctx, user, names):
    """Rank the picked runs on the newest evaluation set they all share (nothing is evaluated again)."""
    names = list(names or [])
    if len(names) < 2:
        raise LlmftError("pick at least two runs to rank")
    infos = [ctx.access.find(ctx.runs_dir, user, n) for n in names]
    results = common_evaluations([Path(i["dir"]) for i in infos])
    if results is None:
        raise LlmftError("these runs share no evaluation set: press “Evaluate on one set and rank”")
    groups = {i["name"]: (i.get("config") or {}).get("group") for i in infos}
    return _board_view(rank(results, {k: v for k, v in groups.items() if v}))


def evaluate_and_rank(ctx, user, names, progress=gr.Progress()):
    """Evaluate the picked runs on the same examples (the first run's task) and rank them."""
    names = list(names or [])
    if len(names) < 2:
        raise LlmftError("pick at least two runs to rank")
    infos = [ctx.access.find(ctx.runs_dir, user, n) for n in names]
    tasks = {i.get("task") for i in infos}
    if len(tasks) > 1:
        raise LlmftError(f"runs of different tasks are not ranked together: {', '.join(sorted(map(str, tasks)))}")

    def on_progress(stage, done, total):
        progress(done / max(total, 1), desc=stage)

    board, _ = leaderboard(ctx, tasks.pop(), names, on_progress=on_progress, progress=False, cached_model=True)
    return _board_view(board)


def build(ctx):
    from ..access import User

    with gr.Tab("Runs", id="runs") as tab:
        refresh_btn = gr.Button("Refresh", size="sm")
        public = runs_table(ctx, User())  # the page as built; each visitor's runs on load
        table = gr.Dataframe(public, label="Runs", interactive=False, max_height=320, wrap=True, elem_id="runs-table")
        names = table.value["data"] if isinstance(table.value, dict) else []
        # Any name may come through the API: the handlers, not the list of choices, decide what a caller may see.
        pick = gr.Dropdown([row[0] for row in names], label="Run", elem_id="runs-pick", allow_custom_value=True)
        with gr.Row():
            info = gr.Code(label="run.json", language="json", max_lines=24)
            loss = gr.Plot(label="Loss")
        with gr.Row():
            download_btn = gr.DownloadButton("Download adapter (.zip)", interactive=False, elem_id="runs-download")
            # Sharing matters on a Space only: locally every run is the one user's.
            share_btn = gr.Button("Share with every visitor", visible=ctx.access.space)
            unshare_btn = gr.Button("Stop sharing", visible=ctx.access.space)
            delete_btn = gr.Button("Delete run…", variant="stop")
        with gr.Row():
            question = gr.Markdown(visible=False)
            confirm_btn = gr.Button("Yes, delete it", variant="stop", visible=False)
            keep_btn = gr.Button("No, keep it", visible=False)
        pending = gr.State(None)
        with gr.Row():
            repo_id = gr.Textbox(
                label="Hub repo id (your-name/name: pushed with your sign-in)"
                if ctx.access.space
                else "Hub repo id (user/name; token from HF_TOKEN)"
            )
            private = gr.Checkbox(label="Private", value=True)
            merge = gr.Checkbox(label="Merge into the base model", value=False)
            push_btn = gr.Button("Push to the hub")
        message = gr.Markdown()
        with gr.Accordion("Leaderboard: several runs on one evaluation set", open=False):
            ranked = gr.Dropdown(
                [row[0] for row in names], multiselect=True, label="Runs to rank", elem_id="board-runs"
            )
            with gr.Row():
                rank_btn = gr.Button("Rank on their shared evaluation", size="sm", elem_id="board-rank")
                board_eval_btn = gr.Button("Evaluate on one set and rank", size="sm", elem_id="board-evaluate")
            board_text = gr.Markdown(elem_id="board-text")
            board_columns = [
                "rank",
                "run",
                "base",
                "tuned",
                "Δ vs base [95% CI]",
                "p (Holm)",
                "win/tie/loss",
                "verdict",
            ]
            board_table = gr.Dataframe(
                pd.DataFrame(columns=board_columns),  # headers before the first leaderboard, not "1 2 3"
                interactive=False,
                label="Leaderboard (best first)",
                elem_id="board-table",
            )
            board_plot = gr.Plot(label="Gain over base, 95% CI")
        shown = [table, pick, info, loss, download_btn]  # what a refresh sets
        # Errors show as a toast and, at most, on the message line: never as badges over the table or fields.
        on_message = dict(show_progress_on=[message])
        on_refresh = with_user(ctx, lambda user: refresh(ctx, user))
        refresh_btn.click(on_refresh, None, shown, api_name="runs", show_progress="hidden")
        pick.change(
            with_user(ctx, lambda user, n: details(ctx, user, n)),
            pick,
            [info, loss],
            api_name="run_details",
            show_progress="hidden",
        )
        confirmation = [question, confirm_btn, keep_btn]
        delete_btn.click(
            with_user(ctx, lambda user, n: ask_delete(ctx, user, n)),
            pick,
            [pending, *confirmation],
            api_name=False,
            show_progress="hidden",
        )
        confirm_btn.click(
            with_user(ctx, lambda user, p: confirm_delete(ctx, user, p)),
            pending,
            [pending, *confirmation, message, *shown],
            api_name=False,
            **on_message,
        )
        keep_btn.click(lambda: (None, *[gr.update(visible=False)] * 3), None, [pending, *confirmation], api_name=False)
        # The API's delete names its run explicitly; the page goes through the confirmation above.
        api_delete = gr.Button(visible=False)
        api_delete.click(
            with_user(ctx, lambda user, n: delete(ctx, user, n)), pick, message, api_name="delete_run", **on_message
        )
        # The API's share names the run and says whether to share; the page's two buttons pass the picked run.
        api_share = gr.Checkbox(visible=False)
        api_share_btn = gr.Button(visible=False)
        on_share = with_user(ctx, lambda user, n, shared: share(ctx, user, n, shared))
        api_share_btn.click(on_share, [pick, api_share], message, api_name="share_run", **on_message)
        share_btn.click(
            with_user(ctx, lambda user, n: share(ctx, user, n, True)), pick, message, api_name=False, **on_message
        ).then(on_refresh, None, shown, api_name=False, show_progress="hidden")
        unshare_btn.click(
            with_user(ctx, lambda user, n: share(ctx, user, n, False)), pick, message, api_name=False, **on_message
        ).then(on_refresh, None, shown, api_name=False, show_progress="hidden")
        push_btn.click(
            with_user(ctx, lambda user, *a: push(ctx, user, *a)),
            [pick, repo_id, private, merge],
            message,
            api_name="push",
            **on_message,
        )
        # The zip is made when a run is picked, so the button downloads it in one click; the API's download
        # names its run.
        pick.change(
            with_user(ctx, lambda user, n: download_button(ctx, user, n)),
            pick,
            download_btn,
            api_name=False,
            show_progress="hidden",
        )

        # A click on a row picks its run (the cells are not edited).
        def on_row(evt: gr.SelectData):
            return gr.update(value=evt.row_value[0]) if evt.row_value else gr.update()

        table.select(
            on_row,
            None,
            pick,
            api_name=False,
            show_progress="hidden",
        )
        api_download, api_file = gr.Button(visible=False), gr.File(visible=False)
        api_download.click(
            with_user(ctx, lambda user, n: download_adapter(ctx, user, n)), pick, api_file, api_name="download_adapter"
        )
        board = [board_text, board_table, board_plot]
        rank_btn.click(
            with_user(ctx, lambda user, n: rank_selected(ctx, user, n)), ranked, board, api_name="rank_runs"
        )
        board_eval_btn.click(
            with_user(ctx, lambda user, n, progress: evaluate_and_rank(ctx, user, n, progress), progress=True),
            ranked,
            board,
            api_name="leaderboard",
            concurrency_id=MODEL_WORK,
            show_progress_on=[board_text],
        )
        table.change(
            lambda t: gr.update(choices=list(t["run"])), table, ranked, api_name=False, show_progress="hidden"
        )
    return {"outputs": shown, "refresh": on_refresh, "tab": tab, "ranked": ranked}
