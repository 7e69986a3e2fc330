"""The one exception type that carries a user-facing problem.

Anything raised as `LlmftError` is a problem with the user's input or environment (unknown task, missing
column, model not reachable offline). The CLI prints its message as one line and exits 2; the app shows it
as a `gr.Error`. Every other exception is a bug and keeps its traceback.
"""

import re


class LlmftError(ValueError):
    """A problem the user can fix, described in one line."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\"`,;()\[\]{}<>|]+")
"""An absolute POSIX path in running text: a slash that does not continue a word, a URL or a hub id."""


def hide_paths(text: str) -> str:
    """`text` with every absolute path shortened to its last part (`/srv/runs/.uploads/ab-x.csv` -> `ab-x.csv`):
    what a public server tells strangers names their own files, never where the server keeps them."""
    return _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "/", text)
