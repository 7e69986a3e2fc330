"""The Gradio app: one module per tab; `build_app` assembles them. The library never imports this package."""

from __future__ import annotations

import os

import gradio as gr
from starlette.middleware import Middleware

from ..access import Access
from ..config import TrainConfig
from ..context import Context
from ..files import cap_file_size
from ..jobs import Jobs
from ..packaged import minilm_path, smollm2_dir
from ..pipeline import known_tasks
from ..refs import max_hub_mb
from ..runs import clean_storage, runs_home
from . import about, compare, evaluate, finetune, runs_tab
from .common import DOWNLOADS, MAX_UPLOAD, completed_runs, visible_runs, with_user
from .datapicker import column_visibility
from .guard import RequestGuard


def build_app(
    runs_dir: str | None = None,
    model_dirs: list[str] | None = None,
    dtype: str = "auto",
    config_cls=TrainConfig,
    access: Access | None = None,
) -> gr.Blocks:
    """Build the tabbed app.

    Args:
        runs_dir: the runs home for this server (default: the usual runs home).
        model_dirs: extra folders users may load local models or adapters from (default: $LLMFT_MODEL_DIRS,
            separated by os.pathsep). The runs home and the packaged MiniLM are always allowed; any other
            local path typed into the app is refused.
        dtype: the weights' dtype for every model this server loads (`auto`, `float32` or `bfloat16`).
        config_cls: the training config class the Fine-tune form is derived from.
        access: who may do what (default: from the environment, `Access.from_env`: Space mode, with sign-in,
            when SPACE_ID is set).
    Returns:
        The Blocks, with the server's `Context` as `app.llmft_context`.
    """
    home = runs_home(runs_dir)
    if model_dirs is None:
        model_dirs = [d for d in os.environ.get("LLMFT_MODEL_DIRS", "").split(os.pathsep) if d]
    access = access or Access.from_env()
    if access.space:
        # Every hub load the app makes (a model, a dataset or a scorer a visitor names) would send HF_TOKEN, opening
        # the owner's private and gated repos to every visitor: out of the environment it goes. Pushes use the
        # visitor's own token; training children never had it.
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            os.environ.pop(name, None)
        os.environ.setdefault("LLMFT_MAX_HUB_MB", "2000")  # a hub model or dataset a visitor names (refs.max_hub_mb)
        if max_hub_mb():  # and no file written here or by a training child, a download included, grows past it
            cap_file_size(max_hub_mb())
    roots = [home, minilm_path(), smollm2_dir(), *model_dirs]  # the packaged models: by alias, and as runs name them
    ctx = Context.create(home, dtype, allowed_roots=roots, access=access)
    Jobs(ctx)  # the trainings this server starts (and the ones it finds running)
    clean_storage(home, DOWNLOADS)  # uploads no run uses and downloads past their age, from earlier sessions
    # Gradio's own cache of uploads and outputs: swept hourly, files older than a day removed.
    with gr.Blocks(
        title="llmft — LoRA fine-tuning, base vs tuned", delete_cache=(3600, 86400), analytics_enabled=False
    ) as app:
        with gr.Row():
            gr.Markdown("# llmft\nFine-tune small language models with LoRA and see, honestly, whether it helped.")
            if access.space:  # Sign in with Hugging Face: training, and your own runs, need it
                gr.LoginButton(scale=0, min_width=220)
        with gr.Tabs() as tabs:
            cmp = compare.build(ctx)
            ft = finetune.build(ctx, config_cls)
            ev = evaluate.build(ctx)
            rt = runs_tab.build(ctx)
            about.build()

        def to_evaluate(user, name):
            # A finished run appears in every picker; jump to Evaluate with it selected.
            return gr.Tabs(selected="evaluate"), gr.update(choices=completed_runs(ctx, user), value=name)

        ft["evaluate_btn"].click(with_user(ctx, to_evaluate), ft["finished"], [tabs, ev["run"]], api_name=False)
        cmp["to_finetune"].click(lambda: gr.Tabs(selected="finetune"), None, tabs, api_name=False)

        def refresh_pickers(user, name):
            """A run just finished: Evaluate and Compare pick it (Compare switches to its task), and Compare's
            "no finished run yet" note goes."""
            if not name:
                return (gr.update(),) * 5
            runs = completed_runs(ctx, user)
            return (
                gr.update(choices=runs, value=name),
                gr.update(choices=runs, value=name),
                gr.update(choices=known_tasks(ctx, visible_runs(ctx, user))),  # your own task, once trained
                gr.update(visible=False),
                gr.update(visible=False),
            )

        ft["finished"].change(
            with_user(ctx, refresh_pickers),
            ft["finished"],
            [ev["run"], cmp["adapter"], cmp["task"], cmp["empty"], cmp["to_finetune"]],
            api_name=False,
        )
        # Each visitor's page: the runs they may see, their running job's form.
        app.load(with_user(ctx, lambda user: _newest_run_picked(ctx, user)), None, ev["run"], api_name=False)
        app.load(ev["task_of_run"][0], *ev["task_of_run"][1:], api_name=False)
        app.load(ft["on_load"][0], None, ft["on_load"][1], api_name=False)  # a running job's form
        app.load(*ft["plan_on_load"], api_name=False, show_progress="hidden")  # what Start will do
        app.load(cmp["on_load"][0], *cmp["on_load"][1:], api_name=False)
        app.load(column_visibility, [ft["task"], ft["own_type"]], ft["picker"].kind_fields, api_name=False)
        app.load(rt["refresh"], None, rt["outputs"], api_name=False)  # a fresh page shows current runs
        # The Runs tab is never stale: refreshed when shown and when a run ends.
        quiet = dict(api_name=False, show_progress="hidden")  # background refreshes: no spinner, no error badge
        rt["tab"].select(rt["refresh"], None, rt["outputs"], **quiet)
        ft["finished"].change(rt["refresh"], None, rt["outputs"], **quiet)
    app.llmft_context = ctx
    app.llmft_form_fields = ft["fields"]  # the /train endpoint's inputs, in order
    return app


