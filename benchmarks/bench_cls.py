"""Sentiment classification with the packaged MiniLM: llmft vs the origin's method, training and evaluation.

Run: python -m benchmarks.bench_cls [--n 100] [--steps 6] [--batch-size 16]

Texts: the bundled sample reviews are one or two sentences, far shorter than IMDB's (about 300 tokens on
average, a long tail cut at 512). Joining 2-30 reviews of the same label gives IMDB-like lengths (40-600
tokens); with one-sentence texts padding to 512 would waste far more and flatter llmft.
The origin pads every review to 512 tokens, samples training batches at random, and classifies one review
at a time with two model copies (base, and base + adapter). llmft pads each batch to its longest review,
groups similar lengths, and runs length-sorted batches through one model with the adapter toggled.
Both sides: the same model, LoRA configuration, data, steps and adapter; each way runs in a fresh process.
An opt-in row trains llmft with `--base-dropout 0` (no dropout inside the frozen model).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import gemm_gflops, in_fresh_process, origin_training, table, write_result
from llmft.allocator import keep_freed_memory
from llmft.data import load_examples
from llmft.evaluation import GenerationSettings, evaluate_pair
from llmft.loading import load_model
from llmft.packaged import minilm_path
from llmft.tasks import get_task
from llmft.training import TrainConfig, train

LORA = dict(r=8, alpha=16, dropout=0.05, targets=["query", "value"])


def imdb_length_file(split: str, n: int, seed: int, out: Path) -> Path:
    """Write `n` reviews of IMDB-like length, each joined from 2-30 bundled reviews of one label."""
    pool: dict[int, list[str]] = {}
    for ex in load_examples(get_task("sentiment"), None, split):
        pool.setdefault(ex.label, []).append(ex.text)
    rng = random.Random(seed)
    labels = get_task("sentiment").labels
    with out.open("w", encoding="utf-8") as f:
        for i in range(n):
            label = i % len(labels)
            text = " ".join(rng.sample(pool[label], rng.randint(2, 30)))
            f.write(json.dumps({"text": text, "label": labels[label]}) + "\n")
    return out


def encoder_params(model) -> int:
    """Parameters that multiply every token (embeddings and the classifier head excluded)."""
    return sum(p.numel() for n, p in model.named_parameters() if ".encoder." in f".{n}")


def origin_train(model_path, data, steps, batch_size, lr, seed):
    """The origin's training configuration (run in a fresh process)."""
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = [json.loads(line) for line in Path(data).read_text().splitlines()]
    labels = get_task("sentiment").labels
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(labels))
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA["targets"],
    )
    model = get_peft_model(model, lora)
    enc = tokenizer([r["text"] for r in rows], padding="max_length", max_length=512, truncation=True)
    dataset = Dataset.from_dict({**enc, "labels": [labels.index(r["label"]) for r in rows]})
    return origin_training(model, dataset, steps, batch_size, lr, seed)


def origin_eval(model_path, adapter, test_file, seed):
    """Two copies, one review at a time, padded to 512: the notebook's loop, timed from loading to F1 (run in
    a fresh process)."""
    from peft import PeftModel
    from sklearn.metrics import f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    examples = load_examples(get_task("sentiment"), test_file, "test")
    n_labels = len(get_task("sentiment").labels)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(seed)  # the classifier head llmft's base uses (head_seed)
    base = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=n_labels).eval()
    torch.manual_seed(seed)
    tuned_base = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=n_labels)
    tuned = PeftModel.from_pretrained(tuned_base, adapter).eval()
    preds = {"base": [], "tuned": []}
    with torch.no_grad():
        for ex in examples:
            enc = tokenizer(ex.text, padding="max_length", max_length=512, truncation=True, return_tensors="pt")
            for name, model in (("base", base), ("tuned", tuned)):
                preds[name].append(int(model(**enc).logits.argmax(-1)))
    y = [ex.label for ex in examples]
    f1 = {name: f1_score(y, p) for name, p in preds.items()}
    return {"eval_s": time.perf_counter() - start, "f1": f1, "preds": preds}


def llmft_train(model_path, data, steps, batch_size, lr, seed, runs_dir, name, base_dropout=None):
    """llmft's training as `python -m llmft train` runs it (run in a fresh process)."""
    keep_freed_memory()  # as the CLI does
    config = TrainConfig(
        task="sentiment",
        model=model_path,
        data=data,
        train_samples=0,
        max_steps=steps,
        batch_size=batch_size,
        learning_rate=lr,
        lora_r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA["targets"],
        seed=seed,
        val_split=0,  # the same work as the origin's loop: training steps only, no validation or time budget
        time_budget=0,
        runs_dir=runs_dir,
        run_name=name,
        base_dropout=base_dropout,
    )
    info = train(config, show_progress=False)
    return {"tokens_per_s": info["tokens_per_s"], "train_loss": info["train_loss"]}


