"""Task kinds as objects: everything that differs between generating text and classifying it lives here.

A kind's core is what loading, training and evaluation need: its model class, peft task type and the modules
LoRA must train in full, its collator, how a data row becomes an `Example`, how examples become training
features, how it predicts, how outputs are scored against references, and its headline metric. Prompting,
validation and display in Compare are optional roles with working defaults (`Prompting`, `Validating`,
`Display`). `TaskSpec.kind` holds one; no other module tests a kind's name. A new kind subclasses `Kind`,
implements the abstract methods, and calls `register_kind`.

Kinds are strategies above the mechanisms they call (`models`, `inference`, `metrics`, `stats`); those are
imported where they are used, because they pull in torch, numpy and scipy, and `import llmft.tasks` (the CLI's
`tasks`, the app's first page) must stay light: measured, torch alone takes about 1 s to import here.
"""

from __future__ import annotations

import abc
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .errors import LlmftError
from .examples import normalize_label
from .registry import Registry


@dataclass(frozen=True)
class Scored:
    """What a kind's `score` returns: paired statistics per metric and one row per example (examples.csv)."""

    metrics: dict
    """metric name -> `stats` dict (base_mean, tuned_mean, delta_mean, ci95, p_value, test, ...)."""
    rows: list[dict]
    per_example: list[str]
    """Metrics with per-example scores in `rows` as `base_<name>` / `tuned_<name>`."""
    extra: dict
    """Kind-specific fields of the result (labels, confusion matrices, the scorer)."""
    warnings: list[str] = field(default_factory=list)
    """Lines a reader of the verdict must see (a model that predicts one class only, ...)."""
    not_better: str | None = None
    """Why the tuned model must not be called better whatever the interval says (None: no such reason)."""


def tie_broken(headline: float, loss: float) -> float:
    """The validation score that picks the kept step: the headline, equal headlines ordered by the lower
    validation loss (with a small or easy validation set many steps reach the same headline, and the first of
    them is rarely the best trained). The loss term is below any headline difference a validation set under
    5,000 rows can show."""
    return headline - 1e-5 * min(loss, 10.0)


SIDES = ("base", "tuned")


def prompt_limit(loaded, settings) -> int:
    """Input tokens a prompt may take: the settings' limit, within the model's."""
    from .models import input_limit  # deferred: torch

    return input_limit(loaded.tokenizer, settings.max_input_tokens)


def prompt_of(loaded, text: str, settings) -> str:
    """The prompt the model reads for `text`, as its task's kind builds it (task template, chat template)."""
    return loaded.task.kind.prompted(loaded, [text], settings)[0][0]


class Prompting:
    """Optional role: how a text becomes the prompt a model reads. The default fills in the task's template."""

    def prompts(self, spec, tokenizer, texts, max_input_tokens: int) -> list[str]:
        """The prompts the model reads for `texts` (the task's template filled in; a chat template applied)."""
        return [spec.format_prompt(t) for t in texts]

    def special_tokens(self, tokenizer) -> bool:
        """`add_special_tokens` when tokenizing a prompt."""
        return True

    def prompted(self, loaded, texts, settings) -> tuple[list[str], bool]:
        """The prompts `loaded` reads for `texts` within the input limit, and `add_special_tokens` for them."""
        prompts = self.prompts(loaded.task, loaded.tokenizer, list(texts), prompt_limit(loaded, settings))
        return prompts, self.special_tokens(loaded.tokenizer)

    def run_info(self, tokenizer) -> dict:
        """What run.json records about how prompts were built."""
        return {}

    def prepare_tokenizer(self, tokenizer) -> None:
        """Set what this kind needs of a freshly loaded tokenizer (padding side...)."""