def _newest_run_picked(ctx, user):
    """Evaluate's run picker on a fresh page: the runs the visitor may see, the newest picked."""
    runs = completed_runs(ctx, user)
    return gr.update(choices=runs, value=runs[0] if runs else None)


CSS = (
    # A table's narrow column (an empty "latest evaluation") must not wrap its header one letter to a line, which
    # made the header taller than the table and hid its rows.
    "#runs-table th { min-width: 9ch; } #runs-table th * { word-break: normal; overflow-wrap: normal; } "
    # Every table here is read-only, and a click picks its row: no spreadsheet cell outline or row/column buttons.
    "[role=gridcell].cell-selected { --ring-color: transparent !important; box-shadow: none !important; "
    "animation: none !important; } "
    "[role=gridcell] .selection-button { display: none !important; } "
    "[role=gridcell].cell-solo .cell-wrap > span { box-shadow: 0 6px 12px -4px #00000038 !important; }"
)


def launch(app: gr.Blocks, **kwargs):
    DOWNLOADS.mkdir(parents=True, exist_ok=True)
    # Two model-heavy events at once at most (Compare, Evaluate, previews) and a bounded waiting line: a
    # 2-vCPU Space does not run four models at once, and a flood of requests is told the queue is full.
    # Model-heavy events share one concurrency group (`guard.MODEL_WORK`): two of them at once in all.
    app.queue(default_concurrency_limit=2, max_size=64)
    guard = Middleware(RequestGuard, blocks=app, per_visitor=app.llmft_context.access.space)
    app_kwargs = {**kwargs.pop("app_kwargs", {})}
    app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), guard]
    kwargs.setdefault("footer_links", ["api", "gradio", "settings"])  # no "Runs" link beside our Runs tab
    kwargs.setdefault("css", CSS)
    return app.launch(max_file_size=MAX_UPLOAD, allowed_paths=[str(DOWNLOADS)], app_kwargs=app_kwargs, **kwargs)
