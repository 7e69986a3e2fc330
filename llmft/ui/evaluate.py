"""Evaluate tab: base vs tuned on test examples, paired statistics, plots, drill-down, downloads."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from ..evaluation import per_example_metrics
from ..pipeline import evaluate
from ..plots import confusion_matrix_figure, metric_boxplot, paired_scatter
from ..runs import find_run, read_run
from .common import completed_runs, fmt, for_download, runs_dir, server_dtype, user_errors, word_diff_html


def summary_table(result: dict) -> pd.DataFrame:
    rows = []
    for name, m in result["metrics"].items():
        rows.append(
            {
                "metric": name,
                "base mean": fmt(m["base_mean"]),
                "tuned mean": fmt(m["tuned_mean"]),
                "base median": fmt(m["base_median"]),
                "tuned median": fmt(m["tuned_median"]),
                "delta": f"{m['delta_mean']:+.4f}",
                "95% CI": f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}]",
                "p-value": f"{m['p_value']:.3g} ({m['test']})",
                "win/tie/loss": f"{m['wins']}/{m['ties']}/{m['losses']}",
            }
        )
    return pd.DataFrame(rows)


def main_metric(result: dict) -> str:
    names = per_example_metrics(result)
    return "overall" if "overall" in names else "p_true_label"


def examples_table(result: dict) -> pd.DataFrame:
    metric = main_metric(result)
    rows = [
        {
            "id": r["id"],
            f"base {metric}": round(r[f"base_{metric}"], 4),
            f"tuned {metric}": round(r[f"tuned_{metric}"], 4),
            "delta": round(r[f"tuned_{metric}"] - r[f"base_{metric}"], 4),
            "input": r["input"][:80],
        }
        for r in result["rows"]
    ]
    return pd.DataFrame(rows).sort_values("delta")


def example_detail(result: dict | None, example_id: str) -> str:
    """HTML for one example: input, references, both outputs with a word diff, and its scores (all escaped)."""
    if not result or not example_id:
        return ""
    row = next((r for r in result["rows"] if str(r["id"]) == str(example_id)), None)
    if row is None:
        return f"<p>No example {html.escape(str(example_id))}.</p>"
    refs = [v for k, v in row.items() if k.startswith("reference") and v]
    metrics = per_example_metrics(result)
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


def run_evaluation(run, n, seed, scorer, max_new_tokens, progress=gr.Progress()):
    if not run:
        raise gr.Error("pick a finished run to evaluate")
    info = read_run(find_run(run, runs_dir()))

    def on_progress(stage, done, total):
        progress(done / max(total, 1), desc=stage)

    result = evaluate(
        info["task"],
        run=run,
        n=int(n) if n else None,
        seed=int(seed),
        scorer=(scorer or "").strip() or None,
        max_new_tokens=int(max_new_tokens) if max_new_tokens else None,
        runs_dir=runs_dir(),
        progress=False,
        on_progress=on_progress,
        cached_model=True,
        dtype=server_dtype(),
    )
    metrics = per_example_metrics(result)
    scores = {
        m: ([r[f"base_{m}"] for r in result["rows"]], [r[f"tuned_{m}"] for r in result["rows"]]) for m in metrics
    }
    box = metric_boxplot(scores, title=f"{result['task']}: base vs tuned per example (n={result['n']})")
    metric = main_metric(result)
    scatter = paired_scatter(*scores[metric], ids=[str(r["id"]) for r in result["rows"]], metric=metric)
    cms = [None, None]
    if "confusion_matrix" in result:
        cms = [
            confusion_matrix_figure(result["confusion_matrix"][side], result["labels"], f"{side} confusion matrix")
            for side in ("base", "tuned")
        ]
    worse = [str(r["id"]) for r in result["rows"] if r[f"tuned_{metric}"] < r[f"base_{metric}"]]
    paths = result["written"][0]
    files = [for_download(paths[k]) for k in ("examples", "summary", "boxplot")]
    head = (
        f"**{result['task']}**, run **{result['run']}**, n = {result['n']}, {result.get('dtype', 'float32')} weights"
        + (f", BERTScore scorer `{result['scorer']}`" if result["scorer"] else "")
        + (" · base outputs from cache" if result["base_outputs_cached"] else "")
    )
    key = "overall" if "overall" in result["metrics"] else "f1"
    m = result["metrics"][key]
    significant = m["ci95"][0] > 0 or m["ci95"][1] < 0
    head += (
        f"\n\n**{key}: base {m['base_mean']:.3f} → tuned {m['tuned_mean']:.3f}** (Δ {m['delta_mean']:+.3f}, "
        f"95% CI [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}], p = {m['p_value']:.2g}) — "
        + ("the interval excludes 0." if significant else "the interval includes 0: no clear change.")
    )
    ids = [str(r["id"]) for r in result["rows"]]
    public = {k: v for k, v in result.items() if k != "written"}
    return (
        head,
        summary_table(result),
        box,
        scatter,
        *cms,
        examples_table(result),
        gr.update(choices=worse, value=None, label=f"Where tuned got worse ({len(worse)})"),
        gr.update(choices=ids, value=None),
        files,
        public,
    )


def build():
    with gr.Tab("Evaluate", id="evaluate"):
        gr.Markdown("Score base and tuned on the same test examples and compare them pair by pair.")
        with gr.Row():
            runs = completed_runs()
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

        refresh.click(lambda: gr.update(choices=completed_runs()), None, run, api_name=False)
        go.click(
            user_errors(run_evaluation),
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