class Validating:
    """Optional role: what validation measures while training. The default: the validation loss only."""

    validation_metric: str = "loss"
    """What picks the kept step during training when nothing is generated: the validation loss, or
    (classification) the headline metric."""

    def validation_metrics(self, spec):
        """Trainer's `compute_metrics` for validation (None: the validation loss only)."""
        return None

    def selection(self, val_generate: int) -> str:
        """The validation metric that picks the kept step and a search's best trial (`val_generate`: rows a
        generation task generates at each validation)."""
        return self.validation_metric

    def validation_generator(self, spec, tokenizer, examples, max_input_tokens: int, max_new_tokens: int):
        """None, or `fn(model) -> {metric: per-example scores}` that generates for `examples` with the model being
        trained and scores the outputs as an evaluation does (generation kinds)."""
        return None

    def validation_sample(self, spec, predictions, label_ids):
        """The per-example results of one validation as a `stats.Sample` whose statistic is the selection
        headline (None: the score alone picks the kept step). Trainer's predictions and labels for the rows."""
        return None


class Display:
    """Optional role: how Compare and `predict` show outputs. The defaults work for any kind: both sides
    predicted (not streamed), outputs and references as text, no per-output score against a typed reference."""

    shows_probabilities: bool = False
    """Compare shows class probabilities rather than streamed text."""

    def stream(self, loaded, text: str, settings) -> Iterator[dict]:
        """Base and tuned outputs for one text as they grow: {"base": update, "tuned": update}, each update a
        dict with `text`, `tokens`, `elapsed_s`, `truncated`, and maybe `ttft_s` or `probs`.

        Default: both sides predicted whole, one update; `tokens` counts the prompt's."""
        from .inference import input_stats  # deferred: torch

        start = time.perf_counter()
        (prompt,), special = self.prompted(loaded, [text], settings)
        tokens, truncated = input_stats(loaded, prompt, settings, special)
        outputs = {side: self.predict(loaded, [text], settings, side == "tuned", progress=False)[0] for side in SIDES}
        update = {"tokens": tokens, "elapsed_s": time.perf_counter() - start, "truncated": truncated}
        yield {side: {**update, "text": self.output_text(loaded.task, out)} for side, out in outputs.items()}

    def output_text(self, spec, output) -> str:
        """One output as a person reads it."""
        return str(output)

    def reference_text(self, spec, example) -> str:
        """An example's reference as a person reads it (its first reference, else its label)."""
        return example.references[0] if example.references else str(example.label)

    def score_reference(self, spec, outputs: list[str], reference: str) -> list[tuple[str, list]]:
        """Per-output scores of a few outputs against one typed reference: [(metric, [score or mark per output])];
        none by default."""
        return []


