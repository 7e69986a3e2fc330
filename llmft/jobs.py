"""Training jobs of a server, each a child process running exactly the CLI command the app shows.

`python -m llmft train ...` runs in its own process group with its output in `<runs home>/.jobs/<run>.log`;
run.json is the protocol between it and the app (progress, loss history, status, pid and pid start time). So
an out-of-memory or a native crash in training leaves the app serving, Cancel is a signal (SIGTERM: the child
stops at the end of the step and marks the run cancelled; after a grace period it is killed), and a reloaded
page or a restarted app finds a running child again through run.json.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .access import qualified
from .config import TrainConfig, cli_args
from .errors import LlmftError, first_line
from .files import env_number, write_json_atomic
from .loading import resolve_model
from .runs import (
    CANCELLED,
    FAILED,
    RUNNING,
    check_run_name,
    list_runs,
    new_run_name,
    process_alive,
    read_run,
    update_run,
)

LOG_TAIL_LINES = 12
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def log_path(runs_dir: Path, run_name: str) -> Path:
    return Path(runs_dir) / ".jobs" / f"{run_name}.log"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a job's log (progress-bar redraws collapsed), or "" when there is none."""
    try:
        text = path.read_bytes()[-65536:].decode("utf-8", errors="replace")
    except OSError:
        return ""
    rows = [row.rsplit("\r", 1)[-1] for row in text.split("\n")]  # a progress bar redraws with \r
    return "\n".join([row for row in rows if row.strip()][-lines:])


