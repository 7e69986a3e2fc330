"""Compare tab: base and tuned outputs side by side on the user's text, from one warm model."""

from __future__ import annotations

import html

import gradio as gr

from ..data import load_examples, normalize_text
from ..errors import LlmftError
from ..evaluation import GenerationSettings, classify_one, stream_generate
from ..metrics import resolve_scorer, summary_scores
from ..pipeline import open_model
from ..tasks import CLASSIFICATION, get_task
from .common import TASKS, completed_runs, runs_dir, server_dtype, user_errors


def bundled_examples(task_name: str, k: int = 12) -> list:
    task = get_task(task_name)
    examples = load_examples(task, None, task.test_split)[:k]
    return [(f"{ex.id}: {ex.text[:70]}…", ex.id) for ex in examples]


def example_text(task_name: str, example_id: str):
    task = get_task(task_name)
    for ex in load_examples(task, None, task.test_split):
        if ex.id == example_id:
            reference = task.labels[ex.label] if task.kind == CLASSIFICATION else ex.references[0]
            return ex.text, reference
    return gr.update(), gr.update()


def _open(task, adapter_choice, model):
    if not adapter_choice:
        raise LlmftError("pick a tuned adapter: a finished run, an adapter folder or a hub id")
    is_run = adapter_choice in completed_runs(task.name)
    loaded, _ = open_model(
        task,
        run=adapter_choice if is_run else None,
        adapter=None if is_run else adapter_choice,
        model=model or None,
        runs_dir=runs_dir(),
        cached=True,
        dtype=server_dtype(),
    )
    return loaded


def _stats(update) -> str:
    ttft = "—" if update.get("ttft_s") is None else f"{update['ttft_s'] * 1000:.0f} ms"
    note = " · input truncated" if update.get("truncated") else ""
    return f"{update['tokens']} tokens · first token {ttft} · total {update['elapsed_s']:.2f} s{note}"


def compare(task_name, model, adapter_choice, text, reference, max_new_tokens):
    """Yields (base text, tuned text, base stats, tuned stats, base probs, tuned probs, scores)."""
    task = get_task(task_name)
    text, cut = normalize_text(text)
    notice = f" · {cut}" if cut else ""
    loaded = _open(task, adapter_choice, model)
    settings = GenerationSettings(
        max_new_tokens=int(max_new_tokens), batch_size=1, max_input_tokens=task.max_input_tokens
    )
    if task.kind == CLASSIFICATION:
        base, tuned = (classify_one(loaded, text, settings, tuned=t) for t in (False, True))
        out = []
        for side in (base, tuned):
            best = max(side["probs"], key=side["probs"].get)
            out.append((best, f"{side['tokens']} tokens · {side['elapsed_s'] * 1000:.0f} ms{notice}"))
        scores = ""
        if reference and reference.strip():
            ref = reference.strip().lower()
            marks = ["✓" if best.lower() == ref else "✗" for best, _ in out]
            # Escaped: the reference is user text and must not render as markup.
            scores = f"Reference **{html.escape(reference.strip())}** — base {marks[0]} · tuned {marks[1]}"
        yield out[0][0], out[1][0], out[0][1], out[1][1], base["probs"], tuned["probs"], scores
        return
    base_text = tuned_text = base_stats = tuned_stats = ""
    for update in stream_generate(loaded, text, settings, tuned=False):
        base_text, base_stats = update["text"], _stats(update) + notice
        yield base_text, tuned_text, base_stats, tuned_stats, None, None, ""
    for update in stream_generate(loaded, text, settings, tuned=True):
        tuned_text, tuned_stats = update["text"], _stats(update) + notice
        yield base_text, tuned_text, base_stats, tuned_stats, None, None, ""
    scores = ""
    if reference and reference.strip():
        refs = [(reference.strip(),)] * 2
        s = summary_scores([base_text, tuned_text], refs, resolve_scorer(None))
        rows = "\n".join(f"| {m} | {s[m][0]:.4f} | {s[m][1]:.4f} |" for m in s)
        scores = f"| metric | base | tuned |\n|---|---|---|\n{rows}"
    yield base_text, tuned_text, base_stats, tuned_stats, None, None, scores


def build():
    with gr.Tab("Compare", id="compare"):
        gr.Markdown(
            "Run the base model and its tuned version on the same text. One model is loaded; the LoRA "
            "adapter is switched off for the base side."
        )
        with gr.Row():
            task = gr.Dropdown(TASKS, value="sentiment", label="Task")
            model = gr.Textbox(label="Base model (blank = the run's)", placeholder="hub id, local folder or minilm")
            adapter = gr.Dropdown(
                completed_runs("sentiment"), label="Tuned adapter (run, folder or hub id)", allow_custom_value=True
            )
        example = gr.Dropdown(bundled_examples("sentiment"), label="Bundled example", value=None)
        text = gr.Textbox(label="Text", lines=6, max_length=200_000)
        with gr.Row():
            reference = gr.Textbox(label="Reference (optional: summary or label)", lines=2)
            max_new = gr.Slider(8, 256, value=64, step=8, label="Max new tokens")
        go = gr.Button("Compare", variant="primary")
        with gr.Row():
            with gr.Column():
                base_out = gr.Textbox(label="Base", lines=4, interactive=False)
                base_stats = gr.Markdown()
                base_probs = gr.Label(label="Base class probabilities", visible=True)
            with gr.Column():
                tuned_out = gr.Textbox(label="Tuned", lines=4, interactive=False)
                tuned_stats = gr.Markdown()
                tuned_probs = gr.Label(label="Tuned class probabilities", visible=True)
        scores = gr.Markdown()

        def on_task(name):
            probs = get_task(name).kind == CLASSIFICATION
            runs = completed_runs(name)
            return (
                gr.update(choices=bundled_examples(name), value=None),
                gr.update(choices=runs, value=runs[0] if runs else None),
                gr.update(visible=probs),
                gr.update(visible=probs),
            )

        task.change(on_task, task, [example, adapter, base_probs, tuned_probs], api_name=False)
        example.change(
            user_errors(lambda t, e: example_text(t, e) if e else (gr.update(), gr.update())),
            [task, example],
            [text, reference],
            api_name=False,
        )
        go.click(
            user_errors(compare),
            [task, model, adapter, text, reference, max_new],
            [base_out, tuned_out, base_stats, tuned_stats, base_probs, tuned_probs, scores],
            api_name="compare",
        )
    return {"task": task, "adapter": adapter}