class Kind(Prompting, Validating, Display, abc.ABC):
    """A task kind. The core, which every kind implements, is what loading, training and evaluation need (the
    abstract methods below); prompting, validation and display are optional roles with working defaults."""

    name: str = ""
    """Stored in run.json and summary.json; also the tag on exported models."""
    peft_task_type: str = ""
    headline: str = ""
    """The metric a verdict and the Runs table quote."""
    example_metric: str = ""
    """The per-example metric that the scatter plot and the examples table sort by."""
    column_fields: tuple[str, ...] = ("text_column",)
    """TrainConfig / EvalConfig column fields that apply to this kind."""
    fresh_head: bool = False
    """from_pretrained initialises new weights (a seeded head): the seed is part of the base model, and the
    modules the checkpoint had no weights for train in full (`trained_in_full`)."""
    generates: bool = False
    """Outputs are generated text (max new tokens applies)."""
    family: str = ""
    """What a task asks for, whatever the model: `generate` or `classify` (a task file's `type`). Kinds of one
    family are interchangeable for a task; the model's architecture picks one (`for_model`)."""

    def __str__(self) -> str:
        return self.name

    # --- core: the task and its data -----------------------------------------------------------------------

    def validate(self, spec) -> None:
        """Raise ValueError when `spec` lacks what this kind needs."""

    def columns(self, spec, present: set[str], overrides: dict) -> dict[str, list[str]]:
        """The columns each role reads: {"text": [...], ...}, with the user's overrides applied."""
        return {"text": list(spec.input_columns) or [overrides.get("text_column") or spec.text_column]}

    @abc.abstractmethod
    def parse_row(self, spec, row: dict, columns: dict[str, list[str]], overrides: dict) -> dict:
        """The kind's fields of one `Example` (references or label) from a data row (`overrides`: the user's
        column choices and label mapping)."""

    # --- core: loading and training ------------------------------------------------------------------------

    def for_model(self, config) -> Kind:
        """The kind of this family that fits a model with this transformers config (default: this one)."""
        return self

    @abc.abstractmethod
    def load_model(self, spec, model_ref: str, **kwargs):
        """`from_pretrained` of this kind's model class with `kwargs` passed on. They include
        `output_loading_info=True`, so it returns (model, loading info), as from_pretrained does."""

    def modules_to_save(self, model) -> list[str]:
        """Modules of `model` LoRA trains in full (a classification head)."""
        return []

    def trained_in_full(self, model, fresh_modules=()) -> list[str]:
        """`modules_to_save`, and for a kind with a fresh head the other modules the checkpoint had no weights
        for (a BERT saved without its pooler, DeBERTa's ContextPooler): from_pretrained initialised them at
        random, and frozen they would stay so."""
        save = self.modules_to_save(model)
        if not self.fresh_head:
            return save
        return save + [m for m in fresh_modules if not set(m.split(".")) & set(save)]

    def lora_config(self, model, targets: list[str], r: int, alpha: int, dropout: float, fresh_modules=()):
        from peft import LoraConfig

        from .models import ALL_LINEAR  # deferred: torch

        return LoraConfig(
            task_type=self.peft_task_type,
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=ALL_LINEAR if list(targets) == [ALL_LINEAR] else targets,
            modules_to_save=self.trained_in_full(model, fresh_modules) or None,
        )

    @abc.abstractmethod
    def collator(self, tokenizer, model):
        """The Trainer's data collator."""

    @abc.abstractmethod
    def features(self, spec, tokenizer, examples, max_input_tokens: int, max_target_tokens: int) -> list[dict]:
        """Unpadded training features: input ids, attention mask, labels."""

    def training_batch(self, batch: dict) -> dict:
        """A collated training batch as the model's forward takes it: as it is by default (a kind may ask for
        less work with the same loss)."""
        return batch

    # --- core: evaluation ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def predict(self, loaded, texts, settings, tuned: bool, progress=True, on_progress=None) -> list:
        """Batched outputs (JSON-serialisable: they are cached on disk)."""

    def fitted_max_new_tokens(self, tokenizer, examples, max_target_tokens: int) -> dict | None:
        """The generation cap fitted to a task's training references (run.json `max_new_tokens`): None for a
        kind that does not generate."""
        return None

    @abc.abstractmethod
    def score(self, spec, examples, base_out, tuned_out, scorer, seed, progress=True, on_progress=None) -> Scored:
        """Paired statistics and per-example rows of base and tuned outputs. Reports through `on_progress`
        only: a kind never prints or writes files."""


KINDS = Registry("kind")


def register_kind(kind: Kind) -> Kind:
    """Add a kind to the registry; a duplicate name raises."""
    return KINDS.add(kind.name, kind)


def get_kind(kind: str | Kind) -> Kind:
    """`kind` itself, or the registered kind of that name."""
    return kind if isinstance(kind, Kind) else KINDS.lookup(kind, ValueError)


