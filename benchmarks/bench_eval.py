"""Evaluation speed: llmft's batched `evaluate_pair` vs a faithful re-implementation of the origin's loop.

Run: python benchmarks/bench_eval.py [--size base|tiny] [--n 50] [--tokens 32]

Both sides: the same FLAN-T5-architecture model and adapter, the same examples, exactly `--tokens` generated
tokens per output (min = max new tokens), ROUGE and BERTScore with the packaged MiniLM scorer.
The origin: two model copies (base and base+adapter), one `generate` per example and model, prompts padded
to 512 tokens, and BERTScore's model loaded again on every scoring call.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import (
    bench_model,
    describe_model,
    gemm_gflops,
    in_fresh_process,
    t5_params,
    table,
    write_result,
)
from llmft.allocator import keep_freed_memory
from llmft.data import load_examples
from llmft.evaluation import GenerationSettings, evaluate_pair
from llmft.loading import load_model
from llmft.packaged import MINILM, minilm_path
from llmft.tasks import get_task


def make_adapter(model_path: str, out: str) -> str:
    """A LoRA adapter with nonzero random weights (r=16 on q,v, as the dialogue preset)."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    torch.manual_seed(0)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_path)
    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM, r=16, lora_alpha=8, target_modules=["q", "v"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(out)
    return out


def test_examples(n):
    return load_examples(get_task("dialogue"), None, "test")[:n]


def llmft_side(model_path, adapter, n, tokens, batch_size, dtype="auto"):
    """llmft's evaluation as `python -m llmft evaluate` runs it (run in a fresh process)."""
    keep_freed_memory()  # as the CLI does
    examples = test_examples(n)
    start = time.perf_counter()
    loaded = load_model(get_task("dialogue"), model_path, adapter, dtype=dtype)
    settings = GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens, batch_size=batch_size)
    result = evaluate_pair(loaded, examples, settings, scorer=MINILM, cache_dir=None, progress=False)
    seconds = time.perf_counter() - start
    outputs = [[row["base_output"], row["tuned_output"]] for row in result.rows]
    metrics = result.metrics
    means = {"rouge1": metrics["rouge1"]["tuned_mean"], "bertscore": metrics["bertscore_f1"]["tuned_mean"]}
    return {"seconds": seconds, "outputs": outputs, "tuned_means": means}


def inference_flops(model_path, adapter, n, tokens, batch_size) -> dict:
    """Model FLOPs and seconds of llmft's batched generation (warm model, tuned side; in a fresh process).

    FLOPs: 2 x encoder weights per real input token, 2 x decoder weights (with the LM head) per generated
    token; attention scores and padding are not counted, so this slightly understates the work done.
    """
    keep_freed_memory()
    examples = test_examples(n)
    loaded = load_model(get_task("dialogue"), model_path, adapter)
    settings = GenerationSettings(max_new_tokens=tokens, min_new_tokens=tokens, batch_size=batch_size)
    texts = [ex.text for ex in examples]
    loaded.task.kind.predict(loaded, texts[:2], settings, tuned=True, progress=False)  # warm-up
    start = time.perf_counter()
    loaded.task.kind.predict(loaded, texts, settings, tuned=True, progress=False)
    seconds = time.perf_counter() - start
    prompts = [loaded.task.format_prompt(t) for t in texts]
    input_tokens = sum(len(ids) for ids in loaded.tokenizer(prompts, truncation=True, max_length=512)["input_ids"])
    enc, dec = t5_params(loaded.model)
    return {"flops": 2 * enc * input_tokens + 2 * dec * tokens * len(texts), "seconds": seconds}


