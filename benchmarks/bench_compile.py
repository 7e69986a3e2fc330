"""torch.compile for LoRA training on CPU: per-step times with and without it (not in run_all: ~8 minutes).

Run: python -m benchmarks.bench_compile [--size base|tiny] [--steps 12]

llmft's `train` does not expose torch.compile (it measured no faster here); this script makes
TrainingArguments add `torch_compile=True` for the second run. The first steps include compiling; with
dynamic padding every new sequence length can trigger another compile.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import transformers

from benchmarks.common import bench_model, describe_model, table, write_result
from llmft.training import TrainConfig, train

_INIT = transformers.TrainingArguments.__init__


def _compiled_init(self, *args, **kwargs):
    _INIT(self, *args, **{**kwargs, "torch_compile": True})


def run(model_path: str, steps: int, compiled: bool) -> dict:
    # train() builds its TrainingArguments when called; `from transformers import` ignores a swapped
    # module attribute, so the class's __init__ is patched for the run and restored after it.
    transformers.TrainingArguments.__init__ = _compiled_init if compiled else _INIT
    stamps = []
    start = time.perf_counter()
    try:
        train(
            TrainConfig(
                task="dialogue",
                model=model_path,
                train_samples=steps * 8,
                max_steps=steps,
                batch_size=8,
                learning_rate=3e-3,
                seed=0,
                val_split=0,
                time_budget=0,
                runs_dir=tempfile.mkdtemp(prefix="llmft-bench-compile-"),
            ),
            show_progress=False,
            on_progress=lambda p: stamps.append(time.perf_counter()),
        )
    finally:
        transformers.TrainingArguments.__init__ = _INIT
    step_s = [round(b - a, 2) for a, b in zip([start, *stamps], stamps)]
    return {"total_s": round(time.perf_counter() - start, 1), "step_s": step_s}


def main(size: str = "base", steps: int = 12, model: str | None = None) -> dict:
    model_path = bench_model(size, model)
    plain, compiled = run(model_path, steps, False), run(model_path, steps, True)
    result = {"size": size, "model": describe_model(model_path), "steps": steps, "plain": plain, "compiled": compiled}
    rows = [
        [name, r["total_s"], r["step_s"][0], min(r["step_s"][2:] or r["step_s"]), max(r["step_s"][2:] or r["step_s"])]
        for name, r in (("eager", plain), ("torch.compile", compiled))
    ]
    print(table(rows, ["training", "total s", "first step s", "fastest later step s", "slowest later step s"]))
    write_result("compile", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="base", choices=["base", "tiny"])
    parser.add_argument("--model", help="hub id or local folder (default: FLAN-T5-base if available, else random)")
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    main(args.size, args.steps, model=args.model)
