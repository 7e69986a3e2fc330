"""The one config schema: `TrainConfig` and `EvalConfig`, whose fields carry flag, help, bounds and choices.

argparse flags, validation, the reproducing command line, run.json, the Fine-tune form, the Runs tab's
hyperparameter columns and the model card are all derived from these fields (as trl derives its command line
from dataclass fields). Adding a hyperparameter is adding one field here.
"""

from __future__ import annotations

import argparse
import shlex
import typing
from dataclasses import MISSING, dataclass, field, fields

from .errors import LlmftError

DTYPES = ("auto", "float32", "bfloat16")
PRESETS = ("quick", "full")
LR_SCHEDULERS = ("linear", "cosine", "constant")
REPORT_TO = ("none", "tensorboard", "trackio", "mlflow")


METADATA = dict(
    flag=None,
    bounds=None,
    interval="[]",
    choices=None,
    group=None,
    preset=False,
    required=False,
    exclusive=None,
    label=None,
    omit_default=False,
)
"""The metadata a config field may carry, with its defaults (see `param`)."""


def param(default=None, help: str = "", **metadata):
    """A config field with its metadata.

    Args:
        default: the field's default.
        help: one line for `--help`, the form's info and the model card.
        metadata: any of `METADATA`'s keys:
            flag: the CLI flag (default: `--` + the name with dashes).
            bounds: (low, high) allowed values; `interval` says which ends are open: "[]", "(]", "[)", "()".
            choices: the allowed values.
            group: where the Fine-tune form shows it: `task`, `data`, `columns`, `hyper`, `run`; None: not in
                the form. `task`, `hyper` and `run` fields are the hyperparameters the Runs tab and the model
                card list.
            preset: None means "the preset's value" (filled in from the task's preset of the same name).
            required: the CLI requires it (and the field has no default).
            exclusive: fields sharing this name are mutually exclusive on the command line.
            label: the form's label (default: the name in words).
            omit_default: leave the flag out of the reproducing command when it holds the default.
    """
    unknown = set(metadata) - set(METADATA)
    if unknown:
        raise TypeError(f"unknown config field metadata: {', '.join(sorted(unknown))}")
    meta = {**METADATA, **metadata, "help": help}
    if meta["required"]:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def label_of(f) -> str:
    """The form's label: `label`, else the name in words (`lora_r` -> "LoRA r")."""
    return f.metadata.get("label") or f.name.replace("_", " ").capitalize().replace("Lora", "LoRA")


def field_type(cls, f) -> type:
    """The field's type without `None`: int, float, str, bool or list (of str)."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return list if typing.get_origin(args[0]) is list else args[0]


def schema(cls) -> list:
    """The fields of a config class that carry metadata, in declaration order."""
    return [f for f in fields(cls) if "help" in f.metadata]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of `cls`, with help, choices and mutually exclusive groups from the metadata."""
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in schema(cls):
        meta = f.metadata
        target = parser
        if meta["exclusive"]:
            if meta["exclusive"] not in groups:
                groups[meta["exclusive"]] = parser.add_mutually_exclusive_group()
            target = groups[meta["exclusive"]]
        base = field_type(cls, f)
        kwargs = dict(dest=f.name, help=meta["help"] or None)
        if base is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = _csv if base is list else base
            if meta["choices"]:
                kwargs["choices"] = list(meta["choices"])
        if meta["required"]:
            kwargs["required"] = True
        elif f.default is not MISSING:
            kwargs["default"] = f.default
        target.add_argument(flag_of(f), **kwargs)


