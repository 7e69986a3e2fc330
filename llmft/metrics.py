"""Metrics as pure functions `(predictions, references) -> per-example scores`, registered by name.

ROUGE comes from rouge_score, BERTScore from bert_score, classification metrics from scikit-learn: never
`evaluate.load`, which fetches metric scripts from the hub at run time.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import LlmftError
from .packaged import MINILM
from .refs import check_model_ref, hub_reachable, in_hub_cache
from .registry import Registry

log = logging.getLogger(__name__)
DEFAULT_SCORER = "roberta-large"
"""BERTScore model of the origin notebooks (via evaluate's bertscore with lang='en')."""
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable
    higher_is_better: bool = True
    needs_scorer: bool = False


METRICS = Registry("metric")


def register_metric(name: str, higher_is_better: bool = True, needs_scorer: bool = False):
    def wrap(fn):
        METRICS.add(name, Metric(name, fn, higher_is_better, needs_scorer))
        return fn

    return wrap


def _rouge(kind: str, predictions: list[str], references: list[tuple[str, ...]]) -> list[float]:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise LlmftError("rouge_score is not installed: pip install rouge_score") from None
    scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
    # score_multi keeps, per example, the reference with the best F-measure.
    return [scorer.score_multi(list(refs), pred)[kind].fmeasure for pred, refs in zip(predictions, references)]


@register_metric("rouge1")
def rouge1(predictions, references):
    return _rouge("rouge1", predictions, references)


@register_metric("rouge2")
def rouge2(predictions, references):
    return _rouge("rouge2", predictions, references)


@register_metric("rougeL")
def rougeL(predictions, references):  # noqa: N802 - the metric's name
    return _rouge("rougeL", predictions, references)


class BertScorer:
    """A warm bert_score scorer; the model name it was built from is recorded with every result."""

    _cache: OrderedDict = OrderedDict()
    CACHE_SIZE = 2
    """Scorers kept warm; a server asked for many scorer models must not keep them all (roberta-large is 1.4 GB)."""

    def __init__(self, model: str):
        try:
            import bert_score
        except ImportError:
            raise LlmftError("bert_score is not installed: pip install bert_score") from None
        from transformers import AutoConfig

        self.name = model
        path = check_model_ref(model)
        layers = bert_score.utils.model2layers.get(model) or AutoConfig.from_pretrained(path).num_hidden_layers
        self.scorer = bert_score.BERTScorer(model_type=path, num_layers=layers, use_fast_tokenizer=True, batch_size=32)
        self.num_layers = layers

    @classmethod
    def get(cls, model: str) -> BertScorer:
        if model not in cls._cache:
            cls._cache[model] = cls(model)
            while len(cls._cache) > cls.CACHE_SIZE:
                cls._cache.popitem(last=False)
        cls._cache.move_to_end(model)
        return cls._cache[model]

    def f1(self, predictions: list[str], references: list[tuple[str, ...]]) -> list[float]:
        """BERTScore F1 per example; best over several references; 0.0 for an empty prediction.

        bert_score 0.3.13 crashes on empty strings under transformers 5, and older bert_score scored an empty
        candidate 0 too, so empty predictions get 0.0 without calling it.
        """
        scores = [0.0] * len(predictions)
        keep = [i for i, p in enumerate(predictions) if p.strip()]
        if keep:
            cands = [predictions[i] for i in keep]
            refs = [[r for r in references[i] if r.strip()] or ["."] for i in keep]
            _, _, f1 = self.scorer.score(cands, refs, batch_size=32)
            for i, value in zip(keep, f1.tolist()):
                scores[i] = float(value)
        return scores


def resolve_scorer(model: str | None) -> str:
    """The BERTScore model to use: the given one, else roberta-large, else (offline) the packaged MiniLM."""
    if model:
        return model
    model = os.environ.get("LLMFT_BERTSCORE_MODEL") or DEFAULT_SCORER
    if hub_reachable() or in_hub_cache(model) or os.path.isdir(model):
        return model
    log.warning("hub unreachable: scoring BERTScore with the packaged MiniLM instead of %s", model)
    return MINILM


def scorer_record(scorer: str) -> str:
    """The scorer as recorded with a result: the packaged MiniLM is named as such."""
    return "sentence-transformers/all-MiniLM-L6-v2 (packaged)" if scorer == MINILM else scorer


@register_metric("bertscore_f1", needs_scorer=True)
def bertscore_f1(predictions, references, scorer: str = DEFAULT_SCORER):
    return BertScorer.get(scorer).f1(predictions, references)


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if not unicodedata.category(ch).startswith("P"))
    return " ".join(_ARTICLES.sub(" ", text).split())


