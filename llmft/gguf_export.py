"""A merged Llama-architecture model (SmolLM2, Llama, ...) written as GGUF files for local runtimes (llama.cpp,
Ollama), with its tokenizer and chat template, and an Ollama `Modelfile`.

Written with the `gguf` package's own writer, tensor-name map and Q8_0 quantizer. The layout follows llama.cpp's
converter for Llama: q and k projections permuted for its rotary layout (transformers' GGUF loader reverses
it), 1-D tensors (norms) in F32, the output head left out when it is tied to the embeddings. Only transformers'
GGUF loader has read these files back here: llama.cpp's prebuilt wheels need a newer glibc than these machines
have, so it was not run (docs/export.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import LlmftError

GGUF_TYPES = ("f16", "q8_0")
"""The GGUF files an export writes: `model-<type>.gguf`."""
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 3, 4
"""llama.cpp's token types."""


def write_gguf(model, tokenizer, out: Path, name: str, types=GGUF_TYPES, pre: str = "default") -> list[Path]:
    """Write `model` (a merged, plain transformers causal LM) as `out/model-<type>.gguf` for each of `types`.

    Args:
        model: a Llama-architecture `...ForCausalLM` with its weights in memory.
        tokenizer: its (byte-level BPE) tokenizer, with its chat template.
        out: the folder.
        name: the model's name in the file's metadata.
        pre: llama.cpp's pre-tokenizer name (`smollm` for SmolLM2).
    Returns:
        The files written.
    """
    config = model.config
    if config.model_type != "llama":
        raise LlmftError(
            f"GGUF export writes Llama-architecture models (SmolLM2, Llama, TinyLlama...), not {config.model_type}"
        )
    bad = [t for t in types if t not in GGUF_TYPES]
    if bad:
        raise LlmftError(f"GGUF type {bad[0]!r} is not one of {', '.join(GGUF_TYPES)}")
    vocab = _vocab(tokenizer, config.vocab_size)
    tensors = _tensors(model)
    return [_write(out / f"model-{t}.gguf", t, config, tokenizer, vocab, tensors, name, pre) for t in types]


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k permutation (convert_hf_to_gguf.py, LlamaModel.permute)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensors(model) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, fp32 array) of every weight, q and k permuted, a tied output head left out."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out = []
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise LlmftError(f"GGUF export: no GGUF name for tensor {hf_name}")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, config.num_key_value_heads)
        out.append((name, data))
    return out


def _vocab(tokenizer, vocab_size: int) -> dict:
    """Tokens by id, their types, the BPE merges and the special ids, from the tokenizer's own files."""
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend["model"]
    if model.get("type") != "BPE":
        raise LlmftError(f"GGUF export writes byte-level BPE tokenizers, not {model.get('type')}")
    by_id = {i: tok for tok, i in model["vocab"].items()}
    added = {a["id"]: a for a in backend.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i, f"[PAD{i}]")
        tokens.append(token)
        if i in added:
            types.append(TOKEN_CONTROL if added[i].get("special") else TOKEN_USER_DEFINED)
        else:
            types.append(TOKEN_NORMAL if i in by_id else TOKEN_USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    special = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    return {"tokens": tokens, "types": types, "merges": merges, "special": special}


def _write(path: Path, gguf_type: str, config, tokenizer, vocab, tensors, name: str, pre: str) -> Path:
    import gguf

    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[gguf_type]
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(getattr(config, "head_dim", config.hidden_size // config.num_attention_heads))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for key, value in vocab["special"].items():
        if value is not None:
            getattr(
                writer,
                {
                    "bos": "add_bos_token_id",
                    "eos": "add_eos_token_id",
                    "unk": "add_unk_token_id",
                    "pad": "add_pad_token_id",
                }[key],
            )(int(value))
    writer.add_add_bos_token(False)  # the chat template writes every special token itself
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
    for tensor_name, data in tensors:
        if data.ndim == 1:  # norms stay F32, as llama.cpp writes them
            writer.add_tensor(tensor_name, data.astype(np.float32))
        elif gguf_type == "q8_0" and data.shape[-1] % 32 == 0:
            quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(tensor_name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(tensor_name, data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def modelfile(gguf_name: str, tokenizer, stops: list[str]) -> str:
    """An Ollama Modelfile for a GGUF file beside it: a ChatML template when the tokenizer's chat template is
    ChatML (SmolLM2, Qwen), greedy decoding as llmft evaluates, and the stop tokens."""
    lines = [f"FROM ./{gguf_name}", "PARAMETER temperature 0"]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    if "<|im_start|>" in (getattr(tokenizer, "chat_template", None) or ""):
        lines += [
            'TEMPLATE """{{ if .System }}<|im_start|>system',
            "{{ .System }}<|im_end|>",
            "{{ end }}{{ if .Prompt }}<|im_start|>user",
            "{{ .Prompt }}<|im_end|>",
            "{{ end }}<|im_start|>assistant",
            '{{ .Response }}<|im_end|>"""',
        ]
    return "\n".join(lines) + "\n"