def from_args(cls, args: argparse.Namespace):
    """Build `cls` from parsed arguments (every field the parser defined, under the same name)."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def cli_args(config, skip: tuple[str, ...] = ()) -> list[str]:
    """The flags that reproduce `config` (None fields, the fields in `skip` and, in an exclusive group, all but
    the first set one are left out)."""
    args, taken = [], set()
    for f in schema(type(config)):
        value, meta = getattr(config, f.name), f.metadata
        if value is None or f.name in skip or (meta["omit_default"] and value == f.default):
            continue
        if meta["exclusive"]:
            if meta["exclusive"] in taken:
                continue
            taken.add(meta["exclusive"])
        if isinstance(value, bool):
            if value:
                args.append(flag_of(f))
            continue
        args += [flag_of(f), ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)]
    return args


def cli_command(config, command: str) -> str:
    """`python -m llmft <command> ...` reproducing `config`."""
    return shlex.join(["python", "-m", "llmft", command, *cli_args(config)])


def check_bounds(config) -> None:
    """Raise `LlmftError` naming the flag for any field outside its bounds or choices."""
    for f in schema(type(config)):
        value, meta = getattr(config, f.name), f.metadata
        if value is None:
            continue
        if meta["choices"] and value not in meta["choices"]:
            raise LlmftError(f"{flag_of(f).lstrip('-')} must be one of {', '.join(meta['choices'])}, got {value!r}")
        if meta["bounds"] and not isinstance(value, list):
            low, high = meta["bounds"]
            lo_open, hi_open = meta["interval"][0] == "(", meta["interval"][1] == ")"
            ok = (low < value if lo_open else low <= value) and (value < high if hi_open else value <= high)
            if isinstance(value, bool) or not ok:
                if meta["interval"] == "[]" and field_type(type(config), f) is int:
                    rule = f"between {low} and {high}"
                else:
                    rule = f"in {meta['interval'][0]}{low:g}, {high:g}{meta['interval'][1]}"
                raise LlmftError(f"{flag_of(f).lstrip('-')} must be {rule}, got {value!r}")


def hyperparameters(cls, config: dict) -> list[tuple[str, object]]:
    """(name, value) of the hyperparameter fields set in a run's stored config (the Runs tab, model card)."""
    names = [f.name for f in schema(cls) if f.metadata["group"] in ("task", "hyper", "run")]
    names = [n for n in names if n not in ("task", "model", "run_name")]  # named elsewhere on the card and table
    return [(name, config.get(name)) for name in names if config.get(name) is not None]


def form_fields(cls, group: str) -> list:
    """The fields the Fine-tune form shows in `group`."""
    return [f for f in schema(cls) if f.metadata["group"] == group]


