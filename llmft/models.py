"""Model mechanisms that know no task: a model's config, dtype and device, LoRA target names, and `LoadedModel`,
which runs base and tuned rows through one set of weights. Task-aware loading is `loading.py`.

One model instance serves base and tuned: the tuned model is the base wrapped by peft, and each row of a batch
says which it wants (peft's `adapter_names`, `__base__` for the base). A batch holds the model's lock
(`LoadedModel.rows`), so nothing another thread runs sees a half-switched model.
Loading is safetensors-only and never runs remote code.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .errors import LlmftError, first_line
from .refs import hub_reachable
from .schema import DTYPES

log = logging.getLogger(__name__)
ALL_LINEAR = "all-linear"
"""peft's LoRA target for every linear layer but the output head."""
# Names the same projection has in the architectures we meet: LoRA targets given for one map to the others.
EQUIVALENT_MODULES = [
    # GPT-2 projects q, k and v together in c_attn, ModernBERT in Wqkv; DeBERTa-v2/v3 names them query_proj...
    ("q", "q_lin", "query", "q_proj", "query_proj", "c_attn", "Wqkv"),
    ("k", "k_lin", "key", "k_proj", "key_proj", "c_attn", "Wqkv"),
    ("v", "v_lin", "value", "v_proj", "value_proj", "c_attn", "Wqkv"),
    ("o", "out_lin", "o_proj", "out_proj"),
]


def model_config(model_ref: str):
    """The transformers config of a model folder or hub id (never remote code)."""
    from transformers import AutoConfig

    offline = not os.path.isdir(model_ref) and not hub_reachable()
    try:
        return AutoConfig.from_pretrained(model_ref, trust_remote_code=False, local_files_only=offline)
    except (OSError, ValueError) as err:
        raise from_pretrained_error(err, model_ref, "a") from None


def from_pretrained_error(err: BaseException, model_ref: str, kind_name: str) -> LlmftError:
    """A transformers loading error as one line naming the model (remote code and pickle weights refused)."""
    text = str(err)
    if "trust_remote_code" in text:
        return LlmftError(f"model {model_ref} needs custom code; llmft never runs remote code")
    if "safetensors" in text.lower():
        return LlmftError(f"model {model_ref} has no safetensors weights; pickle weights are refused")
    return LlmftError(f"cannot load {kind_name} model {model_ref}: {first_line(err)}")


def input_limit(tokenizer, max_input_tokens: int) -> int:
    """`max_input_tokens`, but no more than the model's tokenizer says it takes (BERT/MiniLM: 512; a longer
    input would overflow its position embeddings)."""
    known = getattr(tokenizer, "model_max_length", None)
    return min(max_input_tokens, known) if isinstance(known, int) and 0 < known < 10**6 else max_input_tokens


