"""Evaluate tab: base vs tuned on test examples, paired statistics, plots, drill-down, downloads."""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr
import pandas as pd

from ..access import User
from ..config import EvalConfig
from ..errors import LlmftError
from ..pipeline import default_test_data, evaluate, resolve_task
from ..results import TABLE_COLUMNS, EvalResult, markdown_safe, metric_name
from ..votes import CHOICES, next_ballot, source_tally, tally_text
from .common import completed_runs, for_download, with_user, word_diff_html
from .datapicker import DataPicker
from .guard import MODEL_WORK, request_watch

EXAMPLE_COLUMNS = ["id", "base", "tuned", "delta", "input"]
"""The examples table's columns before an evaluation (never Gradio's "1 2 3")."""


def examples_table(result: EvalResult) -> pd.DataFrame:
    metric = metric_name(result.example_metric)
    base, tuned = result.scores(result.example_metric)
    rows = [
        {
            "id": r["id"],
            f"base {metric}": round(b, 4),
            f"tuned {metric}": round(t, 4),
            "delta": round(t - b, 4),
            "input": r["input"][:80],
        }
        for r, b, t in zip(result.rows, base, tuned)
    ]
    return pd.DataFrame(rows).sort_values("delta")


def example_detail(result: EvalResult | None, example_id: str) -> str:
    """HTML for one example: input, references, both outputs with a word diff, and its scores (all escaped)."""
    if not result or not example_id:
        return ""
    row = next((r for r in result.rows if str(r["id"]) == str(example_id)), None)
    if row is None:
        return f"<p>No example {html.escape(str(example_id))}.</p>"
    refs = [v for k, v in row.items() if k.startswith("reference") and v]
    metrics = result.per_example
    score_rows = "".join(
        f"<tr><td>{html.escape(metric_name(m))}</td><td>{row[f'base_{m}']:.4f}</td><td>{row[f'tuned_{m}']:.4f}</td></tr>"
        for m in metrics
    )
    esc = html.escape
    base, tuned = str(row["base_output"]), str(row["tuned_output"])
    if result.labels:  # a label is one word: say whether each side got it right, not a word diff
        truth = str(refs[0]) if refs else ""
        marks = {side: "right" if answer == truth else "wrong" for side, answer in (("base", base), ("tuned", tuned))}
        change = f"<p><b>Base</b> {marks['base']}, <b>tuned</b> {marks['tuned']}.</p>" if truth else ""
    else:
        change = f"<p><b>Word diff (base → tuned)</b>: {word_diff_html(base, tuned)}</p>"
    return (
        f"<h4>Example {esc(str(row['id']))}</h4>"
        f"<p><b>Input</b></p><pre style='white-space:pre-wrap'>{esc(row['input'])}</pre>"
        + "".join(f"<p><b>Reference</b>: {esc(str(r))}</p>" for r in refs)
        + f"<p><b>Base</b>: {esc(base)}</p><p><b>Tuned</b>: {esc(tuned)}</p>{change}"
        f"<table><tr><th>metric</th><th>base</th><th>tuned</th></tr>{score_rows}</table>"
    )


def verdict_markdown(result: EvalResult) -> str:
    """The header: what was compared, the verdict sentence, and every warning (labels, files and names a visitor
    chose are made inert: `markdown_safe`)."""
    safe = markdown_safe
    head = (
        f"**{safe(result.task)}**, run **{safe(result.run)}**, n = {result.n} examples of "
        f"**{safe(result.data_name())}** [{safe(result.split)}], {result.dtype} weights"
        + (f", BERTScore scorer `{result.scorer}`" if result.scorer else "")
        + (" · base outputs from cache" if result.base_outputs_cached else "")
    )
    mark = {"better": "✓", "worse": "✗", "no clear difference": "≈"}[result.verdict]  # in every font, unlike emoji
    lines = [head, f"{mark} **{result.verdict}** — {safe(result.verdict_text())}"]
    lines += [f"**Selection:** {safe(result.selection)}"] if result.selection else []
    lines += [f"⚠ **Warning:** {safe(w)}" for w in result.warnings]
    lines += [f"**Blind votes:** {safe(result.votes_text())}"] if result.votes_text() else []
    return "\n\n".join(lines)


