"""Which validation step to keep when the validation set is small: Trainer's best score, the lowest validation
loss, or llmft's rule (the latest step within one standard error of the best score, the error of their paired
difference on the same rows), each judged by the kept step's macro-F1 on unseen test sentences.

Run: python -m benchmarks.bench_selection [--seeds 0,1,2,3,4,5] [--val 10,30] [--steps 120] [--eval-steps 4]
                                         [--label-noise 0.2]

Every run trains once (packaged MiniLM, sentiment, the quick preset's settings, 100 training rows of the
SST-2-like sentences of bench_quick, `--val` rows carved for validation, a validation every `--eval-steps`). At each
validation a callback records the validation predictions and loss and scores the model on 500 unseen test
sentences. The rules are then applied to that same record (the rule's code is llmft's own: `stats.paired_se`,
`stats.within_noise`), so they differ in the step they pick and in nothing else. A step whose LoRA update is still
zero is never a candidate (llmft's Trainer skips it). "last" and "oracle" (the step with the best test F1, which
no rule can know) bound the picture. On these sentences a clean validation set reaches F1 1.0 within a few steps
and every rule keeps the last step, so `--label-noise` flips that share of the training and validation labels
(the test labels stay clean): validation scores then stay noisy, as a small real validation set's are.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_quick import sentences, write
from benchmarks.common import write_result

RULES = ("best score", "lowest loss", "within one SE (llmft)", "last", "oracle")


def record_run(seed, n_val, steps, eval_steps, work: Path, train_file: str, test_rows: list[dict]) -> list[dict]:
    """Train once and return, per validation, the step, the validation rows' labels and predictions, the
    validation loss, whether the LoRA update was still zero, and the test macro-F1."""
    import torch
    from sklearn.metrics import f1_score
    from transformers import TrainerCallback

    from llmft.models import lora_update_is_zero
    from llmft.training import TrainConfig, prepare, train

    prepared = prepare(
        TrainConfig(
            task="sentiment",
            model="minilm",
            data=train_file,
            runs_dir=str(work / "runs"),
            run_name=f"sel-{n_val}-{seed}",
            train_samples=100 + n_val,
            val_split=n_val,
            max_steps=steps,
            eval_steps=eval_steps,
            time_budget=0,
            early_stopping=None,
            seed=seed,
        )
    )
    val = prepared.val_examples
    test_labels = [0 if r["label"] == "Negative" else 1 for r in test_rows]
    history = []

    class Recorder(TrainerCallback):
        def __init__(self):
            self.tokenizer = None

        def on_evaluate(self, args, state, control, model=None, metrics=None, processing_class=None, **kwargs):
            tokenizer = processing_class

            def predict(texts):
                out = []
                with torch.no_grad():
                    for start in range(0, len(texts), 64):
                        batch = tokenizer(
                            texts[start : start + 64], padding=True, truncation=True, return_tensors="pt"
                        )
                        out += model(**batch).logits.argmax(-1).tolist()
                return np.array(out)

            was_training = model.training
            model.eval()
            val_pred = predict([ex.text for ex in val])
            test_pred = predict([r["text"] for r in test_rows])
            model.train(was_training)
            history.append(
                {
                    "step": state.global_step,
                    "labels": np.array([ex.label for ex in val]),
                    "pred": val_pred,
                    "loss": metrics["eval_loss"],
                    "f1": metrics["eval_macro_f1"],
                    "zero": lora_update_is_zero(model),
                    "test_f1": float(f1_score(test_labels, test_pred, average="macro")),
                }
            )

    train(prepared, show_progress=False, callbacks=[Recorder()])
    return history


def pick(history: list[dict], rule: str) -> dict:
    """The validation a rule keeps, from one run's record (steps with a zero LoRA update never count)."""
    from llmft.kinds import tie_broken
    from llmft.metrics import corpus_classification_scores
    from llmft.stats import Sample, paired_se, within_noise

    steps = [h for h in history if not h["zero"]]
    if rule == "last":
        return steps[-1]
    if rule == "oracle":
        return max(steps, key=lambda h: h["test_f1"])
    if rule == "lowest loss":
        return min(steps, key=lambda h: h["loss"])
    score = {id(h): tie_broken(h["f1"], h["loss"]) for h in steps}
    if rule == "best score":  # Trainer's: the first step with the highest score
        return max(steps, key=lambda h: score[id(h)])

    def sample(h):
        rows = np.stack([h["labels"], h["pred"]], axis=-1)
        return Sample(rows, lambda r: corpus_classification_scores(r[..., 0], r[..., 1], 2)["macro_f1"])

    top = kept = None
    for h in steps:  # as llmft's Trainer does, one validation at a time
        if top is None or score[id(h)] > score[id(top)]:
            top = kept = h
        elif within_noise(score[id(h)], score[id(top)], paired_se(sample(h), sample(top))):
            kept = h
    return kept


def noisy(rows: list[dict], share: float, seed: int = 0) -> list[dict]:
    """`rows` with `share` of their labels flipped, chosen by `seed`."""
    rng = random.Random(seed)
    flip = {"Positive": "Negative", "Negative": "Positive"}
    return [{**r, "label": flip[r["label"]]} if rng.random() < share else r for r in rows]


def main(seeds=(0, 1, 2, 3, 4, 5), vals=(10, 30), steps=120, eval_steps=4, label_noise=0.2) -> dict:
    work = Path(tempfile.mkdtemp(prefix="llmft-bench-selection-"))
    train_file = write(noisy(sentences(1000, "train", 1), label_noise), work / "train.jsonl")
    test_rows = sentences(500, "test", 2)
    rows, summary = [], []
    for n_val in vals:
        kept = {rule: [] for rule in RULES}
        for seed in seeds:
            started = time.time()
            history = record_run(seed, n_val, steps, eval_steps, work, train_file, test_rows)
            picks = {rule: pick(history, rule) for rule in RULES}
            row = {
                "val_rows": n_val,
                "seed": seed,
                "wall_s": round(time.time() - started, 1),
                **{rule: {"step": h["step"], "test_f1": round(h["test_f1"], 4)} for rule, h in picks.items()},
            }
            for rule, h in picks.items():
                kept[rule].append(h["test_f1"])
            rows.append(row)
            print(row, flush=True)
        summary.append(
            {
                "val_rows": n_val,
                "seeds": list(seeds),
                **{
                    rule: {
                        "test_f1_mean": round(statistics.mean(v), 4),
                        "test_f1_min": round(min(v), 4),
                        "wins_over_best_score": sum(a > b + 1e-9 for a, b in zip(v, kept["best score"])),
                        "losses_to_best_score": sum(a < b - 1e-9 for a, b in zip(v, kept["best score"])),
                    }
                    for rule, v in kept.items()
                },
            }
        )
        print(summary[-1], flush=True)
    facts = {
        "data": "synthetic SST-2-like (bench_quick): 100 train rows + the validation rows, 500 unseen test rows",
        "label_noise": label_noise,
        "steps": steps,
        "eval_steps": eval_steps,
        "rules": list(RULES),
        "summary": summary,
        "rows": rows,
    }
    write_result("selection", facts)
    return facts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5")
    parser.add_argument("--val", default="10,30")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--eval-steps", type=int, default=4)
    parser.add_argument("--label-noise", type=float, default=0.2)
    args = parser.parse_args()
    seeds, vals = tuple(int(s) for s in args.seeds.split(",")), tuple(int(v) for v in args.val.split(","))
    main(seeds, vals, args.steps, args.eval_steps, args.label_noise)
