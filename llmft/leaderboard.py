"""Several runs on one evaluation set: each against base and against the best, p-values Holm-corrected across
the runs, and the seed spread of runs trained together with `--repeat`.

Every run is evaluated on the same examples with the same generation settings (base outputs come from the
disk cache after the first run). Evaluations are ranked together only when their fingerprints
(`pipeline.evaluation_fingerprint`: data rows, n, seed, generation settings, prompt and chat template, scorer)
are equal; anything else is refused, naming what differs.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import EvalConfig
from .context import Context
from .errors import LlmftError
from .files import write_json_atomic, write_text_atomic
from .pipeline import evaluate, run_task
from .results import UNCLEAR, EvalResult
from .stats import holm, paired_aggregate, paired_comparison

ALPHA = 0.05
CSV_COLUMNS = (
    "rank",
    "run",
    "group",
    "base",
    "tuned",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "wins",
    "ties",
    "losses",
    "verdict",
    "vs_best_delta",
    "vs_best_ci_low",
    "vs_best_ci_high",
    "vs_best_p",
)


@dataclass
class Leaderboard:
    """Runs ranked by their headline metric on one fingerprinted evaluation set."""

    task: str
    headline: str
    higher_is_better: bool
    fingerprint: dict
    rows: list[dict]
    """One per run, best first: base/tuned/delta/ci95/p_value/p_holm/w-t-l/verdict, and `vs_best` (paired)."""
    groups: list[dict] = field(default_factory=list)
    """Seed spread of each group of runs (`seed_spread`)."""

    def table(self) -> list[dict]:
        """The rows formatted for people (the CLI, the Runs tab)."""
        out = []
        for r in self.rows:
            vs = r["vs_best"]
            out.append(
                {
                    "rank": str(r["rank"]),
                    "run": r["run"],
                    "base": f"{r['base']:.4f}",
                    "tuned": f"{r['tuned']:.4f}",
                    "Δ vs base [95% CI]": f"{r['delta']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]",
                    "p (Holm)": f"{r['p_value']:.3g} ({r['p_holm']:.3g})",
                    "win/tie/loss": f"{r['wins']}/{r['ties']}/{r['losses']}",
                    "verdict": r["verdict"],
                    "Δ vs best [95% CI], p": "best"
                    if vs is None
                    else f"{vs['delta']:+.4f} [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}], p {vs['p_value']:.3g}",
                }
            )
        return out

    def text(self) -> str:
        """The table as fixed-width text, the fingerprint and the seed spread lines."""
        rows = self.table()
        cols = list(rows[0])
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
        fp = self.fingerprint
        lines = [
            f"{self.task}: {len(self.rows)} runs on {self.headline}, n = {fp['n']} examples of "
            f"{fp['data']} [{fp['split']}], evaluation fingerprint {fp['id']}",
            "  ".join(c.ljust(widths[c]) for c in cols),
            *("  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows),
            f"p-values are Holm-corrected across the {len(self.rows)} runs; a verdict needs its CI to exclude 0 "
            f"and its Holm p below {ALPHA}.",
        ]
        return "\n".join(lines + [spread_text(g) for g in self.groups])

    def to_json(self) -> dict:
        return asdict(self)

    def figure(self):
        from .plots import leaderboard_figure

        return leaderboard_figure(
            [r["run"] for r in self.rows],
            [r["delta"] for r in self.rows],
            [r["ci95"] for r in self.rows],
            self.headline,
        )

    def write(self, out_dir: str | Path) -> dict[str, str]:
        """leaderboard.json, leaderboard.csv and leaderboard.html (the plot) in `out_dir`."""
        out = Path(out_dir).expanduser()
        if out.exists() and not out.is_dir():
            raise LlmftError(f"{out} is a file; --out needs a folder")
        out.mkdir(parents=True, exist_ok=True)
        paths = {k: out / f"leaderboard.{k}" for k in ("json", "csv", "html")}
        write_json_atomic(paths["json"], self.to_json())
        write_text_atomic(paths["csv"], self._write_csv)
        html = self.figure().to_html(include_plotlyjs=True)
        write_text_atomic(paths["html"], lambda f: f.write(html))
        return {k: str(p) for k, p in paths.items()}

    def _write_csv(self, f) -> None:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in self.rows:
            vs = r["vs_best"] or {"delta": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
            writer.writerow(
                {
                    **{k: r[k] for k in CSV_COLUMNS if k in r},
                    "group": r.get("group") or "",
                    "ci_low": r["ci95"][0],
                    "ci_high": r["ci95"][1],
                    "vs_best_delta": vs["delta"],
                    "vs_best_ci_low": vs["ci95"][0],
                    "vs_best_ci_high": vs["ci95"][1],
                    "vs_best_p": vs["p_value"],
                }
            )


def check_same_evaluation(results: list[EvalResult]) -> dict:
    """The shared fingerprint of `results`; refuses (naming the fields that differ) when they are not all
    evaluations of the same examples with the same settings."""
    if not results:
        raise LlmftError("no evaluations to rank")
    missing = [r.run or r.adapter for r in results if not r.fingerprint]
    if missing:
        raise LlmftError(f"evaluations without a fingerprint cannot be ranked: {', '.join(map(str, missing))}")
    first = results[0].fingerprint
    for r in results[1:]:
        if r.fingerprint["id"] != first["id"]:
            differ = sorted(
                k for k in set(first) | set(r.fingerprint) if k != "id" and first.get(k) != r.fingerprint.get(k)
            )
            raise LlmftError(
                f"evaluations of {results[0].run} and {r.run} differ in {', '.join(differ) or 'their fingerprint'}: "
                "they are not ranked together"
            )
    return first


def rank(results: list[EvalResult], groups: dict[str, str] | None = None) -> Leaderboard:
    """Rank evaluations of one evaluation set (`check_same_evaluation`) by their tuned headline metric.

    Args:
        results: one evaluation per run, with their per-example rows.
        groups: run name -> its `--repeat` group, for the seed spread.
    """
    fingerprint = check_same_evaluation(results)
    names = [r.run or r.adapter for r in results]
    if len(set(names)) != len(names):
        raise LlmftError(f"a run is listed twice: {', '.join(names)}")
    headline = results[0].headline
    up = results[0].metrics[headline].get("higher_is_better", True)
    adjusted = holm([r.metrics[headline]["p_value"] for r in results])
    rows = []
    for r, name, p_holm in zip(results, names, adjusted):
        m = r.metrics[headline]
        significant = p_holm < ALPHA
        verdict = r.verdict if (significant or r.verdict == UNCLEAR) else UNCLEAR
        rows.append(
            {
                "run": name,
                "group": (groups or {}).get(name),
                "base": m["base_mean"],
                "tuned": m["tuned_mean"],
                "delta": m["delta_mean"],
                "ci95": list(m["ci95"]),
                "p_value": m["p_value"],
                "p_holm": p_holm,
                "wins": m["wins"],
                "ties": m["ties"],
                "losses": m["losses"],
                "verdict": verdict + ("" if verdict == r.verdict else " (after Holm)"),
                "warnings": list(r.warnings),
            }
        )
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["tuned"] if up else rows[i]["tuned"])
    best = results[order[0]]
    ranked = []
    for place, i in enumerate(order, 1):
        rows[i]["rank"] = place
        rows[i]["vs_best"] = None if place == 1 else against(best, results[i])
        ranked.append(rows[i])
    spreads = [seed_spread(g, [r for r in ranked if r["group"] == g]) for g in sorted({*(groups or {}).values()})]
    return Leaderboard(results[0].task, headline, up, fingerprint, ranked, [s for s in spreads if s])


def against(best: EvalResult, other: EvalResult) -> dict:
    """`other` minus `best` on the headline, paired on the same examples: a per-example headline by its
    per-example scores (`paired_comparison`), a corpus one (macro-F1) by resampling the examples jointly
    (`paired_aggregate`)."""
    headline = best.headline
    by_id = {str(r["id"]): r for r in other.rows}
    if not best.rows or set(by_id) != {str(r["id"]) for r in best.rows}:
        raise LlmftError(f"the evaluations of {best.run} and {other.run} do not hold the same examples")
    pairs = [(r, by_id[str(r["id"])]) for r in best.rows]
    if headline in best.per_example:
        a = [float(x[f"tuned_{headline}"]) for x, _ in pairs]
        b = [float(y[f"tuned_{headline}"]) for _, y in pairs]
        stats = paired_comparison(a, b, best.metrics[headline].get("test", "permutation"), seed=best.seed)
    else:
        from .metrics import corpus_classification_scores

        labels = list(best.labels or [])
        ids = {name: i for i, name in enumerate(labels)}
        refs = [ids[x["reference"]] for x, _ in pairs]
        a = [ids[x["tuned_output"]] for x, _ in pairs]
        b = [ids[y["tuned_output"]] for _, y in pairs]

        def metric(references, predictions, axis=-1):
            return corpus_classification_scores(references, predictions, len(labels), axis)[headline]

        stats = paired_aggregate(refs, a, b, metric, seed=best.seed)
    return {"delta": stats["delta_mean"], "ci95": stats["ci95"], "p_value": stats["p_value"]}


def seed_spread(group: str, rows: list[dict]) -> dict | None:
    """The gain over base of a group's runs (one per seed): its mean, its standard deviation across seeds, and
    a t-interval of the mean over seeds; the gain exceeds the seed spread when that interval excludes 0."""
    from scipy import stats

    deltas = [r["delta"] for r in rows]
    k = len(deltas)
    if k < 2:
        return None
    mean = sum(deltas) / k
    sd = math.sqrt(sum((d - mean) ** 2 for d in deltas) / (k - 1))
    half = float(stats.t.ppf(0.975, k - 1)) * sd / math.sqrt(k)
    return {
        "group": group,
        "runs": [r["run"] for r in rows],
        "k": k,
        "mean_delta": mean,
        "sd_across_seeds": sd,
        "ci95": [mean - half, mean + half],
        "exceeds_spread": mean - half > 0 or mean + half < 0,
    }


def spread_text(g: dict) -> str:
    lo, hi = g["ci95"]
    verdict = "exceeds" if g["exceeds_spread"] else "does not exceed"
    return (
        f"seed spread of group {g['group']} ({g['k']} seeds): mean gain {g['mean_delta']:+.4f}, sd across seeds "
        f"{g['sd_across_seeds']:.4f}, 95% t-interval over seeds [{lo:+.4f}, {hi:+.4f}]: the gain {verdict} the "
        "run-to-run noise of a different seed"
    )


def leaderboard(
    ctx: Context,
    task: str,
    runs: list[str],
    data: str | None = None,
    n: int | None = None,
    seed: int = 0,
    split: str | None = None,
    max_new_tokens: int | None = None,
    scorer: str | None = None,
    on_progress=None,
    progress: bool = True,
    cached_model: bool = False,
    **columns,
) -> tuple[Leaderboard, list[EvalResult]]:
    """Evaluate every run in `runs` on the same examples and rank them (`rank`).

    The examples, n and the generation cap are chosen once for all runs: n defaults to the smallest of the runs'
    presets' evaluation sizes, the cap to the largest of the runs' fitted caps (no run is cut short). Each
    evaluation is an ordinary one, written into its run's folder.
    """
    runs = [r.strip() for r in runs if r.strip()]
    if len(runs) < 2:
        raise LlmftError("a leaderboard needs at least two runs (--runs a,b)")
    if len(set(runs)) != len(runs):
        raise LlmftError(f"a run is listed twice: {', '.join(runs)}")
    infos = {name: run_task(ctx, task, name) for name in runs}  # refuses a missing run or another task's
    spec = next(iter(infos.values()))[0]
    if n is None:
        n = min(spec.preset((i.get("config") or {}).get("preset") or "quick").eval_n for _, i in infos.values())
    if max_new_tokens is None and spec.kind.generates:
        caps = [((i.get("max_new_tokens") or {}).get("value")) for _, i in infos.values()]
        max_new_tokens = max([c for c in caps if c] or [spec.max_target_tokens])
    results = []
    for name in runs:
        config = EvalConfig(
            task=task,
            run=name,
            data=data,
            n=n,
            seed=seed,
            split=split,
            max_new_tokens=max_new_tokens,
            scorer=scorer,
            **columns,
        )
        if on_progress:
            on_progress(f"evaluating {name}", len(results), len(runs))
        results.append(evaluate(ctx, config, progress=progress, cached_model=cached_model)[0])
    groups = {name: (i.get("config") or {}).get("group") for name, (_, i) in infos.items()}
    return rank(results, {k: v for k, v in groups.items() if v}), results


def common_evaluations(run_dirs: list[Path]) -> list[EvalResult] | None:
    """Each run's newest evaluation on the newest evaluation set all of them were evaluated on (equal
    fingerprints), with its rows; None when they share none. Ranks runs without evaluating anything again."""
    found: list[dict[str, Path]] = []
    for run_dir in run_dirs:
        by_id: dict[str, Path] = {}
        for summary in sorted((Path(run_dir) / "evaluations").glob("*/summary.json"), key=lambda p: p.stat().st_mtime):
            try:
                fid = (json.loads(summary.read_text(encoding="utf-8")).get("fingerprint") or {}).get("id")
            except (OSError, json.JSONDecodeError):
                continue
            if fid:
                by_id[fid] = summary.parent  # the newest evaluation of each set
        found.append(by_id)
    shared = set.intersection(*(set(f) for f in found)) if found else set()
    if not shared:
        return None
    newest = max(shared, key=lambda fid: min(f[fid].stat().st_mtime for f in found))
    return [EvalResult.load(f[newest]) for f in found]
