"""Batched and streamed inference on one loaded model: length-sorted batches, greedy generation, class
probabilities. Kind-agnostic: `kinds.py` decides which of these a task uses and how to format its prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .errors import LlmftError
from .models import LoadedModel

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


def run_batches(loaded, texts, settings, tuned, step, verb, progress=True, on_progress=None) -> list:
    """`step(encoded batch) -> one value per text` over length-sorted batches of the prompted `texts`, by the base
    (tuned=False) or tuned model; values come back in the order of `texts`."""
    prompts = [loaded.task.format_prompt(t) for t in texts]
    desc = f"{verb} {'tuned' if tuned else 'base'}"
    results = [None] * len(prompts)
    batches = _length_sorted_batches(
        loaded.tokenizer, prompts, settings.batch_size, settings.max_input_tokens, settings.max_batch_tokens
    )
    done = 0
    with loaded.use(tuned), torch.inference_mode():
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


def generate(loaded: LoadedModel, texts, settings: GenerationSettings, tuned: bool, **progress) -> list[str]:
    """Greedy (or beam) outputs for `texts` by the base (tuned=False) or tuned model; `progress` and
    `on_progress` as in `run_batches`."""

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

    return run_batches(loaded, texts, settings, tuned, step, "generating", **progress)


def classify(loaded: LoadedModel, texts, settings: GenerationSettings, tuned: bool, **progress) -> list[list[float]]:
    """Class probabilities for `texts` from the base or tuned classifier."""

    def step(enc):
        return torch.softmax(loaded.model(**enc).logits.float(), dim=-1).tolist()

    return run_batches(loaded, texts, settings, tuned, step, "classifying", **progress)


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
