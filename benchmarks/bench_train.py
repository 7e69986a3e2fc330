"""Training throughput: llmft's LoRA training vs the origin's configuration, same model, data and steps.

Run: python benchmarks/bench_train.py [--size base|tiny] [--steps 6] [--batch-size 8]

The origin pads every prompt to 512 tokens and every target to 128 and samples batches at random; llmft pads
each batch only to its longest example and groups examples of similar length. Both draw their batches from
the quick preset's 160 training examples (length grouping needs several batches of data to group), and each
way runs in a fresh process. Throughput counts real (non-padding) input tokens per second of the training
loop; model FLOPs use 2N per token forward and 2N for the activation gradients (frozen base weights need no
weight gradients).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from benchmarks.common import (
    bench_model,
    describe_model,
    gemm_gflops,
    in_fresh_process,
    origin_training,
    t5_params,
    table,
    write_result,
)
from llmft.allocator import keep_freed_memory
from llmft.data import load_examples, sample_examples
from llmft.tasks import get_task
from llmft.training import TrainConfig, train


def origin_side(model_path, n_train, steps, batch_size, lr, seed):
    """The origin's configuration (run in a fresh process)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    task = get_task("dialogue")
    examples = sample_examples(load_examples(task, None, "train"), n_train, seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_path)
    model = get_peft_model(
        model,
        LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q", "v"]),
    )
    enc = tokenizer(
        [task.format_prompt(ex.text) for ex in examples], padding="max_length", max_length=512, truncation=True
    )
    labels = tokenizer(
        text_target=[ex.references[0] for ex in examples], padding="max_length", max_length=128, truncation=True
    )["input_ids"]
    labels = [[t if t != tokenizer.pad_token_id else -100 for t in row] for row in labels]
    dataset = Dataset.from_dict(
        {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}
    )
    padded_tokens = steps * batch_size * (512 + 128)  # every batch, padded to the maximum
    return (*origin_training(model, dataset, steps, batch_size, lr, seed), padded_tokens)


def llmft_side(model_path, n_train, steps, batch_size, lr, seed, dtype="auto", base_dropout=None):
    """llmft's training as `python -m llmft train` runs it (run in a fresh process)."""
    keep_freed_memory()  # as the CLI does
    config = TrainConfig(
        task="dialogue",
        model=model_path,
        data="sample",
        train_samples=n_train,
        max_steps=steps,
        batch_size=batch_size,
        learning_rate=lr,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=["q", "v"],
        seed=seed,
        runs_dir=tempfile.mkdtemp(prefix="llmft-bench-runs-"),
        dtype=dtype,
        base_dropout=base_dropout,
        val_split=0,  # training steps only, as the origin's loop: no validation rows held out or validated
    )
    return train(config, show_progress=False)


def main(
    size: str = "base", steps: int = 6, batch_size: int = 8, lr: float = 3e-3, seed: int = 0, model: str | None = None
) -> dict:
    from transformers import AutoModelForSeq2SeqLM

    model_path = bench_model(size, model)
    task = get_task("dialogue")
    # The quick preset's data size: transformers groups lengths within mega-batches of min(N / (4 x batch), 50)
    # batches, so with only `steps` batches of data there would be nothing to group.
    n_train = max(task.preset("quick").train_samples, steps * batch_size)
    common = dict(model_path=model_path, n_train=n_train, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    info = in_fresh_process("benchmarks.bench_train:llmft_side", **common)
    # opt-in: bf16 base weights, bf16 autocast, fp32 LoRA weights
    bf16 = in_fresh_process("benchmarks.bench_train:llmft_side", **common, dtype="bfloat16")
    # opt-in --base-dropout 0: no dropout in the frozen model
    nodrop = in_fresh_process("benchmarks.bench_train:llmft_side", **common, base_dropout=0.0)
    origin_s, origin_tokens, origin_loss, padded = in_fresh_process("benchmarks.bench_train:origin_side", **common)
    enc_params, dec_params = t5_params(AutoModelForSeq2SeqLM.from_pretrained(model_path))
    gflops = gemm_gflops()
    bf16_gflops = gemm_gflops(dtype=torch.bfloat16)
    # Per real input token, with targets ~1/4 as long as inputs on this data: 4 * (N_enc + N_dec / 4).
    flops_per_token = 4 * (enc_params + dec_params / 4)
    llmft_tps = info["tokens_per_s"]
    origin_tps = origin_tokens / origin_s
    result = {
        "size": size,
        "model": describe_model(model_path),
        "steps": steps,
        "batch_size": batch_size,
        "llmft_tokens_per_s": round(llmft_tps, 1),
        "origin_tokens_per_s": round(origin_tps, 1),
        "speedup": round(llmft_tps / origin_tps, 2),
        "llmft_train_s": info["train_runtime_s"],
        "origin_train_s": round(origin_s, 2),
        "llmft_loss": round(info["train_loss"], 4),
        "origin_loss": round(origin_loss, 4),
        "origin_padded_tokens": padded,
        "gemm_gflops": round(gflops, 1),
        "llmft_fraction_of_gemm": round(llmft_tps * flops_per_token / 1e9 / gflops, 3),
        "llmft_bf16_tokens_per_s": round(bf16["tokens_per_s"], 1),
        "speedup_bf16": round(bf16["tokens_per_s"] / origin_tps, 2),
        "llmft_bf16_loss": round(bf16["train_loss"], 4),
        "llmft_base_dropout_0_tokens_per_s": round(nodrop["tokens_per_s"], 1),
        "speedup_base_dropout_0": round(nodrop["tokens_per_s"] / origin_tps, 2),
        "llmft_base_dropout_0_loss": round(nodrop["train_loss"], 4),
        "gemm_bf16_gflops": round(bf16_gflops, 1),
        "llmft_bf16_fraction_of_bf16_gemm": round(bf16["tokens_per_s"] * flops_per_token / 1e9 / bf16_gflops, 3),
        "origin_fraction_of_gemm_padded": round(
            padded / origin_s * 4 * (enc_params + dec_params / 4) / 1e9 / gflops, 3
        ),
    }
    print(
        table(
            [
                [
                    f"train {steps} steps x {batch_size}, {size}",
                    result["origin_tokens_per_s"],
                    result["llmft_tokens_per_s"],
                    f"{result['speedup']}x",
                    f"{result['origin_loss']} / {result['llmft_loss']}",
                    result["llmft_bf16_tokens_per_s"],
                    f"{result['speedup_bf16']}x",
                ]
            ],
            ["benchmark", "origin tok/s", "llmft tok/s", "ratio", "loss origin / llmft", "llmft bf16 tok/s", "ratio"],
        )
    )
    write_result("train", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="base", choices=["base", "tiny"])
    parser.add_argument("--model", help="hub id or local folder (default: FLAN-T5-base if available, else random)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    main(args.size, args.steps, args.batch_size, model=args.model)
