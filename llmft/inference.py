"""Batched and streamed inference on one loaded model: length-sorted batches, greedy generation, class
probabilities. Task-agnostic: it takes finished prompts (and whether the tokenizer adds special tokens to
them, and the class names) as arguments; `kinds.py` decides which of these a task uses and builds its prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .errors import LlmftError
from .models import LoadedModel, input_limit

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


def _length_sorted_batches(tokenizer, texts, batch_size, max_len, max_batch_tokens, special_tokens=True):
    """Indices in batches of similar token length, longest first, so padding stays small.

    A batch holds at most `batch_size` texts and at most `max_batch_tokens` padded input tokens, so short
    dialogues go 32 at a time while 1024-token documents go in smaller batches that keep memory bounded.
    """
    encoded = tokenizer(texts, truncation=True, max_length=max_len, add_special_tokens=special_tokens)
    lengths = [len(ids) for ids in encoded["input_ids"]]
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


def run_batches(
    loaded, prompts, settings, tuned, step, verb, special_tokens=True, progress=True, on_progress=None
) -> list:
    """`step(encoded batch, adapter selection) -> one value per prompt` over length-sorted batches of `prompts`,
    by the base (tuned=False) or tuned model; values come back in the order of `prompts`.

    Base or tuned is chosen for the batch's rows by `LoadedModel.rows`, which holds the model's lock for it.
    """
    desc = f"{verb} {'tuned' if tuned else 'base'}"
    results = [None] * len(prompts)
    batches = _length_sorted_batches(
        loaded.tokenizer,
        prompts,
        settings.batch_size,
        input_limit(loaded.tokenizer, settings.max_input_tokens),
        settings.max_batch_tokens,
        special_tokens,
    )
    done = 0
    if on_progress:  # the stage shows at once, not after its first batch (one batch can take seconds)
        on_progress(desc, 0, len(prompts))
    for batch in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
        enc = _encode(loaded, [prompts[i] for i in batch], settings, special_tokens)
        with loaded.rows([tuned] * len(batch)) as selection, torch.inference_mode():
            values = step(enc, selection)
        for i, value in zip(batch, values):
            results[i] = value
        done += len(batch)
        if on_progress:
            on_progress(desc, done, len(prompts))
    return results


def _encode(loaded, prompts, settings, special_tokens: bool):
    return loaded.tokenizer(
        prompts,
        padding=True,
        truncation=True,
        max_length=input_limit(loaded.tokenizer, settings.max_input_tokens),
        return_tensors="pt",
        add_special_tokens=special_tokens,
    ).to(loaded.device)


def stop_tokens(loaded) -> list[int]:
    """Token ids that end an output: the model's generation EOS ids and the tokenizer's EOS (an instruct
    model's end-of-turn token)."""
    config_eos = loaded.model.generation_config.eos_token_id
    ids = config_eos if isinstance(config_eos, list) else [config_eos]
    ids = [*ids, loaded.tokenizer.eos_token_id]
    return list(dict.fromkeys(i for i in ids if isinstance(i, int)))


def _generate_kwargs(loaded, settings, num_beams=None) -> dict:
    return dict(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens or None,
        num_beams=num_beams or settings.num_beams,
        do_sample=False,
        eos_token_id=stop_tokens(loaded),
        pad_token_id=loaded.tokenizer.pad_token_id,
    )


def _model_inputs(enc) -> dict:
    # Tokenizers such as BERT's add token_type_ids, which generative models do not take.
    return {k: enc[k] for k in ("input_ids", "attention_mask")}


def _new_tokens(loaded, enc, out):
    """The generated part of `generate`'s output: a decoder-only model returns the prompt before it (all
    prompts end at the same column under left padding)."""
    if getattr(loaded.model.config, "is_encoder_decoder", False):
        return out
    return out[:, enc["input_ids"].shape[1] :]


def generate(
    loaded: LoadedModel, prompts, settings: GenerationSettings, tuned: bool, special_tokens=True, **progress
) -> list[str]:
    """Greedy (or beam) outputs for `prompts` by the base (tuned=False) or tuned model; `progress` and
    `on_progress` as in `run_batches`."""

    def step(enc, selection):
        out = loaded.model.generate(**_model_inputs(enc), **_generate_kwargs(loaded, settings), **selection)
        new = _new_tokens(loaded, enc, out)
        return [s.strip() for s in loaded.tokenizer.batch_decode(new, skip_special_tokens=True)]

    return run_batches(loaded, prompts, settings, tuned, step, "generating", special_tokens, **progress)


def classify(
    loaded: LoadedModel, prompts, settings: GenerationSettings, tuned: bool, special_tokens=True, **progress
) -> list[list[float]]:
    """Class probabilities for `prompts` from the base or tuned classifier."""

    def step(enc, selection):
        return torch.softmax(loaded.model(**enc, **selection).logits.float(), dim=-1).tolist()

    return run_batches(loaded, prompts, settings, tuned, step, "classifying", special_tokens, **progress)


SIDES = ("base", "tuned")


def input_stats(loaded, prompt: str, settings, special_tokens: bool) -> tuple[int, bool]:
    """(tokens the model reads of `prompt`, whether it was cut to the input limit)."""
    n_tokens = len(loaded.tokenizer(prompt, add_special_tokens=special_tokens)["input_ids"])
    limit = input_limit(loaded.tokenizer, settings.max_input_tokens)
    return min(n_tokens, limit), n_tokens > limit


def stream_generate_pair(loaded: LoadedModel, prompt: str, settings: GenerationSettings, special_tokens=True):
    """Generate base and tuned outputs for one prompt together, token by token: one batch of two rows, base
    and tuned selected per row, so both sides stream at once.

    Yields:
        {"base": update, "tuned": update}, each update a dict with `text` so far, `tokens` generated,
        `ttft_s` (time to the first token), `elapsed_s` and `truncated` (the input was cut).
    """
    import queue
    import threading
    import time

    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    updates: queue.Queue = queue.Queue()
    closed = threading.Event()  # set when the caller stops reading (a closed page): generation stops at its next token
    _, truncated = input_stats(loaded, prompt, settings, special_tokens)
    enc = _model_inputs(_encode(loaded, [prompt, prompt], settings, special_tokens))
    stops = {*stop_tokens(loaded), loaded.tokenizer.pad_token_id}

    class _Streamer(BaseStreamer):
        def __init__(self):
            self.ids, self.done, self.first = [[], []], [False, False], True

        def put(self, value):
            if self.first:  # the decoder start tokens (or a decoder-only model's prompt), not outputs
                self.first = False
                return
            for row, token in enumerate(value.reshape(-1).tolist()):
                if not self.done[row]:
                    self.done[row] = token in stops
                    if not self.done[row]:
                        self.ids[row].append(token)
            updates.put(([list(ids) for ids in self.ids], list(self.done)))

        def end(self):
            updates.put(None)

    class _UntilClosed(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), closed.is_set(), dtype=torch.bool, device=input_ids.device)

    def work():
        try:
            with loaded.rows([False, True]) as selection, torch.inference_mode():
                loaded.model.generate(
                    **enc,
                    **_generate_kwargs(loaded, settings, 1),
                    **selection,
                    streamer=_Streamer(),
                    stopping_criteria=StoppingCriteriaList([_UntilClosed()]),
                )
        except Exception as err:  # surfaced to the caller below
            updates.put(err)

    start = time.perf_counter()
    worker = threading.Thread(target=work, daemon=True, name="llmft-stream")
    worker.start()
    first = [None, None]
    ids = [[], []]

    ended = [None, None]  # when each side's row finished: one stops early while the other goes on

    def view():
        now = time.perf_counter() - start
        return {
            side: {
                "text": loaded.tokenizer.decode(ids[k], skip_special_tokens=True).strip(),
                "tokens": len(ids[k]),
                "ttft_s": first[k],
                "elapsed_s": ended[k] if ended[k] is not None else now,
                "truncated": truncated,
            }
            for k, side in enumerate(SIDES)
        }

    try:
        while (item := updates.get()) is not None:
            if isinstance(item, Exception):
                raise item
            ids, done = item
            now = time.perf_counter() - start
            first = [f if f is not None or not ids[k] else now for k, f in enumerate(first)]
            ended = [e if e is not None or not done[k] else now for k, e in enumerate(ended)]
            yield view()
        yield view()
    finally:  # also when the generator is closed unfinished: the generating thread stops too, at its next token
        closed.set()
        # ... and has left `generate` (and the model's lock) before the caller goes on. A process that exits while
        # it is still inside torch aborts ("terminate called without an active exception", exit code 134).
        worker.join(timeout=60)


def classify_pair(loaded: LoadedModel, prompt: str, settings: GenerationSettings, labels, special_tokens=True) -> dict:
    """Base and tuned class probabilities (by class name in `labels`) for one prompt: one batch of two rows (base
    and tuned per row), or two batches of one for a head peft cannot mix (`LoadedModel.mixes_rows`)."""
    import time

    start = time.perf_counter()
    tokens, truncated = input_stats(loaded, prompt, settings, special_tokens)
    probs = []
    for sides in [[False, True]] if loaded.mixes_rows else [[False], [True]]:
        enc = _encode(loaded, [prompt] * len(sides), settings, special_tokens)
        with loaded.rows(sides) as selection, torch.inference_mode():
            probs += torch.softmax(loaded.model(**enc, **selection).logits.float(), dim=-1).tolist()
    elapsed = time.perf_counter() - start
    return {
        side: {
            "probs": dict(zip(labels, probs[k])),
            "elapsed_s": elapsed,
            "tokens": tokens,
            "truncated": truncated,
        }
        for k, side in enumerate(SIDES)
    }
