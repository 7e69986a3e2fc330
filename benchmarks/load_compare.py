"""Load: 1, 5, 10 and 25 parallel Compare requests through gradio_client to the app on localhost.

Run: python -m benchmarks.load_compare [--levels 1,5,10,25]

Starts `python app.py` in a subprocess on a free loopback port with a freshly trained sentiment run
(packaged MiniLM, quick preset), sends each level's requests at once, and reports p50/p95 latency, errors
and the app's peak RSS. Every request must be answered (queued is fine). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import HERE, table, write_result

TEXT = "The plot was gripping and the cast superb, although the ending felt a little rushed."


def app_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_until_up(url: str, proc, timeout: float = 180) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the app exited during start-up")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(1)
    raise TimeoutError("the app did not start")


def main(levels=(1, 5, 10, 25), steps: int = 60) -> dict:
    from gradio_client import Client

    from llmft.training import TrainConfig, train

    runs = tempfile.mkdtemp(prefix="llmft-load-runs-")
    train(
        TrainConfig(task="sentiment", model="minilm", runs_dir=runs, run_name="load", max_steps=steps),
        show_progress=False,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--runs-dir", runs],
        cwd=HERE.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    rows, results = [], {}
    try:
        wait_until_up(url, proc)
        Client(url, verbose=False).predict("sentiment", "", "load", TEXT, "", 8, api_name="/compare")  # warm-up

        def one(client):
            start = time.perf_counter()
            try:
                out = client.predict("sentiment", "", "load", TEXT, "", 8, api_name="/compare")
                ok = out[1] in ("Positive", "Negative")
            except Exception:
                ok = False
            return time.perf_counter() - start, ok

        for level in levels:
            clients = [Client(url, verbose=False) for _ in range(level)]
            with ThreadPoolExecutor(max_workers=level) as pool:
                outcomes = list(pool.map(one, clients))
            latencies = sorted(t for t, _ in outcomes)
            errors = sum(not ok for _, ok in outcomes)
            p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
            results[level] = {
                "p50_s": round(statistics.median(latencies), 3),
                "p95_s": round(p95, 3),
                "errors": errors,
                "answered": len(outcomes) - errors,
                "app_peak_rss_mb": round(app_peak_rss_mb(proc.pid)),
            }
            rows.append(
                [level, results[level]["p50_s"], results[level]["p95_s"], errors, results[level]["app_peak_rss_mb"]]
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(table(rows, ["parallel requests", "p50 s", "p95 s", "errors", "app peak RSS MB"]))
    write_result("load_compare", {"levels": results})
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="1,5,10,25")
    args = parser.parse_args()
    main(tuple(int(x) for x in args.levels.split(",")))
