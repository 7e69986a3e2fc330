"""About tab: what the tasks, LoRA, the metrics and the statistics are, in plain words."""

import gradio as gr

from ..tasks import get_task, task_names


def text() -> str:
    tasks = "\n".join(
        f"- **{name}** — {get_task(name).description} Default model `{get_task(name).model}`, "
        f"data `{get_task(name).dataset}` (offline: the bundled sample)."
        for name in task_names()
    )
    return f"""
## Tasks
{tasks}

## LoRA
LoRA freezes the base model and learns a small low-rank update (rank *r*, scaled by *alpha / r*) for chosen
weight matrices, such as the attention query and value projections. Only a few hundred thousand parameters
train, and the adapter is a file of a few MB. Here base and tuned are the same loaded model: the adapter is
switched off for "base", so both sides share identical base weights.

## Precision
Weights are fp32 on a CPU and bf16 on a GPU that supports it. A server started with `--dtype bfloat16` uses
bf16 on the CPU too: faster on CPUs with native bf16, with slightly different outputs. Each evaluation shows
the precision it ran with; compare evaluations made with the same one.

## Metrics
- **ROUGE-1 / 2 / L**: overlap of words, word pairs and the longest common subsequence with the reference
  summary (F-measure, with stemming; the best reference counts when there are several).
- **BERTScore F1**: similarity of contextual embeddings of output and reference; the scorer model is shown with
  every result, and scores from different scorers must not be compared.
- **overall**: the mean of the four, per example.
- **Classification** (sentiment): **macro-F1** (the headline: the mean F1 over the classes, so a model that
  always answers the majority class scores low), accuracy, macro precision and recall, the F1 of the
  positive class (named `positive_f1`), the confusion matrix, the share of examples right (`correct`) and the
  probability each model gives the true label.

## Statistics
Every score is computed per example for both models, so the comparison is paired:
- **delta** is tuned − base (the mean of per-example deltas, or the difference of a corpus metric such as
  macro-F1), with a 95% **paired bootstrap confidence interval**: if it excludes 0, the change is unlikely
  to be resampling noise.
- **p-value**: a **paired permutation test** of that same delta (base and tuned swapped at random per
  example), so the interval and the p-value of a row always speak about the same metric; the `correct` row
  uses the exact McNemar test, which tests the same difference of proportions. Small means a difference this
  large would be rare if the fine-tune changed nothing.
- **win / tie / loss**: examples where tuned scored higher, the same, or lower.
- **Verdict**: *better* or *worse* when the headline metric's interval excludes 0 (in the direction the
  metric counts as better), otherwise *no clear difference*. A tuned classifier that predicts one class for
  every example is never called better, and warnings say when predictions are skewed or when test examples
  were training examples.
With a few dozen examples intervals are wide: evaluate more examples before trusting a small delta.
"""


def build():
    with gr.Tab("About", id="about"):
        gr.Markdown(text())
