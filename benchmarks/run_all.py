"""Run every benchmark and print the ratio table (about 14 minutes on 2 cores at base size).

Run: python -m benchmarks.run_all [--size base|tiny] [--quick]
Results: benchmarks/results/*.json (one file per benchmark, plus summary.json).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks import bench_cls, bench_eval, bench_latency, bench_memory, bench_train  # noqa: E402
from benchmarks.common import bench_model, describe_model, gemm_gflops, machine, table, write_result  # noqa: E402


def main(size: str = "base", quick: bool = False, model: str | None = None) -> dict:
    n, steps, tokens = (4, 2, 4) if quick else (50, 6, 32)
    model = bench_model(size, model)
    print(f"seq2seq model: {describe_model(model)}")
    gflops = gemm_gflops()
    results = {
        "gemm_fp32_gflops": round(gflops, 1),
        "model": describe_model(model),
        "eval": bench_eval.main(size, n=n, tokens=tokens, model=model),
        "train": bench_train.main(size, steps=steps, batch_size=4 if quick else 8, model=model),
        "memory": bench_memory.main(size, model=model),
        "latency": bench_latency.main(size, tokens=8 if quick else 64, repeats=1 if quick else 3, model=model),
        "cls": bench_cls.main(n=8, steps=2, batch_size=4) if quick else bench_cls.main(),
    }
    e, t, m, lat, c = results["eval"], results["train"], results["memory"], results["latency"], results["cls"]
    rows = [
        [f"evaluation wall time (n={e['n']})", f"{e['origin_s']} s", f"{e['llmft_s']} s", f"{e['speedup']}x", ">= 3x"],
        ["training tokens/s", t["origin_tokens_per_s"], t["llmft_tokens_per_s"], f"{t['speedup']}x", ">= 2x"],
        [
            "base+tuned peak RSS",
            f"{m['two_copies_peak_mb']} MB",
            f"{m['one_instance_peak_mb']} MB",
            f"{m['ratio']}x",
            "<= 0.6x",
        ],
        ["Compare time to first token (warm)", "", f"{lat['warm_ttft_s']} s", "", "<= 1 s"],
        ["training fraction of fp32 GEMM peak", "", f"{t['llmft_fraction_of_gemm']:.1%}", "", ""],
        ["batched generation fraction of fp32 GEMM peak", "", f"{e['inference_fraction_of_gemm']:.1%}", "", ""],
        [f"MiniLM sentiment training tokens/s ({c['mean_tokens']:.0f}-token reviews)",
         c["origin_train_tokens_per_s"], c["llmft_train_tokens_per_s"], f"{c['train_speedup']}x", ""],
        [f"MiniLM sentiment evaluation (n={c['n']})", f"{c['origin_eval_s']} s", f"{c['llmft_eval_s']} s",
         f"{c['eval_speedup']}x", ""],
        ["MiniLM training / inference fraction of fp32 GEMM", "",
         f"{c['train_fraction_of_gemm']:.1%} / {c['inference_fraction_of_gemm']:.1%}", "", ""],
        ["base+tuned PSS (shared pages counted once)", f"{m['two_copies_pss_mb']} MB",
         f"{m['one_instance_pss_mb']} MB", f"{m['pss_ratio']}x", ""],
        ["opt-in bf16: evaluation wall time", f"{e['origin_s']} s", f"{e['llmft_bf16_s']} s",
         f"{e['speedup_bf16']}x", ""],
        ["opt-in bf16: training tokens/s", t["origin_tokens_per_s"], t["llmft_bf16_tokens_per_s"],
         f"{t['speedup_bf16']}x", ""],
        ["opt-in bf16: base+tuned peak RSS / PSS", f"{m['two_copies_peak_mb']} MB",
         f"{m['one_instance_bf16_peak_mb']} / {m['one_instance_bf16_pss_mb']} MB", f"{m['bf16_ratio']}x", ""],
        ["opt-in bf16: training fraction of bf16 GEMM", "", f"{t['llmft_bf16_fraction_of_bf16_gemm']:.1%}", "", ""],
        ["opt-in --base-dropout 0: training tokens/s", t["origin_tokens_per_s"],
         t["llmft_base_dropout_0_tokens_per_s"], f"{t['speedup_base_dropout_0']}x", ""],
        ["opt-in --base-dropout 0: MiniLM sentiment training tokens/s", c["origin_train_tokens_per_s"],
         c["llmft_base_dropout_0_tokens_per_s"], f"{c['base_dropout_0_speedup']}x", ""],
    ]  # fmt: skip
    print()
    print(
        f"machine: {machine()['cpu_count']} cores, torch threads {machine()['torch_threads']}, "
        f"fp32 GEMM {gflops:.0f} GFLOP/s, bf16 GEMM {t['gemm_bf16_gflops']:.0f} GFLOP/s, model size {size}"
    )
    print(table(rows, ["measure", "origin", "llmft", "ratio", "target"]))
    write_result("summary", results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="base", choices=["base", "tiny"])
    parser.add_argument("--quick", action="store_true", help="tiny workloads: checks the scripts run")
    parser.add_argument(
        "--model", help="seq2seq hub id or local folder (default: FLAN-T5-base if the hub has it, else random weights)"
    )
    args = parser.parse_args()
    main(args.size, args.quick, args.model)