@dataclass
class TrainConfig:
    """Everything that defines a training run; `None` hyperparameters take the preset's value."""

    task: str = param(
        help="task name, or a task file (.yaml/.json; see README 'Your own task')", required=True, group="task"
    )
    preset: str = param("quick", "quick (CPU-sized) or full (the origin's settings)", choices=PRESETS, group="task")
    model: str | None = param(
        help="base model: hub id, local folder, or 'minilm' (default: the task's; offline fallback applies)",
        group="task",
        label="Base model",
    )
    data: str | None = param(
        help="'sample' (default), a .jsonl/.json/.csv/.tsv/.parquet file, or a hub dataset id", group="data"
    )
    train_samples: int | None = param(
        help="examples drawn by seed from the data (0 = all; default: the preset's)",
        bounds=(0, 10_000_000),
        preset=True,
        group="hyper",
    )
    max_steps: int | None = param(
        help="optimizer steps (overrides epochs)", bounds=(1, 1_000_000), exclusive="length", group="hyper"
    )
    epochs: float | None = param(
        help="epochs, used when no step count is set",
        bounds=(0, 1000),
        interval="(]",
        exclusive="length",
        group="hyper",
    )
    learning_rate: float | None = param(
        help="peak AdamW learning rate", flag="--lr", bounds=(0, 1), interval="(]", preset=True, group="hyper"
    )
    batch_size: int | None = param(help="per-device train batch size", bounds=(1, 1024), preset=True, group="hyper")
    lora_r: int | None = param(help="LoRA rank", bounds=(1, 1024), preset=True, group="hyper")
    lora_alpha: int | None = param(
        help="LoRA scaling numerator (scale = alpha / r)", bounds=(0, 4096), interval="(]", preset=True, group="hyper"
    )
    lora_dropout: float | None = param(
        help="dropout on the LoRA input", bounds=(0, 1), interval="[)", preset=True, group="hyper"
    )
    target_modules: list[str] | None = param(
        help="module names LoRA adapts, comma-separated (q maps to q_lin / query / q_proj)",
        preset=True,
        group="hyper",
    )
    base_dropout: float | None = param(
        help="dropout inside the frozen base model while training (default: the preset's: 0 in the quick presets, "
        "the model's own in the full ones, 0.1 in the task models; 0 trains faster on CPU, up to 3x for MiniLM at "
        "512 tokens, and regularises less)",
        bounds=(0, 1),
        interval="[)",
        preset=True,
        group="hyper",
    )
    val_split: float | None = param(
        help="validation rows carved from the training data by seed: a fraction (0.1) or a count (200); 0 = none. "
        "A hub dataset's own validation split is used when it has one. The test split is never used in training",
        bounds=(0, 10_000_000),
        preset=True,
        group="hyper",
    )
    val_generate: int | None = param(
        help="validation rows a generation task generates and scores at each validation: their mean headline "
        "(ROUGE and BERTScore, as in an evaluation) is logged and picks the kept step; 0 = the validation loss "
        "picks it (faster). Classification always validates on every row",
        bounds=(0, 100_000),
        preset=True,
        group="hyper",
    )
    eval_steps: int | None = param(
        help="validate every this many steps (default: each epoch when training by epochs, else 5 times a run)",
        bounds=(1, 1_000_000),
        group="hyper",
    )
    early_stopping: int | None = param(
        help="stop after this many validations without improvement (default: the preset's; blank: never). The "
        "best validation step's adapter is kept either way",
        bounds=(1, 1000),
        preset=True,
        group="hyper",
    )
    warmup_ratio: float | None = param(
        help="share of the steps over which the learning rate rises from 0",
        bounds=(0, 1),
        interval="[)",
        preset=True,
        group="hyper",
    )
    lr_scheduler: str | None = param(
        help="learning-rate schedule after warmup", choices=LR_SCHEDULERS, preset=True, group="hyper"
    )
    weight_decay: float | None = param(help="AdamW weight decay", bounds=(0, 1), preset=True, group="hyper")
    grad_accum: int | None = param(
        help="batches accumulated into one optimizer step (effective batch = batch size x this)",
        bounds=(1, 1024),
        preset=True,
        group="hyper",
    )
    time_budget: float | None = param(
        help="seconds of training: the first steps are timed and the step count set to fit (the preset's or your "
        "steps are then an upper bound); 0 = no budget (default: the preset's)",
        bounds=(0, 604_800),
        preset=True,
        group="hyper",
    )
    seed: int = param(
        42, "seeds sampling, LoRA init, classifier-head init and data order", bounds=(0, 2**32 - 1), group="run"
    )
    report_to: str = param(
        "none",
        "experiment tracker the Trainer logs to: none, tensorboard (files in the run's tensorboard/), trackio or "
        "mlflow (installed and configured by you)",
        choices=REPORT_TO,
        omit_default=True,
        group="run",
    )
    run_name: str | None = param(help="the run's name (default: task and time)", group="run")
    runs_dir: str | None = param(help="the runs home (default: $LLMFT_HOME/runs or ~/.cache/llmft/runs)")
    owner: str | None = param(
        help="the Hugging Face user the run belongs to (set by the app on a Space; blank: the server's owner)"
    )
    text_column: str | None = param(help="input text column (default: the task's)", group="columns")
    target_columns: list[str] | None = param(
        help="reference column(s), comma-separated for several references", flag="--target-column", group="columns"
    )
    label_column: str | None = param(help="label column for classification", group="columns")
    label_map: list[str] | None = param(
        help="map the data's label values to the task's labels: value=Label pairs, comma-separated "
        "(pos=Positive,neg=Negative)",
        group="columns",
    )
    max_input_tokens: int | None = param(help="input tokens kept (default: the task's)", bounds=(1, 16384))
    max_target_tokens: int | None = param(help="target tokens kept (default: the task's)", bounds=(1, 16384))
    save_steps: int | None = param(
        help="checkpoint every this many steps (default: about five checkpoints per run)", bounds=(1, 10_000_000)
    )
    dtype: str = param(
        "auto",
        "weights' dtype: auto (fp32 on CPU, bf16 on a bf16 GPU), float32, or bfloat16 (faster on bf16 CPUs)",
        choices=DTYPES,
        omit_default=True,
    )

    def __post_init__(self):
        from .refs import is_hub_id
        from .runs import check_run_name
        from .tasks import get_task

        task = get_task(self.task)
        preset = task.preset(self.preset)
        for f in schema(TrainConfig):
            if f.metadata["preset"] and getattr(self, f.name) is None:
                value = getattr(preset, f.name)
                setattr(self, f.name, list(value) if isinstance(value, tuple) else value)
        if self.max_steps is None and self.epochs is None:
            self.max_steps, self.epochs = preset.max_steps, preset.epochs
        if self.max_input_tokens is None:
            self.max_input_tokens = task.max_input_tokens
        if self.max_target_tokens is None:
            self.max_target_tokens = task.max_target_tokens
        check_bounds(self)
        if self.max_steps is None and self.epochs is None:
            raise LlmftError("give max-steps or epochs")
        if not self.target_modules or not all(m.strip() for m in self.target_modules):
            raise LlmftError(f"target-modules must be a non-empty list of module names, got {self.target_modules!r}")
        if self.run_name is not None:
            check_run_name(self.run_name)
        if self.owner is not None and (not is_hub_id(self.owner) or "/" in self.owner):
            raise LlmftError(f"owner must be a Hugging Face username, got {self.owner!r}")

    def cli_command(self) -> str:
        """The `python -m llmft train` command that reproduces this run."""
        return cli_command(self, "train")