def run_evaluation(ctx, user, picker, run, n, seed, scorer, max_new_tokens, data_values: dict, progress=gr.Progress()):
    if not run:
        raise LlmftError("pick a finished run to evaluate (train one in the Fine-tune tab)")
    info = ctx.access.find(ctx.runs_dir, user, run)
    ctx.access.check_local_ref(ctx.runs_dir, user, scorer)
    home = ctx.access.evaluation_home(ctx.runs_dir, user, info)  # a visitor's own folder, unless the run is theirs
    ctx.access.make_room(ctx.runs_dir, user)  # the quota, or room in the anonymous folder

    still_wanted = request_watch(ctx.access.space)  # an abandoned or stalled evaluation stops at its next batch

    def on_progress(stage, done, total):
        still_wanted()
        progress(done / max(total, 1), desc=stage)

    # The run's own task test sample needs no fields; an upload or a hub split is resolved (and checked) here.
    task = resolve_task(ctx, info["task"], run)  # the run's own task (a file task's stored labels)
    data = {} if data_values.get("source") == SOURCES[0] else picker.resolve(user, task, data_values)
    config = EvalConfig(
        task=info["task"],
        run=run,
        n=int(n) if n else None,
        seed=int(seed or 0),
        scorer=(scorer or "").strip() or None,
        max_new_tokens=int(max_new_tokens) if max_new_tokens else None,
        runs_dir=str(ctx.runs_dir),
        dtype=ctx.dtype,
        **data,
    )
    result, written = evaluate(
        ctx, config, progress=False, on_progress=on_progress, cached_model=True, evaluations_dir=home / "evaluations"
    )
    figures = result.figures()
    metric = result.example_metric
    worse = [str(r["id"]) for r, b, t in zip(result.rows, *result.scores(metric)) if t < b]
    files = [for_download(ctx, path) for key, path in written[0].items() if key in ("examples", "summary", "plots")]
    ids = [str(r["id"]) for r in result.rows]

    def plot(name):
        return gr.update(value=figures.get(name), visible=name in figures)

    return (
        verdict_markdown(result),
        pd.DataFrame([{**row, "metric": metric_name(row["metric"])} for row in result.table()]),
        gr.update(value=pd.DataFrame(result.class_table()), visible=bool(result.per_class)),
        plot("boxplot"),
        plot("proportions"),
        plot("scatter"),
        plot("confusion_base"),
        plot("confusion_tuned"),
        examples_table(result),
        gr.update(choices=worse, value=None, label=f"Where tuned got worse ({len(worse)})"),
        gr.update(choices=ids, value=None),
        files,
        result,
        (run, Path(written[0]["summary"]).parent.name),
    )


def review_next(ctx, user, where, note: str = ""):
    """The next blind item of the evaluation `where` (run, evaluation folder): (token, input, A, B, status)."""
    if not where:
        raise LlmftError("evaluate a run first: the blind review votes on that evaluation's examples")
    run, source = where
    run_dir = ctx.access.evaluation_home(ctx.runs_dir, user, ctx.access.find(ctx.runs_dir, user, run))
    voter = ctx.access.voter(user)
    item = next_ballot(ctx.ballots, run_dir, source, EvalResult.load(run_dir / "evaluations" / source).rows, voter)
    tally = tally_text(source_tally(run_dir, source))
    if item is None:
        return None, "", "", "", f"{note}**You have voted on every example of this evaluation.** {tally}"
    token, shown, done, total = item
    status = f"{note}Item {done + 1} of {total} (random order; which side is tuned is hidden until you vote). {tally}"
    return token, shown["text"], shown["a"], shown["b"], status


