"""The one config schema: `TrainConfig` and `EvalConfig`, whose fields carry flag, help, bounds and choices.

argparse flags, validation, the reproducing command line, run.json, the Fine-tune form, the Runs tab's
hyperparameter columns and the model card are all derived from these fields (as trl derives its command line
from dataclass fields; the machinery is in `schema`). Adding a hyperparameter is adding one field here. A
hyperparameter a task's preset sets takes its bounds from that `tasks.Preset` field: each bound is declared once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass

from .errors import LlmftError
from .refs import is_hub_id
from .runs import check_run_name, new_run_name
from .schema import (  # noqa: F401 - the schema's helpers, imported from here by the CLI, the form and tests
    DTYPES,
    PRESETS,
    REPORT_TO,
    add_arguments,
    check_bounds,
    cli_args,
    cli_command,
    field_type,
    flag_of,
    form_fields,
    from_args,
    hyperparameters,
    label_of,
    limits_of,
    param,
    schema,
)
from .tasks import Preset, TaskSpec, get_task


@dataclass
class TrainConfig:
    """Everything that defines a training run; `None` hyperparameters take the preset's value."""

    task: str = param(
        help="task name, or a task file (.yaml/.json; see docs/own-task.md)", required=True, group="task"
    )
    preset: str = param("quick", "quick (CPU-sized) or full (the origin's settings)", choices=PRESETS, group="task")
    model: str | None = param(
        help="base model: hub id, local folder, 'minilm' (packaged all-MiniLM-L6-v2) or 'smollm2' (packaged "
        "SmolLM2-135M-Instruct chat LLM); default: the task's",
        group="task",
        label="Base model",
    )
    data: str | None = param(
        help="'sample' (default), a .jsonl/.json/.csv/.tsv/.parquet file, or a hub dataset id", group="data"
    )
    train_samples: int | None = param(
        help="examples drawn by seed from the data (0 = all; default: the preset's)",
        preset=True,
        group="hyper",
        **limits_of(Preset, "train_samples"),
    )
    max_steps: int | None = param(
        help="optimizer steps (overrides epochs)", exclusive="length", group="hyper", **limits_of(Preset, "max_steps")
    )
    epochs: float | None = param(
        help="epochs, used when no step count is set",
        **limits_of(Preset, "epochs"),
        exclusive="length",
        group="hyper",
    )
    learning_rate: float | None = param(
        help="peak AdamW learning rate", flag="--lr", preset=True, group="hyper", **limits_of(Preset, "learning_rate")
    )
    batch_size: int | None = param(
        help="per-device train batch size", preset=True, group="hyper", **limits_of(Preset, "batch_size")
    )
    lora_r: int | None = param(help="LoRA rank", preset=True, group="hyper", **limits_of(Preset, "lora_r"))
    lora_alpha: int | None = param(
        help="LoRA scaling numerator (scale = alpha / r)",
        preset=True,
        group="hyper",
        **limits_of(Preset, "lora_alpha"),
    )
    lora_dropout: float | None = param(
        help="dropout on the LoRA input", preset=True, group="hyper", **limits_of(Preset, "lora_dropout")
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
        preset=True,
        group="hyper",
        **limits_of(Preset, "base_dropout"),
    )
    group_by_length: bool = param(
        False,
        "batch rows of similar length together: less padding (1.2x the real tokens/s on SmolLM2 dialogues), but the "
        "batches are no longer random and a short run learns less (SmolLM2, 8 steps: held-out loss 0.31 against "
        "0.063 in random order; docs/performance.md)",
        omit_default=True,
        group="hyper",
    )
    val_split: float | None = param(
        help="validation rows carved from the training data by seed: a fraction (0.1) or a count (200); 0 = none. "
        "A hub dataset's own validation split is used when it has one. The test split is never used in training",
        preset=True,
        group="hyper",
        **limits_of(Preset, "val_split"),
    )
    val_generate: int | None = param(
        help="validation rows a generation task generates and scores at each validation: their mean headline "
        "(ROUGE and BERTScore, as in an evaluation) is logged and picks the kept step; 0 = the validation loss "
        "picks it (faster). Classification always validates on every row",
        preset=True,
        group="hyper",
        **limits_of(Preset, "val_generate"),
    )
    eval_steps: int | None = param(
        help="validate every this many steps (default: each epoch when training by epochs, else 5 times a run)",
        bounds=(1, 1_000_000),
        group="hyper",
    )
    early_stopping: int | None = param(
        help="stop after this many validations without improvement (default: the preset's; blank: never). The "
        "best validation step's adapter is kept either way",
        preset=True,
        group="hyper",
        **limits_of(Preset, "early_stopping"),
    )
    warmup_ratio: float | None = param(
        help="share of the steps over which the learning rate rises from 0",
        preset=True,
        group="hyper",
        **limits_of(Preset, "warmup_ratio"),
    )
    lr_scheduler: str | None = param(
        help="learning-rate schedule after warmup", preset=True, group="hyper", **limits_of(Preset, "lr_scheduler")
    )
    weight_decay: float | None = param(
        help="AdamW weight decay", preset=True, group="hyper", **limits_of(Preset, "weight_decay")
    )
    grad_accum: int | None = param(
        help="batches accumulated into one optimizer step (effective batch = batch size x this)",
        preset=True,
        group="hyper",
        **limits_of(Preset, "grad_accum"),
    )
    time_budget: float | None = param(
        help="seconds of training: the first steps are timed and the step count set to fit (the preset's or your "
        "steps are then an upper bound); 0 = no budget (default: the preset's)",
        preset=True,
        group="hyper",
        **limits_of(Preset, "time_budget"),
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
    repeat: int = param(
        1,
        "train K runs of these settings under seeds seed, seed+1, ... (named <run name>-seed<seed>, grouped): "
        "their spread is the run-to-run noise a gain must exceed",
        bounds=(1, 10),
        omit_default=True,
        group="run",
    )
    group: str | None = param(help="the group of runs this run belongs to (set by --repeat)")
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

    spec: InitVar[TaskSpec | None] = None
    """The task `task` names, when the caller has resolved it already (else it is resolved here, once)."""

    def __post_init__(self, spec: TaskSpec | None = None):
        task = spec if spec is not None else get_task(self.task)
        self.task_spec = task
        """The `TaskSpec` this config's `task` names, resolved once (a task file is read once per request)."""
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
        if self.group is not None:
            check_run_name(self.group)
        if self.owner is not None and (not is_hub_id(self.owner) or "/" in self.owner):
            raise LlmftError(f"owner must be a Hugging Face username, got {self.owner!r}")

    def replace(self, **changes) -> TrainConfig:
        """A copy with `changes`, on the same resolved task (a search's trials do not read a task file again)."""
        return dataclasses.replace(self, spec=self.task_spec, **changes)

    def repeats(self) -> list[TrainConfig]:
        """The runs `repeat` asks for: this config itself when 1, else one config per seed, named
        `<run name>-seed<seed>`, each an ordinary single run marked with its `group` (the run name)."""
        if self.repeat == 1:
            return [self]
        base = self.run_name or new_run_name(self.task_spec.name)
        members = [
            self.replace(seed=self.seed + i, run_name=f"{base}-seed{self.seed + i}", repeat=1, group=base)
            for i in range(self.repeat)
        ]
        for member in members:
            check_run_name(member.run_name)
        return members

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
    n: int | None = param(help="number of test examples (default: the preset's)", **limits_of(Preset, "eval_n"))
    seed: int = param(0, "seed of the example sample and the bootstrap", bounds=(0, 2**32 - 1))
    scorer: str | None = param(
        help="BERTScore scorer (default roberta-large; offline the packaged MiniLM)", flag="--bertscore-model"
    )
    max_new_tokens: int | None = param(
        help="generated tokens at most, for base and tuned alike (default: fitted to the run's training "
        "references, else the task's)",
        bounds=(1, 4096),
    )
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
            "label_map": self.label_map,  # a test file's own label values, mapped onto the run's labels
        }
