"""Compare tab: base and tuned outputs side by side on the user's text, from one warm model."""

from __future__ import annotations

import html

import gradio as gr

from ..access import User
from ..data import bundled_path, load_examples, normalize_text
from ..errors import LlmftError
from ..evaluation import GenerationSettings
from ..examples import text_hash
from ..kinds import prompt_of
from ..pipeline import generation_cap, known_tasks, open_model, run_task
from ..runs import COMPLETED
from ..tasks import get_task
from ..votes import CHOICES, COMPARE, make_ballot, source_tally, tally_text
from .common import completed_runs, user_errors, visible_runs, with_user
from .guard import MODEL_WORK


def bundled_examples(task_name: str, k: int = 12) -> list:
    task = get_task(task_name)
    if not bundled_path(task, task.test_split).is_file():
        return []  # your own task has no bundled sample
    examples = load_examples(task, None, task.test_split)[:k]
    return [(f"{ex.id}: {' '.join(ex.text.split())[:70]}…", ex.id) for ex in examples]  # a dialogue on one line


def example_text(task_name: str, example_id: str):
    task = get_task(task_name)
    for ex in load_examples(task, None, task.test_split):
        if ex.id == example_id:
            return ex.text, task.kind.reference_text(task, ex)
    return gr.update(), gr.update()


def _open(ctx, user, runs, task, adapter_choice, model):
    """The base model with the adapter of the visitor's choice: a run of `runs` (the ones they may see), or a
    typed folder or hub id."""
    if not adapter_choice:
        raise LlmftError("pick a tuned adapter: a finished run, an adapter folder or a hub id")
    is_run = adapter_choice in completed_runs(ctx, user, task.name, runs)
    other = next((r for r in runs if r["name"] == adapter_choice and r.get("status") == COMPLETED), None)
    if not is_run and other is not None:  # a run of another task, not a folder or hub id
        raise LlmftError(f"run {adapter_choice} is a {other['task']!r} run, not {task.name!r}: pick its task")
    for ref in (model, None if is_run else adapter_choice):  # a typed folder must not reach a private run
        ctx.access.check_local_ref(ctx.runs_dir, user, ref)
    loaded, _ = open_model(
        ctx,
        task,
        run=adapter_choice if is_run else None,
        adapter=None if is_run else adapter_choice,
        model=model or None,
        cached=True,
    )
    return loaded


def _stats(update, notice) -> str:
    ttft = "" if update.get("ttft_s") is None else f" · first token {update['ttft_s'] * 1000:.0f} ms"
    note = " · input truncated" if update.get("truncated") else ""
    elapsed = update["elapsed_s"]
    total = f"{elapsed * 1000:.0f} ms" if elapsed < 1 else f"{elapsed:.2f} s"
    return f"{update['tokens']} tokens{ttft} · total {total}{note}{notice}"


