"""Task registry: each task is data (model, dataset, columns, prompt, presets), as in lm-evaluation-harness.

Two presets per task: `full` reproduces the origin notebooks' settings; `quick` is sized to finish in about a
minute on a laptop CPU with the offline model.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LlmftError
from .kinds import CLASSIFICATION, SEQ2SEQ, Kind, get_kind
from .registry import Registry
from .schema import LR_SCHEDULERS, bound_error, field_type, param

__all__ = [
    "CLASSIFICATION",
    "SEQ2SEQ",
    "Preset",
    "TaskSpec",
    "get_task",
    "load_task_file",
    "register_task",
    "task_names",
    "task_of_run",
]
PLACEHOLDER = re.compile(r"\{([^{}\n]+)\}")
"""`{column}` in a prompt template."""
GENERATION_METRICS = ("rouge", "bertscore", "exact_match", "chrf")
"""Per-example metrics a generation task may choose (`overall` is the mean of the chosen ones)."""


@dataclass(frozen=True)
class Preset:
    """Training and evaluation defaults for one task at one size.

    The bounds declared here are the only ones: `TrainConfig`'s field of the same name takes them
    (`schema.limits_of`), and a task file's preset settings are checked against them.
    """

    lora_r: int = param(help="LoRA rank", required=True, bounds=(1, 1024))
    lora_alpha: int = param(
        help="LoRA scaling numerator (scale = alpha / r)", required=True, bounds=(0, 4096), interval="(]"
    )
    lora_dropout: float = param(help="dropout on the LoRA input", required=True, bounds=(0, 1), interval="[)")
    target_modules: tuple[str, ...] = param(
        help="module names LoRA adapts; mapped to the loaded architecture's names (q -> q_lin / query / q_proj)",
        required=True,
    )
    learning_rate: float = param(help="peak AdamW learning rate", required=True, bounds=(0, 1), interval="(]")
    max_steps: int | None = param(
        help="optimizer steps; None means train for `epochs`", required=True, bounds=(1, 1_000_000)
    )
    epochs: float = param(1.0, "epochs when `max_steps` is None", bounds=(0, 1000), interval="(]")
    batch_size: int = param(8, "per-device train batch size", bounds=(1, 1024))
    train_samples: int | None = param(
        help="training examples drawn from the train split (None or 0 = all)", bounds=(0, 10_000_000)
    )
    eval_n: int = param(50, "test examples evaluated", bounds=(1, 1_000_000))
    val_split: float = param(
        0.1,
        "validation rows carved from the training data by seed: a fraction below 1, a count from 1, 0 for none "
        "(a hub dataset's own validation split is used instead when it has one)",
        bounds=(0, 10_000_000),
    )
    val_generate: int = param(
        0,
        "validation rows a generation task generates and scores at each validation (its headline picks the kept "
        "step); 0: the validation loss picks it",
        bounds=(0, 100_000),
    )
    early_stopping: int | None = param(
        help="stop after this many validations without improvement (None: train to the end, keep the best)",
        bounds=(1, 1000),
    )
    warmup_ratio: float = param(
        0.0, "share of the steps over which the learning rate rises from 0", bounds=(0, 1), interval="[)"
    )
    lr_scheduler: str = param("linear", "learning-rate schedule after warmup", choices=LR_SCHEDULERS)
    weight_decay: float = param(0.0, "AdamW weight decay", bounds=(0, 1))
    grad_accum: int = param(1, "batches accumulated into one optimizer step", bounds=(1, 1024))
    base_dropout: float | None = param(
        help="dropout inside the frozen base model while training (None: the model's own)",
        bounds=(0, 1),
        interval="[)",
    )
    time_budget: float | None = param(
        help="seconds of training: steps are set to fit after timing the first ones (the length is then an upper "
        "bound). None or 0: train the full length",
        bounds=(0, 604_800),
    )


@dataclass(frozen=True)
class TaskSpec:
    """Everything llmft needs to train and evaluate one task."""

    name: str
    kind: Kind
    """A `kinds.Kind` (or a registered kind's name): seq2seq (generate a summary) or classification."""
    description: str
    model: str
    """Default base model (hub id)."""
    dataset: str
    """Default hub dataset id; offline, the bundled sample in `assets/<name>/` is used."""
    text_column: str
    target_columns: tuple[str, ...] = ()
    """Reference column(s) for seq2seq tasks."""
    label_column: str | None = None
    """Label column for classification tasks."""
    labels: tuple[str, ...] = ()
    """Class names in label-id order."""
    prompt: str = "{text}"
    """Template applied to the input: `{text}` is the text column; any other `{column}` placeholders name the
    input columns themselves, filled from each row (then `text_column` is unused)."""
    max_input_tokens: int = 512
    max_target_tokens: int = 128
    train_split: str = "train"
    validation_split: str | None = "validation"
    """A hub dataset's split used for validation when it exists (None: always carve from the training data)."""
    test_split: str = "test"
    offline_model: str | None = None
    """Model used when the default is unreachable: `minilm` means the packaged all-MiniLM-L6-v2."""
    presets: dict[str, Preset] = field(default_factory=dict)
    metrics: tuple[str, ...] = ("rouge", "bertscore")
    """Per-example metrics of a generation task (from `GENERATION_METRICS`)."""
    definition: dict | None = field(default=None, compare=False)
    """The task file's content (labels filled in) for a task defined by a file; stored in run.json, so the
    run evaluates and exports without the file."""

    def __post_init__(self):
        object.__setattr__(self, "kind", get_kind(self.kind))
        prompt_fields(self.prompt)
        unknown = [m for m in self.metrics if m not in GENERATION_METRICS]
        if unknown or not self.metrics:
            raise ValueError(f"metrics of task {self.name!r} must be among {', '.join(GENERATION_METRICS)}")
        self.kind.validate(self)
        if not {"quick", "full"} <= set(self.presets):
            raise ValueError(f"task {self.name!r} needs 'quick' and 'full' presets")

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise LlmftError(f"unknown preset {name!r} for task {self.name!r}; choose from {', '.join(self.presets)}")
        return self.presets[name]

    @property
    def labels_from_data(self) -> bool:
        """A task file that lists no labels: they are read from the training data (and kept in the run)."""
        return self.definition is not None and bool(self.label_column) and not self.labels

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The columns a prompt with `{column}` placeholders reads (empty: the prompt takes `{text}`)."""
        fields = tuple(dict.fromkeys(PLACEHOLDER.findall(self.prompt)))
        return () if fields == ("text",) else fields

    def render(self, row: dict) -> str:
        """The prompt filled from a data row's `input_columns` (the example's text)."""
        # One pass over the template: a value that contains "{other}" is not filled in again.
        return PLACEHOLDER.sub(lambda m: str(row[m.group(1)]).strip(), self.prompt)

    def format_prompt(self, text: str) -> str:
        if self.input_columns:  # the text is the rendered prompt already
            return text
        # str.replace rather than str.format: user text may contain braces.
        return self.prompt.replace("{text}", text)

    def with_labels(self, labels) -> TaskSpec:
        """This task with its class names (read from training data when the task file gives none)."""
        labels = tuple(labels)
        definition = None if self.definition is None else {**self.definition, "labels": list(labels)}
        return dataclasses.replace(self, labels=labels, definition=definition)


def prompt_fields(prompt: str) -> list[str]:
    """The placeholders of a prompt template; ValueError when it has none, or mixes `{text}` with columns."""
    fields = PLACEHOLDER.findall(prompt)
    if not fields:
        raise ValueError("prompt has no placeholder: put {text} or {column} where the input goes")
    if "text" in fields and len(set(fields)) > 1:
        raise ValueError("prompt mixes {text} with {column} placeholders; name every column")
    return fields


_REGISTRY = Registry("task")


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry; a duplicate name raises."""
    return _REGISTRY.add(spec.name, spec)


