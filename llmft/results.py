"""`EvalResult`: one typed evaluation of base vs tuned, rendered by the CLI, the app, the Runs tab and the card.

On disk an evaluation is a folder: summary.json (`to_json()`: everything but the per-example rows, with a
`format_version`), examples.csv (one row per example: id, input, reference(s), both outputs, both sides'
per-example scores) and the plots as HTML. Files written before `format_version` existed still load.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

FORMAT_VERSION = 2
"""1: the unversioned summary.json of llmft 0.1; 2: adds format_version, kind and headline."""
TABLE_COLUMNS = ("metric", "base", "tuned", "delta", "95% CI", "p-value", "win/tie/loss")


@dataclass
class EvalResult:
    """Paired comparison of base and tuned on the same examples."""

    task: str
    kind: str
    n: int
    headline: str
    """The metric the verdict and the Runs table quote (the kind's headline metric)."""
    metrics: dict[str, dict]
    """metric -> paired statistics: base/tuned mean and median, delta_mean, ci95, p_value, test, wins/ties/losses."""
    per_example: list[str]
    """Metrics whose per-example scores are in `rows` (`base_<m>`, `tuned_<m>`)."""
    example_metric: str
    """The per-example metric the scatter plot and the examples table use."""
    rows: list[dict] = field(default_factory=list, repr=False)
    model: str | None = None
    adapter: str | None = None
    dtype: str = "float32"
    generation: dict = field(default_factory=dict)
    base_outputs_cached: bool = False
    scorer: str | None = None
    labels: list[str] | None = None
    confusion_matrix: dict | None = None
    data: str | None = None
    split: str | None = None
    seed: int = 0
    run: str | None = None
    evaluated_at: str | None = None
    format_version: int = FORMAT_VERSION

    def scores(self, metric: str) -> tuple[list[float], list[float]]:
        """Per-example (base, tuned) scores of `metric`."""
        return [r[f"base_{metric}"] for r in self.rows], [r[f"tuned_{metric}"] for r in self.rows]

    def table(self) -> list[dict]:
        """One row per metric, formatted for people: the table the CLI, the app and the model card show."""
        rows = []
        for name, m in self.metrics.items():
            rows.append(
                {
                    "metric": name,
                    "base": f"{m['base_mean']:.4f}",
                    "tuned": f"{m['tuned_mean']:.4f}",
                    "delta": f"{m['delta_mean']:+.4f}",
                    "95% CI": f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}]",
                    "p-value": f"{m['p_value']:.3g} ({m['test']})",
                    "win/tie/loss": f"{m['wins']}/{m['ties']}/{m['losses']}",
                }
            )
        return rows

    def header(self) -> str:
        """One line naming what was compared and how."""
        text = f"{self.task}: n={self.n}, {self.dtype} weights, data {self.data or 'sample'} [{self.split}]"
        return text + (f", BERTScore scorer {self.scorer}" if self.scorer else "")

    def text_table(self) -> str:
        """The table as fixed-width text (the CLI)."""
        rows = self.table()
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in TABLE_COLUMNS}
        line = "  ".join(c.ljust(widths[c]) for c in TABLE_COLUMNS)
        body = ["  ".join(r[c].ljust(widths[c]) for c in TABLE_COLUMNS) for r in rows]
        return "\n".join([self.header(), line, *body])

    def markdown_table(self) -> str:
        """The table as Markdown (the model card)."""
        lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        lines += ["| " + " | ".join(r[c] for c in TABLE_COLUMNS) + " |" for r in self.table()]
        return "\n".join(lines)

    def headline_text(self) -> str:
        """`metric base → tuned (p=...)`, for the Runs table."""
        m = self.metrics.get(self.headline)
        if not m:
            return ""
        return f"{self.headline} {m['base_mean']:.3f} → {m['tuned_mean']:.3f} (p={m['p_value']:.2g})"

    def figures(self) -> dict:
        """Plotly figures: `boxplot` and `scatter` always; `confusion_base` / `confusion_tuned` when there
        are labels."""
        from .plots import confusion_matrix_figure, metric_boxplot, paired_scatter

        scores = {m: self.scores(m) for m in self.per_example}
        figures = {
            "boxplot": metric_boxplot(scores, title=f"{self.task}: base vs tuned per example (n={self.n})"),
            "scatter": paired_scatter(
                *scores[self.example_metric], ids=[str(r["id"]) for r in self.rows], metric=self.example_metric
            ),
        }
        if self.confusion_matrix and self.labels:
            for side in ("base", "tuned"):
                figures[f"confusion_{side}"] = confusion_matrix_figure(
                    self.confusion_matrix[side], self.labels, f"{side} confusion matrix"
                )
        return figures

    def to_json(self) -> dict:
        """summary.json: every field but the per-example rows."""
        return {k: v for k, v in asdict(self).items() if k != "rows"}

    @classmethod
    def from_json(cls, summary: dict, rows: list[dict] | None = None) -> EvalResult:
        """Rebuild a result from summary.json (any format version) and, optionally, its rows."""
        data = dict(summary)
        if "format_version" not in data:  # version 1: no kind, headline or per-example list
            data["format_version"] = 1
            data["kind"] = "classification" if data.get("labels") else "seq2seq"
            data["headline"] = "overall" if "overall" in data["metrics"] else "f1"
            data["example_metric"] = "overall" if "overall" in data["metrics"] else "p_true_label"
            first = rows[0] if rows else {}
            data["per_example"] = [m for m in data["metrics"] if not first or f"base_{m}" in first]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known}, rows=list(rows or []))

    def write(self, out_dir: str | os.PathLike) -> dict[str, str]:
        """Write examples.csv, summary.json, boxplot.html and scatter.html into `out_dir`."""
        import pandas as pd

        from .runs import write_json_atomic

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / name for name in ("examples.csv", "summary.json", "boxplot.html", "scatter.html")}
        pd.DataFrame(self.rows).to_csv(paths["examples.csv"], index=False)
        write_json_atomic(paths["summary.json"], self.to_json())
        figures = self.figures()
        for name in ("boxplot", "scatter"):
            figures[name].write_html(paths[f"{name}.html"], include_plotlyjs=True)
        return {name.split(".")[0]: str(path) for name, path in paths.items()}

    @classmethod
    def load(cls, folder: str | os.PathLike) -> EvalResult:
        """Read an evaluation folder written by `write` (or by an older llmft)."""
        import pandas as pd

        folder = Path(folder)
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        rows = []
        if (folder / "examples.csv").is_file():
            frame = pd.read_csv(folder / "examples.csv", keep_default_na=False)
            rows = frame.to_dict("records")
        return cls.from_json(summary, rows)
