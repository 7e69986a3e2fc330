"""Evaluate base and tuned on the same examples: batched outputs, per-example scores, paired statistics.

Base and tuned come from one loaded model (adapter off / on). Base outputs are cached on disk per
(model, examples, generation settings), so evaluating a second adapter does not regenerate them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import Example
from .errors import LlmftError
from .metrics import (
    CORPUS_METRICS,
    classification_report,
    corpus_classification_scores,
    resolve_scorer,
    summary_scores,
)
from .models import LoadedModel
from .runs import write_json_atomic
from .stats import paired_aggregate, paired_comparison
from .tasks import CLASSIFICATION

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings, recorded with every result (greedy by default, as in the origin)."""

    max_new_tokens: int = 128
    num_beams: int = 1
    batch_size: int = 32
    """Texts per batch (measured on 2 cores at FLAN-T5-base size: 32 beat 16 by 1.25x, 50 gained nothing)."""
    max_batch_tokens: int = 8192
    """Cap on padded input tokens per batch, which bounds activation memory for long inputs."""
    max_input_tokens: int = 512
    min_new_tokens: int = 0
    """Force at least this many tokens (benchmarks use min = max so every side does identical work)."""

    def __post_init__(self):
        if self.min_new_tokens > self.max_new_tokens:
            raise LlmftError("min-new-tokens cannot exceed max-new-tokens")
        for name, low, high in [
            ("max_new_tokens", 1, 4096),
            ("num_beams", 1, 16),
            ("batch_size", 1, 1024),
            ("max_batch_tokens", 1, 1_000_000),
            ("max_input_tokens", 1, 16384),
        ]:
            if not low <= getattr(self, name) <= high:
                raise LlmftError(
                    f"{name.replace('_', '-')} must be between {low} and {high}, got {getattr(self, name)}"
                )


def _length_sorted_batches(tokenizer, texts, batch_size, max_len, max_batch_tokens):
    """Indices in batches of similar token length, longest first, so padding stays small.

    A batch holds at most `batch_size` texts and at most `max_batch_tokens` padded input tokens, so short
    dialogues go 32 at a time while 1024-token documents go in smaller batches that keep memory bounded.
    """
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        # Longest first: the batch's first text sets its padded width.
        width = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= batch_size or (len(current) + 1) * width > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current] if current else batches


def _run_batches(loaded, prompts, settings, step, desc, progress, on_progress):
    results = [None] * len(prompts)
    batches = _length_sorted_batches(
        loaded.tokenizer, prompts, settings.batch_size, settings.max_input_tokens, settings.max_batch_tokens
    )
    done = 0
    with torch.inference_mode():
        for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
            enc = loaded.tokenizer(
                [prompts[i] for i in batch],
                padding=True,
                truncation=True,
                max_length=settings.max_input_tokens,
                return_tensors="pt",
            ).to(loaded.device)
            for i, value in zip(batch, step(enc)):
                results[i] = value
            done += len(batch)
            if on_progress:
                on_progress(desc, done, len(prompts))
    return results


def generate(
    loaded: LoadedModel,
    texts: list[str],
    settings: GenerationSettings,
    tuned: bool,
    progress: bool = True,
    on_progress: ProgressFn | None = None,
) -> list[str]:
    """Greedy (or beam) summaries of `texts` by the base (tuned=False) or tuned model."""
    prompts = [loaded.task.format_prompt(t) for t in texts]

    def step(enc):
        # Tokenizers such as BERT's add token_type_ids, which seq2seq models do not take.
        enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
        out = loaded.model.generate(
            **enc,
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens or None,
            num_beams=settings.num_beams,
            do_sample=False,
        )
        return [s.strip() for s in loaded.tokenizer.batch_decode(out, skip_special_tokens=True)]

    with loaded.use(tuned):
        return _run_batches(
            loaded, prompts, settings, step, f"generating {'tuned' if tuned else 'base'}", progress, on_progress
        )


