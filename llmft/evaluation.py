"""Evaluate base and tuned on the same examples: batched outputs, per-example scores, paired statistics.

Base and tuned come from one loaded model (adapter off / on). Base outputs are cached on disk per
(model, examples, generation settings), so evaluating a second adapter does not regenerate them. What differs
between kinds (how to predict, how to score) is the task kind's; this module orchestrates and caches.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

from .errors import LlmftError
from .examples import Example
from .files import write_json_atomic
from .inference import GenerationSettings, ProgressFn
from .models import LoadedModel, lora_update_is_zero
from .results import EvalResult

__all__ = ["EvalResult", "GenerationSettings", "base_cache_key", "evaluate_pair"]


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
        "kind": loaded.task.kind.name,
        "prompt": loaded.task.prompt,
        "prompt_format": loaded.task.kind.run_info(loaded.tokenizer),  # a chat template changes every prompt
        "labels": list(loaded.task.labels),
        "head_seed": loaded.head_seed if loaded.task.kind.fresh_head else None,
        "settings": {k: v for k, v in asdict(settings).items() if k != "batch_size"},
        "examples": [[ex.id, ex.text] for ex in examples],
        "device": str(loaded.device),
        "dtype": loaded.dtype,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _base_outputs(loaded, examples, settings, cache_dir, progress, on_progress):
    path = Path(cache_dir) / f"{base_cache_key(loaded, examples, settings)}.json" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8")), True
        except json.JSONDecodeError:
            pass  # a damaged cache entry is regenerated
    outputs = loaded.task.kind.predict(
        loaded, [ex.text for ex in examples], settings, tuned=False, progress=progress, on_progress=on_progress
    )
    if path is not None:
        try:
            write_json_atomic(path, outputs)
        except OSError:
            pass  # a cache that cannot be written (a full disk) costs the next run time, never this result
    return outputs, False


def _adapter_is_zero(model) -> bool:
    """Whether the adapter changes nothing: a zero LoRA update and no module trained in full (a head)."""
    return lora_update_is_zero(model) and not any("modules_to_save" in n for n, _ in model.named_parameters())


def evaluate_pair(
    loaded: LoadedModel,
    examples: list[Example],
    settings: GenerationSettings | None = None,
    scorer: str | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_progress: ProgressFn | None = None,
) -> EvalResult:
    """Score base and tuned outputs on `examples` and compare them pairwise.

    Args:
        loaded: a model with an adapter attached.
        examples: the test examples (same for both sides).
        settings: decoding settings.
        scorer: BERTScore model (summaries only); None = roberta-large, or the packaged MiniLM offline.
        seed: bootstrap seed.
        cache_dir: where base outputs are cached (None: no cache).
    Returns:
        The `EvalResult` (without data, split or run: the caller knows those).
    """
    if not examples:
        raise LlmftError("no examples to evaluate")
    task = loaded.task
    settings = settings or GenerationSettings(
        max_new_tokens=task.max_target_tokens, max_input_tokens=task.max_input_tokens
    )
    base_out, cached = _base_outputs(loaded, examples, settings, cache_dir, progress, on_progress)
    tuned_out = task.kind.predict(
        loaded, [ex.text for ex in examples], settings, tuned=True, progress=progress, on_progress=on_progress
    )
    scored = task.kind.score(
        task, examples, base_out, tuned_out, scorer, seed, progress=progress, on_progress=on_progress
    )
    if on_progress:
        on_progress("scored", 2 * len(examples), 2 * len(examples))
    warnings = list(scored.warnings)
    if _adapter_is_zero(loaded.model):
        warnings.append("every LoRA B matrix of the adapter is zero: the tuned model is the base model exactly")
    elif base_out == tuned_out:
        warnings.append(
            f"the tuned outputs equal the base's on all {len(examples)} examples: the adapter may be untrained"
        )
    if task.kind.shows_probabilities and loaded.fresh_modules:
        warnings.append(
            "the base model's classification head is untrained (its checkpoint had none, so it answers by chance): "
            "'better' here says the tuned model learned the task, not that it beat a working classifier"
        )
    result = EvalResult(
        task=task.name,
        kind=task.kind.name,
        n=len(examples),
        headline=task.kind.headline,
        metrics=scored.metrics,
        per_example=scored.per_example,
        example_metric=task.kind.example_metric,
        rows=scored.rows,
        model=loaded.model_ref,
        adapter=loaded.adapter,
        dtype=loaded.dtype,
        generation=asdict(settings),
        base_outputs_cached=cached,
        seed=seed,
        warnings=warnings,
        **scored.extra,
    )
    result.judge(scored.not_better)
    return result
