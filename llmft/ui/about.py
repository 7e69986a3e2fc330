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
- **Sentiment**: F1, accuracy, precision and recall of the positive class, the confusion matrix, and the
  probability each model gives the true label.

## Statistics
Every score is computed per example for both models, so the comparison is paired:
- **delta** is the mean of tuned − base, with a 95% **bootstrap confidence interval**: if it excludes 0, the
  change is unlikely to be resampling noise.
- **p-value**: Wilcoxon signed-rank test for continuous scores, exact McNemar test for right/wrong. Small
  means a difference this large would be rare if the fine-tune changed nothing.
- **win / tie / loss**: examples where tuned scored higher, the same, or lower.
With a few dozen examples intervals are wide: evaluate more examples before trusting a small delta.
"""


def build():
    with gr.Tab("About", id="about"):
        gr.Markdown(text())