def origin_side(model_path, adapter, n, tokens):
    """The notebooks' method, kept as it was (apart from evaluate.load, which needs the hub); run in a fresh
    process."""
    import bert_score
    from peft import PeftModel
    from rouge_score import rouge_scorer
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    task = get_task("dialogue")
    examples = test_examples(n)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    original_model = AutoModelForSeq2SeqLM.from_pretrained(model_path)
    peft_model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(model_path), adapter)
    original_out, peft_out = [], []
    for ex in examples:
        prompt = task.format_prompt(ex.text)
        input_ids = tokenizer(
            prompt, return_tensors="pt", padding="max_length", max_length=512, truncation=True
        ).input_ids
        for model, outputs in ((original_model, original_out), (peft_model, peft_out)):
            ids = model.generate(input_ids=input_ids, max_new_tokens=tokens, min_new_tokens=tokens)
            outputs.append(tokenizer.decode(ids[0], skip_special_tokens=True))
    refs = [ex.references[0] for ex in examples]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = [[scorer.score(r, o) for r, o in zip(refs, outs)] for outs in (original_out, peft_out)]
    # bert_score.score builds its model on every call, as evaluate's bertscore did per compute().
    safe = lambda outs: [o if o.strip() else "." for o in outs]  # noqa: E731  (empty strings crash bert_score)
    f1 = [
        bert_score.score(safe(outs), refs, model_type=minilm_path(), num_layers=6)[2]
        for outs in (original_out, peft_out)
    ]
    seconds = time.perf_counter() - start
    means = {"rouge1": sum(r["rouge1"].fmeasure for r in rouge[1]) / len(refs), "bertscore": float(f1[1].mean())}
    return {"seconds": seconds, "tuned_means": means}


def main(size: str = "base", n: int = 50, tokens: int = 32, batch_size: int = 32, model: str | None = None) -> dict:
    import tempfile

    model_path = bench_model(size, model)
    adapter = make_adapter(model_path, tempfile.mkdtemp(prefix="llmft-bench-adapter-"))
    args = dict(model_path=model_path, adapter=adapter, n=n, tokens=tokens)
    fp32 = in_fresh_process("benchmarks.bench_eval:llmft_side", **args, batch_size=batch_size)
    # Opt-in bf16 weights (--dtype bfloat16): same work; outputs may differ slightly from fp32.
    bf16 = in_fresh_process("benchmarks.bench_eval:llmft_side", **args, batch_size=batch_size, dtype="bfloat16")
    inference = in_fresh_process("benchmarks.bench_eval:inference_flops", **args, batch_size=batch_size)
    gflops = gemm_gflops()
    origin = in_fresh_process("benchmarks.bench_eval:origin_side", **args)
    origin_s, llmft_s, bf16_s = origin["seconds"], fp32["seconds"], bf16["seconds"]
    same = [a == b for pair in zip(fp32["outputs"], bf16["outputs"]) for a, b in zip(*pair)]
    result = {
        "size": size,
        "model": describe_model(model_path),
        "n": n,
        "tokens_per_output": tokens,
        "batch_size": batch_size,
        "llmft_s": round(llmft_s, 2),
        "origin_s": round(origin_s, 2),
        "speedup": round(origin_s / llmft_s, 2),
        "llmft_bf16_s": round(bf16_s, 2),
        "speedup_bf16": round(origin_s / bf16_s, 2),
        "bf16_outputs_equal_to_fp32": round(sum(same) / len(same), 3),
        # The same model and decoding both ways: the tuned side's scores should agree (a faithfulness check).
        "tuned_means": {"origin": origin["tuned_means"], "llmft": fp32["tuned_means"]},
        "gemm_gflops": round(gflops, 1),
        "inference_fraction_of_gemm": round(inference["flops"] / inference["seconds"] / 1e9 / gflops, 3),
    }
    print(
        table(
            [
                [
                    f"evaluate n={n}, {tokens} tokens, {size}",
                    result["origin_s"],
                    result["llmft_s"],
                    f"{result['speedup']}x",
                    result["llmft_bf16_s"],
                    f"{result['speedup_bf16']}x",
                ]
            ],
            ["benchmark", "origin s", "llmft s", "ratio", "llmft bf16 s", "ratio"],
        )
    )
    write_result("eval", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="base", choices=["base", "tiny"])
    parser.add_argument("--model", help="hub id or local folder (default: FLAN-T5-base if available, else random)")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    main(args.size, args.n, args.tokens, args.batch_size, model=args.model)