class Seq2Seq(Kind):
    """Generate a text (a summary) from a text with an encoder-decoder model; ROUGE and BERTScore."""

    name = "seq2seq"
    peft_task_type = "SEQ_2_SEQ_LM"
    headline = example_metric = "overall"  # the mean of ROUGE-1/2/L and BERTScore-F1, per example
    column_fields = ("text_column", "target_columns")
    generates = True
    family = "generate"

    def validate(self, spec):
        if not spec.target_columns:
            raise ValueError(f"seq2seq task {spec.name!r} needs target_columns")

    def for_model(self, config):
        if is_decoder_only(config):
            return CAUSAL_LM
        if getattr(config, "is_encoder_decoder", False):
            return SEQ2SEQ
        raise LlmftError(
            f"a {config.model_type} model cannot generate text (an encoder, for classifiers): a generation task "
            "needs a decoder LLM (--model smollm2, the packaged SmolLM2-135M-Instruct) or an encoder-decoder "
            "(FLAN-T5)"
        )

    def selection(self, val_generate):
        # The headline (ties broken by the loss) needs generated text: with none generated, the loss decides.
        return "selection" if val_generate else "loss"

    def validation_generator(self, spec, tokenizer, examples, max_input_tokens, max_new_tokens):
        from .inference import GenerationSettings  # deferred: torch
        from .metrics import resolve_scorer, summary_scores
        from .models import LoadedModel

        if not examples:
            return None
        scorer = resolve_scorer(None) if "bertscore" in spec.metrics else None
        settings = GenerationSettings(max_new_tokens=max_new_tokens, max_input_tokens=max_input_tokens)
        texts, refs = [ex.text for ex in examples], [ex.references for ex in examples]

        def scores(model) -> dict:
            device = next(model.parameters()).device
            # The model as it trains (its adapter active): the "base" side of a LoadedModel with no adapter.
            loaded = LoadedModel(model, tokenizer, spec, "", None, device, 0)
            outputs = self.predict(loaded, texts, settings, tuned=False, progress=False)
            return summary_scores(outputs, refs, scorer, spec.metrics)

        return scores

    def load_model(self, spec, model_ref, **kwargs):
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM.from_pretrained(model_ref, **kwargs)

    def collator(self, tokenizer, model):
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)

    def columns(self, spec, present, overrides):
        targets = overrides.get("target_columns")
        if not targets:
            targets = list(spec.target_columns)
            if len(targets) == 1 and targets[0] not in present:
                # DialogSum's test split has summary1..summary3: use every numbered variant.
                numbered = sorted(c for c in present if re.fullmatch(re.escape(targets[0]) + r"\d+", c))
                targets = numbered or targets
        return {**super().columns(spec, present, overrides), "target": list(targets)}

    def parse_row(self, spec, row, columns, overrides):
        targets = columns["target"]
        refs = tuple(str(row[c]).strip() for c in targets if row.get(c) is not None and str(row[c]).strip())
        if not refs:
            raise LlmftError(f"empty reference in {', '.join(targets)}")
        return {"references": refs}

    def features(self, spec, tokenizer, examples, max_input_tokens, max_target_tokens):
        rows = _encode_inputs(self, spec, tokenizer, examples, max_input_tokens)
        # The first reference is the training target.
        targets = tokenizer(
            text_target=[ex.references[0] for ex in examples], truncation=True, max_length=max_target_tokens
        )
        for row, ids in zip(rows, targets["input_ids"]):
            row["labels"] = ids
        return rows

    def predict(self, loaded, texts, settings, tuned, progress=True, on_progress=None):
        from .inference import generate  # deferred: torch

        prompts, special = self.prompted(loaded, texts, settings)
        return generate(loaded, prompts, settings, tuned, special, progress=progress, on_progress=on_progress)

    def stream(self, loaded, text, settings):
        from .inference import stream_generate_pair  # deferred: torch

        (prompt,), special = self.prompted(loaded, [text], settings)
        return stream_generate_pair(loaded, prompt, settings, special)

    def fitted_max_new_tokens(self, tokenizer, examples, max_target_tokens):
        """The 95th percentile of the training references' token lengths, plus a quarter and 4 tokens, within
        `max_target_tokens`: a base model that rambles stops near where a reference would (measured on the real
        SmolLM2: a 128-token cap let the base write 60 words against references of about 20)."""
        if not examples:
            return None
        targets = [ex.references[0] for ex in examples]
        lengths = sorted(len(ids) for ids in tokenizer(targets, add_special_tokens=False)["input_ids"])
        p95 = lengths[max(0, math.ceil(0.95 * len(lengths)) - 1)]
        value = int(min(max_target_tokens, max(8, math.ceil(1.25 * p95) + 4)))
        return {
            "value": value,
            "reference_tokens_p95": p95,
            "references": len(lengths),
            "rule": "95th percentile of the training references' tokens, +25% +4, within max_target_tokens",
        }

    def score(self, spec, examples, base_out, tuned_out, scorer, seed, progress=True, on_progress=None):
        from .metrics import resolve_scorer, scorer_record, summary_scores  # deferred: numpy, bert_score
        from .stats import paired_comparison

        scorer = resolve_scorer(scorer) if "bertscore" in spec.metrics else None
        refs = [ex.references for ex in examples]
        names = ", ".join(m if m != "bertscore" else f"bertscore with {scorer_record(scorer)}" for m in spec.metrics)
        scores = []
        for done, (side, outputs) in enumerate((("base", base_out), ("tuned", tuned_out))):
            if on_progress:
                on_progress(f"scoring {side} ({names})", done * len(examples), 2 * len(examples))
            scores.append(summary_scores(outputs, refs, scorer, spec.metrics))
        base_scores, tuned_scores = scores
        metrics = {m: paired_comparison(base_scores[m], tuned_scores[m], "permutation", seed) for m in base_scores}
        width = max(len(r) for r in refs)
        rows = []
        for i, ex in enumerate(examples):
            row = {"id": ex.id, "input": ex.text}
            row.update(
                {f"reference_{k + 1}": ex.references[k] if k < len(ex.references) else "" for k in range(width)}
            )
            row.update({"base_output": base_out[i], "tuned_output": tuned_out[i]})
            row.update({f"base_{m}": base_scores[m][i] for m in base_scores})
            row.update({f"tuned_{m}": tuned_scores[m][i] for m in tuned_scores})
            rows.append(row)
        return Scored(metrics, rows, list(base_scores), {"scorer": scorer_record(scorer) if scorer else None})

    def score_reference(self, spec, outputs, reference):
        from .metrics import resolve_scorer, summary_scores

        scorer = resolve_scorer(None) if "bertscore" in spec.metrics else None
        scores = summary_scores(outputs, [(reference,)] * len(outputs), scorer, spec.metrics)
        return list(scores.items())