def classify(
    loaded: LoadedModel,
    texts: list[str],
    settings: GenerationSettings,
    tuned: bool,
    progress: bool = True,
    on_progress: ProgressFn | None = None,
) -> list[list[float]]:
    """Class probabilities for `texts` from the base or tuned classifier."""
    prompts = [loaded.task.format_prompt(t) for t in texts]

    def step(enc):
        return torch.softmax(loaded.model(**enc).logits.float(), dim=-1).tolist()

    with loaded.use(tuned):
        return _run_batches(
            loaded, prompts, settings, step, f"classifying {'tuned' if tuned else 'base'}", progress, on_progress
        )


def stream_generate(loaded: LoadedModel, text: str, settings: GenerationSettings, tuned: bool):
    """Generate one summary token by token.

    Yields:
        dicts with `text` so far, `tokens` generated, `ttft_s` (time to first token), `elapsed_s`, and
        `truncated` (the input was cut to max_input_tokens).
    """
    import queue
    import threading
    import time

    from transformers.generation.streamers import BaseStreamer

    updates: queue.Queue = queue.Queue()
    prompt = loaded.task.format_prompt(text)
    enc = loaded.tokenizer([prompt], truncation=True, max_length=settings.max_input_tokens, return_tensors="pt")
    truncated = len(loaded.tokenizer(prompt)["input_ids"]) > settings.max_input_tokens
    enc = {k: enc[k].to(loaded.device) for k in ("input_ids", "attention_mask")}

    class _Streamer(BaseStreamer):
        def __init__(self):
            self.ids, self.first = [], True

        def put(self, value):
            if self.first:  # the decoder start token, not an output
                self.first = False
                return
            self.ids += value.reshape(-1).tolist()
            updates.put(list(self.ids))

        def end(self):
            updates.put(None)

    def work():
        try:
            with loaded.lock, loaded.use(tuned), torch.inference_mode():
                loaded.model.generate(
                    **enc,
                    max_new_tokens=settings.max_new_tokens,
                    min_new_tokens=settings.min_new_tokens or None,
                    num_beams=1,
                    do_sample=False,
                    streamer=_Streamer(),
                )
        except Exception as err:  # surfaced to the caller below
            updates.put(err)

    start = time.perf_counter()
    threading.Thread(target=work, daemon=True).start()
    ttft, ids = None, []
    while (item := updates.get()) is not None:
        if isinstance(item, Exception):
            raise item
        ids = item
        ttft = ttft if ttft is not None else time.perf_counter() - start
        yield {
            "text": loaded.tokenizer.decode(ids, skip_special_tokens=True).strip(),
            "tokens": len(ids),
            "ttft_s": ttft,
            "elapsed_s": time.perf_counter() - start,
            "truncated": truncated,
        }
    if not ids:
        yield {
            "text": "",
            "tokens": 0,
            "ttft_s": None,
            "elapsed_s": time.perf_counter() - start,
            "truncated": truncated,
        }


def classify_one(loaded: LoadedModel, text: str, settings: GenerationSettings, tuned: bool) -> dict:
    """Class probabilities for one text, with latency."""
    import time

    start = time.perf_counter()
    with loaded.lock:
        probs = classify(loaded, [text], settings, tuned, progress=False)[0]
    n_tokens = len(loaded.tokenizer(loaded.task.format_prompt(text))["input_ids"])
    return {
        "probs": dict(zip(loaded.task.labels, probs)),
        "elapsed_s": time.perf_counter() - start,
        "tokens": min(n_tokens, settings.max_input_tokens),
        "truncated": n_tokens > settings.max_input_tokens,
    }


