"""Plotly figures from plain data; they know nothing about the UI."""

from __future__ import annotations

import plotly.graph_objects as go

BASE_COLOR, TUNED_COLOR = "#7f8c9a", "#e4572e"


def metric_boxplot(scores: dict[str, tuple[list[float], list[float]]], title: str = "Base vs tuned") -> go.Figure:
    """Side-by-side boxes per metric (the origin's figure), every example drawn as a point.

    Args:
        scores: metric name -> (base scores, tuned scores), per example.
    """
    fig = go.Figure()
    for side, color, index in (("base", BASE_COLOR, 0), ("tuned", TUNED_COLOR, 1)):
        xs, ys = [], []
        for metric, pair in scores.items():
            xs += [metric] * len(pair[index])
            ys += list(pair[index])
        fig.add_trace(
            go.Box(
                x=xs,
                y=ys,
                name=side,
                marker_color=color,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                boxmean=True,
                customdata=list(range(len(ys))),
            )
        )
    fig.update_layout(
        title=title,
        boxmode="group",
        yaxis_title="score per example",
        xaxis_title="metric",
        template="plotly_white",
        legend_title_text="model",
    )
    return fig


def proportion_bars(proportions: dict[str, dict[str, tuple[float, float, float]]], n: int) -> go.Figure:
    """Base and tuned proportion per 0/1 metric (e.g. share correct) with 95% confidence intervals.

    A boxplot of 0/1 scores is a box from 0 to 1 that says nothing; a proportion with its interval does.

    Args:
        proportions: metric -> {"base": (p, low, high), "tuned": (p, low, high)}.
        n: examples per side.
    """
    fig = go.Figure()
    for side, color in (("base", BASE_COLOR), ("tuned", TUNED_COLOR)):
        values = [proportions[m][side] for m in proportions]
        fig.add_trace(
            go.Bar(
                x=list(proportions),
                y=[v[0] for v in values],
                name=side,
                marker_color=color,
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[v[2] - v[0] for v in values],
                    arrayminus=[v[0] - v[1] for v in values],
                ),
                hovertemplate="%{x}: %{y:.3f}<extra>" + side + "</extra>",
            )
        )
    fig.update_layout(
        title=f"Share of examples (n={n}), 95% Wilson CI",
        barmode="group",
        yaxis=dict(title="proportion", range=[0, 1.05]),
        template="plotly_white",
        legend_title_text="model",
    )
    return fig


def paired_scatter(
    base: list[float], tuned: list[float], ids: list[str] | None = None, metric: str = "score"
) -> go.Figure:
    """Tuned vs base score per example; points above the diagonal are examples the fine-tune improved."""
    ids = ids or [str(i) for i in range(len(base))]
    # Axes fitted to the data (with a margin), not fixed at 0-1: scores bunched in a corner stay readable.
    lo, hi = min([*base, *tuned]), max([*base, *tuned])
    pad = max((hi - lo) * 0.05, 1e-3)
    lo, hi = lo - pad, hi + pad
    colors = [TUNED_COLOR if t > b else BASE_COLOR if t < b else "#999999" for b, t in zip(base, tuned)]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[lo, hi],
            y=[lo, hi],
            mode="lines",
            line=dict(dash="dash", color="#bbbbbb"),
            name="no change",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=list(base),
            y=list(tuned),
            mode="markers",
            marker=dict(color=colors, size=9),
            text=ids,
            customdata=ids,
            name="examples",
            hovertemplate="example %{text}<br>base %{x:.3f}<br>tuned %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"{metric}: tuned vs base per example",
        xaxis=dict(title=f"base {metric}", range=[lo, hi]),
        yaxis=dict(title=f"tuned {metric}", range=[lo, hi], scaleanchor="x"),
        template="plotly_white",
        showlegend=False,
    )
    return fig


def loss_curve(history: list[dict], title: str = "Training loss", validation: list[dict] | None = None) -> go.Figure:
    """Training loss per step from run.json's `loss_history` ([{"step", "loss"}, ...]) and, when given, the
    validation loss and headline at each validation (`val_history`: [{"step", "loss", "macro_f1" or "overall"?},
    ...]) with the headline on a second axis."""
    fig = go.Figure(
        go.Scatter(
            x=[h["step"] for h in history],
            y=[h["loss"] for h in history],
            mode="lines+markers",
            marker=dict(size=4),
            line=dict(color=TUNED_COLOR),
            name="training loss",
        )
    )
    validation = [h for h in validation or [] if "loss" in h]
    if validation:
        steps = [h["step"] for h in validation]
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=[h["loss"] for h in validation],
                mode="lines+markers",
                line=dict(color=BASE_COLOR, dash="dash"),
                name="validation loss",
            )
        )
        # The headline validated alongside the loss: macro-F1, or a generation task's overall score.
        for key, label in (("macro_f1", "macro-F1"), ("overall", "overall (ROUGE, BERTScore)")):
            if key in validation[0]:
                fig.add_trace(
                    go.Scatter(
                        x=steps,
                        y=[h.get(key) for h in validation],
                        mode="lines+markers",
                        line=dict(color="#2ca02c"),
                        name=f"validation {label}",
                        yaxis="y2",
                    )
                )
                fig.update_layout(yaxis2=dict(title=label, overlaying="y", side="right", range=[0, 1]))
    fig.update_layout(
        title=title,
        xaxis_title="step",
        yaxis_title="loss",
        template="plotly_white",
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
    )
    return fig


def confusion_matrix_figure(matrix: list[list[int]], labels: list[str], title: str) -> go.Figure:
    """Heatmap of a confusion matrix (rows = true label, columns = predicted)."""
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=[f"pred {l}" for l in labels],
            y=[f"true {l}" for l in labels],
            colorscale="Blues",
            text=matrix,
            texttemplate="%{text}",
            showscale=False,
        )
    )
    fig.update_layout(title=title, template="plotly_white", yaxis=dict(autorange="reversed"))
    return fig


def leaderboard_figure(names: list[str], deltas: list[float], cis: list[list[float]], metric: str) -> go.Figure:
    """Each run's gain over base on one evaluation set, with its paired 95% CI, best first."""
    lows = [d - ci[0] for d, ci in zip(deltas, cis)]
    highs = [ci[1] - d for d, ci in zip(deltas, cis)]
    fig = go.Figure(
        go.Scatter(
            x=deltas,
            y=names,
            mode="markers",
            marker=dict(color=TUNED_COLOR, size=10),
            error_x=dict(type="data", symmetric=False, array=highs, arrayminus=lows, color=TUNED_COLOR),
            hovertemplate="%{y}: Δ %{x:+.4f}<extra></extra>",
        )
    )
    fig.add_vline(x=0, line_dash="dash", line_color=BASE_COLOR, annotation_text="base")
    fig.update_layout(
        title=f"Gain over base on {metric}, 95% CI (same examples for every run)",
        xaxis_title=f"tuned − base ({metric})",
        yaxis=dict(autorange="reversed"),
        template="plotly_white",
        height=max(260, 60 * len(names) + 140),
    )
    return fig
