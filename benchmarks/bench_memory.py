"""Memory: peak RSS of serving base + tuned from one model instance (adapter toggled) vs two copies.

Run: python benchmarks/bench_memory.py [--size base|tiny]

Each way runs in its own fresh process (peak RSS never goes down), loads the models and generates one
output from each side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

from benchmarks.common import HERE, model_dir, peak_rss_mb, table, write_result


def child(way: str, model_path: str, adapter: str) -> None:
    """Runs in a subprocess: load, generate from both sides, print peak RSS as JSON."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    from llmft.evaluation import GenerationSettings, generate
    from llmft.models import load_model
    from llmft.tasks import get_task

    before = peak_rss_mb()
    task = get_task("dialogue")
    text = "#Person1#: Shall we meet on Friday?\n#Person2#: Yes, at noon by the station."
    settings = GenerationSettings(max_new_tokens=8, min_new_tokens=8, batch_size=1)
    if way == "one":
        loaded = load_model(task, model_path, adapter)
        generate(loaded, [text], settings, tuned=False, progress=False)
        generate(loaded, [text], settings, tuned=True, progress=False)
    else:
        base = AutoModelForSeq2SeqLM.from_pretrained(model_path).eval()
        tuned = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(model_path), adapter).eval()
        from transformers import AutoTokenizer

        ids = AutoTokenizer.from_pretrained(model_path)(task.format_prompt(text), return_tensors="pt").input_ids
        with torch.inference_mode():
            base.generate(input_ids=ids, max_new_tokens=8)
            tuned.generate(input_ids=ids, max_new_tokens=8)
    print(json.dumps({"before_mb": before, "peak_mb": peak_rss_mb()}))


def measure(way, model_path, adapter) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_memory", "--child", way, "--model", model_path, "--adapter", adapter],
        capture_output=True,
        text=True,
        cwd=HERE.parent,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(size: str = "base") -> dict:
    from benchmarks.bench_eval import make_adapter

    model_path = model_dir(size)
    adapter = make_adapter(model_path, tempfile.mkdtemp(prefix="llmft-bench-adapter-"))
    one, two = measure("one", model_path, adapter), measure("two", model_path, adapter)
    result = {
        "size": size,
        "one_instance_peak_mb": round(one["peak_mb"]),
        "two_copies_peak_mb": round(two["peak_mb"]),
        "ratio": round(one["peak_mb"] / two["peak_mb"], 3),
        "one_instance_model_mb": round(one["peak_mb"] - one["before_mb"]),
        "two_copies_model_mb": round(two["peak_mb"] - two["before_mb"]),
        "model_ratio": round((one["peak_mb"] - one["before_mb"]) / (two["peak_mb"] - two["before_mb"]), 3),
    }
    print(
        table(
            [
                [
                    f"serve base+tuned, {size}",
                    result["two_copies_peak_mb"],
                    result["one_instance_peak_mb"],
                    f"{result['ratio']}x",
                    f"{result['model_ratio']}x",
                ]
            ],
            ["benchmark", "two copies MB", "one instance MB", "peak ratio", "model-only ratio"],
        )
    )
    write_result("memory", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="base", choices=["base", "tiny"])
    parser.add_argument("--child")
    parser.add_argument("--model")
    parser.add_argument("--adapter")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model, args.adapter)
    else:
        main(args.size)