class Classification(Kind):
    """Pick one of the task's labels with a sequence-classification head; F1, accuracy, McNemar."""

    name = "classification"
    peft_task_type = "SEQ_CLS"
    headline = "macro_f1"
    example_metric = "p_true_label"
    column_fields = ("text_column", "label_column")
    fresh_head = True
    shows_probabilities = True
    family = "classify"
    HEAD_MODULES = ("pre_classifier", "classifier", "score")
    """Classification heads that from_pretrained initialises fresh and LoRA must train in full."""
    validation_metric = "selection"
    """Macro-F1 (the headline), ties broken by the lower validation loss: with a small or easy validation set
    many steps reach the same F1, and the first of them is rarely the best trained."""

    def validation_metrics(self, spec):
        def compute(prediction):
            import numpy as np
            import torch
            from sklearn.metrics import accuracy_score, f1_score

            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            logits, labels = np.asarray(logits), np.asarray(prediction.label_ids)
            predicted = logits.argmax(-1)
            every = list(range(len(spec.labels)))
            f1 = float(f1_score(labels, predicted, labels=every, average="macro", zero_division=0))
            loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits).float(), torch.from_numpy(labels)))
            return {
                "macro_f1": f1,
                "accuracy": float(accuracy_score(labels, predicted)),
                "selection": tie_broken(f1, loss),
            }

        return compute

    def validation_sample(self, spec, predictions, label_ids):
        import numpy as np

        from .metrics import corpus_classification_scores
        from .stats import Sample

        logits = predictions[0] if isinstance(predictions, tuple) else predictions
        rows = np.stack([np.asarray(label_ids), np.asarray(logits).argmax(-1)], axis=-1)
        k = len(spec.labels)
        return Sample(rows, lambda r: corpus_classification_scores(r[..., 0], r[..., 1], k)["macro_f1"])

    def validate(self, spec):
        if not spec.label_column or (len(spec.labels) < 2 and not spec.labels_from_data):
            raise ValueError(f"classification task {spec.name!r} needs label_column and at least two labels")

    def load_model(self, spec, model_ref, **kwargs):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(
            model_ref,
            num_labels=len(spec.labels),
            id2label=dict(enumerate(spec.labels)),
            label2id={name: i for i, name in enumerate(spec.labels)},
            **kwargs,
        )

    def modules_to_save(self, model):
        """The head (from_pretrained initialises it fresh; `trained_in_full` adds the other fresh modules)."""
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        return [h for h in self.HEAD_MODULES if h in names]

    def collator(self, tokenizer, model):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def columns(self, spec, present, overrides):
        label = overrides.get("label_column") or spec.label_column
        return {**super().columns(spec, present, overrides), "label": [label]}

    def parse_row(self, spec, row, columns, overrides):
        value = row.get(columns["label"][0])
        mapped = (overrides.get("label_map") or {}).get(str(value).strip().lower())
        return {"label": mapped if mapped is not None else normalize_label(value, spec.labels)}

    def features(self, spec, tokenizer, examples, max_input_tokens, max_target_tokens):
        rows = _encode_inputs(self, spec, tokenizer, examples, max_input_tokens)
        for row, ex in zip(rows, examples):
            row["labels"] = ex.label
        return rows

    def predict(self, loaded, texts, settings, tuned, progress=True, on_progress=None):
        from .inference import classify  # deferred: torch

        prompts, special = self.prompted(loaded, texts, settings)
        return classify(loaded, prompts, settings, tuned, special, progress=progress, on_progress=on_progress)

    def stream(self, loaded, text, settings):
        from .inference import classify_pair  # deferred: torch

        (prompt,), special = self.prompted(loaded, [text], settings)
        pair = classify_pair(loaded, prompt, settings, loaded.task.labels, special)
        yield {side: {**u, "text": max(u["probs"], key=u["probs"].get)} for side, u in pair.items()}

    def output_text(self, spec, output):
        best = max(range(len(output)), key=output.__getitem__)
        detail = ", ".join(f"{name} {p:.3f}" for name, p in zip(spec.labels, output))
        return f"{spec.labels[best]} ({detail})"

    def reference_text(self, spec, example):
        return spec.labels[example.label]

    def score(self, spec, examples, base_out, tuned_out, scorer, seed, progress=True, on_progress=None):
        from .metrics import (
            classification_report,
            corpus_classification_scores,
            corpus_metric_names,
            per_class_report,
        )
        from .stats import paired_aggregate, paired_comparison

        labels = spec.labels
        y = [ex.label for ex in examples]
        base_pred = [max(range(len(p)), key=p.__getitem__) for p in base_out]
        tuned_pred = [max(range(len(p)), key=p.__getitem__) for p in tuned_out]
        base_ok = [float(p == t) for p, t in zip(base_pred, y)]
        tuned_ok = [float(p == t) for p, t in zip(tuned_pred, y)]
        base_pt = [p[t] for p, t in zip(base_out, y)]
        tuned_pt = [p[t] for p, t in zip(tuned_out, y)]

        def corpus(name):
            return lambda refs, preds, axis=-1: corpus_classification_scores(refs, preds, len(labels), axis)[name]

        names = corpus_metric_names(len(labels))
        metrics = {name: paired_aggregate(y, base_pred, tuned_pred, corpus(name), seed) for name in names}
        metrics["correct"] = paired_comparison(base_ok, tuned_ok, "mcnemar", seed)
        metrics["p_true_label"] = paired_comparison(base_pt, tuned_pt, "permutation", seed)
        rows = []
        for i, ex in enumerate(examples):
            row = {
                "id": ex.id,
                "input": ex.text,
                "reference": labels[ex.label],
                "base_output": labels[base_pred[i]],
                "tuned_output": labels[tuned_pred[i]],
                "base_correct": base_ok[i],
                "tuned_correct": tuned_ok[i],
                "base_p_true_label": base_pt[i],
                "tuned_p_true_label": tuned_pt[i],
            }
            row.update({f"base_p_{name}": base_out[i][k] for k, name in enumerate(labels)})
            row.update({f"tuned_p_{name}": tuned_out[i][k] for k, name in enumerate(labels)})
            rows.append(row)
        extra = {
            "scorer": None,
            "labels": list(labels),
            "confusion_matrix": {
                "base": classification_report(base_pred, y, labels)["confusion_matrix"],
                "tuned": classification_report(tuned_pred, y, labels)["confusion_matrix"],
            },
            "per_class": {
                "base": per_class_report(base_pred, y, labels),
                "tuned": per_class_report(tuned_pred, y, labels),
            },
        }
        warnings, not_better = prediction_warnings(labels, y, base_pred, tuned_pred)
        return Scored(metrics, rows, ["correct", "p_true_label"], extra, warnings, not_better)

    def score_reference(self, spec, outputs, reference):
        truth = spec.labels[normalize_label(reference, spec.labels)]
        return [("correct", ["✓" if out == truth else "✗" for out in outputs])]


