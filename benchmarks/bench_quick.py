"""The quick preset's time budget and a search against it: validation F1 and wall time on 2 CPU cores; and
the summarization quick preset's budget at FLAN-T5-base size.

Run: python -m benchmarks.bench_quick [--sentences FILE] [--budgets 30,60,120] [--seeds 42,0,1,2]
                                     [--trials 10] [--trial-budget 30] [--dtype bfloat16 --name quick_bf16]
     (--trials 0: no search)
     python -m benchmarks.bench_quick --summarization [--budgets 60,120]

Data: `--sentences FILE` takes labelled sentences (a TSV with a header, `sentence<TAB>label`, label 0 or 1, as
GLUE's SST-2 files are): shuffled with seed 0, the first 1,000 train and the next 500 are the unseen test set.
Each budget is run with each of `--seeds` (training seeds, 42 being train's default: they set the validation
rows carved, the head and the batch order). One run's F1 moved by ±0.02 between seeds on the dev set, so a
budget is reported as the seeds' mean and spread.
Without it the set is built here, SST-2-like: one-sentence movie reviews with negation ("not bad"), contrast
("although the plot was thin, ..."), intensifiers and hedges; the test sentences use other openers, other
adjectives and other templates than the training ones. Choices are made on the validation split carved from
the 1,000 training rows; the test set is read only to report the chosen run's F1 at the end.

`--summarization` times the dialogue quick preset (two minutes by default) on the bundled DialogSum sample
with a FLAN-T5-base-architecture model of random weights (google/flan-t5-base is not reachable offline): the
budget and the steps it fits are real, the summaries are not, so no quality is reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import gemm_gflops, write_result

GOOD = {
    "train": ["wonderful", "moving", "brilliant", "charming", "gripping", "delightful", "superb", "heartfelt"],
    "test": ["terrific", "touching", "splendid", "captivating", "masterful", "lovely"],
}
BAD = {
    "train": ["dull", "tedious", "clumsy", "lifeless", "awful", "boring", "shallow", "forgettable"],
    "test": ["dreary", "plodding", "inept", "hollow", "dreadful", "tiresome"],
}
THINGS = ["plot", "acting", "script", "direction", "soundtrack", "pacing", "cast", "dialogue", "ending", "humour"]
TEMPLATES = {
    "train": [
        "{open} the {thing} is {adj}.",
        "{open} a {adj} film with a {adj2} {thing2}.",
        "the {thing} was {adv} {adj}.",
        "although the {thing} is {oadj}, the {thing2} is {adj} .",
        "it is not {oadj} at all ; the {thing} is {adj}.",
        "{open} {adv} {adj} from start to finish.",
    ],
    "test": [
        "{open} what a {adj} piece of cinema , the {thing} especially.",
        "even with a {oadj} {thing}, the film stays {adj} throughout.",
        "never {oadj} , always {adj}.",
        "the {thing} feels {adv} {adj} and the {thing2} follows suit.",
        "{open} i found the whole thing {adj}.",
    ],
}
OPENERS = {
    "train": ["", "honestly ,", "overall ,", "in short ,", "frankly ,"],
    "test": ["", "simply put ,", "all told ,"],
}
ADVERBS = ["very", "truly", "rather", "remarkably", "quite", "surprisingly"]


def sentences(n: int, split: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = rng.random() < 0.5
        adj_pool, other_pool = (GOOD, BAD) if positive else (BAD, GOOD)
        words = dict(
            open=rng.choice(OPENERS[split]),
            thing=rng.choice(THINGS),
            thing2=rng.choice(THINGS),
            adj=rng.choice(adj_pool[split]),
            adj2=rng.choice(adj_pool[split]),
            oadj=rng.choice(other_pool[split]),
            adv=rng.choice(ADVERBS),
        )
        text = " ".join(rng.choice(TEMPLATES[split]).format(**words).split())
        rows.append({"id": f"{split}-{i}", "text": text, "label": "Positive" if positive else "Negative"})
    return rows


def labelled_sentences(path: str) -> list[dict]:
    """Rows of a `sentence<TAB>label` file (header first; label 0 = Negative, 1 = Positive)."""
    rows = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()[1:]):
        sentence, label = line.rsplit("\t", 1)
        rows.append(
            {"id": f"s{i}", "text": sentence.strip(), "label": "Positive" if label.strip() == "1" else "Negative"}
        )
    return rows


def write(rows: list[dict], path: Path) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_f1(run: str, runs_dir: str, test_file: str) -> float:
    from llmft.config import EvalConfig
    from llmft.context import Context
    from llmft.pipeline import evaluate

    config = EvalConfig(task="sentiment", run=run, runs_dir=runs_dir, data=test_file, n=500)
    result, _ = evaluate(Context.create(runs_dir), config, progress=False)
    return result.metrics["macro_f1"]["tuned_mean"], result.metrics["macro_f1"]["base_mean"]


def main(
    budgets=(30, 60, 120),
    trials: int = 10,
    trial_budget: float = 30.0,
    sentences_file: str | None = None,
    dtype: str = "auto",
    name: str = "quick",
    seeds: tuple[int, ...] = (42,),
) -> dict:
    from llmft.search import search
    from llmft.training import TrainConfig, train

    work = Path(tempfile.mkdtemp(prefix="llmft-bench-quick-"))
    if sentences_file:
        rows = labelled_sentences(sentences_file)
        random.Random(0).shuffle(rows)
        train_rows, test_rows = rows[:1000], rows[1000:1500]
        digest = hashlib.sha256(Path(sentences_file).read_bytes()).hexdigest()[:16]
        data = f"{Path(sentences_file).name} (sha256 {digest}...): 1000 train / 500 unseen test, shuffled by seed 0"
    else:
        train_rows, test_rows = sentences(1000, "train", 1), sentences(500, "test", 2)
        data = "synthetic SST-2-like, 1000 train / 500 unseen test"
    train_file = write(train_rows, work / "train.jsonl")
    test_file = write(test_rows, work / "test.jsonl")
    runs = str(work / "runs")
    rows, summary = [], []
    for budget in budgets:
        scores = []
        for seed in seeds:
            started = time.time()
            info = train(
                TrainConfig(
                    task="sentiment",
                    model="minilm",
                    data=train_file,
                    runs_dir=runs,
                    run_name=f"quick-{budget}-seed{seed}",
                    time_budget=float(budget),
                    dtype=dtype,
                    seed=seed,
                ),
                show_progress=False,
            )
            wall = time.time() - started
            tuned, base = test_f1(info["name"], runs, test_file)
            scores.append(tuned)
            rows.append(
                {
                    "what": f"quick preset, {budget} s budget" + ("" if dtype == "auto" else f", --dtype {dtype}"),
                    "budget_s": budget,
                    "seed": seed,
                    "train_loop_s": info["train_runtime_s"],
                    "wall_s": round(wall, 1),
                    "steps": info["step"],
                    "epochs": info["epochs"],
                    "train_rows": info["train_examples"],
                    "val_f1": info["best"]["value"],
                    "best_step": info["best"]["step"],
                    "test_f1": round(tuned, 4),
                    "base_test_f1": round(base, 4),
                }
            )
            print(rows[-1], flush=True)
        summary.append(
            {
                "budget_s": budget,
                "seeds": list(seeds),
                "test_f1_mean": round(statistics.mean(scores), 4),
                "test_f1_sd": round(statistics.stdev(scores), 4) if len(seeds) > 1 else None,
                "test_f1_min": round(min(scores), 4),
                "test_f1_max": round(max(scores), 4),
            }
        )
        print(summary[-1], flush=True)
    facts = {"data": data, "summary": summary, "gemm_fp32_gflops": round(gemm_gflops(), 1)}
    if not trials:
        write_result(name, {"rows": rows, **facts})
        return {"rows": rows}
    started = time.time()
    result = search(
        TrainConfig(task="sentiment", model="minilm", data=train_file, runs_dir=runs, time_budget=trial_budget),
        trials=trials,
        study_name="bench",
    )
    wall = time.time() - started
    best = result.best
    tuned, base = test_f1(best["run"], runs, test_file)
    rows.append(
        {
            "what": f"search, {trials} trials of {trial_budget:g} s",
            "wall_s": round(wall, 1),
            "trials": len(result.trials),
            "pruned": sum(t["state"] == "pruned" for t in result.trials),
            "val_f1": best["value"],
            "best_params": best["params"],
            "test_f1": round(tuned, 4),
            "base_test_f1": round(base, 4),
        }
    )
    print(rows[-1], flush=True)
    write_result(name, {"rows": rows, **facts})
    return {"rows": rows}


def summarization(budgets=(60, 120)) -> dict:
    """The dialogue quick preset at FLAN-T5-base size (random weights): is the budget kept, what does it fit."""
    from llmft.synthetic import build_t5
    from llmft.training import TrainConfig, train

    work = Path(tempfile.mkdtemp(prefix="llmft-bench-sum-"))
    model = str(build_t5(work / "t5-base", size="base"))
    rows = []
    for budget in budgets:
        started = time.time()
        info = train(
            TrainConfig(
                task="dialogue", model=model, runs_dir=str(work / "runs"), run_name=f"q{budget}", time_budget=budget
            ),
            show_progress=False,
        )
        rows.append(
            {
                "what": f"dialogue quick preset, {budget} s budget, FLAN-T5-base size",
                "budget_s": budget,
                "train_loop_s": info["train_runtime_s"],
                "wall_s": round(time.time() - started, 1),
                "steps": info["step"],
                "fitted_steps": (info.get("time_budget") or {}).get("fitted_steps"),
                "planned_steps": (info.get("time_budget") or {}).get("planned_steps"),
                "train_rows": info["train_examples"],
                "validations": len(info["val_history"]),
                "validation_rows": info["validation"]["examples"],
            }
        )
        print(rows[-1], flush=True)
    write_result("quick_summarization", {"rows": rows, "data": "bundled DialogSum sample (180 rows)"})
    return {"rows": rows}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", default=None)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--trial-budget", type=float, default=30.0)
    parser.add_argument("--sentences", default=None, help="a sentence<TAB>label file (SST-2's format)")
    parser.add_argument("--summarization", action="store_true")
    parser.add_argument("--dtype", default="auto", help="the runs' training dtype (evaluation stays auto)")
    parser.add_argument("--name", default="quick", help="the result file's name in benchmarks/results/")
    parser.add_argument("--seeds", default="42,0,1,2", help="a run per budget and seed (42 is train's default)")
    args = parser.parse_args()
    if args.summarization:
        summarization(tuple(int(b) for b in (args.budgets or "60,120").split(",")))
    else:
        budgets = tuple(int(b) for b in (args.budgets or "30,60,120").split(","))
        seeds = tuple(int(x) for x in args.seeds.split(","))
        main(budgets, args.trials, args.trial_budget, args.sentences, args.dtype, args.name, seeds)
