"""Task-aware model loading: which model a task runs on, the kind that fits it, and the base model (with an
adapter attached) loaded as that kind says.

Above `tasks` and `kinds`: the mechanisms it calls (`models`, `refs`) know no task.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import LlmftError, first_line
from .models import (
    LoadedModel,
    device_and_dtype,
    dropout_overrides,
    dtype_name,
    from_pretrained_error,
    model_config,
)
from .packaged import MINILM, PACKAGED, SMOLLM2
from .refs import adapter_dir, check_model_ref, hub_reachable, in_hub_cache, parse_ref
from .tasks import TaskSpec

log = logging.getLogger(__name__)


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
    alias = offline_model(task)
    raise LlmftError(
        f"task {task.name!r} needs a {task.kind.family or task.kind} model: {task.model} is not cached and the hub "
        f"is unreachable; pass --model {alias} ({PACKAGED_NAMES[alias]}, installed with llmft) or --model "
        "/path/to/local/model (a folder with config.json and model.safetensors)"
    )


PACKAGED_NAMES = {MINILM: "the packaged all-MiniLM-L6-v2", SMOLLM2: "the packaged SmolLM2-135M-Instruct chat LLM"}


def offline_model(task: TaskSpec) -> str:
    """The packaged model that can stand in for `task`'s default offline: SmolLM2 for a generation task, the
    task's own fallback (MiniLM) for a classifier."""
    return SMOLLM2 if task.kind.generates else (task.offline_model or MINILM)


def offline_choice(task: TaskSpec) -> tuple[str | None, str]:
    """(the model a form should preselect, a one-line note) when `task`'s default model cannot load here (the hub
    unreachable, the model not in its cache); (None, "") when it can."""
    if task.offline_model or task.model in PACKAGED or parse_ref(task.model, "model").local:
        return None, ""  # a task with its own offline fallback, or a packaged or local default
    if hub_reachable() or in_hub_cache(task.model):
        return None, ""
    alias = offline_model(task)
    return alias, f"Offline: {task.model} is not reachable or cached here, so {PACKAGED_NAMES[alias]} is preselected."


def task_for_model(task: TaskSpec, model_ref: str, config=None) -> TaskSpec:
    """`task` with the kind of its family that fits the model: a generation task on a decoder-only model is
    a causal-LM task, on an encoder-decoder a seq2seq one. The model decides, not the task.

    `config`: the model's transformers config when the caller has read it already."""
    kind = task.kind.for_model(config if config is not None else model_config(model_ref))
    return task if kind is task.kind else dataclasses.replace(task, kind=kind)


@dataclass
class Base:
    """A freshly loaded base model (on its device, in eval mode) and its tokenizer."""

    model: torch.nn.Module
    tokenizer: object
    fresh_modules: list[str]
    """Modules the checkpoint had no weights for: from_pretrained initialised them (a classifier head, a BERT
    saved without its pooler). A kind may train them in full (`Kind.lora_config`)."""


def load_base(
    task: TaskSpec,
    model_ref: str,
    head_seed: int = 0,
    dtype: str = "auto",
    dropout: float | None = None,
    config=None,
) -> Base:
    """Load tokenizer and base model (safetensors only, no remote code) as `task`'s kind says.

    Args:
        task: a task whose kind fits the model already (`task_for_model`).
        model_ref: a checked model folder or hub id.
        head_seed: seeds the init of fresh weights (a classification head), so the base model is the same at
            training and at evaluation.
        dtype: the weights' dtype name (`auto`, `float32`, `bfloat16`).
        dropout: replaces every dropout probability in the model's config (None keeps them; training only).
        config: the model's transformers config, when read already (for the dropout fields).
    """
    from transformers import AutoTokenizer

    device, torch_dtype = device_and_dtype(dtype)
    offline = not os.path.isdir(model_ref) and not hub_reachable()
    kwargs = dict(use_safetensors=True, trust_remote_code=False, local_files_only=offline, dtype=torch_dtype)
    try:
        if dropout is not None:
            kwargs.update(dropout_overrides(config if config is not None else model_config(model_ref), dropout))
        tokenizer = AutoTokenizer.from_pretrained(model_ref, trust_remote_code=False, local_files_only=offline)
        torch.manual_seed(head_seed)  # a freshly initialised head (classification) is the same at every load
        model, loading = task.kind.load_model(task, model_ref, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as err:
        raise from_pretrained_error(err, model_ref, task.kind.name) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:  # decoder-only classifiers find the last token by it
        model.config.pad_token_id = tokenizer.pad_token_id
    task.kind.prepare_tokenizer(tokenizer)
    fresh = sorted({key.rsplit(".", 1)[0] for key in loading.get("missing_keys", ())})
    return Base(model.to(device).eval(), tokenizer, fresh)


def load_model(
    task: TaskSpec,
    model_ref: str,
    adapter: str | None = None,
    head_seed: int = 0,
    dtype: str = "auto",
    roots: list[Path] | None = None,
) -> LoadedModel:
    """Load the base model and, if given, attach the adapter (a folder, a run directory or a hub id); the task's
    kind is fitted to the model here."""
    from peft import PeftModel

    if adapter is not None:
        adapter = adapter_dir(adapter, roots)
    task = task_for_model(task, model_ref)
    weights = dtype_name(device_and_dtype(dtype)[1])
    base = load_base(task, model_ref, head_seed, weights)
    model, device = base.model, next(base.model.parameters()).device
    if adapter is not None:
        try:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=False).to(device).eval()
        except (OSError, ValueError, RuntimeError) as err:
            raise LlmftError(f"cannot attach adapter {adapter} to {model_ref}: {first_line(err)}") from None
    return LoadedModel(model, base.tokenizer, task, model_ref, adapter, device, head_seed, weights, base.fresh_modules)
