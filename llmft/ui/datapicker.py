"""A data source picker shared by Fine-tune and Evaluate: bundled sample, hub dataset (and split) or an upload
with a preview, guessed column mapping and a label mapping pre-filled with the obvious guesses."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import gradio as gr

from ..data import (
    FILE_SUFFIXES,
    SAMPLE,
    Limits,
    bundled_path,
    guess_columns,
    guess_label_map,
    load_examples,
    read_rows,
)
from ..errors import LlmftError
from ..refs import is_hub_id, looks_local
from ..runs import reserve_storage
from ..tasks import get_task, task_names
from .common import DOWNLOADS, MAX_UPLOAD, visible_task, with_user
from .guard import MODEL_WORK

UPLOAD_TYPES = [".csv", ".jsonl", ".json", ".tsv", ".parquet"]
UPLOAD_LIMITS = Limits(
    max_rows=int(os.environ.get("LLMFT_MAX_UPLOAD_ROWS", "100000")),
    max_bytes=int(float(os.environ.get("LLMFT_MAX_UPLOAD_DECODED_MB", "200")) * 2**20),
    max_chunk_bytes=64 * 2**20,
)
"""What one upload may hold on a shared server: rows, decoded text (a 20 MB file of short rows is millions of
rows) and a Parquet column chunk's decoded size (what one decoding step holds). The CLI's limits are larger
(`data.MAX_ROWS`)."""
PREVIEW_LIMITS = dataclasses.replace(UPLOAD_LIMITS, stop_at=5000)
"""A preview reads the first rows only (the label-mapping guesses look at up to 5,000)."""
COLUMNS = {"text_column": "Text column", "target_columns": "Reference column", "label_column": "Label column"}
PREVIEW_ROWS = 5
BLANK = ("(none: the task's column)", "")
"""A column picker's first choice: no column of the file (the task's own name for it)."""


def column_visibility(task_name: str, own_type: str | None = None) -> list:
    """Show the column pickers (and the label mapping) that the task's kind reads; for your own task, those
    its type reads (all of them when neither is known)."""
    from ..tasks import TYPES

    if task_name in task_names():
        fields = get_task(task_name).kind.column_fields
    elif own_type in TYPES:
        fields = TYPES[own_type].column_fields
    else:
        return [gr.update(visible=True) for _ in (*COLUMNS, "label_map")]
    return [gr.update(visible=name in fields) for name in COLUMNS] + [gr.update(visible="label_column" in fields)]


def preview(task, path, *current):
    """The first rows of an upload, the column choices with guesses (the user's earlier choices are kept when
    the new file has those columns), and the label mapping (the user's own is kept; else the guesses).

    `current`: the column pickers' values, then the label mapping's."""
    *current, current_map = current
    if not path:
        return gr.update(value=None), *(gr.update(choices=[], value=None) for _ in COLUMNS), gr.update(value="")
    # `task`: the task the visitor may use, or None (your own task, not saved yet; or a name not theirs)
    refuse_url(path)
    rows = read_rows(Path(path), Path(path).name, PREVIEW_LIMITS)
    if not rows:
        raise LlmftError(f"{Path(path).name} has no rows")
    import pandas as pd

    frame = pd.DataFrame([r for _, r in rows[:PREVIEW_ROWS]]).astype(str)
    names = list(frame.columns)
    guesses = guess_columns(task, rows)
    chosen = [cur if cur in names else guesses[name] for name, cur in zip(COLUMNS, current)]
    label_col = chosen[list(COLUMNS).index("label_column")]
    mapping = current_map or ""
    if not mapping and task and task.labels and label_col:
        mapping = ", ".join(guess_label_map([r.get(label_col) for _, r in rows[:5000]], task.labels))
    updates = [gr.update(choices=[BLANK, *names], value=value) for value in chosen]
    return frame, *updates, gr.update(value=mapping)


def refuse_url(path: str) -> None:
    """An upload is a file the server received, never a URL for the server to fetch."""
    if "://" in str(path) or str(path).lower().startswith(("http:", "https:", "file:")):
        raise LlmftError("an upload must be a file sent with the request, not a URL")


def keep_upload(ctx, user, path: str) -> str:
    """Copy an upload into `user`'s upload folder (`Access.upload_home`: on a Space their own, counted in their
    quota) so run.json points at a file that outlives the request; the copy is named
    `<hash>-<the user's file name>` (see `results.data_label`)."""
    src = Path(path)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    dest = ctx.access.upload_home(ctx.runs_dir, user) / f"{digest}-{src.name}"
    if not dest.exists():
        size = src.stat().st_size
        ctx.access.make_room(ctx.runs_dir, user, size / 2**20)  # the visitor's quota (or the anonymous cap)
        reserve_storage(ctx.runs_dir, DOWNLOADS, size)  # and the server's storage for all uploads
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    return str(dest)


_ROW_COUNTS: dict = {}
"""Rows of files already counted, by (path, size, mtime): the form's plan asks again at every change."""


