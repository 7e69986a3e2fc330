"""Task registry: each task is data (model, dataset, columns, prompt, presets), as in lm-evaluation-harness.

Two presets per task: `full` reproduces the origin notebooks' settings; `quick` is sized to finish in about a
minute on a laptop CPU with the offline model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import LlmftError
from .kinds import CLASSIFICATION, SEQ2SEQ, Kind, get_kind
from .registry import Registry

__all__ = ["CLASSIFICATION", "SEQ2SEQ", "Preset", "TaskSpec", "get_task", "register_task", "task_names"]


@dataclass(frozen=True)
class Preset:
    """Training and evaluation defaults for one task at one size."""

    lora_r: int
    """LoRA rank."""
    lora_alpha: int
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float
    """Dropout on the LoRA input."""
    target_modules: tuple[str, ...]
    """Module names LoRA adapts; mapped to the loaded architecture's names (q -> q_lin / query / q_proj)."""
    learning_rate: float
    """Peak AdamW learning rate."""
    max_steps: int | None
    """Optimizer steps; None means train for `epochs`."""
    epochs: float = 1.0
    """Epochs when `max_steps` is None."""
    batch_size: int = 8
    """Per-device train batch size."""
    train_samples: int | None = None
    """Training examples drawn from the train split (None = all)."""
    eval_n: int = 50
    """Test examples evaluated."""


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
    """Template applied to the input text; `{text}` is replaced."""
    max_input_tokens: int = 512
    max_target_tokens: int = 128
    train_split: str = "train"
    test_split: str = "test"
    offline_model: str | None = None
    """Model used when the default is unreachable: `minilm` means the packaged all-MiniLM-L6-v2."""
    presets: dict[str, Preset] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "kind", get_kind(self.kind))
        if "{text}" not in self.prompt:
            raise ValueError(f"prompt of task {self.name!r} must contain '{{text}}'")
        self.kind.validate(self)
        if not {"quick", "full"} <= set(self.presets):
            raise ValueError(f"task {self.name!r} needs 'quick' and 'full' presets")

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise LlmftError(f"unknown preset {name!r} for task {self.name!r}; choose from {', '.join(self.presets)}")
        return self.presets[name]

    def format_prompt(self, text: str) -> str:
        # str.replace rather than str.format: user text may contain braces.
        return self.prompt.replace("{text}", text)


_REGISTRY = Registry("task")


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry; a duplicate name raises."""
    return _REGISTRY.add(spec.name, spec)


def get_task(name: str) -> TaskSpec:
    """Return the task called `name`, or raise `LlmftError` listing the known ones."""
    return _REGISTRY.lookup(name)


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def _summarization(name: str, noun: str, what: str, dataset: str, max_input_tokens: int, full: Preset) -> TaskSpec:
    """A FLAN-T5 summarization task of the origin notebooks (they differ in data, length and `full` preset)."""
    # The quick preset is the same for both: sized to learn visibly in about a minute on a CPU.
    quick = Preset(16, 32, 0.05, ("q", "v"), 3e-3, max_steps=60, batch_size=8, train_samples=160, eval_n=20)
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
        Preset(16, 8, 0.10, ("q", "v"), 1e-3, max_steps=150, batch_size=8, eval_n=50),
    )
)
register_task(
    _summarization(
        "document",
        "document",
        "Document summarization: one-sentence summary of a news article (XSum).",
        "EdinburghNLP/xsum",
        1024,
        Preset(32, 64, 0.10, ("q", "v"), 1e-4, max_steps=100, batch_size=8, eval_n=50),
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
            # The origin's: one epoch over 1,000 reviews, LoRA on the query projection only.
            "full": Preset(
                8, 16, 0.05, ("q_lin",), 1e-3, None, epochs=1.0, batch_size=16, train_samples=1000, eval_n=500
            ),
            "quick": Preset(8, 16, 0.05, ("q_lin", "v_lin"), 2e-3, 60, batch_size=16, train_samples=400, eval_n=100),
        },
    )
)
