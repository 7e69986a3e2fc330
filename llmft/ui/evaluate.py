"""Evaluate tab: base vs tuned on test examples, paired statistics, plots, drill-down, downloads."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from ..config import EvalConfig
from ..pipeline import evaluate
from ..results import EvalResult
from ..runs import find_run, read_run
from .common import completed_runs, for_download, user_errors, word_diff_html


def examples_table(result: EvalResult) -> pd.DataFrame:
    metric = result.example_metric
    base, tuned = result.scores(metric)
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
        f"<tr><td>{html.escape(m)}</td><td>{row[f'base_{m}']:.4f}</td><td>{row[f'tuned_{m}']:.4f}</td></tr>"
        for m in metrics
    )
    esc = html.escape
    return (
        f"<h4>Example {esc(str(row['id']))}</h4>"
        f"<p><b>Input</b></p><pre style='white-space:pre-wrap'>{esc(row['input'])}</pre>"
        + "".join(f"<p><b>Reference</b>: {esc(str(r))}</p>" for r in refs)
        + f"<p><b>Base</b>: {esc(str(row['base_output']))}</p><p><b>Tuned</b>: {esc(str(row['tuned_output']))}</p>"
        f"<p><b>Word diff (base → tuned)</b>: {word_diff_html(str(row['base_output']), str(row['tuned_output']))}</p>"
        f"<table><tr><th>metric</th><th>base</th><th>tuned</th></tr>{score_rows}</table>"
    )


def run_evaluation(ctx, run, n, seed, scorer, max_new_tokens, progress=gr.Progress()):
    if not run:
        raise gr.Error("pick a finished run to evaluate")
    info = read_run(find_run(run, ctx.runs_dir))

    def on_progress(stage, done, total):
        progress(done / max(total, 1), desc=stage)

    config = EvalConfig(
        task=info["task"],
        run=run,
        n=int(n) if n else None,
        seed=int(seed or 0),
        scorer=(scorer or "").strip() or None,
        max_new_tokens=int(max_new_tokens) if max_new_tokens else None,
        runs_dir=str(ctx.runs_dir),
        dtype=ctx.dtype,
    )
    result, written = evaluate(ctx, config, progress=False, on_progress=on_progress, cached_model=True)
    figures = result.figures()
    metric = result.example_metric
    worse = [str(r["id"]) for r, b, t in zip(result.rows, *result.scores(metric)) if t < b]
    files = [for_download(written[0][k]) for k in ("examples", "summary", "boxplot")]
    head = (
        f"**{result.task}**, run **{result.run}**, n = {result.n}, {result.dtype} weights"
        + (f", BERTScore scorer `{result.scorer}`" if result.scorer else "")
        + (" · base outputs from cache" if result.base_outputs_cached else "")
    )
    m = result.metrics[result.headline]
    significant = m["ci95"][0] > 0 or m["ci95"][1] < 0
    head += (
        f"\n\n**{result.headline}: base {m['base_mean']:.3f} → tuned {m['tuned_mean']:.3f}** (Δ "
        f"{m['delta_mean']:+.3f}, 95% CI [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}], p = {m['p_value']:.2g}) — "
        + ("the interval excludes 0." if significant else "the interval includes 0: no clear change.")
    )
    ids = [str(r["id"]) for r in result.rows]
    return (
        head,
        pd.DataFrame(result.table()),
        figures["boxplot"],
        figures["scatter"],
        figures.get("confusion_base"),
        figures.get("confusion_tuned"),
        examples_table(result),
        gr.update(choices=worse, value=None, label=f"Where tuned got worse ({len(worse)})"),
        gr.update(choices=ids, value=None),
        files,
        result,
    )


def build(ctx):
    with gr.Tab("Evaluate", id="evaluate"):
        gr.Markdown("Score base and tuned on the same test examples and compare them pair by pair.")
        with gr.Row():
            runs = completed_runs(ctx)
            run = gr.Dropdown(runs, value=runs[0] if runs else None, label="Run")
            n = gr.Number(0, label="Examples (0 = the preset's)", minimum=0, maximum=5000, precision=0)
            seed = gr.Number(0, label="Seed", precision=0)
            scorer = gr.Textbox(label="BERTScore scorer (blank = roberta-large, offline MiniLM)")
            max_new = gr.Number(0, label="Max new tokens (0 = the task's)", minimum=0, maximum=1024, precision=0)
        refresh = gr.Button("Refresh runs", size="sm")
        go = gr.Button("Evaluate", variant="primary")
        head = gr.Markdown()
        summary = gr.Dataframe(label="Paired comparison (tuned − base)", interactive=False, elem_id="summary-table")
        with gr.Row():
            box = gr.Plot(label="Per-example scores", elem_id="boxplot")
            scatter = gr.Plot(label="Tuned vs base")
        with gr.Row():
            cm_base = gr.Plot(label="Base confusion matrix")
            cm_tuned = gr.Plot(label="Tuned confusion matrix")
        table = gr.Dataframe(label="Examples (worst change first; click a row)", interactive=False, max_height=300)
        with gr.Row():
            worse = gr.Dropdown([], label="Where tuned got worse")
            pick = gr.Dropdown([], label="Any example")
        detail = gr.HTML()
        files = gr.File(label="Downloads", file_count="multiple", interactive=False)
        state = gr.State(None)

        refresh.click(lambda: gr.update(choices=completed_runs(ctx)), None, run, api_name=False)

        def on_evaluate(run, n, seed, scorer, max_new, progress=gr.Progress()):
            return run_evaluation(ctx, run, n, seed, scorer, max_new, progress)

        go.click(
            user_errors(on_evaluate),
            [run, n, seed, scorer, max_new],
            [head, summary, box, scatter, cm_base, cm_tuned, table, worse, pick, files, state],
            api_name="evaluate",
        )
        worse.change(example_detail, [state, worse], detail, api_name=False)
        pick.change(example_detail, [state, pick], detail, api_name="example")

        def on_select(result, evt: gr.SelectData):
            row = evt.row_value if evt.row_value else []
            return example_detail(result, row[0] if row else None)

        table.select(on_select, state, detail, api_name=False)
    return {"run": run}