def device_and_dtype(dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """The device, and the weights' dtype: `auto` is fp32 on CPU and bf16 on a GPU that supports it.

    `bfloat16` on a CPU is an opt-in: on CPUs with native bf16 (AVX512-BF16, AMX) it trains and generates
    1.7-1.8x faster in half the weight memory (benchmarks/), and its outputs can differ slightly from fp32.
    """
    if dtype not in DTYPES:
        raise LlmftError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if dtype == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return device, torch.bfloat16 if bf16 else torch.float32
    if dtype == "bfloat16" and device.type == "cpu" and not native_cpu_bf16():
        _warn_emulated_bf16()
    return device, getattr(torch, dtype)


def dtype_reason(requested: str, chosen: str) -> str:
    """Why a run has the weights' dtype `chosen` when `requested` was asked for (run.json `dtype_reason`)."""
    if requested != "auto":
        return f"asked for ({requested})"
    if torch.cuda.is_available():
        return f"auto: {chosen} on a GPU" + (" with bf16" if chosen == "bfloat16" else " without bf16")
    if not native_cpu_bf16():
        return "auto: float32 on a CPU without native bf16 (bf16 would be emulated, 7-100x slower)"
    # The rule for auto on a CPU with native bf16: bf16 only where its greedy outputs agree with fp32 on the real
    # model. Measured on SmolLM2-135M-Instruct (docs/performance.md): 1.12x faster, but 13 of 50 base outputs
    # equal fp32's (48 of 50 tuned): they do not agree, so auto keeps fp32; --dtype bfloat16 is the opt-in.
    return (
        "auto: float32; this CPU has native bf16, but on the real SmolLM2 bf16 changed 37 of 50 base greedy "
        "outputs (1.12x faster): --dtype bfloat16 to opt in"
    )


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); without it bf16 is emulated, and slow."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@functools.cache
def _warn_emulated_bf16() -> None:
    """Once a process: measured on an AVX2-only CPU, a MiniLM run trained 5 steps in 60 s in bf16, 227 in fp32."""
    log.warning(
        "this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 matrix products run 7-100x slower than fp32 "
        "here; --dtype float32 is faster"
    )


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass
class LoadedModel:
    """A model (peft-wrapped when an adapter is attached), its tokenizer and where it came from."""

    model: torch.nn.Module
    tokenizer: object
    task: object
    """The `tasks.TaskSpec` it was loaded for (its kind fits the model); this module never reads it."""
    model_ref: str
    adapter: str | None
    device: torch.device
    head_seed: int
    dtype: str = "float32"
    """The weights' dtype as loaded (`float32` or `bfloat16`); recorded with every evaluation."""
    fresh_modules: list = field(default_factory=list)
    """Modules the base checkpoint had no weights for (a classification head): the base model's are untrained."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held for each batch: peft selects base or tuned per row through forward hooks on the shared modules,
    so two batches must not run through one model at once."""

    @functools.cached_property
    def mixes_rows(self) -> bool:
        """Whether peft can give base and tuned rows one batch: only when every module the adapter trains in full
        is one of its mixable types (BERT's and DistilBERT's Linear classifier). RoBERTa's, XLM-R's and
        ELECTRA's classification heads are modules of their own (dense, dropout, out_proj), which peft refuses
        to mix."""
        from peft.utils.other import ModulesToSaveWrapper

        # peft's own list (ModulesToSaveWrapper._mixed_batch_forward keeps it local; no constant to import).
        mixable = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
        return all(
            isinstance(m.original_module, mixable) for m in self.model.modules() if isinstance(m, ModulesToSaveWrapper)
        )

    @contextmanager
    def rows(self, tuned: list[bool]):
        """Hold the model for one batch and yield the forward/generate keywords that make row i tuned when
        `tuned[i]`, else base. A batch of one side runs the adapter as it is (all tuned) or disabled (all base):
        peft's per-row path (`adapter_names`) splits every LoRA layer's input by adapter, which costs time when
        nothing is mixed. Mixed rows take that path, where the head allows it (`mixes_rows`)."""
        if self.adapter is None and any(tuned):
            raise LlmftError("no adapter is attached: nothing to compare against the base model")
        with self.lock:
            if self.adapter is None or all(tuned):
                yield {}
            elif not any(tuned):
                with self.model.disable_adapter():
                    yield {}
            elif self.mixes_rows:
                yield {"adapter_names": [ADAPTER_NAME if t else BASE_ROW for t in tuned]}
            else:
                raise LlmftError(
                    f"{self.model_ref}: peft cannot run base and tuned rows in one batch through this model's "
                    "head; run them in separate batches"
                )


ADAPTER_NAME = "default"
"""The name peft gives an adapter loaded with `PeftModel.from_pretrained`."""
BASE_ROW = "__base__"
"""peft's name for "no adapter" in `adapter_names`."""


def dropout_overrides(config, dropout: float) -> dict:
    """Fields of a model's transformers config that hold a dropout probability (`dropout_rate` in T5,
    `attention_probs_dropout_prob` in BERT, `attention_dropout` in DistilBERT...), all set to `dropout`."""
    return {k: dropout for k, v in config.to_dict().items() if "dropout" in k and isinstance(v, float)}


def resolve_target_modules(model: torch.nn.Module, requested: list[str] | tuple[str, ...]) -> list[str]:
    """Map requested LoRA targets onto the linear layers this architecture actually has.

    `q` on DistilBERT becomes `q_lin`, on BERT `query`. Raises when nothing matches, so a run can never
    silently train no LoRA weights.
    """
    from transformers.pytorch_utils import Conv1D

    if list(requested) == [ALL_LINEAR]:
        return [ALL_LINEAR]
    if ALL_LINEAR in requested:
        raise LlmftError(f"LoRA target {ALL_LINEAR} stands alone: give it without other module names")
    layers = (torch.nn.Linear, Conv1D)  # GPT-2 uses Conv1D for its linear layers
    present = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, layers)}
    resolved = []
    for name in requested:
        if name in present:
            choices = [name]
        else:
            group = next((g for g in EQUIVALENT_MODULES if name in g), ())
            choices = [alias for alias in group if alias in present]
        for choice in choices:
            if choice not in resolved:
                resolved.append(choice)
    if not resolved:
        raise LlmftError(
            f"LoRA target modules {', '.join(requested)} match no linear layer of this "
            f"{model.config.model_type} model; its linear layers are: {', '.join(sorted(present))}"
        )
    return resolved


def lora_update_is_zero(model) -> bool:
    """Whether every LoRA B matrix is zero, so the adapter changes nothing (peft initialises B to zero; a first
    optimizer step at a warmup learning rate of 0 leaves it there). False for a model without LoRA weights."""
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    return bool(lora_b) and all(not p.detach().any() for p in lora_b)