def llmft_eval(model_path, adapter, test_file, seed):
    """llmft's evaluation as `python -m llmft evaluate` runs it, then batched inference alone on the warm
    model for the share of the GEMM peak it reaches (run in a fresh process)."""
    keep_freed_memory()  # as the CLI does
    task = get_task("sentiment")
    examples = load_examples(task, test_file, "test")
    start = time.perf_counter()
    loaded = load_model(task, model_path, adapter, head_seed=seed)
    result = evaluate_pair(loaded, examples, GenerationSettings(), cache_dir=None, progress=False)
    eval_s = time.perf_counter() - start
    texts = [ex.text for ex in examples]
    start = time.perf_counter()
    loaded.task.kind.predict(loaded, texts, GenerationSettings(), tuned=True, progress=False)
    infer_s = time.perf_counter() - start
    lengths = [len(ids) for ids in loaded.tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
    return {
        "eval_s": eval_s,
        "f1": {side: result.metrics["positive_f1"][f"{side}_mean"] for side in ("base", "tuned")},
        "preds": {side: [task.labels.index(r[f"{side}_output"]) for r in result.rows] for side in ("base", "tuned")},
        "infer_s": infer_s,
        "lengths": lengths,
    }


def main(n: int = 100, steps: int = 6, batch_size: int = 16, lr: float = 2e-3, seed: int = 0) -> dict:
    from transformers import AutoModel

    model_path = minilm_path()
    work = Path(tempfile.mkdtemp(prefix="llmft-bench-cls-"))
    # 400 rows (the bundled sample's size): length grouping works within mega-batches of several batches.
    n_train = max(400, steps * batch_size)
    train_file = imdb_length_file("train", n_train, seed, work / "train.jsonl")
    test_file = imdb_length_file("test", n, seed + 1, work / "test.jsonl")

    train_args = dict(
        model_path=model_path, data=str(train_file), steps=steps, batch_size=batch_size, lr=lr, seed=seed
    )
    runs = str(work / "runs")
    info = in_fresh_process("benchmarks.bench_cls:llmft_train", **train_args, runs_dir=runs, name="bench")
    nodrop = in_fresh_process(  # opt-in --base-dropout 0
        "benchmarks.bench_cls:llmft_train", **train_args, runs_dir=runs, name="bench-nodrop", base_dropout=0.0
    )
    origin_train_s, origin_tokens, origin_loss = in_fresh_process("benchmarks.bench_cls:origin_train", **train_args)

    adapter = str(work / "runs" / "bench" / "adapter")
    eval_args = dict(model_path=model_path, adapter=adapter, test_file=str(test_file), seed=seed)
    ours = in_fresh_process("benchmarks.bench_cls:llmft_eval", **eval_args)
    origin = in_fresh_process("benchmarks.bench_cls:origin_eval", **eval_args)
    lengths = ours["lengths"]
    params = encoder_params(AutoModel.from_pretrained(model_path))
    gflops = gemm_gflops()
    # Per token: 2N FLOPs forward; training adds 2N for activation gradients (frozen weights need none).
    # Attention-score FLOPs are left out, so the shares are slight underestimates.
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (packaged)",
        "n": n,
        "mean_tokens": round(statistics.mean(lengths), 1),
        "steps": steps,
        "batch_size": batch_size,
        "llmft_train_tokens_per_s": info["tokens_per_s"],
        "origin_train_tokens_per_s": round(origin_tokens / origin_train_s, 1),
        "train_speedup": round(info["tokens_per_s"] / (origin_tokens / origin_train_s), 2),
        "llmft_loss": round(info["train_loss"], 4),
        "llmft_base_dropout_0_tokens_per_s": nodrop["tokens_per_s"],
        "base_dropout_0_speedup": round(nodrop["tokens_per_s"] / (origin_tokens / origin_train_s), 2),
        "llmft_base_dropout_0_loss": round(nodrop["train_loss"], 4),
        "origin_loss": round(origin_loss, 4),
        "llmft_eval_s": round(ours["eval_s"], 2),
        "origin_eval_s": round(origin["eval_s"], 2),
        "eval_speedup": round(origin["eval_s"] / ours["eval_s"], 2),
        "llmft_f1": {side: round(v, 3) for side, v in ours["f1"].items()},
        "origin_f1": {side: round(v, 3) for side, v in origin["f1"].items()},
        "predictions_agree": round(
            statistics.mean(
                a == b for side in ours["preds"] for a, b in zip(ours["preds"][side], origin["preds"][side])
            ),
            3,
        ),
        "gemm_gflops": round(gflops, 1),
        "train_fraction_of_gemm": round(info["tokens_per_s"] * 4 * params / 1e9 / gflops, 3),
        "train_base_dropout_0_fraction_of_gemm": round(nodrop["tokens_per_s"] * 4 * params / 1e9 / gflops, 3),
        "inference_fraction_of_gemm": round(sum(lengths) * 2 * params / ours["infer_s"] / 1e9 / gflops, 3),
    }
    print(
        table(
            [
                [f"sentiment training ({steps} x {batch_size})", out["origin_train_tokens_per_s"],
                 out["llmft_train_tokens_per_s"], f"{out['train_speedup']}x"],
                ["  same, --base-dropout 0", out["origin_train_tokens_per_s"],
                 out["llmft_base_dropout_0_tokens_per_s"], f"{out['base_dropout_0_speedup']}x"],
                [f"sentiment evaluation (n={n})", f"{out['origin_eval_s']} s", f"{out['llmft_eval_s']} s",
                 f"{out['eval_speedup']}x"],
            ],
            ["benchmark (MiniLM)", "origin", "llmft", "ratio"],
        )
    )  # fmt: skip
    write_result("cls", out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    main(args.n, args.steps, args.batch_size)
