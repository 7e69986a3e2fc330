"""`EvalResult`: one typed evaluation of base vs tuned, rendered by the CLI, the app, the Runs tab and the card.

On disk an evaluation is a folder: summary.json (`to_json()`: everything but the per-example rows, with a
`format_version`), examples.csv (one row per example: id, input, reference(s), both outputs, both sides'
per-example scores) and the plots as HTML. Files written before `format_version` existed still load.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .files import csv_safe, csv_unsafe, write_json_atomic, write_text_atomic
from .stats import TIE_TOLERANCE, min_detectable_delta, min_detectable_from_ci

FORMAT_VERSION = 2
"""1: the unversioned summary.json of llmft 0.1; 2: adds format_version, kind, headline, verdict, warnings (and,
optionally, power: a file without it gets it computed on load, so the version stays)."""
BETTER, WORSE, UNCLEAR = "better", "worse", "no clear difference"
TESTS = {"permutation": "paired permutation test", "mcnemar": "exact McNemar test"}


def decide(metric: dict, not_better: str | None = None) -> str:
    """`better`, `worse` or `no clear difference`, from the 95% CI of the metric's paired delta and its
    direction; never `better` when `not_better` gives a reason."""
    low, high = metric["ci95"]
    up = metric.get("higher_is_better", True)
    verdict = (BETTER if up else WORSE) if low > 0 else (WORSE if up else BETTER) if high < 0 else UNCLEAR
    return UNCLEAR if verdict == BETTER and not_better else verdict


TABLE_COLUMNS = ("metric", "base", "tuned", "delta", "95% CI", "p-value", "win/tie/loss")
UPLOAD_PREFIX_RE = r"[0-9a-f]{12}-"
"""Kept uploads are named `<12 hex digits of their hash>-<the user's file name>`."""


METRIC_NAMES = {
    "macro_f1": "macro-F1",
    "accuracy": "accuracy",
    "positive_f1": "positive-class F1",
    "macro_precision": "macro precision",
    "macro_recall": "macro recall",
    "p_true_label": "probability of the true label",
    "correct": "right/wrong",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "bertscore_f1": "BERTScore F1",
    "overall": "overall (mean of ROUGE and BERTScore)",
}
"""Metrics in words for people; the raw name stays beside it (it is what summary.json and the CLI's flags use)."""


def metric_name(metric: str) -> str:
    """`macro-F1 (macro_f1)`: the metric in words, with the name the files use."""
    words = METRIC_NAMES.get(metric)
    return f"{words} ({metric})" if words and words != metric else metric


def markdown_safe(text) -> str:
    """`text` (a sentence naming labels, files or runs a visitor chose) made inert in Markdown: no link, image,
    HTML tag, code span or table cell break can come from a label such as `![x](https://...)` into another
    visitor's verdict or a model card; plain brackets (an interval) stay as they are."""
    text = str(text)
    for char in "\\|`":
        text = text.replace(char, "\\" + char)
    text = text.replace("](", "]\\(").replace("![", "!\\[")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def data_label(source: str | None) -> str:
    """A data source as its user named it: `sample`, a hub id, or a file's name (without the upload prefix)."""
    import re

    if not source or source == "sample":
        return "sample"
    if Path(source).is_absolute():  # a local file (recorded absolute by `data.describe_source`)
        return re.sub(f"^{UPLOAD_PREFIX_RE}", "", Path(source).name)
    return source


def _fixed_width(rows: list[dict]) -> str:
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    return "\n".join(lines + ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in rows])


