"""The runs home and run directories: run.json is the single source of truth for a run's state.

Layout of one run:
    <runs home>/<name>/run.json        task, model, data, hyperparameters, status, timings, loss history
    <runs home>/<name>/adapter/        the final LoRA adapter (safetensors), present only once complete
    <runs home>/<name>/checkpoints/    Trainer checkpoints, for resume
    <runs home>/<name>/evaluations/    one folder per evaluation (summary.json, examples.csv, plots)
Beside the runs, in folders whose names start with a dot (never a run's):
    <runs home>/.uploads/              uploads kept for the server's own runs (the CLI's, a local app's)
    <runs home>/.tasks/                own tasks saved from a local app's form
    <runs home>/.visitors/<visitor>/   on a Space, what one visitor made besides runs: `.uploads/`, `.tasks/`,
                                       `<run>/evaluations/` of runs not theirs (anonymous visitors: `.anonymous`)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from .errors import LlmftError
from .files import llmft_home, write_json_atomic

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"
TRAIN_HASHES = "train_texts.json"
"""Fingerprints of a run's training and validation inputs (`examples.text_hash`), kept beside run.json."""
RUN_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # whole name: fullmatch (no trailing newline)


def runs_home(runs_dir: str | os.PathLike | None = None) -> Path:
    """`runs_dir` if given, else $LLMFT_HOME/runs, else /data/llmft/runs on a Space with storage, else
    ~/.cache/llmft/runs."""
    home = Path(runs_dir).expanduser() if runs_dir else llmft_home() / "runs"
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


def mark_failed_on_full_disk(run_dir: Path, **fields) -> bool:
    """Record a failure when the disk is full: atomically if a temporary file still fits, else by rewriting
    run.json in place (its old blocks are reused). Returns whether it was recorded."""
    try:
        update_run(run_dir, **fields)
        return True
    except OSError:
        pass
    path = Path(run_dir) / "run.json"
    try:
        info = {**json.loads(path.read_text(encoding="utf-8")), **fields}
        text = json.dumps(info, default=str)
        with open(path, "r+", encoding="utf-8") as f:
            f.write(text)
            f.truncate()
        return True
    except (OSError, ValueError):
        return False


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


VISITORS = ".visitors"
"""Under the runs home: what each Space visitor made besides runs (see the layout above)."""


def delete_run(run_dir: Path) -> None:
    """Delete a run, its training log, and the upload it trained on unless another run uses that too."""
    info = read_run(run_dir)
    if info.get("status") == RUNNING:
        raise LlmftError(f"run {info.get('name')} is still running; cancel it first")
    shutil.rmtree(run_dir)
    home = Path(run_dir).parent
    (home / ".jobs" / f"{Path(run_dir).name}.log").unlink(missing_ok=True)  # its training log
    data = Path(str((info.get("config") or {}).get("data") or ""))
    if data.parent in upload_folders(home) and str(data) not in _uploads_in_use(home):
        data.unlink(missing_ok=True)


UPLOADS = ".uploads"
"""Uploads kept for training, in the runs home: `<hash>-<the user's file name>`; each belongs to the runs that
trained on it and goes with the last of them."""
STORAGE_CAP = int(float(os.environ.get("LLMFT_STORAGE_MB", "2000")) * 2**20)
"""Total size of kept uploads and download copies a server may hold."""
UPLOAD_MAX_AGE_S = float(os.environ.get("LLMFT_UPLOAD_MAX_AGE_H", "24")) * 3600
"""An upload no run trained on (an evaluation's test file, a start that failed) is removed after this."""
DOWNLOAD_MAX_AGE_S = float(os.environ.get("LLMFT_DOWNLOAD_MAX_AGE_H", "1")) * 3600
"""Copies made for download are removed after this."""


def upload_folders(home) -> list[Path]:
    """Every folder that holds kept uploads: the server's own, and each Space visitor's."""
    home = Path(home)
    return [home / UPLOADS, *sorted((home / VISITORS).glob(f"*/{UPLOADS}"))]


def _uploads_in_use(home: Path) -> set[str]:
    return {str((r.get("config") or {}).get("data")) for r in list_runs(home)}


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


def clean_storage(home, downloads: Path | None = None, now: float | None = None) -> int:
    """Remove uploads no run uses once older than `UPLOAD_MAX_AGE_S`, and download copies older than
    `DOWNLOAD_MAX_AGE_S`; returns the bytes freed."""
    home, now = Path(home), time.time() if now is None else now
    freed = 0
    in_use = _uploads_in_use(home)
    uploads = [p for folder in upload_folders(home) for p in _files(folder)]
    old = [p for p in uploads if str(p) not in in_use and now - p.stat().st_mtime > UPLOAD_MAX_AGE_S]
    if downloads is not None:
        old += [p for p in _files(Path(downloads)) if now - p.stat().st_mtime > DOWNLOAD_MAX_AGE_S]
    for path in old:
        freed += path.stat().st_size
        path.unlink(missing_ok=True)
    if downloads is not None and Path(downloads).is_dir():  # the emptied per-download folders
        for folder in sorted(Path(downloads).glob("*"), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return freed


def reserve_storage(home, downloads: Path | None, incoming: int) -> None:
    """Make room for `incoming` bytes of uploads or downloads (cleaning old ones first), or refuse in one line."""
    kept = [p for folder in upload_folders(home) for p in _files(folder)]
    kept += _files(Path(downloads)) if downloads is not None else []
    used = sum(p.stat().st_size for p in kept)
    if used + incoming <= STORAGE_CAP:
        return
    used -= clean_storage(home, downloads)
    if used + incoming > STORAGE_CAP:
        raise LlmftError(
            f"the server's storage for uploads and downloads is full ({used / 2**20:.0f} MB of "
            f"{STORAGE_CAP / 2**20:.0f} MB); delete runs you no longer need, or try again later"
        )


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
