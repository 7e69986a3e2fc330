"""Randomly initialised models built from real architectures' configs, for tests, benchmarks and offline
demos (as transformers' and peft's own test suites do).

They use the packaged MiniLM's uncased BERT tokenizer, the one tokenizer available offline. Their outputs
are meaningless until trained; they exercise exactly the code paths the real models take.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .packaged import minilm_path

# google/flan-t5-base's architecture; "tiny" shrinks widths and depth as trl's tests do.
T5_SIZES = {
    "base": dict(d_model=768, d_ff=2048, d_kv=64, num_heads=12, num_layers=12, num_decoder_layers=12),
    # A smaller init than T5's default keeps a random tiny model's logits near uniform, so a few LoRA steps
    # can steer it (with the default the first loss is ~40 and LoRA barely moves it).
    "tiny": dict(
        d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2, initializer_factor=0.3
    ),
}
DISTILBERT_SIZES = {
    "base": dict(dim=768, hidden_dim=3072, n_layers=6, n_heads=12),
    "tiny": dict(dim=64, hidden_dim=128, n_layers=2, n_heads=4),
}


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML template (SmolLM2's and Qwen's shape) for the tiny decoder-only models."""


def chat_tokenizer(chat: bool = True):
    """The MiniLM tokenizer dressed as a chat model's: ChatML role markers, `<|im_end|>` as EOS, and (with
    `chat`) a chat template. Its BERT post-processor still adds [CLS]/[SEP] to plain text, which a real chat
    tokenizer does not: prompts built from the template must be tokenized without special tokens."""
    tokenizer = _tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


LLAMA_SIZES = {
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.2,
    ),
}
GPT2_SIZES = {"tiny": dict(n_embd=64, n_layer=2, n_head=4, n_positions=1024, initializer_range=0.2)}


def build_causal(
    out_dir: str | Path, arch: str = "llama", size: str = "tiny", chat: bool = True, seed: int = 0
) -> Path:
    """Save a decoder-only model (`llama`: Llama/Qwen/SmolLM shape; `gpt2`: GPT-2's Conv1D layers and fused
    c_attn) with random weights and the chat tokenizer into `out_dir`."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = chat_tokenizer(chat)
    ids = dict(
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    if arch == "llama":
        config = LlamaConfig(vocab_size=len(tokenizer), tie_word_embeddings=False, **ids, **LLAMA_SIZES[size])
        return _save(LlamaForCausalLM, config, tokenizer, out_dir, seed)
    if arch == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), **ids, **GPT2_SIZES[size])
        return _save(GPT2LMHeadModel, config, tokenizer, out_dir, seed)
    raise ValueError(f"unknown decoder architecture {arch!r}")


def build_t5(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a FLAN-T5-architecture model (random weights) with the MiniLM tokenizer into `out_dir`."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = _tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer),
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **T5_SIZES[size],
    )
    return _save(T5ForConditionalGeneration, config, tokenizer, out_dir, seed)


def build_distilbert(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a DistilBERT-architecture encoder (random weights) with the MiniLM tokenizer into `out_dir`."""
    from transformers import DistilBertConfig, DistilBertModel

    tokenizer = _tokenizer()
    config = DistilBertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **DISTILBERT_SIZES[size])
    return _save(DistilBertModel, config, tokenizer, out_dir, seed)


def build_roberta(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny RoBERTa-architecture encoder (random weights) with the MiniLM tokenizer into `out_dir`. Its
    classification head, unlike BERT's and DistilBERT's single Linear, is a module of its own (dense, dropout,
    out_proj), as XLM-R's and ELECTRA's are."""
    from transformers import RobertaConfig, RobertaModel

    tokenizer = _tokenizer()
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=tokenizer.model_max_length + tokenizer.pad_token_id + 2,  # positions start past pad
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
    )
    return _save(RobertaModel, config, tokenizer, out_dir, seed)


def _save(model_class, config, tokenizer, out_dir, seed: int) -> Path:
    """Initialise `model_class(config)` with `seed` and save it with the tokenizer (safetensors) into `out_dir`."""
    torch.manual_seed(seed)
    out = Path(out_dir)
    model_class(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
