"""The state a server (or one CLI command) holds, in one object passed to whoever needs it: no module globals.

The CLI builds a `Context` with no folder restriction; the app builds one that allows only its runs home, the
packaged MiniLM and the model folders its owner listed. Tests build their own and throw them away.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from .access import Access
from .models import device_and_dtype
from .refs import resolve_roots
from .runs import runs_home
from .votes import BallotBox


class ModelCache:
    """A small LRU of loaded models, so the app keeps its models warm between requests."""

    def __init__(self, size: int = 2):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()
        self._loading: dict = {}
        """key -> the lock its one load holds: two requests for one model load it once, while a request for
        another model is answered from the cache (or loads it) without waiting for that load."""

    def get(self, key, load):
        """The model under `key`, loaded with `load()` on a miss: one load per key at a time, never one lock for
        all (a slow load of one model, a large hub id, stalls no request for another)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._items:  # loaded by the request this one waited for
                    self._items.move_to_end(key)
                    return self._items[key]
            try:
                value = load()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass
class Context:
    """Runs home, weights' dtype, allowed local folders, access rules, model cache and training jobs of one server."""

    runs_dir: Path
    """The runs home (resolved once; see `runs.runs_home`)."""
    dtype: str = "auto"
    """Weights' dtype for every model this server loads."""
    allowed_roots: list[Path] | None = None
    """Folders local models and adapters may come from; None = anywhere (the CLI)."""
    access: Access = field(default_factory=Access)
    """Who may do what (local: the one owner may do everything; see `access`)."""
    model_cache: ModelCache = field(default_factory=lambda: ModelCache(int(os.environ.get("LLMFT_MODEL_CACHE", "2"))))
    ballots: BallotBox = field(default_factory=BallotBox, repr=False)
    """Blind ballots handed out and not yet answered (which side is tuned stays here)."""
    jobs: object = field(default=None, repr=False)
    """The training jobs of a server (`jobs.Jobs`, which attaches itself here); None where nothing trains."""

    @classmethod
    def create(cls, runs_dir=None, dtype: str = "auto", allowed_roots=None, access: Access | None = None) -> Context:
        device_and_dtype(dtype)  # an unknown dtype fails here, not at the first request
        return cls(runs_home(runs_dir), dtype, resolve_roots(allowed_roots), access or Access())