def count_rows(path: Path, name: str) -> int:
    """The rows of a data file (within the upload limits), counted once per version of the file."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _ROW_COUNTS:
        if len(_ROW_COUNTS) > 256:
            _ROW_COUNTS.clear()
        _ROW_COUNTS[key] = len(read_rows(path, name, UPLOAD_LIMITS))
    return _ROW_COUNTS[key]


class DataPicker:
    """The widgets; `inputs` go to a handler in `names` order, and `resolve` turns their values into config
    fields."""

    def __init__(self, ctx, label: str, sources: tuple[str, ...], prefix: str, with_split: bool = False):
        """`prefix` starts the widgets' elem_ids (`<prefix>-source`, `<prefix>-upload`, `<prefix>-text_column`...)."""
        self.ctx, self.sources = ctx, sources
        self.source = gr.Radio(list(sources), value=sources[0], label=label, elem_id=f"{prefix}-source")
        with gr.Row():
            self.hub_id = gr.Textbox(label="Hub dataset id", placeholder="stanfordnlp/imdb", visible=False)
            self.split = gr.Textbox(label="Split", placeholder="test", visible=False) if with_split else None
            self.upload = gr.File(
                label=f"Upload ({', '.join(UPLOAD_TYPES)}; at most {MAX_UPLOAD})",
                file_types=UPLOAD_TYPES,
                type="filepath",
                visible=False,
                elem_id=f"{prefix}-upload",
            )
        self.table = gr.Dataframe(label="Preview (first rows)", interactive=False, max_height=220, visible=False)
        with gr.Row():
            self.columns = {
                name: gr.Dropdown(
                    [], label=f"{label} (blank = the task's)", allow_custom_value=True, elem_id=f"{prefix}-{name}"
                )
                for name, label in COLUMNS.items()
            }
            self.label_map = gr.Textbox(
                label="Label mapping",
                elem_id=f"{prefix}-label_map",
                placeholder="pos=Positive, neg=Negative",
                info="value=Label pairs for label values that are not the task's label names or ids",
            )
        self.kind_fields = [*self.columns.values(), self.label_map]
        """Widgets shown only for kinds that read them (see `column_visibility`; set on page load too)."""
        extra = [self.split] if self.split is not None else []
        self.names = ["source", "hub_id", *(["split"] if extra else []), "upload", *COLUMNS, "label_map"]
        self.inputs = [self.source, self.hub_id, *extra, self.upload, *self.columns.values(), self.label_map]

    def wire(self, task, own_type=None) -> None:
        """Connect the picker's events; `task` is the component that holds the task name, `own_type` the one
        that holds your own task's type (Fine-tune)."""
        hub = [self.hub_id, *([self.split] if self.split is not None else [])]

        def on_source(choice):
            """The widgets of the chosen source; column choices and the mapping start blank for each choice (an
            upload's preview fills them), never left over from another source."""
            return (
                *(gr.update(visible=choice == "hub dataset") for _ in hub),
                gr.update(visible=choice == "upload"),
                gr.update(visible=choice == "upload"),
                *(gr.update(choices=[], value=None) for _ in self.columns),
                gr.update(value=""),
            )

        self.source.input(
            on_source, self.source, [*hub, self.upload, self.table, *self.columns.values(), self.label_map],
            api_name=False,
        )  # fmt: skip
        self.source.change(  # also when the app sets the source (a run picked in Evaluate)
            lambda choice: on_source(choice)[: len(hub) + 2], self.source, [*hub, self.upload, self.table],
            api_name=False,
        )  # fmt: skip
        outputs = [self.table, *self.columns.values(), self.label_map]
        self.upload.change(
            with_user(self.ctx, lambda user, name, *args: preview(visible_task(self.ctx, user, name), *args)),
            [task, self.upload, *self.columns.values(), self.label_map],
            outputs,
            api_name="preview",
            concurrency_id=MODEL_WORK,
            show_progress_on=[self.table],  # an error marks the preview only, never the column pickers
        )
        kinds = [task, *([own_type] if own_type is not None else [])]
        for trigger in kinds:
            trigger.change(column_visibility, kinds, self.kind_fields, api_name=False)

    def rows(self, task, values: dict) -> int | None:
        """How many rows the chosen data has, without keeping anything: the bundled sample's training rows, an
        upload's rows; None for a hub dataset (counted when training reads it) or nothing chosen yet."""
        source = values.get("source")
        if source == "upload":
            upload = values.get("upload")
            if not upload:
                return None
            refuse_url(upload)
            return count_rows(Path(upload), Path(upload).name)
        if source == "bundled sample" and task is not None:
            path = bundled_path(task, task.train_split)
            return count_rows(path, path.name) if path.is_file() else None
        return None

    def resolve(self, user, task_name, values: dict) -> dict:
        """Config fields (data, split, columns, label_map) from the picker's values; an upload is checked here,
        with errors that name the file as its user named it, before it is kept (in `user`'s upload folder).
        `task_name`: a name, a task file, or the `TaskSpec` itself (a run's, with its labels)."""
        task = get_task(task_name) if isinstance(task_name, str) else task_name
        fields = {name: None for name in (*COLUMNS, "label_map")}
        for name in task.kind.column_fields:
            chosen = values.get(name)
            fields[name] = ([chosen] if name == "target_columns" else chosen) if chosen else None
        if "label_column" in task.kind.column_fields:
            pairs = [p.strip() for p in (values.get("label_map") or "").split(",") if p.strip()]
            fields["label_map"] = pairs or None
        source = values.get("source")
        if source == "hub dataset":
            data = (values.get("hub_id") or "").strip()
            if not data:
                raise LlmftError("enter a hub dataset id, or choose another data source")
            if not is_hub_id(data) or looks_local(data, FILE_SUFFIXES):  # never a file near the server's folder
                raise LlmftError(f"not a hub dataset id: {data[:80]!r} (owner/name; local files go through Upload)")
            split = (values.get("split") or "").strip() or None
            return {"data": data, "split": split, **fields} if self.split is not None else {"data": data, **fields}
        if source == "upload":
            upload = values.get("upload")
            if not upload:
                raise LlmftError("upload a data file, or choose another data source")
            refuse_url(upload)
            name = Path(upload).name
            if task.labels or not task.label_column:
                # The same checks training makes, within the upload limits.
                load_examples(task, upload, "train", name=name, limits=UPLOAD_LIMITS, **fields)
            else:  # a new task file's labels are read from the data when training starts
                read_rows(Path(upload), name, UPLOAD_LIMITS)
            return {"data": keep_upload(self.ctx, user, upload), **fields}
        # The bundled sample has the task's own columns: choices made for an earlier upload never reach it.
        return {"data": SAMPLE, **{name: None for name in fields}}