SKEW_LIMIT = 0.25
"""Warn when a model's predicted class shares are this far (total variation distance) from the labels'."""


def prediction_warnings(labels, references, base_pred, tuned_pred) -> tuple[list[str], str | None]:
    """Warnings about degenerate or skewed predictions, and the reason (if any) that rules out "better".

    A model that predicts one class for every example can still raise positive-class F1 or accuracy on
    unbalanced data; it has learned nothing about telling the classes apart, so it is never called better.
    """
    from collections import Counter

    n = len(references)
    truth = Counter(references)
    warnings, not_better = [], None
    for side, pred in (("base", base_pred), ("tuned", tuned_pred)):
        counts = Counter(pred)
        if len(counts) == 1:
            only = labels[next(iter(counts))]
            line = f"the {side} model predicts one class only ({only}) for all {n} examples"
            warnings.append(line)
            if side == "tuned":
                not_better = line
            continue
        distance = sum(abs(counts[k] - truth[k]) for k in range(len(labels))) / (2 * n)
        if side == "tuned" and distance > SKEW_LIMIT:
            top = max(range(len(labels)), key=lambda k: counts[k] - truth[k])
            warnings.append(
                f"the tuned model predicts {labels[top]} for {counts[top] / n:.0%} of examples, but "
                f"{truth[top] / n:.0%} of the labels are {labels[top]}"
            )
    return warnings, not_better