def training_argv(config: TrainConfig, gpus: int = 0) -> list[str]:
    """The child's command: `python -m llmft train ...`, through torchrun when there is more than one GPU."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={gpus}", "-m", "llmft", "train"] + [
            *cli_args(config)
        ]
    return [sys.executable, "-m", "llmft", "train", *cli_args(config)]


def shown_command(argv: list[str]) -> str:
    """The command as a person types it (`python` for this interpreter)."""
    return shlex.join(["python", *argv[1:]])


@dataclass
class Job:
    """One training child: started by this server, or found running in run.json after a restart."""

    run_name: str
    run_dir: Path
    log: Path
    command: str
    pid: int | None = None
    started_at: float = field(default_factory=time.time)
    process: subprocess.Popen | None = field(default=None, repr=False)
    error: str | None = None
    """Why the child failed before it wrote run.json (its last error line)."""
    cancel_requested: bool = False
    kill_reason: str | None = None
    """Set when the app killed the child after the grace period."""
    owner: str | None = None
    """The signed-in user who started it (None: the server's owner)."""
    stop_reason: str | None = None
    """Why the server cancelled it (its time limit), recorded in run.json once the child has ended."""

    @property
    def running(self) -> bool:
        """The child is alive and has not yet recorded an end (it exits right after it does)."""
        info = self.info()
        if self.process is not None:
            return self.process.poll() is None and info.get("status", RUNNING) == RUNNING
        return info.get("status") == RUNNING

    def info(self) -> dict:
        """The run's run.json (stale `running` reported as failed), or {} before the child wrote it."""
        try:
            return read_run(self.run_dir)
        except LlmftError:
            return {}

    def status(self) -> str:
        """`starting`, `running`, `completed`, `cancelled` or `failed: why`."""
        info = self.info()
        if not info:
            if self.running:
                return "starting"
            return f"failed: {self.error or 'the training process ended before it started the run'}"
        status = info.get("status", FAILED)
        code = self.process.poll() if self.process is not None else None
        if status == FAILED and code is not None and _raw_status(self.run_dir) == RUNNING:
            # Our child has ended but the watcher has not recorded it yet: say how it ended, not "interrupted".
            return f"failed: {self.kill_reason or _exit_reason(code)}"
        if status == FAILED:
            return f"failed: {info.get('error') or 'unknown error'}"
        return status

    def tail(self) -> str:
        return log_tail(self.log)


ANY = object()
"""`Jobs.current`'s owner that matches every owner (the local app: one user)."""


@dataclass
class Waiting:
    """A training request waiting for a free slot. The line is written to `<runs>/.jobs/waiting.json` at every
    change, and a restarted server takes it up again in the same order (no run exists for a waiting request)."""

    run_name: str
    config: TrainConfig = field(repr=False)
    owner: str | None = None
    started_at: float = field(default_factory=time.time)
    """When it was queued."""
    error: str | None = None
    """Why it never started (cancelled, or the child failed while preparing once it was its turn)."""
    running = False

    def status(self) -> str:
        return f"failed: {self.error}" if self.error else "waiting"


def _identity(pid: int) -> dict:
    """A child as `runs.process_alive` recognises it after a restart (a pid alone may be another process's)."""
    import psutil

    return {"pid": pid, "host": socket.gethostname(), "pid_started": psutil.Process(pid).create_time()}


def _search_left(record: dict, storage: str) -> tuple[int | None, float | None] | None:
    """(trials, seconds) a killed search of `record` had left, or None when it had done them all. Its trials that
    the kill interrupted (still `RUNNING` in the study) are marked failed, and do not count as done."""
    from optuna.trial import TrialState

    from .search import existing_study  # deferred: search imports transformers

    study = existing_study(record["study"], storage)
    mine = [t for t in (study.trials if study else []) if t.number >= int(record.get("before") or 0)]
    for trial in mine:
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
    done = [t for t in mine if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    trials = int(record["trials"]) - len(done) if record.get("trials") else None
    spent = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done if t.datetime_complete)
    seconds = float(record["seconds"]) - spent if record.get("seconds") else None
    if (trials is not None and trials <= 0) or (seconds is not None and seconds < 10):
        return None
    return trials, seconds


def max_run_seconds(space: bool) -> float | None:
    """How long one training may run before the server cancels it: `LLMFT_MAX_TRAIN_MINUTES` (default 60 on a
    Space, where one visitor must not hold the server for days; none locally). 0: no limit."""
    minutes = env_number("LLMFT_MAX_TRAIN_MINUTES", 60.0 if space else 0.0)
    return minutes * 60 if minutes > 0 else None


def training_slots() -> int:
    """Trainings one server runs at once: `LLMFT_MAX_TRAININGS`, default 1 (one CPU training uses every core;
    several GPUs already serve one training through torchrun)."""
    slots = env_number("LLMFT_MAX_TRAININGS", 1)
    if slots < 1 or slots != int(slots):
        raise LlmftError(f"LLMFT_MAX_TRAININGS must be a whole number of at least 1, got {slots:g}")
    return int(slots)


@dataclass
class SearchJob(Job):
    """A search child (`python -m llmft search ...`): its trials are runs; its state is the process and the
    study (no run.json of its own). Written down in `<runs>/.jobs/searches.json` while it runs: a restarted
    server adopts it if it still runs, else resumes its study with the trials (or seconds) it had left."""

    study: str = ""
    storage: str = ""
    trials: int | None = None
    identity: dict = field(default_factory=dict, repr=False)
    """pid, host and start time of an adopted child (a previous server's), whose process object is not ours."""

    @property
    def running(self) -> bool:
        if self.process is None:
            return bool(self.identity) and process_alive(self.identity)
        return self.process.poll() is None

    def info(self) -> dict:
        return {}

    def status(self) -> str:
        if self.running:
            return "running"
        code = self.process.poll() if self.process is not None else None
        if self.cancel_requested:
            return "cancelled"
        if code == 0:
            return "completed"
        return f"failed: {self.error or _error_line(self.log) or _exit_reason(code if code is not None else 1)}"


class Jobs:
    """The training jobs of one server: at most `slots` children at once (default `training_slots()`); further
    requests wait in line, first come first served; one run per owner at a time."""

    dispatch_every_s = 0.5

    def __init__(self, ctx, grace_s: float = 30.0, start_wait_s: float = 30.0, slots: int | None = None):
        """The jobs of server context `ctx`; they attach themselves as `ctx.jobs`."""
        self.ctx, self.grace_s, self.start_wait_s = ctx, grace_s, start_wait_s
        ctx.jobs = self
        self.slots = training_slots() if slots is None else slots
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._last: str | None = None
        self._last_of: dict[str | None, Job | Waiting] = {}
        self._waiting: list[Waiting] = []
        self._dispatcher: threading.Thread | None = None
        self._searches: dict[str, dict] = {}
        """The searches this server runs, as `searches.json` records them (what a restarted server needs)."""
        self._restore_searches()  # they were running: before the waiting line, which was waiting
        self._restore_line()

    def _line_file(self) -> Path:
        return Path(self.ctx.runs_dir) / ".jobs" / "waiting.json"

    def _save_line(self) -> None:
        """Write the waiting line down (under the lock), so a restarted server takes it up again."""
        entries = [
            {"run_name": w.run_name, "owner": w.owner, "started_at": w.started_at, "config": asdict(w.config)}
            for w in self._waiting
        ]
        self._line_file().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._line_file(), entries)

    def _restore_line(self) -> None:
        """The waiting line a previous server left, in its order; a request whose run exists by now, or whose
        config no longer loads (its task file gone), is dropped."""
        try:
            entries = json.loads(self._line_file().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        known = {f.name for f in fields(TrainConfig)}
        for entry in entries if isinstance(entries, list) else []:
            try:
                config = TrainConfig(**{k: v for k, v in entry["config"].items() if k in known})
            except Exception:  # a config this version cannot build: never a crash at start-up
                continue
            if not (self.ctx.runs_dir / entry["run_name"]).exists():
                self._waiting.append(Waiting(entry["run_name"], config, entry.get("owner"), entry["started_at"]))
        if self._waiting:
            self._dispatcher = threading.Thread(target=self._dispatch, daemon=True, name="llmft-queue")
            self._dispatcher.start()

    def _attach_running(self) -> None:
        """Adopt children that run.json says are running (a restarted app, another page of this one)."""
        searches = {j.pid for j in self._jobs.values() if isinstance(j, SearchJob)}  # their trials are theirs
        for info in list_runs(self.ctx.runs_dir):
            name = info["name"]
            if info.get("pid") in searches:
                continue
            if info.get("status") == RUNNING and name not in self._jobs and process_alive(info):
                self._jobs[name] = Job(
                    name,
                    Path(info["dir"]),
                    log_path(self.ctx.runs_dir, name),
                    info.get("command", ""),
                    pid=info.get("pid"),
                    started_at=time.time() - float(info.get("elapsed_s") or 0),
                    owner=(info.get("config") or {}).get("owner"),
                )
                self._last = name

    def running(self) -> list[Job]:
        self._attach_running()
        return [job for job in self._jobs.values() if job.running]

    def current(self, owner=ANY) -> Job | Waiting | None:
        """`owner`'s running job, else their waiting request, else the last job this server started for them
        (ANY: anyone's)."""
        running = [j for j in self.running() if owner is ANY or j.owner == owner]
        if running:
            return running[-1]
        waiting = [w for w in self._waiting if owner is ANY or w.owner == owner]
        if waiting:
            return waiting[0]
        if owner is ANY:
            return self._jobs.get(self._last) if self._last else None
        last = self._last_of.get(owner)
        if isinstance(last, Job) and (last.info().get("config") or {}).get("owner", owner) != owner:
            return None  # the run was deleted and its name taken by someone else's run
        return last

    def find(self, run_name: str) -> Job | Waiting | None:
        """The running job or waiting request named `run_name`."""
        self._attach_running()
        job = self._jobs.get(run_name)
        if job is not None and job.running:
            return job
        return next((w for w in self._waiting if w.run_name == run_name), None)

    def start(self, config: TrainConfig, gpus: int | None = None) -> Job | Waiting:
        """Check what can be checked here, then start the child and wait until it has started the run, or,
        when every training slot is taken, put the request in the waiting line.

        One run per owner (`config.owner`) at a time, running or waiting.

        Raises:
            LlmftError: the owner has a run in progress, the name is taken, the model is refused, or the child
                failed while preparing (bad data, bad columns): its one-line error, and nothing is left behind.
        """
        with self._lock:
            self.check_one_per_owner(config.owner)
            task = config.task_spec
            resolve_model(task, config.model, self.ctx.allowed_roots)  # the child has no folder restriction
            config.runs_dir = str(self.ctx.runs_dir)
            config.dtype = self.ctx.dtype
            # A visitor's run is named `<visitor>.<name>` (`access.qualified`): "already exists" only ever
            # answers about their own runs, never confirms another visitor's private one.
            config.run_name = qualified(config.owner, config.run_name or new_run_name(task.name))
            check_run_name(config.run_name)
            for name in {config.run_name, *(m.run_name for m in config.repeats())}:
                if (self.ctx.runs_dir / name).exists() or any(w.run_name == name for w in self._waiting):
                    raise LlmftError(f"run {name!r} already exists; choose another name")
            if len(self.running()) >= self.slots or self._waiting:
                waiting = Waiting(config.run_name, config, config.owner)
                self._waiting.append(waiting)
                self._save_line()
                self._last_of[config.owner] = waiting
                if self._dispatcher is None or not self._dispatcher.is_alive():
                    self._dispatcher = threading.Thread(target=self._dispatch, daemon=True, name="llmft-queue")
                    self._dispatcher.start()
                return waiting
            return self._launch(config, gpus)

    def check_one_per_owner(self, owner: str | None) -> None:
        """Refuse a second run of `owner` while one of theirs runs or waits."""
        with self._lock:
            mine = [j for j in self.running() if j.owner == owner] + [w for w in self._waiting if w.owner == owner]
        if mine:
            job = mine[0]
            started = time.strftime("%H:%M:%S", time.localtime(job.started_at))
            verb = "waiting" if isinstance(job, Waiting) else "in progress"
            raise LlmftError(f"a run is {verb} ({job.run_name}, started {started}); wait for it or cancel it")

    def start_search(
        self, config: TrainConfig, trials: int | None, seconds: float | None, study: str | None = None
    ) -> SearchJob:
        """Start a search child over `config`'s task, model and data (`python -m llmft search ...`): `trials`
        trials or `seconds` of searching, study `study` (default `<task>-search-<time>`). It takes the training
        slot; one per owner, like a run. No waiting line: refused when the server is busy."""
        from .search import default_storage, existing_study

        with self._lock:
            self.check_one_per_owner(config.owner)
            if len(self.running()) >= self.slots:
                raise LlmftError("the server is training; a search starts when no run is in progress")
            if not trials and not seconds:
                raise LlmftError("give a number of trials or a time budget for the search")
            task = config.task_spec
            resolve_model(task, config.model, self.ctx.allowed_roots)
            config.runs_dir, config.dtype, config.run_name = str(self.ctx.runs_dir), self.ctx.dtype, None
            study = study or f"{task.name}-search-{time.strftime('%Y%m%d-%H%M%S')}"
            study = qualified(config.owner, study)  # another visitor typing it starts his own, never sees hers
            check_run_name(f"{study}-t000")
            existing = existing_study(study, default_storage(self.ctx.runs_dir))
            before = len(existing.trials) if existing else 0
            record = {
                "study": study, "owner": config.owner, "config": asdict(config), "trials": trials,
                "seconds": seconds, "before": before, "started_at": time.time(),
            }  # fmt: skip
            return self._spawn_search(record, trials, seconds, config)

    def _spawn_search(self, record: dict, trials: int | None, seconds: float | None, config=None) -> SearchJob:
        """Start the search child of `record` (under the lock) for `trials` trials or `seconds`, and write it down."""
        from .search import default_storage

        study = record["study"]
        if config is None:
            known = {f.name for f in fields(TrainConfig)}
            config = TrainConfig(**{k: v for k, v in record["config"].items() if k in known})
        storage = default_storage(self.ctx.runs_dir)
        # The form's time budget is each trial's; the search's own `--time-budget` is `seconds`, for it all.
        args = cli_args(config, skip=("time_budget",))
        argv = [sys.executable, "-m", "llmft", "search", *args, "--study", study, "--no-evaluate"]
        argv += ["--trial-time-budget", f"{config.time_budget:g}"] if config.time_budget else []
        argv += ["--trials", str(int(trials))] if trials else []
        argv += ["--time-budget", f"{float(seconds):g}"] if seconds else []
        log = log_path(self.ctx.runs_dir, study)
        process = self._spawn(argv, log)
        job = SearchJob(
            study, self.ctx.runs_dir, log, shown_command(argv), pid=process.pid, process=process,
            owner=config.owner, study=study, storage=storage, trials=record["trials"],
        )  # fmt: skip
        self._jobs[study], self._last = job, study
        self._last_of[job.owner] = job
        self._searches[study] = {**record, "process": _identity(process.pid)}
        self._save_searches()
        threading.Thread(target=self._watch_search, args=(job,), daemon=True).start()
        self._limit_time(job)
        return job

    def _searches_file(self) -> Path:
        return Path(self.ctx.runs_dir) / ".jobs" / "searches.json"

    def _save_searches(self) -> None:
        self._searches_file().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._searches_file(), list(self._searches.values()))

    def _watch_search(self, job: SearchJob) -> None:
        """When the search child ends by itself (done, failed) or by a cancel, it is no longer written down. One
        killed from outside (a container restart, the OOM killer) stays written down: the next server resumes it."""
        code = job.process.wait()
        if code >= 0 or job.cancel_requested:
            with self._lock:
                self._searches.pop(job.study, None)
                self._save_searches()

    def _restore_searches(self) -> None:
        """Take up the searches a previous server left: one whose child still runs is adopted; one whose child was
        killed is resumed (its study, the trials or seconds it had left; a trial the kill interrupted is marked
        failed and run again). Never a crash at start-up: a search that cannot be resumed is dropped."""
        try:
            records = json.loads(self._searches_file().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        from .search import default_storage

        storage = default_storage(self.ctx.runs_dir)
        for record in records if isinstance(records, list) else []:
            try:
                study, identity = record["study"], record.get("process") or {}
                if identity and process_alive(identity):
                    job = SearchJob(
                        study, self.ctx.runs_dir, log_path(self.ctx.runs_dir, study), "", pid=identity.get("pid"),
                        owner=record.get("owner"), study=study, storage=storage, trials=record.get("trials"),
                        identity=identity,
                    )  # fmt: skip
                    self._jobs[study] = self._last_of[job.owner] = job
                    self._searches[study] = record
                    continue
                left = _search_left(record, storage)
                if left is not None and len(self.running()) < self.slots:
                    self._spawn_search(record, *left)
            except Exception:  # a record this version cannot read, a study gone: dropped, never a crash
                continue
        self._save_searches()

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen:
        """Start `argv` in its own process group, its output in `log`. On a Space the child gets no HF_TOKEN:
        a visitor's training never downloads with the Space owner's token."""
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.ctx.access.space:
            env.pop("HF_TOKEN", None)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        with open(log, "wb") as out:
            return subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )

    def _limit_time(self, job: Job) -> None:
        """Cancel `job` once it runs past `max_run_seconds` (a Space's limit)."""
        limit = max_run_seconds(self.ctx.access.space)
        if limit:
            timer = threading.Timer(limit, self._overtime, args=(job, limit))
            timer.daemon = True
            timer.start()

    def _launch(self, config: TrainConfig, gpus: int | None = None) -> Job:
        """Start the child for `config` (under the lock) and wait until it has started the run."""
        # With --repeat, one child trains the group's runs in turn; the page follows the first of them.
        first = config.repeats()[0].run_name
        run_dir = self.ctx.runs_dir / first
        if run_dir.exists():
            raise LlmftError(f"run {first!r} already exists; choose another name")
        argv = training_argv(config, _gpu_count() if gpus is None else gpus)
        log = log_path(self.ctx.runs_dir, first)
        process = self._spawn(argv, log)
        job = Job(first, run_dir, log, shown_command(argv), pid=process.pid, process=process, owner=config.owner)
        self._jobs[job.run_name], self._last = job, job.run_name
        self._last_of[job.owner] = job
        threading.Thread(target=self._watch, args=(job,), daemon=True, name=f"llmft-watch-{job.run_name}").start()
        self._limit_time(job)
        self._wait_started(job)
        return job

    def _overtime(self, job: Job, limit: float) -> None:
        """Cancel a training that ran past the server's limit (recorded as the reason)."""
        if job.running:
            job.stop_reason = f"stopped: it ran past this server's limit of {limit / 60:g} minutes"
            self.cancel(job.run_name)

    def _dispatch(self) -> None:
        """Start waiting requests, first come first served, as training slots free up."""
        while True:
            time.sleep(self.dispatch_every_s)
            with self._lock:
                if not self._waiting:
                    return
                if len(self.running()) >= self.slots:
                    continue
                waiting = self._waiting.pop(0)
                self._save_line()
                try:
                    self._launch(waiting.config)
                except Exception as err:  # its requester is not waiting on a reply: keep the reason for them
                    waiting.error = first_line(err)
                    self._last_of[waiting.owner] = waiting

    def position(self, run_name: str) -> tuple[int, int] | None:
        """(place in the waiting line counting from 1, the line's length) of a waiting request, else None."""
        names = [w.run_name for w in self._waiting]
        return (names.index(run_name) + 1, len(names)) if run_name in names else None

    def _wait_started(self, job: Job) -> None:
        deadline = time.time() + self.start_wait_s
        while time.time() < deadline:
            if job.info():
                return
            if job.process.poll() is not None:
                job.process.wait()
                raise LlmftError(job.error or _error_line(job.log) or "the training process failed to start")
            time.sleep(0.1)

    def _watch(self, job: Job) -> None:
        """When the child exits, make sure run.json does not still say `running` (a crash, a kill, an OOM)."""
        code = job.process.wait()
        info = job.info()
        if not info:
            job.error = _error_line(job.log) or f"the training process exited with status {code}"
            return
        if _raw_status(job.run_dir) == RUNNING:
            why = job.kill_reason or _exit_reason(code)
            status = CANCELLED if job.cancel_requested else FAILED
            update_run(job.run_dir, status=status, error=why, log_tail=job.tail())
        if job.stop_reason:  # after the child's last write, so it is not overwritten
            update_run(job.run_dir, error=job.stop_reason)

    def cancel(self, run_name: str | None = None) -> bool:
        """Ask the running job (or `run_name`) to stop: SIGTERM now, SIGKILL after the grace period; a waiting
        request leaves the line.

        Returns False when nothing runs.
        """
        with self._lock:
            waiting = next((w for w in self._waiting if w.run_name == run_name), None)
            if waiting is not None:
                self._waiting.remove(waiting)
                self._save_line()
                waiting.error = "cancelled before it started"
                return True
        job = self._jobs.get(run_name) if run_name else self.current()
        if job is None or not job.running:
            return False
        info = job.info()
        if job.process is None and not (info and process_alive(info)):
            return False  # an adopted child whose pid now belongs to another process: never signal it
        job.cancel_requested = True
        _signal_group(job.pid, signal.SIGTERM)
        threading.Thread(target=self._kill_after_grace, args=(job,), daemon=True).start()
        return True

    def _kill_after_grace(self, job: Job) -> None:
        deadline = time.time() + self.grace_s
        while time.time() < deadline:
            if not job.running:
                return
            time.sleep(0.2)
        if job.running:
            job.kill_reason = f"killed: training did not stop within {self.grace_s:g} s of the cancel"
            _signal_group(job.pid, signal.SIGKILL)
            if job.process is None:  # an adopted child: no watcher thread records its end
                update_run(job.run_dir, status=CANCELLED, error=job.kill_reason, log_tail=job.tail())


def _raw_status(run_dir: Path) -> str | None:
    """run.json's status as written (no liveness check, unlike `runs.read_run`), or None when unreadable."""
    import json

    try:
        return json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _signal_group(pid: int | None, sig: int) -> None:
    if not pid:
        return
    try:
        os.killpg(os.getpgid(pid), sig)  # the child leads its own group: torchrun's workers get it too
    except (ProcessLookupError, PermissionError):
        pass


def _exit_reason(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
        return f"the training process was ended by {name}{hint}"
    return f"the training process exited with status {code}"


def _error_line(log: Path) -> str | None:
    """The CLI's one-line `error: ...` from a child's log, without the prefix."""
    lines = [line for line in log_tail(log, 40).splitlines() if line.startswith("error: ")]
    return lines[-1].removeprefix("error: ") if lines else None


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
