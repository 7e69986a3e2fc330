"""Memory: peak RSS of serving base + tuned from one model instance (adapter toggled) vs two copies.

Run: python benchmarks/bench_memory.py [--size base|tiny]

Each way runs in its own fresh process (peak RSS never goes down), loads the models and generates one
output from each side. Ways: llmft's one instance (fp32, and opt-in bf16), the origin's two copies, and a
floor: one copy served by plain transformers + peft code, the least any one-instance design can use.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from benchmarks.common import bench_model, describe_model, in_fresh_process, peak_rss_mb, table, write_result


def memory_now() -> dict:
    """Resident set split into anonymous and file-backed pages, and PSS (shared pages divided by their users)."""
    status = Path("/proc/self/status").read_text()
    rollup = Path("/proc/self/smaps_rollup").read_text()

    def kb(text, key):
        return int(re.search(rf"^{key}:\s+(\d+)", text, re.M).group(1)) / 1024

    return {"anon_mb": kb(status, "RssAnon"), "file_mb": kb(status, "RssFile"), "pss_mb": kb(rollup, "Pss")}


def child(way: str, model_path: str, adapter: str) -> dict:
    """Runs in a fresh process: load, generate from both sides, return the peak RSS.

    Each way imports only what it uses: the origin needs torch, transformers and peft; llmft's serving
    path (what the Compare tab and `predict` run) imports llmft's model and generation modules.
    """
    import torch

    before = peak_rss_mb()
    text = "#Person1#: Shall we meet on Friday?\n#Person2#: Yes, at noon by the station."
    if way in ("one", "one_bf16"):
        from llmft.inference import GenerationSettings
        from llmft.loading import load_model
        from llmft.tasks import get_task

        settings = GenerationSettings(max_new_tokens=8, min_new_tokens=8, batch_size=1)
        dtype = "bfloat16" if way == "one_bf16" else "auto"
        loaded = load_model(get_task("dialogue"), model_path, adapter, dtype=dtype)
        loaded.task.kind.predict(loaded, [text], settings, tuned=False, progress=False)
        loaded.task.kind.predict(loaded, [text], settings, tuned=True, progress=False)
    elif way == "floor":
        # The least any one-instance server can hold: the libraries, one copy, the adapter, nothing else.
        from peft import PeftModel
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        prompt = f"Summarize the following conversation:\n\n{text}\n\nSummary:"
        tuned = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(model_path), adapter).eval()
        ids = AutoTokenizer.from_pretrained(model_path)(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            with tuned.disable_adapter():
                tuned.generate(input_ids=ids, max_new_tokens=8)
            tuned.generate(input_ids=ids, max_new_tokens=8)
    else:
        from peft import PeftModel
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        prompt = f"Summarize the following conversation:\n\n{text}\n\nSummary:"
        base = AutoModelForSeq2SeqLM.from_pretrained(model_path).eval()
        tuned = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(model_path), adapter).eval()
        ids = AutoTokenizer.from_pretrained(model_path)(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            base.generate(input_ids=ids, max_new_tokens=8)
            tuned.generate(input_ids=ids, max_new_tokens=8)
    return {"before_mb": before, "peak_mb": peak_rss_mb(), **memory_now()}


def measure(way, model_path, adapter) -> dict:
    return in_fresh_process("benchmarks.bench_memory:child", way=way, model_path=model_path, adapter=adapter)


def main(size: str = "base", model: str | None = None) -> dict:
    from benchmarks.bench_eval import make_adapter

    model_path = bench_model(size, model)
    adapter = make_adapter(model_path, tempfile.mkdtemp(prefix="llmft-bench-adapter-"))
    one, two = measure("one", model_path, adapter), measure("two", model_path, adapter)
    bf16 = measure("one_bf16", model_path, adapter)
    floor = measure("floor", model_path, adapter)
    result = {
        "size": size,
        "model": describe_model(model_path),
        "one_instance_peak_mb": round(one["peak_mb"]),
        "two_copies_peak_mb": round(two["peak_mb"]),
        "ratio": round(one["peak_mb"] / two["peak_mb"], 3),
        "one_instance_model_mb": round(one["peak_mb"] - one["before_mb"]),
        "two_copies_model_mb": round(two["peak_mb"] - two["before_mb"]),
        "model_ratio": round((one["peak_mb"] - one["before_mb"]) / (two["peak_mb"] - two["before_mb"]), 3),
        # fp32 safetensors weights stay memory-mapped: RSS counts the same file pages once per mapping, PSS
        # (and the machine's free memory) counts them once. See docs/performance.md.
        "one_instance_pss_mb": round(one["pss_mb"]),
        "two_copies_pss_mb": round(two["pss_mb"]),
        "pss_ratio": round(one["pss_mb"] / two["pss_mb"], 3),
        "one_instance_file_mb": round(one["file_mb"]),
        "two_copies_file_mb": round(two["file_mb"]),
        # One copy with nothing but torch, transformers and peft: no one-instance design can go below it.
        "floor_peak_mb": round(floor["peak_mb"]),
        "floor_ratio": round(floor["peak_mb"] / two["peak_mb"], 3),
        "one_instance_bf16_peak_mb": round(bf16["peak_mb"]),
        "bf16_ratio": round(bf16["peak_mb"] / two["peak_mb"], 3),
        "one_instance_bf16_pss_mb": round(bf16["pss_mb"]),
    }
    print(
        table(
            [
                [
                    f"serve base+tuned, {size}",
                    result["two_copies_peak_mb"],
                    result["one_instance_peak_mb"],
                    f"{result['ratio']}x",
                    f"{result['two_copies_pss_mb']} / {result['one_instance_pss_mb']}",
                    result["one_instance_bf16_peak_mb"],
                    f"{result['bf16_ratio']}x",
                ]
            ],
            ["benchmark", "two copies MB", "one instance MB", "peak RSS ratio", "PSS two / one", "bf16 MB", "ratio"],
        )
    )
    write_result("memory", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="base", choices=["base", "tiny"])
    parser.add_argument("--model", help="hub id or local folder (default: FLAN-T5-base if available, else random)")
    args = parser.parse_args()
    main(args.size, model=args.model)
