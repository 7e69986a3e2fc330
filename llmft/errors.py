"""The one exception type that carries a user-facing problem.

Anything raised as `LlmftError` is a problem with the user's input or environment (unknown task, missing
column, model not reachable offline). The CLI prints its message as one line and exits 2; the app shows it
as a `gr.Error`. Every other exception is a bug and keeps its traceback.
"""


class LlmftError(ValueError):
    """A problem the user can fix, described in one line."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
