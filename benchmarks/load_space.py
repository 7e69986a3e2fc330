"""Load on a Space-mode app: many visitors at once, one of them hostile, for a bounded time, all on 127.0.0.1.

Run: python -m benchmarks.load_space [--seconds 60] [--anonymous 4] [--signed-in 4]

Starts the app in Space mode in a child process (SPACE_ID set, Gradio's local stand-in for the hub login) with
the Space's public run `demo` (packaged MiniLM) and one private run per signed-in visitor. Then, until the time is
up, each visitor loops over Compare, Evaluate (20 examples), an upload preview and the runs list; signed-in
visitors sign in with a session cookie and each sees the runs list; one of them starts a training. One more
client is hostile: it joins evaluation after evaluation without waiting, and posts 20 MB bodies. Every request is
counted as answered, refused in one line (the app's own error, 413 or 429) or failed (anything else, or no
answer in 120 s); the app's RSS is sampled throughout; every runs list is checked for another visitor's
private run. The loops stop by themselves at the deadline; nothing is sent anywhere but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import HERE, write_result
from benchmarks.load_compare import wait_until_up

TEXT = "The plot was gripping and the cast superb, although the ending felt a little rushed."
SAMPLE = ["the run's test sample", "", "", None, None, None, None, ""]
LAUNCH = """
import json, pathlib, sys, gradio.oauth
gradio.oauth._get_mocked_oauth_info = lambda: {"userinfo": {}}  # the hub's login, stood in for on 127.0.0.1
from llmft.ui import build_app, launch
app = build_app(sys.argv[1])
pathlib.Path(sys.argv[1], ".form-fields.json").write_text(json.dumps(app.llmft_form_fields))
launch(app, server_name="127.0.0.1", server_port=int(sys.argv[2]), quiet=True)
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare_runs(users: list[str]) -> str:
    import json
    import shutil

    from llmft.runs import update_run
    from llmft.training import TrainConfig, train

    runs = tempfile.mkdtemp(prefix="llmft-load-space-")
    train(
        TrainConfig(task="sentiment", model="minilm", runs_dir=runs, run_name="demo", max_steps=20),
        show_progress=False,
    )
    for user in users:
        shutil.copytree(Path(runs) / "demo", Path(runs) / f"{user}-private")
        info = json.loads((Path(runs) / f"{user}-private" / "run.json").read_text())
        update_run(Path(runs) / f"{user}-private", name=f"{user}-private", config={**info["config"], "owner": user})
    return runs


def outcome(fn) -> str:
    """answered / refused (one line from the app, 413, 429, queue full) / failed."""
    try:
        fn()
        return "answered"
    except Exception as err:  # gradio_client raises AppError with the app's message; httpx its status errors
        status = getattr(getattr(err, "response", None), "status_code", None)
        text = str(err)
        if status in (413, 429, 503) or (type(err).__name__ == "AppError" and "\n" not in text.strip()):
            return "refused"
        return "failed"


