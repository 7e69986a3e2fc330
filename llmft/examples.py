"""`Example`, one row as every kind reads it, and what is decided about a row before any kind sees it: a label
named or numbered, a text's fingerprint (ground floor: no llmft module but `errors` below it)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from .errors import LlmftError


@dataclass(frozen=True)
class Example:
    """One input with its reference summaries (seq2seq) or label id (classification)."""

    id: str
    text: str
    references: tuple[str, ...] = ()
    label: int | None = None


def text_hash(text: str) -> str:
    """A short fingerprint of an input text (whitespace-normalised), to find test rows that were trained on."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()[:16]


def normalize_label(value, labels: tuple[str, ...]) -> int:
    """Map a label given as a name ("positive", "Negative", or "3" when the labels are "1", "2", "3") or an id
    (0, "1", 1.0) to its id. A name wins over an id: labels read from a column of ratings are names."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int | str):
        named = [i for i, name in enumerate(labels) if name.lower() == str(value).strip().lower()]
        if len(named) == 1:
            return named[0]
    if isinstance(value, int):
        if 0 <= value < len(labels):
            return value
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?[0-9]+", text) and 0 <= int(text) < len(labels):  # not "¹": isdigit() but no int
            return int(text)
        lowered = [name.lower() for name in labels]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        # A unique prefix of at least three letters ("pos", "neg") names its label.
        starts = [i for i, name in enumerate(lowered) if len(text) >= 3 and name.startswith(text.lower())]
        if len(starts) == 1:
            return starts[0]
    allowed = ", ".join([*map(str, range(len(labels))), *labels])
    raise LlmftError(f"unknown label {value!r}; expected one of {allowed}")