def _model_fingerprint(model_ref: str) -> str:
    path = Path(model_ref)
    if not path.is_dir():
        return model_ref
    parts = [(path / "config.json").read_text(encoding="utf-8")]
    for weights in sorted(path.glob("*.safetensors")):
        st = weights.stat()
        parts.append(f"{weights.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def base_cache_key(loaded: LoadedModel, examples: list[Example], settings: GenerationSettings) -> str:
    payload = {
        "model": _model_fingerprint(loaded.model_ref),
        "task": loaded.task.name,
        "kind": loaded.task.kind,
        "prompt": loaded.task.prompt,
        "head_seed": loaded.head_seed if loaded.task.kind == CLASSIFICATION else None,
        "settings": {k: v for k, v in asdict(settings).items() if k != "batch_size"},
        "examples": [[ex.id, ex.text] for ex in examples],
        "device": str(loaded.device),
        "dtype": loaded.dtype,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _base_outputs(loaded, examples, settings, cache_dir, progress, on_progress):
    run = classify if loaded.task.kind == CLASSIFICATION else generate
    path = Path(cache_dir) / f"{base_cache_key(loaded, examples, settings)}.json" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8")), True
        except json.JSONDecodeError:
            pass  # a damaged cache entry is regenerated
    outputs = run(
        loaded, [ex.text for ex in examples], settings, tuned=False, progress=progress, on_progress=on_progress
    )
    if path is not None:
        write_json_atomic(path, outputs)
    return outputs, False


def evaluate_pair(
    loaded: LoadedModel,
    examples: list[Example],
    settings: GenerationSettings | None = None,
    scorer: str | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_progress: ProgressFn | None = None,
) -> dict:
    """Score base and tuned outputs on `examples` and compare them pairwise.

    Args:
        loaded: a model with an adapter attached.
        examples: the test examples (same for both sides).
        settings: decoding settings.
        scorer: BERTScore model (summaries only); None = roberta-large, or the packaged MiniLM offline.
        seed: bootstrap seed.
        cache_dir: where base outputs are cached (None: no cache).
    Returns:
        {"task", "n", "scorer", "model", "adapter", "generation", "metrics": {name: paired stats},
         "rows": [one dict per example], ...}
    """
    if not examples:
        raise LlmftError("no examples to evaluate")
    task = loaded.task
    settings = settings or GenerationSettings(
        max_new_tokens=task.max_target_tokens, max_input_tokens=task.max_input_tokens
    )
    base_out, cached = _base_outputs(loaded, examples, settings, cache_dir, progress, on_progress)
    run = classify if task.kind == CLASSIFICATION else generate
    tuned_out = run(
        loaded, [ex.text for ex in examples], settings, tuned=True, progress=progress, on_progress=on_progress
    )
    result = {
        "task": task.name,
        "n": len(examples),
        "model": loaded.model_ref,
        "adapter": loaded.adapter,
        "dtype": loaded.dtype,
        "generation": asdict(settings),
        "base_outputs_cached": cached,
    }
    if task.kind == CLASSIFICATION:
        result.update(_compare_classification(task, examples, base_out, tuned_out, seed))
    else:
        result.update(
            _compare_summaries(examples, base_out, tuned_out, resolve_scorer(scorer), seed, progress, on_progress)
        )
    return result


def _compare_summaries(examples, base_out, tuned_out, scorer, seed, progress, on_progress):
    refs = [ex.references for ex in examples]
    scores = []
    for done, (side, outputs) in enumerate((("base", base_out), ("tuned", tuned_out))):
        if on_progress:
            on_progress(f"scoring {side}", done * len(examples), 2 * len(examples))
        # bert_score's own verbose bar reports nonsense timings (0.3.13), so llmft says what it is doing.
        if progress:
            print(f"scoring {side} outputs (ROUGE, BERTScore with {scorer})...", end="", file=sys.stderr, flush=True)
        started = time.perf_counter()
        scores.append(summary_scores(outputs, refs, scorer))
        if progress:
            print(f" {time.perf_counter() - started:.1f} s", file=sys.stderr)
    base_scores, tuned_scores = scores
    metrics = {
        name: paired_comparison(base_scores[name], tuned_scores[name], "wilcoxon", seed) for name in base_scores
    }
    width = max(len(r) for r in refs)
    rows = []
    for i, ex in enumerate(examples):
        row = {"id": ex.id, "input": ex.text}
        row.update({f"reference_{k + 1}": ex.references[k] if k < len(ex.references) else "" for k in range(width)})
        row.update({"base_output": base_out[i], "tuned_output": tuned_out[i]})
        row.update({f"base_{m}": base_scores[m][i] for m in base_scores})
        row.update({f"tuned_{m}": tuned_scores[m][i] for m in tuned_scores})
        rows.append(row)
    return {"scorer": _scorer_record(scorer), "metrics": metrics, "rows": rows}


def _scorer_record(scorer: str) -> str:
    from .models import MINILM

    return "sentence-transformers/all-MiniLM-L6-v2 (packaged)" if scorer == MINILM else scorer


def _compare_classification(task, examples, base_probs, tuned_probs, seed):
    labels = task.labels
    y = [ex.label for ex in examples]
    base_pred = [max(range(len(p)), key=p.__getitem__) for p in base_probs]
    tuned_pred = [max(range(len(p)), key=p.__getitem__) for p in tuned_probs]
    base_ok = [float(p == t) for p, t in zip(base_pred, y)]
    tuned_ok = [float(p == t) for p, t in zip(tuned_pred, y)]
    base_pt = [p[t] for p, t in zip(base_probs, y)]
    tuned_pt = [p[t] for p, t in zip(tuned_probs, y)]

    def scorer(name):
        return lambda refs, preds, axis=-1: corpus_classification_scores(refs, preds, len(labels), axis)[name]

    metrics = {name: paired_aggregate(y, base_pred, tuned_pred, scorer(name), seed) for name in CORPUS_METRICS}
    metrics["correct"] = paired_comparison(base_ok, tuned_ok, "mcnemar", seed)
    metrics["p_true_label"] = paired_comparison(base_pt, tuned_pt, "wilcoxon", seed)
    rows = []
    for i, ex in enumerate(examples):
        row = {
            "id": ex.id,
            "input": ex.text,
            "reference": labels[ex.label],
            "base_output": labels[base_pred[i]],
            "tuned_output": labels[tuned_pred[i]],
            "base_correct": base_ok[i],
            "tuned_correct": tuned_ok[i],
            "base_p_true_label": base_pt[i],
            "tuned_p_true_label": tuned_pt[i],
        }
        row.update({f"base_p_{name}": base_probs[i][k] for k, name in enumerate(labels)})
        row.update({f"tuned_p_{name}": tuned_probs[i][k] for k, name in enumerate(labels)})
        rows.append(row)
    return {
        "scorer": None,
        "labels": list(labels),
        "metrics": metrics,
        "rows": rows,
        "confusion_matrix": {
            "base": classification_report(base_pred, y, labels)["confusion_matrix"],
            "tuned": classification_report(tuned_pred, y, labels)["confusion_matrix"],
        },
    }


def per_example_metrics(result: dict) -> list[str]:
    """Metric names that have per-example scores in `result["rows"]`."""
    row = result["rows"][0]
    return [name for name in result["metrics"] if f"base_{name}" in row]


def write_results(result: dict, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write examples.csv, summary.json and boxplot.html (+ scatter.html) into `out_dir`."""
    import pandas as pd

    from .plots import metric_boxplot, paired_scatter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "examples": out / "examples.csv",
        "summary": out / "summary.json",
        "boxplot": out / "boxplot.html",
        "scatter": out / "scatter.html",
    }
    pd.DataFrame(result["rows"]).to_csv(paths["examples"], index=False)
    write_json_atomic(paths["summary"], {k: v for k, v in result.items() if k != "rows"})
    names = per_example_metrics(result)
    scores = {m: ([r[f"base_{m}"] for r in result["rows"]], [r[f"tuned_{m}"] for r in result["rows"]]) for m in names}
    metric_boxplot(scores, title=f"{result['task']}: base vs tuned (n={result['n']})").write_html(
        paths["boxplot"], include_plotlyjs=True
    )
    main = "overall" if "overall" in scores else names[-1]
    paired_scatter(*scores[main], ids=[r["id"] for r in result["rows"]], metric=main).write_html(
        paths["scatter"], include_plotlyjs=True
    )
    return {k: str(v) for k, v in paths.items()}
