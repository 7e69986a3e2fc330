"""The runs home and run directories: run.json is the single source of truth for a run's state.

Layout of one run:
    <runs home>/<name>/run.json        task, model, data, hyperparameters, status, timings, loss history
    <runs home>/<name>/adapter/        the final LoRA adapter (safetensors), present only once complete
    <runs home>/<name>/checkpoints/    Trainer checkpoints, for resume
    <runs home>/<name>/evaluations/    one folder per evaluation (summary.json, examples.csv, plots)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from .errors import LlmftError

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"
RUN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # whole name: fullmatch (no trailing newline)


def runs_home(runs_dir: str | os.PathLike | None = None) -> Path:
    """`runs_dir` if given, else $LLMFT_HOME/runs, else /data/llmft/runs on a Space with storage, else
    ~/.cache/llmft/runs."""
    if runs_dir:
        home = Path(runs_dir).expanduser()
    elif os.environ.get("LLMFT_HOME"):
        home = Path(os.environ["LLMFT_HOME"]).expanduser() / "runs"
    elif Path("/data").is_dir() and os.access("/data", os.W_OK):
        home = Path("/data/llmft/runs")
    else:
        home = Path("~/.cache/llmft/runs").expanduser()
    if home.exists() and not home.is_dir():
        raise LlmftError(f"the runs home {home} is a file, not a folder; pass another --runs-dir")
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LlmftError(f"cannot create the runs home {home}: {err.strerror or err}") from None
    return home


def check_run_name(name: str) -> str:
    if not isinstance(name, str) or not RUN_NAME_RE.fullmatch(name):
        raise LlmftError(f"invalid run name {name!r}: use letters, digits, '.', '_' or '-' (at most 100)")
    return name


def write_json_atomic(path: Path, data) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; run files are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_run(run_dir: Path) -> dict:
    """run.json of `run_dir`, with a stale `running` status (its process gone) reported as failed."""
    path = Path(run_dir) / "run.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LlmftError(f"no run at {run_dir}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise LlmftError(f"run.json of {run_dir} is unreadable") from None
    if not isinstance(info, dict):
        raise LlmftError(f"run.json of {run_dir} is not a JSON object")
    if info.get("status") == RUNNING and not process_alive(info):
        info["status"] = FAILED
        info["error"] = "interrupted: the training process ended without finishing"
    return info


def update_run(run_dir: Path, **fields) -> dict:
    path = Path(run_dir) / "run.json"
    info = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    info.update(fields)
    write_json_atomic(path, info)
    return info


def find_run(name: str, runs_dir: str | os.PathLike | None = None) -> Path:
    """The directory of run `name` (or `name` itself when it is a run directory)."""
    if Path(name).expanduser().is_dir() and (Path(name).expanduser() / "run.json").is_file():
        return Path(name).expanduser().resolve()
    check_run_name(name)
    run_dir = runs_home(runs_dir) / name
    if not (run_dir / "run.json").is_file():
        raise LlmftError(f"run {name!r} not found in {runs_home(runs_dir)}")
    return run_dir


def list_runs(runs_dir: str | os.PathLike | None = None) -> list[dict]:
    """Every run's info (with `dir` added), newest first."""
    runs = []
    for child in runs_home(runs_dir).iterdir():
        if child.name.startswith(".") or not (child / "run.json").is_file():
            continue
        try:
            info = read_run(child)
        except LlmftError:
            continue
        runs.append({**info, "dir": str(child)})
    return sorted(runs, key=lambda r: r.get("started_at", ""), reverse=True)


def latest_evaluation(run_dir: Path):
    """The newest evaluation of a run as an `EvalResult` (summary only, no per-example rows), or None."""
    from .results import EvalResult

    evals = sorted((Path(run_dir) / "evaluations").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(evals):
        try:
            return EvalResult.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, KeyError):
            continue  # a damaged summary is skipped, not fatal to the Runs table
    return None


def delete_run(run_dir: Path) -> None:
    info = read_run(run_dir)
    if info.get("status") == RUNNING:
        raise LlmftError(f"run {info.get('name')} is still running; cancel it first")
    shutil.rmtree(run_dir)
    (Path(run_dir).parent / ".jobs" / f"{Path(run_dir).name}.log").unlink(missing_ok=True)  # its training log


def new_run_name(task: str) -> str:
    return f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"


def process_identity() -> dict:
    """This process as run.json records it: pid, host, and the pid's start time (so a pid that a restarted
    container hands to another process is not taken for the trainer)."""
    import psutil

    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_started": psutil.Process().create_time()}


def process_alive(info: dict) -> bool:
    """Whether the process that run.json names is still the one running (another host's run: trust it)."""
    import psutil

    pid, host = info.get("pid"), info.get("host")
    if host is not None and host != socket.gethostname():
        return True
    if not pid:
        return False
    try:
        started = psutil.Process(int(pid)).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    recorded = info.get("pid_started")
    return recorded is None or abs(started - float(recorded)) < 1.0
