"""Files written so that nothing half-written is ever read: atomic JSON and text writes, and what a full disk looks
like (ground floor: no llmft module but `errors` below it)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import LlmftError


def env_number(name: str, default: float) -> float:
    """A setting from the environment: a number of at least 0 (`default` when unset), else a one-line error."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise LlmftError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise LlmftError(f"{name} must be 0 or more, got {raw!r}")
    return value


def cap_file_size(mb: float) -> None:
    """Let no file this process or its children write grow past `mb` (the OS's RLIMIT_FSIZE: a write past it fails
    with EFBIG, which `SIGXFSZ` ignored turns into an error instead of a kill). A public server caps every download
    this way, whatever the hub's metadata said. The soft limit only: the server's owner may raise it again."""
    import resource
    import signal

    try:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited by children across exec
    except ValueError:  # not the main thread: a write past the cap would kill instead of fail, still capped
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    cap = int(mb * 2**20)
    resource.setrlimit(resource.RLIMIT_FSIZE, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))


def llmft_home() -> Path:
    """Where llmft keeps what it makes: $LLMFT_HOME, else /data/llmft on a Space with storage, else
    ~/.cache/llmft (runs, converted models)."""
    if os.environ.get("LLMFT_HOME"):
        return Path(os.environ["LLMFT_HOME"]).expanduser()
    if Path("/data").is_dir() and os.access("/data", os.W_OK):
        return Path("/data/llmft")
    return Path("~/.cache/llmft").expanduser()


def write_text_atomic(path: Path, write) -> None:
    """Write a file through `write(f)` (a text file object) so that readers see the old file or the new one,
    never half of one; the file is world-readable, like run.json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; run files are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data) -> None:
    """Write JSON atomically (`write_text_atomic`)."""
    write_text_atomic(path, lambda f: json.dump(data, f, indent=2, default=str))


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (or what caused it) is a full disk: OSError ENOSPC, or torch's RuntimeError from its
    file writer ("PytorchStreamWriter failed writing file", "No space left on device")."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(err)
        if "No space left on device" in text or "PytorchStreamWriter failed writing" in text:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def free_mb(folder: Path) -> float:
    try:
        return shutil.disk_usage(folder).free / 2**20
    except OSError:
        return float("nan")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet reads as the start of a formula (`=HYPERLINK(...)` in a text a stranger typed)."""


def _needs_quote(text: str) -> bool:
    return text.lstrip("'")[:1] in FORMULA_STARTS


def csv_safe(value):
    """A text cell written so a spreadsheet shows it as text: a leading =, +, -, @, tab or CR gets a quote (and
    so does a text whose leading quotes stand before one, so `csv_unsafe` gives every text back). Anything that
    is not a string (a score) is left as it is."""
    return "'" + value if isinstance(value, str) and value and _needs_quote(value) else value


def csv_unsafe(value):
    """The text `csv_safe` was given, read back from the file."""
    quoted = isinstance(value, str) and value[:1] == "'" and _needs_quote(value[1:])
    return value[1:] if quoted else value