TASK_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def get_task(name: str) -> TaskSpec:
    """The registered task called `name`, or the task defined by the task file at path `name`; raise
    `LlmftError` listing the known tasks otherwise."""
    if name not in _REGISTRY and str(name).lower().endswith(TASK_FILE_SUFFIXES):
        return load_task_file(name)
    return _REGISTRY.lookup(name)


def use_task(spec: TaskSpec) -> TaskSpec:
    """Make a file-defined task known by its name in this process (the app lists it; runs find it).

    The same definition again is fine; another definition under a known name is refused.
    """
    known = _REGISTRY.get(spec.name)
    if known is None:
        return _REGISTRY.add(spec.name, spec)
    if known is spec:
        return known
    if known.definition is None:
        raise LlmftError(f"task name {spec.name!r} is a built-in task: give your task another name")
    if not _same_definition(known.definition, spec.definition):
        if (
            not known.labels
            and spec.labels
            and _same_definition({**known.definition, "labels": list(spec.labels)}, spec.definition)
        ):
            _REGISTRY[spec.name] = spec  # the same task, its labels now read from data
            return spec
        raise LlmftError(f"a different task called {spec.name!r} is already defined: give this one another name")
    return known


def _same_definition(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if v not in (None, [], {})} == {
        k: v for k, v in b.items() if v not in (None, [], {})
    }