def main(seconds: float = 60, anonymous: int = 4, signed_in: int = 4) -> dict:
    import httpx
    from gradio_client import Client, handle_file

    from tests.conftest import session_cookie

    users = [f"user{i}" for i in range(signed_in)]
    runs = prepare_runs(users)
    upload = Path(runs) / "upload.csv"
    upload.write_text("text,label\n" + "".join(f"review {i} was fine,yes\n" for i in range(200)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SPACE_ID": "someone/llmft", "SPACE_AUTHOR_NAME": "someone"}
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, runs, str(port)], cwd=HERE.parent, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    counts = collections.Counter()
    leaks, samples, lock = [], [], threading.Lock()
    try:
        wait_until_up(url, proc)
        base_rss = rss_mb(proc.pid)
        deadline = time.time() + seconds

        def visitor(i: int, user: str | None):
            headers = {"X-Forwarded-For": f"198.51.100.{i + 1}"}
            if user:
                headers["Cookie"] = f"session={session_cookie(user)}"
            client = Client(url, headers=headers, verbose=False)
            actions = {
                "compare": lambda: client.predict("sentiment", "", "demo", TEXT, "", 8, api_name="/compare"),
                "evaluate": lambda: client.predict("demo", 20, i, "", None, *SAMPLE, api_name="/evaluate"),
                "preview": lambda: client.predict(
                    "sentiment", handle_file(str(upload)), None, None, None, "", api_name="/preview"
                ),
            }
            if user == users[0]:  # one training, from the first signed-in visitor
                values = _train_values(client, runs, user)
                counts[("train", outcome(lambda: client.predict(*values, api_name="/train")))] += 1
            while time.time() < deadline:
                for name, action in actions.items():
                    if time.time() >= deadline:
                        break
                    result = outcome(action)
                    with lock:
                        counts[(name, result)] += 1
                listed = client.predict(api_name="/runs")[0]["data"]
                seen = {row[0] for row in listed}
                private = {f"{u}-private" for u in users if u != user}
                with lock:
                    counts[("runs", "answered")] += 1
                    leaks.extend(sorted(seen & private))

        def hostile():
            headers = {"X-Forwarded-For": "203.0.113.66"}
            client = Client(url, headers=headers, verbose=False)
            while time.time() < deadline:
                # Joins without reading the results: gradio_client joins in the background, so each job is
                # looked at a second later (a refused join has failed with 429 by then).
                jobs = [client.submit("demo", 200, 0, "", None, *SAMPLE, api_name="/evaluate") for _ in range(8)]
                time.sleep(1)
                for job in jobs:
                    err = job.exception(timeout=0) if job.done() else None
                    status = getattr(getattr(err, "response", None), "status_code", 0)
                    result = "refused" if status == 429 else ("failed" if err and status else "joined")
                    with lock:
                        counts[("hostile evaluate", result)] += 1
                body = b'{"data": ["' + b"x" * (20 * 2**20) + b'"], "fn_index": 0}'
                answer = httpx.post(f"{url}gradio_api/queue/join", content=body, timeout=60, headers=headers)
                with lock:
                    counts[("hostile 20 MB body", "refused" if answer.status_code == 413 else "failed")] += 1

        def sample_rss():
            while time.time() < deadline + 5:
                samples.append(rss_mb(proc.pid))
                time.sleep(0.5)

        people = [None] * anonymous + users
        with ThreadPoolExecutor(max_workers=len(people) + 2) as pool:
            futures = [pool.submit(visitor, i, user) for i, user in enumerate(people)]
            futures += [pool.submit(hostile), pool.submit(sample_rss)]
            for f in futures:
                f.result(timeout=seconds + 600)
        alive = proc.poll() is None and httpx.get(url, timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    intact = sorted(p.name for p in Path(runs).iterdir() if (p / "run.json").is_file())
    result = {
        "seconds": seconds,
        "visitors": {"anonymous": anonymous, "signed_in": signed_in, "hostile": 1},
        "requests": {f"{what}: {how}": n for (what, how), n in sorted(counts.items())},
        "failed": sum(n for (_, how), n in counts.items() if how == "failed"),
        "app_rss_mb": {"at_start": round(base_rss), "peak": round(max(samples)), "at_end": round(samples[-1])},
        "private_runs_seen_by_others": leaks,
        "app_answering_after": alive,
        "runs_intact": intact,
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    write_result("load_space", result)
    return result


def _train_values(client, runs: str, user: str) -> list:
    """The /train inputs of a short sentiment run named `<user>-trained`, in the order the app wrote down."""
    import json

    from tests.test_app import form

    values = form(model="minilm", steps=10, run_name=f"{user}-trained", train_samples=64)
    return [values[name] for name in json.loads((Path(runs) / ".form-fields.json").read_text())]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--anonymous", type=int, default=4)
    parser.add_argument("--signed-in", type=int, default=4)
    args = parser.parse_args()
    main(args.seconds, args.anonymous, args.signed_in)