def _encode_inputs(kind, spec, tokenizer, examples, max_input_tokens) -> list[dict]:
    """Token ids (unpadded: the collator pads each batch to its own longest) of the prompted inputs."""
    features = tokenizer(
        kind.prompts(spec, tokenizer, [ex.text for ex in examples], max_input_tokens),
        truncation=True,
        max_length=max_input_tokens,
        add_special_tokens=kind.special_tokens(tokenizer),
    )
    return [{"input_ids": i, "attention_mask": m} for i, m in zip(features["input_ids"], features["attention_mask"])]


def is_decoder_only(config) -> bool:
    """Whether a transformers config describes a decoder-only language model (Llama, Qwen, Gemma, GPT-2...).

    BERT-style encoders also have a causal-LM class in transformers, so the architectures the checkpoint was
    saved with must be a causal LM too (`...ForCausalLM`, `...LMHeadModel`).
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if getattr(config, "is_encoder_decoder", False) or config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return False
    architectures = getattr(config, "architectures", None) or []
    return not architectures or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)


class CausalLM(Seq2Seq):
    """Generate the target after the prompt with a decoder-only model (SmolLM2, Qwen, Llama, Gemma, GPT-2).

    The prompt is the tokenizer's chat template around the task prompt (user turn) when it has one, the
    plain task prompt otherwise; the target follows, then EOS. Loss is on the target tokens only. Batched
    generation pads on the left, and outputs are decoded without the prompt. Scoring is Seq2Seq's.
    """

    name = "causal_lm"
    peft_task_type = "CAUSAL_LM"

    def load_model(self, spec, model_ref, **kwargs):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(model_ref, **kwargs)

    @staticmethod
    def has_template(tokenizer) -> bool:
        return bool(getattr(tokenizer, "chat_template", None))

    def special_tokens(self, tokenizer):
        return not self.has_template(tokenizer)  # a chat template writes BOS and role markers itself

    def _wrap(self, tokenizer, prompt: str) -> str:
        if not self.has_template(tokenizer):
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompts(self, spec, tokenizer, texts, max_input_tokens):
        """Each prompt fits `max_input_tokens` whole: a long input text is cut, never the template around it
        (cutting the end would drop the assistant turn the answer must follow)."""
        frame = self._wrap(tokenizer, spec.format_prompt(""))
        overhead = len(tokenizer(frame, add_special_tokens=self.special_tokens(tokenizer))["input_ids"])
        budget = max(1, max_input_tokens - overhead)
        out = []
        for text in texts:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            if len(enc["input_ids"]) > budget:
                text = text[: enc["offset_mapping"][budget - 1][1]]
            out.append(self._wrap(tokenizer, spec.format_prompt(text)))
        return out

    def prepare_tokenizer(self, tokenizer):
        tokenizer.padding_side = "left"  # batched generation continues every row right after its prompt

    def run_info(self, tokenizer):
        if self.has_template(tokenizer):
            return {"prompt_format": "chat_template", "chat_template": tokenizer.chat_template}
        return {"prompt_format": "plain", "chat_template": None}

    def training_batch(self, batch):
        """Logits for the answer tokens only: the output head (49,152 x 576 in SmolLM2, a fifth of its forward
        pass) projects the positions from the batch's first answer token on, and the labels are cut to match,
        so the model's own loss is the same (the prompt tokens before carry no loss)."""
        import torch

        labels = batch["labels"]
        answered = labels != -100
        if not answered.any():
            return batch
        first = int(answered.int().argmax(dim=1)[answered.any(dim=1)].min())
        start = max(first - 1, 0)  # the logit at position t predicts token t + 1
        kept = torch.arange(start, labels.shape[1], device=labels.device)
        return {**batch, "labels": labels[:, start:], "logits_to_keep": kept}

    def collator(self, tokenizer, model):
        import copy

        from transformers import DataCollatorForSeq2Seq

        # Training pads on the right (labels and inputs alike); generation pads on the left.
        right = copy.copy(tokenizer)
        right.padding_side = "right"
        return DataCollatorForSeq2Seq(right, model=None, label_pad_token_id=-100, padding=True)

    def features(self, spec, tokenizer, examples, max_input_tokens, max_target_tokens):
        prompts = tokenizer(
            self.prompts(spec, tokenizer, [ex.text for ex in examples], max_input_tokens),
            add_special_tokens=self.special_tokens(tokenizer),
        )["input_ids"]
        targets = tokenizer(
            [ex.references[0] for ex in examples],
            add_special_tokens=False,
            truncation=True,
            max_length=max(1, max_target_tokens - 1),
        )["input_ids"]
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        rows = []
        for prompt, target in zip(prompts, targets):
            answer = list(target) + eos
            rows.append(
                {
                    "input_ids": list(prompt) + answer,
                    "attention_mask": [1] * (len(prompt) + len(answer)),
                    "labels": [-100] * len(prompt) + answer,  # loss on the answer only
                }
            )
        return rows


SEQ2SEQ = register_kind(Seq2Seq())
CLASSIFICATION = register_kind(Classification())
CAUSAL_LM = register_kind(CausalLM())