def task_of_run(info: dict) -> TaskSpec:
    """The task a run was trained on: its stored definition (a file task) or the registered task."""
    definition = info.get("task_def")
    if isinstance(definition, dict):
        return task_from_definition(definition, f"run {info.get('name')}")
    return get_task(str(info.get("task")))


# --- task files -----------------------------------------------------------------------------------------

TYPES = {"generate": SEQ2SEQ, "classify": CLASSIFICATION}
"""A task file's `type` -> its kind (a generation task on a decoder-only model becomes a causal-LM task)."""
TASK_FILE_KEYS = {
    "name": "the task's name (letters, digits, - and _)",
    "type": "generate or classify",
    "description": "one line about the task",
    "prompt": "template: {text} for text_column, or {column} placeholders",
    "text_column": "input column when the prompt uses {text}",
    "target_columns": "reference column(s) (generate)",
    "label_column": "label column (classify)",
    "labels": "class names (classify; default: read from the training data)",
    "model": "default base model",
    "dataset": "default hub dataset",
    "metrics": f"generate: some of {', '.join(GENERATION_METRICS)}",
    "presets": "quick / full overrides of the type's presets",
    "max_input_tokens": "input tokens kept",
    "max_target_tokens": "target tokens kept (generate)",
}
DEFAULT_MODELS = {"generate": "HuggingFaceTB/SmolLM2-135M-Instruct", "classify": "distilbert-base-uncased"}
"""Base models of file tasks that name none: today's small instruct LLM; the origin's classifier."""
MAX_LABELS = 1000
MAX_PROMPT_CHARS = 20_000
"""A prompt template longer than this would crowd out the input."""


def load_task_file(path) -> TaskSpec:
    """Read a `.yaml`/`.json` task file, check it, and make its task known by name (`use_task`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LlmftError(f"task file not found: {path}")
    if path.stat().st_size > 1_000_000:
        raise LlmftError(f"task file {path.name} is over 1 MB; a task file is a few lines")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() == ".json":
            import json

            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # yaml and json raise many types, each naming the line
        raise LlmftError(f"task file {path.name} is not valid {path.suffix[1:].upper()}: {_first(err)}") from None
    return use_task(task_from_definition(data, f"task file {path.name}"))


TASK_FILE = "task.yaml"
"""A file task's definition kept in its run directory."""


def write_task_file(spec: TaskSpec, path) -> Path:
    """Write a file task's definition as YAML (atomically) and return the path."""
    import os
    import tempfile

    import yaml

    if spec.definition is None:
        raise LlmftError(f"task {spec.name!r} is built in: it has no task file")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        yaml.safe_dump(spec.definition, f, sort_keys=False, allow_unicode=True)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a task file is meant to be read, like run.json
    os.replace(tmp, path)
    return path


def save_task_definition(definition: dict, folder) -> Path:
    """Check a task definition (as a task file would hold it), make it known, and write it as
    `<folder>/<name>.yaml`; an existing file of another definition is never overwritten."""
    spec = use_task(task_from_definition(definition, "your task"))
    path = Path(folder) / f"{spec.name}.yaml"
    if path.is_file():
        try:
            import yaml

            if _same_definition(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, spec.definition):
                return path
        except Exception:  # an unreadable file is not ours to replace either
            pass
        raise LlmftError(f"a different task file {path.name} exists: give your task another name")
    return write_task_file(spec, path)


def _first(err) -> str:
    return " ".join(str(err).split())[:200]


