"""Helpers shared by the tabs: app settings, run pickers, error translation, safe HTML, downloads."""

from __future__ import annotations

import difflib
import functools
import html
import shutil
import tempfile
import uuid
from pathlib import Path

import gradio as gr

from ..access import User
from ..errors import LlmftError, first_line, hide_paths
from ..runs import COMPLETED, list_runs, reserve_storage

DOWNLOADS = Path(tempfile.gettempdir()) / "llmft-downloads"
"""The only folder the app serves files from: copies made for download."""
MAX_UPLOAD = "20mb"


def user_errors(fn, public: bool = False):
    """Show `LlmftError` (a problem the user can fix) as a gr.Error; keep other errors' text short too. `public`
    (a Space): no error names a server path (`errors.hide_paths`)."""

    def report(err):
        if isinstance(err, gr.Error):
            return gr.Error(hide_paths(err.message), title=err.title, duration=None) if public else err
        text = str(err) if isinstance(err, LlmftError) else f"{type(err).__name__}: {first_line(err)}"
        # It stays until it is closed: a refusal that vanished in seconds left Start looking dead.
        return gr.Error(hide_paths(text) if public else text, duration=None)

    if _is_generator(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise report(err) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise report(err) from None

    return wrapper


def caller(ctx, profile: gr.OAuthProfile | None, token: gr.OAuthToken | None) -> User:
    """The `User` behind a request: the signed-in session's profile and token, or the token an API client sent
    (`Client(..., oauth_token=...)`), as the server's access rules read them."""
    return ctx.access.user(profile.username if profile else None, token.token if token else None)


def with_user(ctx, fn, progress: bool = False):
    """`fn(user, *inputs)` as a Gradio handler: Gradio injects the caller's OAuth profile and token (the two
    annotated parameters), `caller` makes them a `User`, errors show as in `user_errors`. With `progress`, fn
    also takes `progress=` (Gradio's progress tracker)."""
    if progress:

        def progress_handler(
            profile: gr.OAuthProfile | None, token: gr.OAuthToken | None, *inputs, progress=gr.Progress()
        ):
            return fn(caller(ctx, profile, token), *inputs, progress=progress)

        return user_errors(progress_handler, ctx.access.space)
    if _is_generator(fn):

        def gen_handler(profile: gr.OAuthProfile | None, token: gr.OAuthToken | None, *inputs):
            yield from fn(caller(ctx, profile, token), *inputs)

        return user_errors(gen_handler, ctx.access.space)

    def handler(profile: gr.OAuthProfile | None, token: gr.OAuthToken | None, *inputs):
        return fn(caller(ctx, profile, token), *inputs)

    return user_errors(handler, ctx.access.space)


def _is_generator(fn):
    import inspect

    return inspect.isgeneratorfunction(fn)


def visible_runs(ctx, user: User) -> list[dict]:
    """The runs `user` may see (every run, locally), newest first."""
    return [r for r in list_runs(ctx.runs_dir) if ctx.access.can_see(user, r)]


def visible_task(ctx, user: User, name):
    """The task called `name` if `user` may use it (a built-in one, or the own task of a run they may see), else
    None: another visitor's own task (its prompt, labels and mapping) stays theirs, and no error lists it."""
    from ..pipeline import known_tasks
    from ..tasks import get_task

    return get_task(name) if isinstance(name, str) and name in known_tasks(ctx, visible_runs(ctx, user)) else None


def completed_runs(ctx, user: User, task: str | None = None, runs: list[dict] | None = None) -> list[str]:
    """Names of the finished runs `user` may see (of `task` only, if given), newest first; `runs`: their
    `visible_runs`, when the caller has them already."""
    runs = visible_runs(ctx, user) if runs is None else runs
    return [r["name"] for r in runs if r.get("status") == COMPLETED and (not task or r["task"] == task)]


def for_download(ctx, path: str | Path) -> str:
    """A copy of `path` inside DOWNLOADS (the only folder the app serves), within the storage cap."""
    src = Path(path)
    reserve_storage(ctx.runs_dir, DOWNLOADS, src.stat().st_size)
    dest = DOWNLOADS / uuid.uuid4().hex[:12] / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return str(dest)


def zip_for_download(ctx, folder: str | Path, name: str) -> str:
    """A zip of `folder` inside DOWNLOADS, within the storage cap (counted at the folder's size)."""
    reserve_storage(ctx.runs_dir, DOWNLOADS, sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()))
    dest = DOWNLOADS / uuid.uuid4().hex[:12]
    dest.mkdir(parents=True, exist_ok=True)
    return shutil.make_archive(str(dest / name), "zip", root_dir=folder)


def word_diff_html(before: str, after: str) -> str:
    """Word-level diff of two outputs as HTML; the texts are escaped, never rendered as markup."""
    a, b = before.split(), after.split()
    parts = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            parts.append(f'<del style="background:#fde2e2">{html.escape(" ".join(a[i1:i2]))}</del>')
        if op in ("insert", "replace"):
            parts.append(
                f'<ins style="background:#dcf5dc;text-decoration:none">{html.escape(" ".join(b[j1:j2]))}</ins>'
            )
        if op == "equal":
            parts.append(html.escape(" ".join(a[i1:i2])))
    return " ".join(parts)


def fmt(value, digits=4):
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