@dataclass
class Power:
    """How small a difference of the headline metric this evaluation could see (summary.json `power`)."""

    min_detectable_delta: float
    """The smallest true difference a two-sided paired test at `alpha` detects with probability `power`."""
    n: int
    observed_delta: float
    """The headline's observed paired delta (tuned minus base)."""
    spread: str
    """Where the spread came from: `per-example deltas` (t approximation) or `bootstrap CI` (its half-width)."""
    alpha: float = 0.05
    power: float = 0.8
    n_needed: int | None = None
    """Set when the verdict is "no clear difference" and the observed delta is below `min_detectable_delta`:
    about how many examples would detect a difference of the observed size, n * (mdd / |delta|)^2."""

    def text(self) -> str:
        """One line for the verdict: the detectable difference, and whether the test set was too small."""
        line = (
            f"smallest difference n={self.n} could detect at {self.power:.0%} power: "
            f"±{self.min_detectable_delta:.3f} (observed Δ {self.observed_delta:+.3f})"
        )
        if self.min_detectable_delta <= TIE_TOLERANCE:
            line += ", since every example's difference is the same"
        if self.n_needed is not None:
            line += (
                f"; the test set is too small to see a difference of the observed size "
                f"(about {self.n_needed} examples would be needed)"
            )
        return line