def task_from_definition(data, where: str) -> TaskSpec:
    """A `TaskSpec` from a task file's content; every mistake is one `LlmftError` line naming `where`."""
    if not isinstance(data, dict):
        raise LlmftError(f"{where}: expected a mapping of keys (name, type, prompt, ...)")
    unknown = sorted(set(map(str, data)) - set(TASK_FILE_KEYS))
    if unknown:
        raise LlmftError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(TASK_FILE_KEYS)}")

    def text(key, default=None):
        value = data.get(key, default)
        if value is not None and not isinstance(value, str):
            raise LlmftError(f"{where}: {key} must be a string, got {type(value).__name__}")
        return value

    def names(key):
        value = data.get(key) or []
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            raise LlmftError(f"{where}: {key} must be a list of names")
        return [str(v).strip() for v in value]

    name = text("name")
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise LlmftError(f"{where}: name must be 1-64 letters, digits, '.', '-' or '_', got {name!r}")
    kind_type = text("type")
    if kind_type not in TYPES:
        raise LlmftError(f"{where}: type must be generate or classify, got {kind_type!r}")
    prompt = text("prompt", "{text}")
    try:
        fields = prompt_fields(prompt)
    except ValueError as err:
        raise LlmftError(f"{where}: {err}") from None
    text_column = text("text_column")
    if text_column and "text" not in fields:
        raise LlmftError(f"{where}: text_column is unused: the prompt names its columns ({', '.join(fields)})")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise LlmftError(f"{where}: prompt is {len(prompt):,} characters, over {MAX_PROMPT_CHARS:,}")
    generate = kind_type == "generate"
    targets, label_column = names("target_columns"), text("label_column")
    answers = set(targets) | ({label_column} if label_column else set())
    leaked = sorted(answers & ({text_column} if text_column else set(fields)))
    if leaked:
        raise LlmftError(f"{where}: the input reads {leaked[0]!r}, the column the model must predict")
    labels = names("labels")
    metrics = names("metrics") or ["rouge", "bertscore"]
    if generate:
        if not targets:
            raise LlmftError(f"{where}: a generate task needs target_columns")
        if label_column or labels:
            raise LlmftError(f"{where}: label_column and labels belong to classify tasks")
        bad = [m for m in metrics if m not in GENERATION_METRICS]
        if bad:
            raise LlmftError(f"{where}: unknown metric {bad[0]!r}; choose from {', '.join(GENERATION_METRICS)}")
    else:
        if not label_column:
            raise LlmftError(f"{where}: a classify task needs label_column")
        if targets or data.get("metrics"):
            raise LlmftError(f"{where}: target_columns and metrics belong to generate tasks")
        if len(labels) == 1:
            raise LlmftError(f"{where}: one label only ({labels[0]}); a classifier needs at least two")
        if any(not v for v in labels):
            raise LlmftError(f"{where}: a label is empty; every label needs a name")
        if len(set(labels)) != len(labels) or len({v.lower() for v in labels}) != len(labels):
            raise LlmftError(f"{where}: labels repeat (case ignored): {', '.join(labels)}")
        if len(labels) > MAX_LABELS:
            raise LlmftError(f"{where}: {len(labels)} labels, over the limit of {MAX_LABELS}")
    base = get_task("dialogue" if generate else "sentiment")
    presets = _file_presets(data.get("presets"), base, where)
    lengths = {}
    for key in ("max_input_tokens", "max_target_tokens"):
        value = data.get(key, getattr(base, key))
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 16384:
            raise LlmftError(f"{where}: {key} must be a whole number from 1 to 16384")
        lengths[key] = value
    definition = {k: data[k] for k in TASK_FILE_KEYS if k in data}
    definition["labels"] = labels
    if generate:
        definition["metrics"] = metrics
    model = text("model") or DEFAULT_MODELS[kind_type]
    try:
        return TaskSpec(
            name=name,
            kind=TYPES[kind_type],
            description=text("description") or f"{'Generation' if generate else 'Classification'} task {name}.",
            model=model,
            dataset=text("dataset") or "",
            text_column=text_column or "text",
            target_columns=tuple(targets),
            label_column=label_column,
            labels=tuple(labels),
            prompt=prompt,
            offline_model=None if generate or text("model") else base.offline_model,
            presets=presets,
            metrics=tuple(metrics) if generate else ("rouge", "bertscore"),
            definition=definition,
            **lengths,
        )
    except ValueError as err:
        raise LlmftError(f"{where}: {err}") from None


def _file_presets(value, base: TaskSpec, where: str) -> dict:
    """The type's presets with a task file's overrides (`presets: {quick: {max_steps: 80}}`)."""
    value = value or {}
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise LlmftError(f"{where}: presets must map quick / full to settings")
    known = {f.name for f in dataclasses.fields(Preset)}
    presets = dict(base.presets)
    for name, overrides in value.items():
        if name not in presets:
            raise LlmftError(f"{where}: unknown preset {name!r}; presets are quick and full")
        bad = sorted(set(overrides) - known)
        if bad:
            raise LlmftError(f"{where}: unknown preset setting {bad[0]!r}; settings: {', '.join(sorted(known))}")
        checked = {key: _preset_value(key, v, f"{where}: preset {name}") for key, v in overrides.items()}
        presets[name] = dataclasses.replace(presets[name], **checked)
    return presets