def review_vote(ctx, user, where, token, choice):
    """Cast the vote, reveal which side was tuned, and show the next item."""
    vote = ctx.ballots.answer(token, choice, ctx.access.voter(user))
    said = {"tuned": "you preferred tuned", "base": "you preferred base", "tie": "a tie", "both_bad": "both bad"}
    note = f"Recorded: {said[vote['outcome']]} (A was {'tuned' if vote['tuned_was'] == 'A' else 'base'}). "
    return review_next(ctx, user, where, note)


SOURCES = ("the run's test sample", "upload", "hub dataset")


def build(ctx):
    with gr.Tab("Evaluate", id="evaluate"):
        gr.Markdown(
            "Score base and tuned on the same test examples and compare them pair by pair. Evaluate on held-out "
            "data: examples the run trained on are flagged, and refused when they are half of the sample."
        )
        with gr.Row():
            runs = completed_runs(ctx, User())  # the page as built; each visitor's runs on load
            run = gr.Dropdown(
                runs,
                value=runs[0] if runs else None,
                label="Run",
                info="a finished run",
                allow_custom_value=True,
                elem_id="ev-run",
            )
            n = gr.Number(
                0,
                label="Examples",
                info="test examples drawn (0 = the preset's)",
                minimum=0,
                maximum=5000,
                precision=0,
            )
            seed = gr.Number(0, label="Seed", info="which examples are drawn, and the resampling", precision=0)
            scorer = gr.Textbox(label="BERTScore scorer", info="a model id (blank = roberta-large; offline MiniLM)")
            max_new = gr.Number(
                0, label="Max new tokens", info="per output (0 = the task's)", minimum=0, maximum=1024, precision=0
            )
        task = gr.Textbox(visible=False)
        picker = DataPicker(ctx, "Test data", SOURCES, "ev", with_split=True)
        refresh = gr.Button("Refresh runs", size="sm")
        go = gr.Button("Evaluate", variant="primary")
        status = gr.Markdown(elem_id="evaluate-status")
        head = gr.Markdown(elem_id="verdict")
        summary = gr.Dataframe(
            pd.DataFrame(columns=TABLE_COLUMNS),
            label="Paired comparison (tuned − base; 95% CI by paired bootstrap)",
            interactive=False,
            elem_id="summary-table",
        )
        classes = gr.Dataframe(
            label="Per class (precision, recall and F1 of each label)",
            interactive=False,
            visible=False,
            elem_id="class-table",
        )
        with gr.Row():
            box = gr.Plot(label="Per-example scores", elem_id="boxplot", visible=False)
            proportions = gr.Plot(label="Proportions", elem_id="proportions", visible=False)
            scatter = gr.Plot(label="Tuned vs base", visible=False)
        with gr.Row():
            cm_base = gr.Plot(label="Base confusion matrix", visible=False)
            cm_tuned = gr.Plot(label="Tuned confusion matrix", visible=False)
        table = gr.Dataframe(
            pd.DataFrame(columns=EXAMPLE_COLUMNS),
            label="Examples (worst change first; click a row)",
            interactive=False,
            max_height=300,
        )
        with gr.Row():
            worse = gr.Dropdown([], label="Where tuned got worse")
            pick = gr.Dropdown([], label="Any example")
        detail = gr.HTML()
        files = gr.File(label="Downloads", file_count="multiple", interactive=False)
        state = gr.State(None)
        where = gr.State(None)
        with gr.Accordion("Blind review: vote on this evaluation's outputs as A and B", open=False):
            gr.Markdown(
                "Each example's two outputs are shown as A and B in a random order; you learn which was tuned "
                "only after your vote. The result (tuned's win rate with a Wilson 95% interval and a sign test) "
                "is kept with the run: here, in Runs, in summary.json and in the model card."
            )
            review_start = gr.Button("Start blind review", size="sm", elem_id="review-start")
            token = gr.State(None)
            review_status = gr.Markdown(elem_id="review-status")
            review_text = gr.Textbox(label="Input", lines=4, interactive=False, elem_id="review-text")
            with gr.Row():
                review_a = gr.Textbox(label="A", lines=3, interactive=False, elem_id="review-a")
                review_b = gr.Textbox(label="B", lines=3, interactive=False, elem_id="review-b")
            with gr.Row():
                vote_buttons = {c: gr.Button(label, size="sm", elem_id=f"vote-{c}") for c, label in CHOICES.items()}

        def on_run(user, name):
            """What depends on the run, derived from it alone: its task; the generation fields (shown for a task
            that generates); the test data reset to the run's own test sample, or to an upload when the run
            has none (trained on your file); nothing left over from an earlier run's data choice."""
            columns = [gr.update(choices=[], value=None) for _ in picker.columns]
            blank = [gr.update(value=None), *columns, gr.update(value=""), gr.update(value="")]
            if not name:
                return "", gr.update(visible=True), gr.update(visible=True), gr.update(value=SOURCES[0]), *blank, ""
            info = ctx.access.find(ctx.runs_dir, user, name)
            task = resolve_task(ctx, info["task"], name)
            try:
                default_test_data(task, info)
                source, note = SOURCES[0], ""
            except LlmftError as err:
                source, note = "upload", str(err)
            generates = gr.update(visible=task.kind.generates)
            return task.name, generates, generates, gr.update(value=source), *blank, markdown_safe(note)

        picked = [picker.upload, *picker.columns.values(), picker.label_map, picker.hub_id]
        run.change(
            with_user(ctx, on_run),
            run,
            [task, max_new, scorer, picker.source, *picked, status],
            api_name=False,
            show_progress="hidden",
        )
        picker.wire(task)
        refresh.click(
            with_user(ctx, lambda user: gr.update(choices=completed_runs(ctx, user))), None, run, api_name=False
        )

        def on_evaluate(user, run, n, seed, scorer, max_new, *data, progress):
            values = dict(zip(picker.names, data))
            return run_evaluation(ctx, user, picker, run, n, seed, scorer, max_new, values, progress)

        results = [head, summary, classes, box, proportions, scatter, cm_base, cm_tuned, table, worse, pick, files]
        results += [state, where]

        def cleared():
            """An evaluation starts on a clean page: a failing one never leaves the previous result under its
            error, as if it were this one's."""
            hidden = gr.update(value=None, visible=False)
            empty = gr.update(choices=[], value=None)
            blank = pd.DataFrame(columns=TABLE_COLUMNS), pd.DataFrame(columns=EXAMPLE_COLUMNS)
            return (
                "",
                blank[0],
                hidden,
                hidden,
                hidden,
                hidden,
                hidden,
                hidden,
                blank[1],
                empty,
                empty,
                None,
                None,
                None,
            )

        go.click(cleared, None, results, api_name=False, show_progress="hidden").then(
            with_user(ctx, on_evaluate, progress=True),
            [run, n, seed, scorer, max_new, *picker.inputs],
            results,
            api_name="evaluate",
            concurrency_id=MODEL_WORK,
            show_progress_on=[status],  # progress and any error show on the line under the button, not on fields
        )
        worse.change(example_detail, [state, worse], detail, api_name=False)
        pick.change(example_detail, [state, pick], detail, api_name="example")

        def on_select(result, evt: gr.SelectData):
            row = evt.row_value if evt.row_value else []
            return example_detail(result, row[0] if row else None)

        table.select(on_select, state, detail, api_name=False)
        shown = [token, review_text, review_a, review_b, review_status]
        review_start.click(
            with_user(ctx, lambda user, w: review_next(ctx, user, w)), where, shown, api_name="review_next"
        )
        for choice, button in vote_buttons.items():
            button.click(
                with_user(ctx, lambda user, w, t, c=choice: review_vote(ctx, user, w, t, c)),
                [where, token],
                shown,
                api_name=f"review_vote_{choice}",
            )
    return {
        "run": run,
        "task_of_run": (with_user(ctx, on_run), run, [task, max_new, scorer, picker.source, *picked, status]),
    }
