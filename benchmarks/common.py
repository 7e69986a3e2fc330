"""Shared pieces of the benchmarks: machine facts, GEMM throughput, model FLOPs, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine() -> dict:
    from llmft.models import native_cpu_bf16

    return {
        "cpu": cpu_model(),
        "native_cpu_bf16": native_cpu_bf16(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def gemm_gflops(n: int = 2048, seconds: float = 2.0, dtype=torch.float32) -> float:
    """Measured matmul throughput of this machine (GFLOP/s), the ceiling the model runs are compared with."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - start) / 1e9


def t5_params(model) -> tuple[int, int]:
    """(encoder, decoder + lm_head) parameter counts, embeddings excluded: the per-token matmul work."""
    enc = sum(p.numel() for n, p in model.named_parameters() if ".encoder." in f".{n}" and "embed" not in n)
    dec = sum(
        p.numel()
        for n, p in model.named_parameters()
        if (".decoder." in f".{n}" or "lm_head" in n) and "embed" not in n
    )
    return enc, dec


def model_dir(size: str) -> str:
    """A FLAN-T5-architecture folder of the given size (random weights; built once, then cached)."""
    from llmft.synthetic import build_t5

    folder = CACHE / f"t5-{size}"
    if not (folder / "model.safetensors").is_file():
        build_t5(folder, size=size)
    return str(folder)


FLAN_T5_BASE = "google/flan-t5-base"


def bench_model(size: str, model: str | None = None) -> str:
    """The seq2seq model to benchmark: `model` when given (hub id or local folder); else, at base size, the
    real FLAN-T5-base where the hub or its local cache has it; else the same architecture with random
    weights (built here from its config). Generation lengths are fixed, so both ways do the same work
    whichever it is."""
    from llmft.refs import check_model_ref, hub_reachable, in_hub_cache

    if model:
        return check_model_ref(model)
    if size == "base" and (in_hub_cache(FLAN_T5_BASE) or hub_reachable()):
        return FLAN_T5_BASE
    return model_dir(size)


def describe_model(model_path: str) -> str:
    """What a result was measured with, as written in the JSON."""
    path = Path(model_path)
    if path.parent == CACHE and path.name.startswith("t5-"):
        return f"FLAN-T5 architecture, {path.name.removeprefix('t5-')} size, random weights"
    return model_path


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the
    parent through fork and exec, so a child of a large process would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def origin_training(model, dataset, steps: int, batch_size: int, lr: float, seed: int) -> tuple[float, int, float]:
    """The origin's Trainer run (default sampler: random batches): (seconds, real input tokens, mean loss)."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="llmft-bench-origin-"),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        use_cpu=True,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    out = trainer.train()
    return out.metrics["train_runtime"], trainer.state.num_input_tokens_seen, out.training_loss


RESULT_MARK = "@@bench-result@@"


def in_fresh_process(function: str, **kwargs):
    """Run `module:function(**kwargs)` in a new Python process and return its JSON-able result.

    Each way of a speed benchmark runs in a process of its own: a process that has already trained keeps a
    warmed-up heap, which made whichever way ran second up to 1.8x faster (MiniLM training at 512 tokens).
    """
    key = json.dumps([function, kwargs], sort_keys=True)
    if RESUME and key in (done := _resumed()):
        return done[key]
    module, name = function.split(":")
    code = (
        f"import json, sys\nfrom {module} import {name}\n"
        f"print({RESULT_MARK!r} + json.dumps({name}(**json.loads(sys.argv[1]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True, cwd=HERE.parent
    )
    if out.returncode != 0:
        raise RuntimeError(f"{function} failed:\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith(RESULT_MARK)][-1]
    result = json.loads(line.removeprefix(RESULT_MARK))
    if RESUME:
        Path(RESUME).write_text(json.dumps({**_resumed(), key: result}))
    return result


RESUME = os.environ.get("LLMFT_BENCH_RESUME")
"""A file of finished steps (`in_fresh_process` calls and their results): set, a benchmark that stopped half way
reruns only the steps it had not finished, with the same arguments. Unset (the default), every step runs."""


def _resumed() -> dict:
    return json.loads(Path(RESUME).read_text()) if RESUME and Path(RESUME).is_file() else {}


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**data, "machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M")}, indent=2))
    return path


def table(rows: list[list], headers: list[str]) -> str:
    cols = list(zip(headers, *rows))
    widths = [max(len(str(c)) for c in col) for col in cols]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