def _preset_value(key: str, value, where: str):
    """A task file's preset setting, checked for type and against the bounds of its `Preset` field."""
    f = Preset.__dataclass_fields__[key]
    kind = field_type(Preset, f)
    if kind is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) and v.strip() for v in items):
            raise LlmftError(f"{where}: {key} must be module names, e.g. [q, v] or all-linear")
        return tuple(v.strip() for v in items)
    if value is None and type(None) in typing.get_args(typing.get_type_hints(Preset)[key]):
        return None
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise LlmftError(f"{where}: {key} must be a whole number, got {value!r}")
    if kind is float and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise LlmftError(f"{where}: {key} must be a number, got {value!r}")
    value = float(value) if kind is float else value
    problem = bound_error(Preset, f, value)
    if problem:
        raise LlmftError(f"{where}: {key} {problem}")
    return value


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def builtin_task_names() -> list[str]:
    """The tasks llmft ships (not task files)."""
    return sorted(name for name in _REGISTRY if _REGISTRY.get(name).definition is None)


def _summarization(name: str, noun: str, what: str, dataset: str, max_input_tokens: int, full: Preset) -> TaskSpec:
    """A FLAN-T5 summarization task of the origin notebooks (they differ in data, length and `full` preset)."""
    # The quick preset is the same for both: two minutes of training (the steps that fit, timed on the first
    # ones) over up to 1,000 drawn rows, validated by loss as it goes (32 generated summaries would take longer
    # than the steps on two cores), the best step kept. No dropout in the frozen model: two minutes hold too
    # few steps for it to regularise anything. LoRA on every linear layer at 3e-3: chosen on the real
    # SmolLM2-135M-Instruct (the generation model that works offline) on the bundled dialogues, 30 held-out
    # rows, overall score after 60 s: all-linear 0.79 (7 steps), q,v 0.75 (11 steps), all-linear at 1e-3 0.68;
    # the base scores 0.19 (batches grouped by length then; in random batches, the default now, 0.985 after 60 s).
    # FLAN-T5 takes the same targets (q, k, v, o, wi, wo).
    quick = Preset(
        16,
        32,
        0.05,
        ("all-linear",),
        3e-3,
        None,
        epochs=10.0,
        batch_size=8,
        train_samples=1000,
        eval_n=20,
        base_dropout=0.0,
        time_budget=120.0,
    )
    return TaskSpec(
        name=name,
        kind=SEQ2SEQ,
        description=what,
        model="google/flan-t5-base",
        dataset=dataset,
        text_column=name,  # the text column is named after the task: `dialogue`, `document`
        target_columns=("summary",),
        prompt=f"Summarize the following {noun}:\n\n{{text}}\n\nSummary:",
        max_input_tokens=max_input_tokens,
        max_target_tokens=128,
        presets={"full": full, "quick": quick},
    )


register_task(
    _summarization(
        "dialogue",
        "conversation",
        "Dialogue summarization: summarize a two-person conversation (DialogSum).",
        "knkarthick/dialogsum",
        512,
        Preset(16, 8, 0.10, ("q", "v"), 1e-3, max_steps=150, batch_size=8, eval_n=50, val_generate=32),
    )
)
register_task(
    _summarization(
        "document",
        "document",
        "Document summarization: one-sentence summary of a news article (XSum).",
        "EdinburghNLP/xsum",
        1024,
        Preset(32, 64, 0.10, ("q", "v"), 1e-4, max_steps=100, batch_size=8, eval_n=50, val_generate=32),
    )
)

register_task(
    TaskSpec(
        name="sentiment",
        kind=CLASSIFICATION,
        description="Sentiment classification of movie reviews: Negative or Positive (IMDB).",
        model="distilbert-base-uncased",
        dataset="stanfordnlp/imdb",
        text_column="text",
        label_column="label",
        labels=("Negative", "Positive"),
        max_input_tokens=512,
        offline_model="minilm",
        presets={
            # The origin's: 10 epochs over 1,000 reviews, LoRA on the query projection only, evaluated on the
            # validation rows each epoch, the best epoch kept.
            "full": Preset(
                8, 16, 0.05, ("q_lin",), 1e-3, None, epochs=10.0, batch_size=16, train_samples=1000, eval_n=500
            ),
            # A minute of training on every row you give (up to 2,000): as many steps as fit, up to 10 epochs,
            # validated as it goes, the best step kept. Chosen on real SST-2 sentences (1,000 train rows, a
            # separate dev set; benchmarks/bench_quick.py): no dropout in the frozen model (a step ~25% faster),
            # 10% warmup and a learning rate of 2e-3 on the query/value projections.
            "quick": Preset(
                8,
                16,
                0.05,
                ("q_lin", "v_lin"),
                2e-3,
                None,
                epochs=10.0,
                batch_size=16,
                train_samples=2000,
                eval_n=100,
                warmup_ratio=0.1,
                base_dropout=0.0,
                time_budget=60.0,
            ),
        },
    )
)
