"""Turn a data source (bundled sample, local file or hub dataset id) into a list of `Example`s.

Column mapping, several references per example, string or integer labels, deterministic sampling, and
errors that name the file, line and column at fault.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import LlmftError, first_line
from .examples import Example, normalize_label
from .refs import check_hub_size, max_hub_mb, parse_ref
from .tasks import MAX_LABELS, TaskSpec

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
SAMPLE = "sample"
MAX_FILE_BYTES = int(float(os.environ.get("LLMFT_MAX_FILE_MB", "200")) * 1024 * 1024)
MAX_ROWS = int(os.environ.get("LLMFT_MAX_ROWS", "2000000"))
"""Rows a data file may hold: readers stop with an error past it (a small Parquet file can decode to
millions of rows)."""
MAX_DECODED_BYTES = int(float(os.environ.get("LLMFT_MAX_DECODED_MB", "1000")) * 1024 * 1024)
"""Decoded text a data file may hold (its cells' characters, summed as they are read)."""
MAX_COLUMNS = int(os.environ.get("LLMFT_MAX_COLUMNS", "1000"))
"""Columns (keys of a JSON row) a data file may have: a 10 MB CSV header can name a million of them."""
MAX_VALUE_CHARS = 1_000_000
"""Characters one cell may hold (a text is cut to MAX_TEXT_CHARS anyway)."""
MAX_LINE_CHARS = 4 * 1024 * 1024
"""Characters a JSONL line or a CSV header may take: read no further to find its end."""
MAX_JSON_BYTES = 8 * 1024 * 1024
"""A .json file is parsed whole; a larger one must be JSONL, which is read line by line."""
MAX_CHUNK_BYTES = int(float(os.environ.get("LLMFT_MAX_PARQUET_CHUNK_MB", "256")) * 1024 * 1024)
"""Declared decoded size of one Parquet column chunk (its dictionary page is decoded whole)."""


@dataclass(frozen=True)
class Limits:
    """Caps on what a reader builds: rows and decoded characters (an error past either), `stop_at`, the rows
    wanted (reading ends there without an error: a preview needs the first rows only), and `max_chunk_bytes`, the
    declared decoded size of one Parquet column chunk, refused before it is decoded."""

    max_rows: int = MAX_ROWS
    max_bytes: int = MAX_DECODED_BYTES
    stop_at: int | None = None
    max_chunk_bytes: int = MAX_CHUNK_BYTES


class _Counter:
    """Counts rows and decoded characters as a reader goes, and says when to stop."""

    def __init__(self, path, limits: Limits):
        self.path, self.limits, self.rows, self.chars = path, limits, 0, 0

    def full(self) -> bool:
        return self.limits.stop_at is not None and self.rows >= self.limits.stop_at

    def add(self, record: dict) -> None:
        self.rows += 1
        columns(self.path, len(record))
        sizes = [len(str(v)) for v in record.values()]
        self.chars += sum(sizes)
        if self.rows > self.limits.max_rows:
            raise LlmftError(f"{self.path} has more than {self.limits.max_rows:,} rows, the limit (LLMFT_MAX_ROWS)")
        self.check(0, max(sizes, default=0))

    def check(self, more_chars: int, longest: int) -> None:
        """Refuse `more_chars` of text beyond what was read, or a cell of `longest` characters, before it is built."""
        if longest > MAX_VALUE_CHARS:
            raise LlmftError(
                f"{self.path} has a cell of {longest / 2**20:.1f} MB, over the limit of "
                f"{MAX_VALUE_CHARS / 2**20:.0f} MB"
            )
        if self.chars + more_chars > self.limits.max_bytes:
            raise LlmftError(
                f"{self.path} holds more than {self.limits.max_bytes / 2**20:.0f} MB of text, the limit "
                "(LLMFT_MAX_DECODED_MB)"
            )


def columns(path, n: int) -> None:
    """Refuse a file with more than MAX_COLUMNS columns."""
    if n > MAX_COLUMNS:
        raise LlmftError(f"{path} has {n:,} columns, over the limit of {MAX_COLUMNS:,} (LLMFT_MAX_COLUMNS)")


def bundled_path(task: TaskSpec, split: str) -> Path:
    return ASSETS_DIR / task.name / f"{split}.jsonl"


def describe_source(source: str | None) -> str:
    """The source as recorded in run.json: `sample`, an absolute file path, or a hub id."""
    if source in (None, "", SAMPLE):
        return SAMPLE
    return parse_ref(source, "dataset", suffixes=FILE_SUFFIXES).value


def load_examples(
    task: TaskSpec,
    source: str | None = None,
    split: str = "train",
    text_column: str | None = None,
    target_columns: list[str] | tuple[str, ...] | None = None,
    label_column: str | None = None,
    label_map: list[str] | None = None,
    name: str | None = None,
    limits: Limits | None = None,
) -> list[Example]:
    """Load all examples of `split` from `source`.

    Args:
        task: the task whose columns and labels apply.
        source: None or "sample" for the bundled sample, a local file path, or a hub dataset id.
        split: the split for the bundled sample or a hub dataset; a local file is used whole.
        text_column, target_columns, label_column: override the task's column names.
        label_map: `value=Label` pairs that map the file's label values to the task's labels.
        name: what to call a local file in errors (the name the user gave it; default: its path).
        limits: caps on rows and decoded text of a local file (default: `LLMFT_MAX_ROWS`, `LLMFT_MAX_DECODED_MB`).
    Returns:
        The examples, in file order.
    """
    rows, where = source_rows(task, source, split, name, limits)
    if task.labels_from_data:
        raise LlmftError(
            f"task {task.name!r} lists no labels: train a run first (it reads them from its data and keeps "
            "them), or list labels in the task file"
        )
    overrides = {
        "text_column": text_column,
        "target_columns": target_columns,
        "label_column": label_column,
        "label_map": parse_label_map(label_map, task.labels),
    }
    return _to_examples(task, rows, where, overrides)


def source_rows(task: TaskSpec, source: str | None, split: str, name: str | None = None, limits=None):
    """The raw rows of `source` as (line number, record) pairs, and what to call the source in errors."""
    if source in (None, "", SAMPLE):
        path = bundled_path(task, split)
        if not path.exists():
            raise LlmftError(f"no bundled {split!r} sample for task {task.name!r} (expected {path})")
        rows, where = read_rows(path), str(path)
    elif (ref := parse_ref(source, "dataset", suffixes=FILE_SUFFIXES)).local:
        if not ref.path.is_file():
            raise LlmftError(f"data file not found: {name or source}")
        rows, where = read_rows(ref.path, name or source, limits), name or source
    else:
        rows, where = _read_hub(ref.value, split, _Counter(source, limits or Limits())), f"{source} [{split}]"
    if not rows:
        raise LlmftError(f"no examples in {where}")
    return rows, where


def infer_labels(task: TaskSpec, source: str | None, split: str, label_column: str | None = None) -> tuple:
    """The class names of a task that lists none: the distinct values of its label column, as written
    (case kept), in numeric order when they are all whole numbers and in sorted order otherwise."""
    rows, where = source_rows(task, source, split)
    column = label_column or task.label_column
    _require_columns([column], set(rows[0][1]), where)
    values = {str(row.get(column)).strip() for _, row in rows if row.get(column) is not None}
    values.discard("")
    if len({v.lower() for v in values}) != len(values):
        clash = sorted(v for v in values if sum(w.lower() == v.lower() for w in values) > 1)
        raise LlmftError(
            f"{where}: labels in column {column!r} differ only by case ({', '.join(clash)}); "
            "write them one way, or list the labels in the task file"
        )
    if len(values) < 2:
        raise LlmftError(
            f"{where}: column {column!r} has one label only ({', '.join(values) or 'none'}); "
            "a classifier needs at least two"
        )
    if len(values) > MAX_LABELS:
        raise LlmftError(f"{where}: column {column!r} has {len(values)} distinct values, over {MAX_LABELS} labels")
    if all(re.fullmatch(r"[+-]?[0-9]+", v) for v in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


def sample_examples(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A deterministic sample of `n` examples (all when n is None or larger), kept in source order."""
    if n is None or n >= len(examples):
        return list(examples)
    if n < 1:
        raise LlmftError(f"sample size must be at least 1, got {n}")
    picked = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in picked]


def validation_size(n: int, val_split: float | None) -> int:
    """Rows `val_split` asks for out of `n`: a fraction below 1 (rounded, at least 1), a count from 1, 0 for none."""
    if not val_split:
        return 0
    return max(1, round(val_split * n)) if val_split < 1 else int(val_split)


def validation_count(n: int, val_split: float | None) -> int:
    """`validation_size` rows to hold out of `n` training rows.

    Raises:
        LlmftError: it would leave no row to train on.
    """
    count = validation_size(n, val_split)
    if count and count >= n:
        raise LlmftError(
            f"val-split {val_split:g} holds out {count} of {n} training rows, leaving none to train on; "
            "give a smaller fraction or count, or 0 for no validation"
        )
    return count


def carve_validation(examples: list[Example], val_split: float | None, seed: int):
    """(training rows, validation rows): `validation_count` rows drawn by seed, the rest for training, each in
    source order."""
    count = validation_count(len(examples), val_split)
    held = set(random.Random(seed + 1).sample(range(len(examples)), count)) if count else set()
    train = [ex for i, ex in enumerate(examples) if i not in held]
    return train, [ex for i, ex in enumerate(examples) if i in held]


def is_hub_source(source: str | None) -> bool:
    """Whether `source` is a hub dataset id (not the bundled sample, not a local file)."""
    return source not in (None, "", SAMPLE) and not parse_ref(source, "dataset", suffixes=FILE_SUFFIXES).local


MAX_TEXT_CHARS = 20_000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def normalize_text(text: str | None, max_chars: int = MAX_TEXT_CHARS) -> tuple[str, str | None]:
    """Clean one user text for a model: drop control characters (keeping newlines and tabs), strip, and cut
    to `max_chars`.

    Returns:
        (text, notice): notice says what was cut, or None.
    Raises:
        LlmftError: when nothing is left.
    """
    text = _CONTROL.sub("", text or "").strip()
    if not text:
        raise LlmftError("the text is empty: type or pick an example")
    if len(text) > max_chars:
        return text[:max_chars], f"text cut to its first {max_chars:,} characters (of {len(text):,})"
    return text, None


def read_rows(path: Path, name: str | None = None, limits: Limits | None = None) -> list[tuple[int, dict]]:
    """Rows of a local file as (line number, record) pairs, read as a stream within `limits`; errors call
    the file `name` (default: its path)."""
    try:
        return _read_rows(Path(path), _Counter(path, limits or Limits()))
    except LlmftError as err:
        raise LlmftError(str(err).replace(str(path), name or str(path))) from None


def _read_rows(path: Path, counter: _Counter) -> list[tuple[int, dict]]:
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        allowed = ", ".join(FILE_SUFFIXES)
        raise LlmftError(f"unsupported file type {suffix or '(none)'} for {path}; use one of {allowed}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise LlmftError(f"{path} is {size / 2**20:.0f} MB, over the {MAX_FILE_BYTES / 2**20:.0f} MB limit")
    if size == 0:
        raise LlmftError(f"{path} is empty")
    if suffix != ".parquet" and b"\x00" in path.open("rb").read(8192):
        raise LlmftError(f"{path} is a binary file, not {suffix[1:].upper()} text")
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path, counter)
        if suffix == ".json":
            return _read_json(path, counter)
        if suffix == ".parquet":
            return _read_parquet(path, counter)
        return _read_delimited(path, "\t" if suffix == ".tsv" else ",", counter)
    except UnicodeDecodeError as err:
        raise LlmftError(f"{path} is not UTF-8 text (byte {err.start}): save it as UTF-8") from None


def _read_parquet(path: Path, counter: _Counter) -> list[tuple[int, dict]]:
    """Record batches of 64 rows. Before anything is decoded, the file's metadata is checked (columns; declared rows
    and decoded size for a full read; each column chunk's decoded size, whose dictionary page is decoded whole, on
    every path, a preview's too); text columns are read as dictionaries, so a batch's decoded size is known, and
    refused, before its rows are built (a few rows that point at one huge dictionary string)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        schema = meta.schema.to_arrow_schema()
        declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError and others for a damaged file
        raise LlmftError(f"{path} is not a readable Parquet file ({type(err).__name__})") from None
    limits = counter.limits
    columns(path, meta.num_columns)
    if limits.stop_at is None:
        if meta.num_rows > limits.max_rows:
            raise LlmftError(f"{path} has {meta.num_rows:,} rows, over the limit of {limits.max_rows:,}")
        if declared > limits.max_bytes:
            raise LlmftError(
                f"{path} decodes to {declared / 2**20:.0f} MB, over the limit of {limits.max_bytes / 2**20:.0f} MB"
            )
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            chunk = meta.row_group(g).column(c)
            if chunk.total_uncompressed_size > limits.max_chunk_bytes:
                raise LlmftError(
                    f"{path}: column {chunk.path_in_schema} of row group {g} decodes to "
                    f"{chunk.total_uncompressed_size / 2**20:.0f} MB, over the limit of "
                    f"{limits.max_chunk_bytes / 2**20:.0f} MB (write it with smaller row groups)"
                )
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    rows = []
    try:
        parquet = pq.ParquetFile(path, read_dictionary=text)
        for batch in parquet.iter_batches(batch_size=64):
            counter.check(*_decoded_size(batch))
            for record in batch.to_pylist():
                if counter.full():
                    return rows
                counter.add(record)
                rows.append((counter.rows, record))
    except LlmftError:
        raise
    except Exception as err:
        raise LlmftError(f"{path} is not a readable Parquet file ({type(err).__name__})") from None
    return rows


def _decoded_size(batch) -> tuple[int, int]:
    """(characters, longest cell) a record batch's text columns decode to, from the dictionary's value lengths
    taken at each row's index: nothing is materialised. Other columns count their Arrow buffers."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = longest = 0
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            lengths = pc.binary_length(column)
        else:
            total += column.nbytes
            continue
        total += pc.sum(lengths).as_py() or 0
        longest = max(longest, pc.max(lengths).as_py() or 0)
    return total, longest


def _lines(f, path):
    """(line number, line) of an open text file, refusing a line longer than MAX_LINE_CHARS before reading it all."""
    line_no = 0
    while line := f.readline(MAX_LINE_CHARS + 1):
        line_no += 1
        if len(line) > MAX_LINE_CHARS:
            raise LlmftError(f"{path} line {line_no} is longer than the limit of {MAX_LINE_CHARS // 2**20} MB")
        yield line_no, line


def _read_jsonl(path: Path, counter: _Counter) -> list[tuple[int, dict]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in _lines(f, path):
            if counter.full():
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise LlmftError(f"{path} line {line_no}: not valid JSON ({err.msg})") from None
            except RecursionError:
                raise LlmftError(f"{path} line {line_no}: JSON nested too deeply") from None
            if not isinstance(record, dict):
                raise LlmftError(f"{path} line {line_no}: expected a JSON object, got {type(record).__name__}")
            counter.add(record)
            rows.append((line_no, record))
    return rows


def _read_json(path: Path, counter: _Counter) -> list[tuple[int, dict]]:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise LlmftError(
            f"{path} is {size / 2**20:.0f} MB, over the limit of {MAX_JSON_BYTES // 2**20} MB for a .json file, which "
            "is parsed whole: write it as JSONL (one object per line), which is read as a stream"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LlmftError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise LlmftError(f"{path}: JSON nested too deeply") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise LlmftError(f'{path}: expected a JSON list of objects (or {{"data": [...]}})')
    rows = []
    for i, record in enumerate(data):
        if counter.full():
            break
        counter.add(record)
        rows.append((i + 1, record))
    return rows


def _read_delimited(path: Path, sep: str, counter: _Counter) -> list[tuple[int, dict]]:
    import pandas as pd

    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<svg", b"<?xml")):
        raise LlmftError(f"{path} looks like HTML/XML, not a {'TSV' if sep == chr(9) else 'CSV'} file")
    with open(path, encoding="utf-8") as f:  # the header first: a 10 MB line can name a million columns
        header = next(_lines(f, path), (1, ""))[1]
    columns(path, len(next(csv.reader([header], delimiter=sep), [])))
    rows = []
    try:
        # In chunks: rows are counted (and reading stops) as they are parsed, never all at once.
        chunks = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8", chunksize=4096)
        for chunk in chunks:
            for record in chunk.to_dict("records"):
                if counter.full():
                    return rows
                counter.add(record)
                rows.append((counter.rows + 1, record))  # line numbers as an editor shows them: header = 1
    except pd.errors.EmptyDataError:
        raise LlmftError(f"{path} has no header or rows") from None
    except pd.errors.ParserError as err:
        raise LlmftError(f"{path}: {str(err).strip().splitlines()[-1]}") from None
    return rows


def _read_hub(dataset_id: str, split: str, counter: _Counter) -> list[tuple[int, dict]]:
    import datasets

    check_hub_size(dataset_id, "dataset", split)  # the split's files' sizes from the hub, before any is fetched
    try:
        # With a cap on hub data (a public server), the split is streamed: only the rows read are downloaded.
        ds = datasets.load_dataset(dataset_id, split=split, **({"streaming": True} if max_hub_mb() else {}))
    except ValueError as err:  # e.g. an unknown split
        raise LlmftError(f"cannot load split {split!r} of dataset {dataset_id}: {first_line(err)}") from None
    except Exception as err:  # connection and not-found errors come in many types
        raise LlmftError(
            f"cannot load dataset {dataset_id} from the hub ({type(err).__name__}); offline, pass a local file "
            "with --data"
        ) from None
    rows = []
    for row in ds:
        if counter.full():
            break
        counter.add(row)
        rows.append((counter.rows, row))
    return rows


def _require_columns(names, present: set, where: str) -> None:
    for name in names:
        if name not in present:
            raise LlmftError(f"column {name!r} not found in {where}; columns are: {', '.join(sorted(present))}")


def _to_examples(task, rows, where, overrides) -> list[Example]:
    present = set(rows[0][1])
    columns = task.kind.columns(task, present, overrides)
    _require_columns([c for names in columns.values() for c in names], present, where)
    examples = []
    for line_no, row in rows:
        for text_col in columns["text"]:
            text = row.get(text_col)
            if task.input_columns and isinstance(text, int | float) and not isinstance(text, bool):
                text = str(text)  # a number is fine in a prompt over several columns
            if not isinstance(text, str) or not text.strip():
                raise LlmftError(f"{where} line {line_no}: empty or missing {text_col!r}")
        if task.input_columns:  # a prompt over several columns: the example's text is the filled prompt
            text = task.render(row)
        ident = str(row.get("id", row.get("fname", f"line {line_no}")))  # a file without ids: where the row is
        try:
            fields = task.kind.parse_row(task, row, columns, overrides)
        except LlmftError as err:
            raise LlmftError(f"{where} line {line_no}: {err}") from None
        examples.append(Example(ident, text, **fields))
    return examples


def parse_label_map(pairs: list[str] | None, labels: tuple[str, ...]) -> dict[str, int]:
    """`["pos=Positive", "neg=Negative"]` as {file value (lower case): label id}; a target must be a label."""
    mapping = {}
    for pair in pairs or []:
        value, sep, target = pair.partition("=")
        if not sep or not value.strip():
            raise LlmftError(f"label mapping {pair!r} must look like value=Label")
        mapping[value.strip().lower()] = normalize_label(target.strip(), labels)
    return mapping


LABEL_SYNONYMS = (
    ("no", "false", "n", "f", "bad", "neg", "negative", "0"),
    ("yes", "true", "y", "t", "good", "pos", "positive", "1"),
)
"""Values that mean "the first label" or "the second label" of a two-label task (for a guessed mapping)."""


def guess_label_map(values, labels: tuple[str, ...]) -> list[str]:
    """`value=Label` guesses for the label values that do not already name a label (pre-filled in the form).

    A value that is a label's name, id or unique prefix needs no mapping; for two-label tasks, yes/no,
    true/false, good/bad, 1/0 and the like map to the second / first label.
    """
    guesses = []
    for value in dict.fromkeys(str(v).strip() for v in values if str(v).strip()):
        try:
            normalize_label(value, labels)
            continue
        except LlmftError:
            pass
        for k, synonyms in enumerate(LABEL_SYNONYMS):
            if len(labels) == 2 and value.lower() in synonyms:
                guesses.append(f"{value}={labels[k]}")
    return guesses


TEXT_NAMES = ("text", "review", "sentence", "content", "document", "dialogue", "input", "prompt", "question")
LABEL_NAMES = ("label", "labels", "sentiment", "class", "category", "target", "y")
TARGET_NAMES = ("summary", "target", "output", "answer", "reference", "response")


def guess_columns(task: TaskSpec | None, rows: list[tuple[int, dict]]) -> dict[str, str | None]:
    """Column guesses from names and contents: {"text_column", "target_columns", "label_column"}.

    The task's own column names win (no task: the user's own, not defined yet), then common names
    (`review`, `sentiment`, `summary`...); failing
    those, the text is the column with the longest values and the label the one with the fewest distinct
    values.
    """
    records = [r for _, r in rows[:200]]
    columns = list(records[0]) if records else []
    lengths = {c: sum(len(str(r.get(c, ""))) for r in records) / max(len(records), 1) for c in columns}
    distinct = {c: len({str(r.get(c)) for r in records}) for c in columns}

    def named(preferred, names, exclude=()):
        lowered = {c.lower(): c for c in columns if c not in exclude}
        for name in (*preferred, *names):
            if name and name.lower() in lowered:
                return lowered[name.lower()]
        return None

    text = named([task and task.text_column], TEXT_NAMES) or (max(lengths, key=lengths.get) if lengths else None)
    label = named([task and task.label_column], LABEL_NAMES, exclude=[text])
    if label is None and len(columns) > 1:
        label = min((c for c in columns if c != text), key=lambda c: distinct[c])
    others = [c for c in columns if c != text]
    target = named(list(task.target_columns) if task else [], TARGET_NAMES, exclude=[text])
    if target is None and others:
        target = max(others, key=lambda c: lengths[c])
    return {"text_column": text, "target_columns": target, "label_column": label}