@register_metric("exact_match")
def exact_match(predictions, references):
    """1.0 when the output equals one of the references after `normalize_answer`, else 0.0."""
    return [
        float(any(normalize_answer(pred) == normalize_answer(ref) for ref in refs))
        for pred, refs in zip(predictions, references)
    ]


@register_metric("chrf")
def chrf(predictions, references):
    """Sentence chrF (sacrebleu's, character 6-grams, beta 2) against all references, scaled to 0..1."""
    try:
        from sacrebleu.metrics import CHRF
    except ImportError:
        raise LlmftError("sacrebleu is not installed: pip install sacrebleu") from None
    metric = CHRF()
    return [metric.sentence_score(pred, list(refs)).score / 100 for pred, refs in zip(predictions, references)]


GENERATION_METRIC_COLUMNS = {
    "rouge": ROUGE_TYPES,
    "bertscore": ("bertscore_f1",),
    "exact_match": ("exact_match",),
    "chrf": ("chrf",),
}
"""A task's metric choice -> the per-example score columns it adds."""


def summary_scores(predictions, references, scorer: str | None, metrics=("rouge", "bertscore")) -> dict:
    """Per-example scores of the chosen metrics (ROUGE-1/2/L, BERTScore-F1, exact match, chrF) and `overall`,
    their mean (the origin's headline with ROUGE and BERTScore)."""
    scores = {}
    for choice in metrics:
        for name in GENERATION_METRIC_COLUMNS[choice]:
            if name == "bertscore_f1":
                scores[name] = bertscore_f1(predictions, references, scorer=scorer)
            else:
                scores[name] = METRICS[name].fn(predictions, references)
    names = list(scores)
    scores["overall"] = [sum(scores[n][i] for n in names) / len(names) for i in range(len(predictions))]
    return scores


@register_metric("correct")
def correct(predictions: list[int], references: list[int]) -> list[float]:
    return [float(p == r) for p, r in zip(predictions, references)]


def classification_report(predictions: list[int], references: list[int], labels: tuple[str, ...]) -> dict:
    """Macro F1 / precision / recall (over the classes present in references or predictions), accuracy, the
    F1 of the positive class (binary tasks: label id 1), and the confusion matrix (rows = true label,
    columns = predicted), all from scikit-learn."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        references, predictions, average="macro", zero_division=0
    )
    report = {
        "macro_f1": float(f1),
        "accuracy": float(accuracy_score(references, predictions)),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "confusion_matrix": confusion_matrix(references, predictions, labels=list(range(len(labels)))).tolist(),
    }
    if len(labels) == 2:
        report["positive_f1"] = float(f1_score(references, predictions, pos_label=1, zero_division=0))
    return report


def per_class_report(predictions: list[int], references: list[int], labels) -> dict:
    """{label: {precision, recall, f1, support}} from scikit-learn (zero_division=0)."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        references, predictions, labels=list(range(len(labels))), average=None, zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
        for name, p, r, f, n in zip(labels, precision, recall, f1, support)
    }


def corpus_metric_names(n_classes: int) -> tuple[str, ...]:
    """The corpus-level metrics of a classification task: macro-F1 first (the headline)."""
    names = ("macro_f1", "accuracy", "macro_precision", "macro_recall")
    return (*names, "positive_f1") if n_classes == 2 else names


def corpus_classification_scores(references, predictions, n_classes: int, axis: int = -1) -> dict[str, np.ndarray]:
    """`classification_report`'s metrics along `axis`, for many samples at once.

    The paired bootstrap and permutation test score thousands of resamples per metric; scikit-learn's input
    checks cost ~3 ms a call, so resamples are scored from per-class counts in numpy instead. The definitions
    are scikit-learn's (macro over the classes present in references or predictions; the positive class is
    id 1; zero_division=0), and tests/test_metrics.py checks that they agree.
    """
    refs = np.moveaxis(np.asarray(references), axis, -1)
    preds = np.moveaxis(np.asarray(predictions), axis, -1)
    classes = range(n_classes)
    tp, fp, fn = (
        np.stack([np.sum((preds == c) & (refs == c), axis=-1) for c in classes], axis=-1),
        np.stack([np.sum((preds == c) & (refs != c), axis=-1) for c in classes], axis=-1),
        np.stack([np.sum((preds != c) & (refs == c), axis=-1) for c in classes], axis=-1),
    )

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)

    per_class = {
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }
    present = (tp + fp + fn) > 0
    scores = {
        f"macro_{k}": ratio(np.sum(v * present, axis=-1), np.sum(present, axis=-1)) for k, v in per_class.items()
    }
    scores["accuracy"] = np.mean(preds == refs, axis=-1)
    if n_classes == 2:
        scores["positive_f1"] = per_class["f1"][..., 1]
    return scores