def _score(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def compare(ctx, user, task_name, model, adapter_choice, text, reference, max_new_tokens):
    """Yields (base text, tuned text, base stats, tuned stats, base probs, tuned probs, scores, prompt)."""
    runs = visible_runs(ctx, user)
    if task_name not in known_tasks(ctx, runs):  # another visitor's own task stays theirs
        raise LlmftError(f"unknown task {task_name!r}")
    task = get_task(task_name)
    text, cut = normalize_text(text)
    notice = f" · {cut}" if cut else ""
    loaded = _open(ctx, user, runs, task, adapter_choice, model)
    settings = GenerationSettings(
        max_new_tokens=int(max_new_tokens), batch_size=1, max_input_tokens=task.max_input_tokens
    )
    view = {side: {"text": "", "stats": "", "probs": None} for side in ("base", "tuned")}

    task = loaded.task  # as the model and run decide it: a decoder's kind, a file task's stored labels
    prompt = prompt_of(loaded, text, settings)  # as the model reads it (task and chat templates)

    def outputs(scores=""):
        b, t = view["base"], view["tuned"]
        return b["text"], t["text"], b["stats"], t["stats"], b["probs"], t["probs"], scores, prompt

    # A classifier's base has a head nobody trained (the checkpoint had none): its probabilities are chance.
    untrained = task.kind.shows_probabilities and bool(loaded.fresh_modules)
    chance = " · **untrained head**: the base model was never taught these labels, so its answer is chance"
    for pair in task.kind.stream(loaded, text, settings):  # base and tuned together, from one batch
        for side, update in pair.items():
            stats = _stats(update, notice) + (chance if side == "base" and untrained else "")
            view[side].update(text=update["text"], stats=stats, probs=update.get("probs"))
        yield outputs()
    scores = ""
    if reference and reference.strip():
        reference, _ = normalize_text(reference)  # capped like the text: scoring cost grows with its length
        # Escaped: the reference is user text and must not render as markup.
        rows = task.kind.score_reference(task, [view["base"]["text"], view["tuned"]["text"]], reference.strip())
        table = "\n".join(f"| {m} | {_score(s[0])} | {_score(s[1])} |" for m, s in rows)
        shown = html.escape(reference.strip()[:200])
        scores = f"Reference: {shown}\n\n| metric | base | tuned |\n|---|---|---|\n{table}"
    yield outputs(scores)


def blind_compare(ctx, user, task_name, model, adapter_choice, text, max_new_tokens):
    """Both outputs as A and B in a random order, nothing else that tells them apart (no stats, no
    probabilities): (ballot token, A, B, status)."""
    voter = ctx.access.voter(user)
    if adapter_choice not in completed_runs(ctx, user, task_name):
        raise LlmftError("a blind vote is kept with a run: pick one of the finished runs as the tuned adapter")
    *_, last = compare(ctx, user, task_name, model, adapter_choice, text, "", max_new_tokens)
    base, tuned = last[0], last[1]
    ballot = make_ballot(COMPARE, text_hash(normalize_text(text)[0]), text, base, tuned)
    run_dir = ctx.access.find(ctx.runs_dir, user, adapter_choice)["dir"]
    token = ctx.ballots.issue(ballot, run_dir, voter)
    return token, ballot.a, ballot.b, "Which answer is better? The sides are revealed after your vote."


def blind_vote(ctx, user, adapter_choice, token, choice):
    """Cast the vote on the Compare ballot; reveal which side was tuned and the run's Compare tally."""
    vote = ctx.ballots.answer(token, choice, ctx.access.voter(user))
    run_dir = ctx.access.find(ctx.runs_dir, user, adapter_choice)["dir"]
    a_was = "tuned" if vote["tuned_was"] == "A" else "base"
    b_was = "base" if a_was == "tuned" else "tuned"
    return None, f"Recorded. **A was {a_was}, B was {b_was}.** Votes on Compare texts for this run: " + tally_text(
        source_tally(run_dir, COMPARE)
    )


def build(ctx):
    with gr.Tab("Compare", id="compare"):
        gr.Markdown(
            "The base model and your tuned version answer the same text side by side, each as it writes. Pick a "
            "finished run (any task: the task follows the run), then type or pick a text."
        )
        with gr.Row():
            task = gr.Dropdown(
                known_tasks(ctx, visible_runs(ctx, User())),
                value="sentiment",
                label="Task",
                elem_id="cmp-task",
                allow_custom_value=True,  # the handler, not the session's list, decides which tasks a caller may use
            )
            model = gr.Textbox(
                label="Base model (blank = the run's)", placeholder="hub id, local folder, minilm or smollm2"
            )
            public = completed_runs(ctx, User())  # the page as built; each visitor's on load
            adapter = gr.Dropdown(
                public,
                label="Tuned adapter (run, folder or hub id)",
                allow_custom_value=True,
            )
        empty = gr.Markdown(
            "**No finished run yet.** Train one in the **Fine-tune** tab (the quick preset takes about a minute), "
            "or type an adapter folder or hub id above.",
            visible=not public,
        )
        to_finetune = gr.Button("Go to Fine-tune", size="sm", visible=not public)
        example = gr.Dropdown(bundled_examples("sentiment"), label="Bundled example", value=None)
        text = gr.Textbox(label="Text", lines=6, max_length=200_000)
        with gr.Row():
            reference = gr.Textbox(label="Reference (optional: summary or label)", lines=2)
            max_new = gr.Slider(
                8, 256, value=64, step=8, label="Max new tokens", info="per side, at most", visible=False
            )
        go = gr.Button("Compare", variant="primary")
        with gr.Row():
            with gr.Column():
                base_out = gr.Textbox(label="Base", lines=4, interactive=False)
                base_stats = gr.Markdown()
                base_probs = gr.Label(label="Base class probabilities", visible=True)
            with gr.Column():
                tuned_out = gr.Textbox(label="Tuned", lines=4, interactive=False)
                tuned_stats = gr.Markdown()
                tuned_probs = gr.Label(label="Tuned class probabilities", visible=True, elem_id="cmp-tuned-probs")
        scores = gr.Markdown()
        with gr.Accordion("Blind A/B: judge the two answers without knowing which is tuned", open=False):
            blind_go = gr.Button("Compare blind", elem_id="cmp-blind")
            ballot = gr.State(None)
            with gr.Row():
                blind_a = gr.Textbox(label="A", lines=4, interactive=False, elem_id="cmp-blind-a")
                blind_b = gr.Textbox(label="B", lines=4, interactive=False, elem_id="cmp-blind-b")
            with gr.Row():
                blind_votes = {c: gr.Button(label, size="sm", elem_id=f"cmp-vote-{c}") for c, label in CHOICES.items()}
            blind_status = gr.Markdown(elem_id="cmp-blind-status")
        with gr.Accordion("Prompt as the model reads it", open=False):
            prompt = gr.Textbox(
                label="Prompt (the task's template and, for chat models, the chat template)",
                lines=6,
                interactive=False,
                buttons=["copy"],
                elem_id="cmp-prompt",
            )

        def on_task(user, name, current=None):
            """The task's examples and fields; every finished run stays in the adapter list (a run of another task
            switches the task to its own), the picked one kept when it is this task's, else this task's newest."""
            kind = get_task(name).kind
            runs = visible_runs(ctx, user)
            everything, mine = completed_runs(ctx, user, runs=runs), completed_runs(ctx, user, name, runs)
            kept = current if current in mine or (current and current not in everything) else None
            return (
                gr.update(choices=known_tasks(ctx, runs)),  # tasks of runs trained since
                gr.update(choices=bundled_examples(name), value=None),
                gr.update(choices=everything, value=kept or (mine[0] if mine else None)),
                gr.update(visible=kind.shows_probabilities),
                gr.update(visible=kind.shows_probabilities),
                gr.update(visible=kind.generates),
                gr.update(visible=not everything),
                gr.update(visible=not everything),
                *("", "", "", "", None, None, ""),  # an answer of another task never stays under this one
            )

        def on_adapter(user, task_name, choice):
            """A run of another task switches the task to its own; a run's generation cap (fitted to its training
            references) becomes the slider's value."""
            runs = visible_runs(ctx, user)
            info = next((r for r in runs if r["name"] == choice and r.get("status") == COMPLETED), None)
            if info is None:
                return gr.update(), gr.update()
            if info["task"] != task_name:
                return gr.update(value=info["task"]), gr.update()  # the task's change sets the rest
            task_spec, info = run_task(ctx, task_name, choice)
            return gr.update(), gr.update(value=min(256, generation_cap(task_spec, info, None)[0]))

        adapter.change(with_user(ctx, on_adapter), [task, adapter], [task, max_new], api_name=False)
        answers = [base_out, tuned_out, base_stats, tuned_stats, base_probs, tuned_probs, scores]
        shown = [task, example, adapter, base_probs, tuned_probs, max_new, empty, to_finetune, *answers]
        on_task = with_user(ctx, on_task)
        task.change(on_task, [task, adapter], shown, api_name=False)
        example.change(
            user_errors(lambda t, e: example_text(t, e) if e else (gr.update(), gr.update())),
            [task, example],
            [text, reference],
            api_name=False,
        )

        def on_compare(user, *args):
            yield from compare(ctx, user, *args)

        go.click(
            with_user(ctx, on_compare),
            [task, model, adapter, text, reference, max_new],
            [base_out, tuned_out, base_stats, tuned_stats, base_probs, tuned_probs, scores, prompt],
            api_name="compare",
            concurrency_id=MODEL_WORK,
            show_progress_on=[scores],  # the outputs stream in; an error marks the line below them only
        )
        blind_go.click(
            with_user(ctx, lambda user, *args: blind_compare(ctx, user, *args)),
            [task, model, adapter, text, max_new],
            [ballot, blind_a, blind_b, blind_status],
            api_name="compare_blind",
            concurrency_id=MODEL_WORK,
        )
        for choice, button in blind_votes.items():
            button.click(
                with_user(ctx, lambda user, a, t, c=choice: blind_vote(ctx, user, a, t, c)),
                [adapter, ballot],
                [ballot, blind_status],
                api_name=f"compare_vote_{choice}",
            )
    return {
        "task": task,
        "adapter": adapter,
        "to_finetune": to_finetune,
        "empty": empty,
        "on_load": (on_task, [task, adapter], shown),
    }