def measure_power(
    n: int, metric: dict, deltas: list[float] | None, verdict: str, alpha: float = 0.05, power: float = 0.8
) -> Power | None:
    """The `Power` of one metric: from its per-example `deltas` when it has them, else from its ci95 (a corpus
    metric such as macro-F1). None when n < 2 or nothing gives a spread."""
    if "delta_mean" not in metric:
        return None
    if deltas is not None:
        mdd, spread = min_detectable_delta(deltas, alpha, power), "per-example deltas"
    else:
        mdd = min_detectable_from_ci(metric.get("ci95"), alpha, power) if n >= 2 else None
        spread = "bootstrap CI"
    if mdd is None:
        return None
    observed = float(metric["delta_mean"])
    too_small = verdict == UNCLEAR and TIE_TOLERANCE < abs(observed) < mdd
    n_needed = math.ceil(n * (mdd / abs(observed)) ** 2) if too_small else None
    return Power(mdd, n, observed, spread, alpha, power, n_needed)


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
    per_class: dict | None = None
    """Classification: {"base"|"tuned": {label: {"precision", "recall", "f1", "support"}}}."""
    data: str | None = None
    split: str | None = None
    seed: int = 0
    run: str | None = None
    selection: str | None = None
    """How the run was chosen, when a search chose it (trials, study, and on what split)."""
    evaluated_at: str | None = None
    verdict: str = UNCLEAR
    """`better`, `worse` or `no clear difference`: from the headline metric's CI (see `decide`)."""
    verdict_note: str | None = None
    """Why the verdict is not `better` although the interval says so, if that happened."""
    warnings: list[str] = field(default_factory=list)
    """Lines that qualify the verdict (one-class predictions, skewed predictions, training rows evaluated)."""
    power: Power | None = None
    """The headline's smallest detectable difference at this n (set by `judge`; None when n < 2)."""
    fingerprint: dict | None = None
    """What makes two evaluations comparable: the data's rows, n, seed, generation settings, prompt and chat
    template, scorer (`id` is their hash). Only evaluations with equal ids are ranked together."""
    votes: dict | None = None
    """The tally of blind votes on this evaluation's examples (`votes.tally`), kept current as votes come."""
    format_version: int = FORMAT_VERSION

    def judge(self, not_better: str | None = None) -> None:
        """Set the verdict from the headline metric's interval (and a reason to rule out `better`)."""
        metric = self.metrics[self.headline]
        self.verdict = decide(metric, not_better)
        self.verdict_note = not_better if self.verdict != decide(metric) else None
        self.power = self.measure_power()

    def measure_power(self) -> Power | None:
        """The headline's `Power`: from the per-example rows when the headline is a per-example metric and the
        rows are here, else from its bootstrap CI."""
        deltas = None
        if self.headline in self.per_example and self.rows:
            base, tuned = self.scores(self.headline)
            deltas = [float(t) - float(b) for b, t in zip(base, tuned)]
        return measure_power(self.n, self.metrics[self.headline], deltas, self.verdict)

    def verdict_text(self) -> str:
        """One sentence a statistician would sign: the verdict, the metric, the interval, the test, n, the data."""
        m = self.metrics[self.headline]
        lo, hi = m["ci95"]
        what = {BETTER: "tuned is better than base", WORSE: "tuned is worse than base", UNCLEAR: "no clear difference"}
        text = (
            f"{what[self.verdict]} on {self.headline}: base {m['base_mean']:.3f} → tuned {m['tuned_mean']:.3f} "
            f"(Δ {m['delta_mean']:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}] by paired bootstrap"
            + (", which includes 0" if lo <= 0 <= hi else "")
            + f"; p = {m['p_value']:.2g}, {TESTS.get(m['test'], m['test'])}) on n = {self.n} examples of "
            f"{self.data_name()} [{self.split}]"
        )
        text += (f"; not called better because {self.verdict_note}" if self.verdict_note else "") + "."
        return text + (f" Power: {self.power.text()}." if self.power else "")

    def votes_text(self) -> str | None:
        """The blind votes' result in one line, None when nobody voted on this evaluation."""
        from .votes import tally_text

        return tally_text(self.votes) if self.votes and self.votes.get("total") else None

    def data_name(self) -> str:
        """The evaluation data as its user named it: `sample`, a hub id, or a file's own name."""
        return data_label(self.data)

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
        text = f"{self.task}: n={self.n}, {self.dtype} weights, data {self.data_name()} [{self.split}]"
        return text + (f", BERTScore scorer {self.scorer}" if self.scorer else "")

    def text_report(self) -> str:
        """The table, the per-class table (classification), the verdict and the warnings as plain text."""
        lines = [self.text_table(), ""]
        if self.per_class:
            lines += [_fixed_width(self.class_table()), ""]
        lines.append(f"verdict: {self.verdict_text()}")
        if self.selection:
            lines.append(f"selection: {self.selection}")
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])

    def class_table(self) -> list[dict]:
        """Per-class precision, recall and F1 of base and tuned, one row per label (classification)."""
        if not self.per_class:
            return []
        rows = []
        for label in self.labels or []:
            base, tuned = self.per_class["base"][label], self.per_class["tuned"][label]
            row = {"class": label, "support": str(base["support"])}
            for key in ("precision", "recall", "f1"):
                row[f"base {key}"] = f"{base[key]:.3f}"
                row[f"tuned {key}"] = f"{tuned[key]:.3f}"
            rows.append(row)
        return rows

    def text_table(self) -> str:
        """The table as fixed-width text (the CLI)."""
        return "\n".join([self.header(), _fixed_width(self.table())])

    def markdown_table(self) -> str:
        """The table (and the per-class table) as Markdown (the model card)."""
        tables = [self.table(), self.class_table()]
        out = []
        for rows in filter(None, tables):
            columns = list(rows[0])
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            cells = ("| " + " | ".join(markdown_safe(r[c]) for c in columns) + " |" for r in rows)
            out.append("\n".join([*lines, *cells]))
        return "\n\n".join(out)

    def headline_text(self) -> str:
        """`verdict: metric base → tuned on data`, for the Runs table."""
        m = self.metrics.get(self.headline)
        if not m:
            return ""
        warn = f" ⚠ {len(self.warnings)} warning(s)" if self.warnings else ""
        return (
            f"{self.verdict}: {self.headline} {m['base_mean']:.3f} → {m['tuned_mean']:.3f} "
            f"(n={self.n}, {self.data_name()}){warn}"
        )

    def binary_metrics(self) -> list[str]:
        """Per-example metrics whose scores are all 0 or 1 (shown as proportions, not boxes)."""
        return [m for m in self.per_example if all(v in (0, 1) for side in self.scores(m) for v in side)]

    def figures(self) -> dict:
        """Plotly figures that fit the metrics: `boxplot` for continuous per-example scores, `proportions` for
        0/1 scores (with Wilson intervals), `scatter` of the example metric, and `confusion_base` /
        `confusion_tuned` when there are labels. No figure is empty."""
        from .plots import confusion_matrix_figure, metric_boxplot, paired_scatter, proportion_bars

        binary = self.binary_metrics()
        scores = {m: self.scores(m) for m in self.per_example}
        figures = {}
        continuous = {m: s for m, s in scores.items() if m not in binary}
        if continuous:
            figures["boxplot"] = metric_boxplot(
                continuous, title=f"{self.task}: base vs tuned per example (n={self.n})"
            )
        if binary:
            figures["proportions"] = proportion_bars({m: _proportions(scores[m]) for m in binary}, self.n)
        if self.example_metric in scores:
            ids = [str(r["id"]) for r in self.rows]
            figures["scatter"] = paired_scatter(*scores[self.example_metric], ids=ids, metric=self.example_metric)
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
        if "format_version" not in data:  # version 1: no kind, headline, verdict or per-example list
            data["format_version"] = 1
            data["verdict"] = decide(data["metrics"]["overall" if "overall" in data["metrics"] else "f1"])
            data["kind"] = "classification" if data.get("labels") else "seq2seq"
            data["headline"] = "overall" if "overall" in data["metrics"] else "f1"
            data["example_metric"] = "overall" if "overall" in data["metrics"] else "p_true_label"
            first = rows[0] if rows else {}
            data["per_example"] = [m for m in data["metrics"] if not first or f"base_{m}" in first]
        known = {f.name for f in fields(cls)}
        power = data.pop("power", None)
        result = cls(**{k: v for k, v in data.items() if k in known}, rows=list(rows or []))
        # A summary written before power was recorded gets it from what it has (rows, else the headline's CI).
        known_power = {f.name for f in fields(Power)}
        result.power = (
            Power(**{k: v for k, v in power.items() if k in known_power}) if power else result.measure_power()
        )
        return result

    def write(self, out_dir: str | os.PathLike) -> dict[str, str]:
        """Write examples.csv, summary.json and plots.html (every figure on one page) into `out_dir`."""
        import pandas as pd

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"examples": out / "examples.csv", "summary": out / "summary.json", "plots": out / "plots.html"}
        pd.DataFrame(self.rows).map(csv_safe).to_csv(paths["examples"], index=False)  # texts strangers typed
        write_json_atomic(paths["summary"], self.to_json())
        # plotly.js (4.6 MB) once per evaluation, not once per figure: five self-contained figures made an
        # evaluation folder 24 MB, which a public Space's visitors could repeat until its disk was full.
        parts = [
            figure.to_html(full_html=False, include_plotlyjs=i == 0, default_width="100%")
            for i, figure in enumerate(self.figures().values())
        ]
        head = "<!DOCTYPE html><html><head><meta charset='utf-8'><title>llmft evaluation</title></head><body>"
        page = head + "".join(parts) + "</body></html>"
        write_text_atomic(paths["plots"], lambda f: f.write(page))
        return {name: str(path) for name, path in paths.items()}

    @classmethod
    def load(cls, folder: str | os.PathLike) -> EvalResult:
        """Read an evaluation folder written by `write` (or by an older llmft)."""
        import pandas as pd

        folder = Path(folder)
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        rows = []
        if (folder / "examples.csv").is_file():
            frame = pd.read_csv(folder / "examples.csv", keep_default_na=False)
            rows = frame.map(csv_unsafe).to_dict("records")
        return cls.from_json(summary, rows)


def _proportions(pair: tuple[list[float], list[float]]) -> dict[str, tuple[float, float, float]]:
    """(proportion, low, high) per side, with the Wilson score interval (scipy)."""
    from scipy.stats import binomtest

    out = {}
    for side, values in zip(("base", "tuned"), pair):
        k, n = int(round(sum(values))), len(values)
        ci = binomtest(k, n).proportion_ci(method="wilson")
        out[side] = (k / n, float(ci.low), float(ci.high))
    return out


def latest_evaluation(run_dir: Path) -> EvalResult | None:
    """The newest evaluation of a run as an `EvalResult` (summary only, no per-example rows), or None."""
    evals = sorted((Path(run_dir) / "evaluations").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(evals):
        try:
            return EvalResult.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, KeyError):
            continue  # a damaged summary is skipped, not fatal to the Runs table
    return None