def _help_of(cls, name: str) -> str:
    return cls.__dataclass_fields__[name].metadata["help"]


@dataclass
class EvalConfig:
    """Everything that defines an evaluation of base vs tuned; `None` fields take the run's or task's value."""

    task: str = param(help="task name, or a task file (.yaml/.json); a run keeps its own task", required=True)
    run: str | None = param(help="run name (or run directory)", exclusive="source")
    adapter: str | None = param(help="adapter folder or hub id", exclusive="source")
    model: str | None = param(help="base model (default: the run's, else the task's)")
    data: str | None = param(help="test data (default: the bundled sample)")
    split: str | None = param(help="split of the sample or hub dataset (default: the task's test split)")
    n: int | None = param(help="number of test examples (default: the preset's)", bounds=(1, 1_000_000))
    seed: int = param(0, "seed of the example sample and the bootstrap", bounds=(0, 2**32 - 1))
    scorer: str | None = param(
        help="BERTScore scorer (default roberta-large; offline the packaged MiniLM)", flag="--bertscore-model"
    )
    max_new_tokens: int | None = param(help="generated tokens at most (default: the task's)", bounds=(1, 4096))
    batch_size: int = param(32, "texts per inference batch", bounds=(1, 1024))
    out: str | None = param(help="also write examples.csv, summary.json and the plots here (a new or empty folder)")
    overwrite: bool = param(False, "replace the results in a non-empty --out folder")
    runs_dir: str | None = param(help="the runs home")
    text_column: str | None = param(help="input text column (default: the task's)")
    target_columns: list[str] | None = param(
        help="reference column(s), comma-separated for several references", flag="--target-column"
    )
    label_column: str | None = param(help="label column for classification")
    label_map: list[str] | None = param(help=_help_of(TrainConfig, "label_map"))
    dtype: str = param("auto", _help_of(TrainConfig, "dtype"), choices=DTYPES)

    def __post_init__(self):
        check_bounds(self)
        if not self.run and not self.adapter:
            raise LlmftError("give a run or an adapter to compare with the base model")

    def columns(self) -> dict:
        return {
            "text_column": self.text_column,
            "target_columns": self.target_columns,
            "label_column": self.label_column,
        }
