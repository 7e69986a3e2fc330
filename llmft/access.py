"""Who may do what with runs: one owner on a laptop; signed-in visitors who own their runs on a public Space.

Two modes, chosen by the environment once (`Access.from_env`):
- **local** (no `SPACE_ID`): one user, the machine's owner, who may do everything.
- **space** (`SPACE_ID` set, as on a Hugging Face Space): visitors sign in with Hugging Face. Anonymous
  visitors may look at, compare and evaluate public runs: runs with no owner (the Space owner's, made with the
  CLI) and runs their owner shared. A signed-in visitor owns the runs they start (`config.owner` in run.json);
  only the owner, or an admin (`LLMFT_ADMINS`, and the Space's author), may cancel, delete, share or push
  them. Pushes use the visitor's own token, into the visitor's own namespace, never the server's `HF_TOKEN`.

Every handler that reads or changes a run asks this module, so a direct API call gets the same answer as the
page. A run a visitor may not see is "not found", not "forbidden": its name is not confirmed either.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LlmftError
from .files import env_number
from .runs import UPLOADS, VISITORS, check_run_name, find_run, list_runs, read_run

SIGN_IN = "sign in with Hugging Face (the button at the top of the page)"
ANONYMOUS = ".anonymous"
"""The shared, capped folder of anonymous visitors' evaluations and uploads (no Hugging Face name starts with a
dot)."""
EVALUATION_ROOM_MB = 10.0
"""Room made before an anonymous evaluation is written (one is well under 6 MB)."""
ANONYMOUS_MAX_AGE_S = 24 * 3600
"""An anonymous evaluation is removed a day after it was made."""


def qualified(owner: str | None, name: str) -> str:
    """What a Space visitor names (a run, a study, an own task) is theirs: `<owner>.<name>`, so visitors' names
    never collide and no name tells one visitor whether another's private run or task exists (no Hugging Face
    name has a dot, so no visitor can pose as another). Unchanged for the server's own names (`owner` None)
    and for a name already theirs."""
    if not owner or name.startswith(f"{owner}."):
        return name
    return f"{owner}.{name}"


@dataclass(frozen=True)
class User:
    """Who is calling: a Hugging Face username (None: anonymous), their OAuth token, and whether an admin."""

    name: str | None = None
    token: str | None = field(default=None, repr=False)
    admin: bool = False

    @property
    def signed_in(self) -> bool:
        return self.name is not None


LOCAL_USER = User("local", admin=True)
"""The one user of a local app (and of the CLI)."""


def owner_of(info: dict) -> str | None:
    """The username that started a run (None: the server's owner, from the CLI or a local app)."""
    return (info.get("config") or {}).get("owner") or None


@dataclass
class Access:
    """The server's rules: its mode, admins and per-user quotas."""

    space: bool = False
    admins: frozenset[str] = frozenset()
    max_runs: int = 20
    """Runs one signed-in user may keep on a Space (admins: no limit)."""
    max_disk_mb: float = 2000.0
    """Disk one signed-in user's runs and evaluations may take on a Space (admins: no limit)."""
    max_anonymous_mb: float = 200.0
    """Disk all anonymous visitors' evaluations may take on a Space: the oldest are removed to make room."""
    _names: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_env(cls) -> Access:
        """Space mode when `SPACE_ID` is set. Admins: `LLMFT_ADMINS` (comma-separated usernames) and the
        Space's author (`SPACE_AUTHOR_NAME`). Quotas: `LLMFT_MAX_RUNS_PER_USER` (20),
        `LLMFT_USER_DISK_MB` (2000), `LLMFT_ANONYMOUS_EVAL_MB` (200)."""
        admins = {a.strip() for a in os.environ.get("LLMFT_ADMINS", "").split(",") if a.strip()}
        if os.environ.get("SPACE_AUTHOR_NAME"):
            admins.add(os.environ["SPACE_AUTHOR_NAME"])
        return cls(
            space=bool(os.environ.get("SPACE_ID")),
            admins=frozenset(admins),
            max_runs=int(env_number("LLMFT_MAX_RUNS_PER_USER", 20)),
            max_disk_mb=env_number("LLMFT_USER_DISK_MB", 2000),
            max_anonymous_mb=env_number("LLMFT_ANONYMOUS_EVAL_MB", 200),
        )

    # -- who is calling -------------------------------------------------------------------------------------

    def user(self, username: str | None = None, token: str | None = None) -> User:
        """The caller: the local owner in local mode; on a Space, the signed-in `username` (with their OAuth
        `token`), or, for an API call that brought only a token, the account that token belongs to."""
        if not self.space:
            return LOCAL_USER
        if username is None and token:
            username = self.username_of_token(token)
        if username is None:
            return User()
        return User(username, token, admin=username in self.admins)

    def username_of_token(self, token: str) -> str:
        """The Hugging Face account of `token` (asked of the hub once, then remembered for 10 minutes)."""
        key = hashlib.sha256(token.encode()).hexdigest()
        refused = "the Hugging Face token sent with this request was not accepted; sign in again"
        with self._lock:
            cached = self._names.get(key)
        if cached and cached[1] > time.time():
            if cached[0] is None:  # refused a minute ago: not asked of the hub again (a flood of forged tokens)
                raise LlmftError(refused)
            return cached[0]
        from huggingface_hub import whoami

        try:
            info = whoami(token=token)
            name = info.get("name") if info.get("type") == "user" else None
        except Exception:  # an invalid or expired token, or the hub unreachable
            name = None
        with self._lock:
            if len(self._names) > 10_000:
                self._names.clear()
            self._names[key] = (name, time.time() + (600 if name else 60))
        if name is None:
            raise LlmftError(refused)
        return name

    # -- what they may do -----------------------------------------------------------------------------------

    def can_see(self, user: User, info: dict) -> bool:
        """Whether `user` may see, compare, evaluate and download run `info`."""
        if not self.space or user.admin:
            return True
        owner = owner_of(info)
        return owner is None or bool(info.get("shared")) or owner == user.name

    def check_visible(self, user: User, info: dict) -> dict:
        """`info`, or "not found" when `user` may not see it."""
        if not self.can_see(user, info):
            raise LlmftError(f"run {info.get('name')!r} not found")
        return info

    def find(self, runs_dir, user: User, name: str) -> dict:
        """Run `name`'s info (with `dir`), or "not found" when there is none or `user` may not see it."""
        if not name:
            raise LlmftError("pick a run")
        run_dir = find_run(check_run_name(name), runs_dir)  # a name, never a path: no folder poses as a run
        return self.check_visible(user, {**read_run(run_dir), "dir": str(run_dir)})

    def check_local_ref(self, runs_dir, user: User, ref: str) -> None:
        """Refuse a typed path into the runs home that is not inside a run `user` may see (an adapter folder
        typed into Compare must not reach another visitor's private run, uploads or task files)."""
        ref = (ref or "").strip()  # as refs.parse_ref reads it
        if not self.space or user.admin or not ref:
            return
        home = Path(runs_dir).resolve()
        try:
            inside = Path(ref).expanduser().resolve().relative_to(home)
        except (ValueError, OSError):
            return
        if not inside.parts or inside.parts[0].startswith(".") or not (home / inside.parts[0] / "run.json").is_file():
            raise LlmftError(f"{ref} is not a folder you can use here")
        self.find(runs_dir, user, inside.parts[0])

    def check_signed_in(self, user: User, action: str) -> None:
        """On a Space, refuse `action` ("train", "cancel runs", ...) to an anonymous visitor."""
        if self.space and not user.signed_in:
            raise LlmftError(f"{SIGN_IN} to {action}")

    def voter(self, user: User) -> str:
        """Who a blind vote is recorded for: the signed-in visitor on a Space (one vote per visitor and item;
        anonymous visitors cannot vote), the machine's owner locally."""
        self.check_signed_in(user, "vote")
        return user.name or LOCAL_USER.name

    def check_owner(self, user: User, info: dict, action: str) -> None:
        """Refuse `action` ("cancel", "delete", "share", "push") on run `info` unless `user` owns it or is an
        admin."""
        self.check_signed_in(user, f"{action} runs")
        self.check_visible(user, info)
        if not self.space or user.admin:
            return
        if owner_of(info) != user.name:
            raise LlmftError(f"run {info.get('name')} is not yours: only its owner may {action} it")

    def check_may_train(self, user: User, runs: list[dict], new_runs: int = 1, runs_dir=None) -> None:
        """Refuse a training request from an anonymous visitor, or one over the user's quotas (`runs`: every
        run's info, with `dir`; `new_runs`: the runs the request makes, a search's trials; `runs_dir`: the runs
        home, whose visitor folder counts too)."""
        self.check_signed_in(user, "train")
        if not self.space or user.admin:
            return
        mine = [r for r in runs if owner_of(r) == user.name]
        if len(mine) + new_runs > self.max_runs:
            raise LlmftError(
                f"you have {len(mine)} runs here and this makes {new_runs} more; the most one user may keep is "
                f"{self.max_runs}: delete some in the Runs tab"
            )
        self._check_disk(user, mine, runs_dir)

    def _check_disk(self, user: User, mine: list[dict], runs_dir, incoming_mb: float = 0.0) -> None:
        """Refuse when `user`'s runs (`mine`) and their visitor folder (uploads, own tasks, evaluations of others'
        runs), with `incoming_mb` more, fill their disk quota."""
        used = sum(_folder_mb(Path(r["dir"])) for r in mine)
        used += _folder_mb(Path(runs_dir) / VISITORS / user.name) if runs_dir else 0.0
        if used >= self.max_disk_mb or incoming_mb and used + incoming_mb > self.max_disk_mb:
            adds = f" and this adds {incoming_mb:.1f} MB" if used < self.max_disk_mb else ""
            raise LlmftError(
                f"your runs take {used:.1f} MB here{adds}, the most one user may use is {self.max_disk_mb:g} MB; "
                "delete some in the Runs tab"
            )

    def visitor_home(self, runs_dir, user: User) -> Path | None:
        """On a Space, the folder of what `user` makes besides runs (uploads, own tasks, evaluations of runs not
        theirs): `<runs home>/.visitors/<name>` (anonymous visitors share `.visitors/.anonymous`); None for the
        local user and admins, whose things go to the runs home itself."""
        if not self.space or user.admin:
            return None
        return Path(runs_dir) / VISITORS / (user.name if user.signed_in else ANONYMOUS)

    def evaluation_home(self, runs_dir, user: User, info: dict) -> Path:
        """The folder that holds `user`'s evaluations of run `info` (in its `evaluations/`) and their blind votes:
        the run's own folder for its owner, an admin or the local user. On a Space anyone else's go to their own
        folder, `<visitor_home>/<run>`, and never into another's run, its Runs tab or its model card."""
        home = self.visitor_home(runs_dir, user)
        if home is None or (user.signed_in and owner_of(info) == user.name):
            return Path(info["dir"])
        return home / Path(info["dir"]).name

    def upload_home(self, runs_dir, user: User) -> Path:
        """Where `user`'s uploads are kept: their visitor folder's `.uploads/` on a Space, else the runs home's."""
        return (self.visitor_home(runs_dir, user) or Path(runs_dir)) / UPLOADS

    def task_home(self, runs_dir, user: User) -> Path:
        """Where `user`'s own tasks are saved: their visitor folder's `.tasks/` on a Space, else the runs home's."""
        return (self.visitor_home(runs_dir, user) or Path(runs_dir)) / ".tasks"

    def make_room(self, runs_dir, user: User, incoming_mb: float = EVALUATION_ROOM_MB) -> None:
        """Before `incoming_mb` of a visitor's things (an evaluation, an upload) are written to their visitor folder:
        a signed-in visitor within their disk quota (their runs, uploads, tasks and evaluations); for anonymous
        visitors, the oldest anonymous evaluations and uploads removed until the shared folder has room under its
        cap (and whatever is a day old). Nothing to check for the local user and admins."""
        home = self.visitor_home(runs_dir, user)
        if home is None:
            return
        if user.signed_in:
            self._check_disk(user, [r for r in list_runs(runs_dir) if owner_of(r) == user.name], runs_dir, incoming_mb)
            return
        things = [*home.glob("*/evaluations/*"), *home.glob(f"{UPLOADS}/*")]
        oldest_first = sorted(things, key=lambda p: p.stat().st_mtime)
        used, most = _folder_mb(home), self.max_anonymous_mb - incoming_mb  # measured once
        for thing in oldest_first:
            if thing.stat().st_mtime >= time.time() - ANONYMOUS_MAX_AGE_S and used <= most:
                break  # oldest first: every one after this is younger, and there is room
            used -= _folder_mb(thing) if thing.is_dir() else thing.stat().st_size / 2**20
            if thing.is_dir():  # a day old (nobody is reviewing it any more), or room is needed
                shutil.rmtree(thing, ignore_errors=True)
            else:
                thing.unlink(missing_ok=True)
        if used > most:
            raise LlmftError("the storage for visitors without sign-in is full: sign in, or try again later")

    def push_target(self, user: User, repo_id: str) -> tuple[str, str | None]:
        """(repo id, token) of a push: locally the repo as given and the machine's own token (None: HF_TOKEN
        or `hf auth login`); on a Space the visitor's token, into the visitor's own namespace (a bare name
        goes there), never the server's token."""
        repo_id = (repo_id or "").strip()
        if not self.space:
            return repo_id, None
        self.check_signed_in(user, "push runs")
        if not user.token:
            raise LlmftError("your session has no Hugging Face token to push with; sign out and sign in again")
        if repo_id and "/" not in repo_id:
            repo_id = f"{user.name}/{repo_id}"
        namespace = repo_id.split("/", 1)[0]
        if namespace != user.name:
            raise LlmftError(f"push to your own namespace: {user.name}/<name>, not {repo_id!r}")
        return repo_id, user.token


def _folder_mb(folder: Path) -> float:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
    except OSError:
        return 0.0
