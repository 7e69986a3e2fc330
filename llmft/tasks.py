"""Task registry: each task is data (model, dataset, columns, prompt, presets), as in lm-evaluation-harness.

Two presets per task: `full` reproduces the origin notebooks' settings; `quick` is sized to finish in about a
minute on a laptop CPU with the offline model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import LlmftError

SEQ2SEQ = "seq2seq"
CLASSIFICATION = "classification"


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
    kind: str
    """`seq2seq` (generate a summary) or `classification`."""
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
        if self.kind not in (SEQ2SEQ, CLASSIFICATION):
            raise ValueError(f"kind must be {SEQ2SEQ!r} or {CLASSIFICATION!r}, got {self.kind!r}")
        if "{text}" not in self.prompt:
            raise ValueError(f"prompt of task {self.name!r} must contain '{{text}}'")
        if self.kind == CLASSIFICATION and (not self.label_column or len(self.labels) < 2):
            raise ValueError(f"classification task {self.name!r} needs label_column and at least two labels")
        if self.kind == SEQ2SEQ and not self.target_columns:
            raise ValueError(f"seq2seq task {self.name!r} needs target_columns")
        if not {"quick", "full"} <= set(self.presets):
            raise ValueError(f"task {self.name!r} needs 'quick' and 'full' presets")

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise LlmftError(f"unknown preset {name!r} for task {self.name!r}; choose from {', '.join(self.presets)}")
        return self.presets[name]

    def format_prompt(self, text: str) -> str:
        # str.replace rather than str.format: user text may contain braces.
        return self.prompt.replace("{text}", text)


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry; a duplicate name raises."""
    if spec.name in _REGISTRY:
        raise ValueError(f"task {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """Return the task called `name`, or raise `LlmftError` listing the known ones."""
    if name not in _REGISTRY:
        raise LlmftError(f"unknown task {name!r}; choose from {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def task_names() -> list[str]:
    return sorted(_REGISTRY)


register_task(
    TaskSpec(
        name="dialogue",
        kind=SEQ2SEQ,
        description="Dialogue summarization: summarize a two-person conversation (DialogSum).",
        model="google/flan-t5-base",
        dataset="knkarthick/dialogsum",
        text_column="dialogue",
        target_columns=("summary",),
        prompt="Summarize the following conversation:\n\n{text}\n\nSummary:",
        max_input_tokens=512,
        max_target_tokens=128,
        presets={
            "full": Preset(16, 8, 0.10, ("q", "v"), 1e-3, max_steps=150, batch_size=8, eval_n=50),
            "quick": Preset(16, 32, 0.05, ("q", "v"), 3e-3, max_steps=60, batch_size=8, train_samples=160, eval_n=20),
        },
    )
)

register_task(
    TaskSpec(
        name="document",
        kind=SEQ2SEQ,
        description="Document summarization: one-sentence summary of a news article (XSum).",
        model="google/flan-t5-base",
        dataset="EdinburghNLP/xsum",
        text_column="document",
        target_columns=("summary",),
        prompt="Summarize the following document:\n\n{text}\n\nSummary:",
        max_input_tokens=1024,
        max_target_tokens=128,
        presets={
            "full": Preset(32, 64, 0.10, ("q", "v"), 1e-4, max_steps=100, batch_size=8, eval_n=50),
            "quick": Preset(16, 32, 0.05, ("q", "v"), 3e-3, max_steps=60, batch_size=8, train_samples=160, eval_n=20),
        },
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
            "full": Preset(
                8,
                16,
                0.05,
                ("q_lin",),
                1e-3,
                max_steps=None,
                epochs=1.0,
                batch_size=16,
                train_samples=1000,
                eval_n=500,
            ),
            "quick": Preset(
                8, 16, 0.05, ("q_lin", "v_lin"), 2e-3, max_steps=60, batch_size=16, train_samples=400, eval_n=100
            ),
        },
    )
)
