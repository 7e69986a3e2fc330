"""One background training job per server process, shared by every browser session.

The job runs `training.train` on a thread, so the request that started it returns at once; any page (or a
reloaded one) follows it through `current()` and the run's run.json.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .data import load_examples
from .errors import LlmftError
from .models import resolve_model
from .runs import runs_home
from .tasks import get_task
from .training import Progress, TrainConfig, train


@dataclass
class Job:
    config: TrainConfig
    started_at: float = field(default_factory=time.time)
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    result: dict | None = None
    error: str | None = None
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    @property
    def run_dir(self) -> str:
        return str(runs_home(self.config.runs_dir) / self.config.run_name)


_lock = threading.Lock()
_current: Job | None = None


def current() -> Job | None:
    """The running job, or the last one this process ran (finished, failed or cancelled)."""
    return _current


def start(config: TrainConfig) -> Job:
    """Check the inputs, then train on a background thread. Raises if a job is already running."""
    global _current
    with _lock:
        if _current is not None and _current.running:
            started = time.strftime("%H:%M:%S", time.localtime(_current.started_at))
            raise LlmftError(
                f"a run is in progress ({_current.config.run_name}, started {started}); wait for it or cancel it"
            )
        # Fail fast, in the request, on what the user can fix: data, columns and the model reference.
        task = get_task(config.task)
        resolve_model(task, config.model)
        load_examples(
            task, config.data, task.train_split, config.text_column, config.target_columns, config.label_column
        )
        if config.run_name is None:
            from .runs import new_run_name

            config.run_name = new_run_name(task.name)
        if (runs_home(config.runs_dir) / config.run_name).exists():
            raise LlmftError(f"run {config.run_name!r} already exists; choose another name")
        job = Job(config)

        def on_progress(p: Progress):
            job.progress = p

        def work():
            try:
                job.result = train(config, on_progress=on_progress, cancel=job.cancel, show_progress=False)
            except LlmftError as err:
                job.error = str(err)
            except Exception as err:  # shown to the user; the run itself is marked failed by train()
                job.error = f"{type(err).__name__}: {err}"

        job.thread = threading.Thread(target=work, name=f"llmft-train-{config.run_name}", daemon=True)
        _current = job
        job.thread.start()
        return job


def cancel() -> bool:
    """Ask the running job to stop after its current step; False when nothing runs."""
    job = _current
    if job is None or not job.running:
        return False
    job.cancel.set()
    return True
