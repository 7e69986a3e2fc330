"""Command line: python -m llmft tasks|train|search|evaluate|predict|runs|export|push

Thin: parse arguments, build library objects, call the library, print. Any `LlmftError` becomes one line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from .errors import LlmftError
from .tasks import get_task, task_names, task_of_run, use_task


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage too)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from .config import EvalConfig, TrainConfig, add_arguments

    parser = _Parser(prog="python -m llmft", description="Fine-tune small models with LoRA; compare base vs tuned.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("tasks", help="list the tasks and their presets")

    t = sub.add_parser("train", help="train a LoRA adapter; writes a run directory")
    add_arguments(t, TrainConfig)
    t.add_argument("--resume", action="store_true", help="continue run --run-name from its last checkpoint")

    s = sub.add_parser(
        "search",
        help="hyperparameter search (Optuna TPE, median pruning on the validation metric); every trial is a run",
    )
    add_arguments(s, TrainConfig)
    for action in s._actions:
        if action.dest == "time_budget":  # for a search, --time-budget is the whole search's
            action.help = "seconds for the whole search: no trial starts after it (with or instead of --trials)"
    s.add_argument("--trials", type=int, help="trials this worker runs (other workers of the study add theirs)")
    s.add_argument("--trial-time-budget", type=float, help="each trial's own time budget in seconds")
    s.add_argument(
        "--space", help="a YAML/JSON file narrowing or widening the search space (docs/validation-and-search.md)"
    )
    s.add_argument("--storage", help="an Optuna RDB URL (default: SQLite in the runs home)")
    s.add_argument("--study", help="the study's name: resumed when it exists (default: <task>-search-<time>)")
    s.add_argument("--no-evaluate", action="store_true", help="do not evaluate the best trial on the test split")

    e = sub.add_parser("evaluate", help="compare base and tuned on test examples")
    add_arguments(e, EvalConfig)

    p = sub.add_parser("predict", help="print base and tuned outputs for one text")
    p.add_argument("--task", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run")
    src.add_argument("--adapter")
    p.add_argument("--model")
    p.add_argument("--text", required=True)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--runs-dir")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])

    x = sub.add_parser("export", help="write a run's adapter (or merged model) with a model card")
    x.add_argument("--run", required=True)
    x.add_argument("--out", required=True)
    x.add_argument("--merge", action="store_true", help="merge the adapter into the base model")
    x.add_argument(
        "--gguf",
        action="store_true",
        help="also write the merged model as GGUF (model-f16.gguf, model-q8_0.gguf) with an Ollama Modelfile "
        "(Llama-architecture models: SmolLM2, Llama)",
    )
    x.add_argument("--runs-dir")

    u = sub.add_parser("push", help="export a run and upload it to the Hugging Face hub")
    u.add_argument("--run", required=True)
    u.add_argument("--repo-id", required=True)
    u.add_argument("--private", action="store_true")
    u.add_argument("--merge", action="store_true")
    u.add_argument("--runs-dir")

    lb = sub.add_parser(
        "leaderboard",
        help="evaluate several runs on the same examples and rank them (against base and the best, Holm-corrected)",
    )
    lb.add_argument("--task", required=True)
    lb.add_argument("--runs", required=True, help="run names, comma-separated (a --repeat group's runs, or any)")
    lb.add_argument("--data", help="test data (default: the bundled sample)")
    lb.add_argument("--split", help="split of the sample or hub dataset (default: the task's test split)")
    lb.add_argument("--n", type=int, help="test examples (default: the smallest of the runs' presets')")
    lb.add_argument("--seed", type=int, default=0, help="seed of the example sample and the bootstrap")
    lb.add_argument("--max-new-tokens", type=int, help="default: the largest of the runs' fitted caps")
    lb.add_argument("--bertscore-model", dest="scorer", help="BERTScore scorer (default as for evaluate)")
    lb.add_argument("--out", help="write leaderboard.json, leaderboard.csv and leaderboard.html here")
    lb.add_argument("--runs-dir")
    lb.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])

    v = sub.add_parser("votes", help="the blind A/B votes on a run: their result per evaluation, or all as CSV")
    v.add_argument("--run", required=True)
    v.add_argument("--csv", help="write every vote to this CSV file")
    v.add_argument("--runs-dir")

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--runs-dir")
    return parser


def cmd_tasks(args) -> None:
    for name in task_names():
        task = get_task(name)
        print(f"{name:10s} {task.kind.family or task.kind.name:15s} model={task.model} data={task.dataset}")
        print(f"{'':10s} {task.description}")
        for preset_name, preset in task.presets.items():
            length = f"{preset.max_steps} steps" if preset.max_steps else f"{preset.epochs:g} epochs"
            print(
                f"{'':10s} {preset_name:5s}: r={preset.lora_r} alpha={preset.lora_alpha} "
                f"dropout={preset.lora_dropout} targets={','.join(preset.target_modules)} "
                f"lr={preset.learning_rate:g} {length} batch={preset.batch_size} "
                f"train={preset.train_samples or 'all'} eval_n={preset.eval_n}"
            )


def cmd_train(args) -> None:
    import signal
    import threading

    from .allocator import keep_freed_memory
    from .config import TrainConfig, from_args
    from .runs import find_run, read_run
    from .training import train

    keep_freed_memory()  # one job per process: trade returning memory to the OS for fewer page faults
    if args.resume:  # a resumed run keeps its own task: its name is enough, the file may be gone
        if not args.run_name:
            raise LlmftError("--resume needs --run-name of the run to continue")
        saved = read_run(find_run(args.run_name, args.runs_dir))
        if saved.get("status") == "completed":
            raise LlmftError(f"run {args.run_name} is already completed")
        use_task(task_of_run(saved))  # a file task resumes from its stored definition, not the file
        config = TrainConfig(**{**saved["config"], "task": saved["task"]})
    else:
        config = from_args(TrainConfig, args)
    # SIGTERM (the app's Cancel, or a scheduler) stops training at the end of the current step; the run is
    # marked cancelled and its last complete checkpoint kept (and with --repeat, no later seed starts).
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    if args.resume and config.repeat > 1:
        raise LlmftError("--resume continues one run: give --run-name of that run, without --repeat")
    members = config.repeats()
    for member in members:
        info = train(member, resume=args.resume, cancel=cancel)
        if os.environ.get("RANK", "0") != "0":
            continue  # under torchrun / accelerate launch, the main process reports
        print(
            f"run {info['name']}: {info['status']} in {info['duration_s']:.1f}s, {info['step']} steps, "
            f"final loss {info['final_loss'] if info['final_loss'] is None else round(info['final_loss'], 4)}"
        )
        if info["status"] != "completed":
            return
        print(f"adapter: {Path(info['dir']) / 'adapter'}")
    home = f" --runs-dir {config.runs_dir}" if config.runs_dir else ""
    if len(members) > 1:
        names = ",".join(m.run_name for m in members)
        print(f"seed spread: python -m llmft leaderboard --task {config.task} --runs {names}{home}")
    else:
        print(f"evaluate: python -m llmft evaluate --task {config.task} --run {info['name']}{home}")


def cmd_search(args) -> None:
    from .allocator import keep_freed_memory
    from .config import EvalConfig, TrainConfig, check_bounds, from_args
    from .context import Context
    from .pipeline import evaluate
    from .search import load_space, search

    keep_freed_memory()
    if args.run_name:
        raise LlmftError("search names its trials' runs <study>-t000, -t001, ...: give --study instead of --run-name")
    if args.trials is not None and args.trials < 1:
        raise LlmftError(f"trials must be at least 1, got {args.trials}")
    timeout = args.time_budget
    if timeout is not None and timeout <= 0:
        raise LlmftError(f"time-budget must be above 0 seconds, got {timeout}")
    base = from_args(TrainConfig, args).replace(time_budget=args.trial_time_budget or 0)
    check_bounds(base)
    space = load_space(args.space, base)

    def on_trial(t):
        value = "—" if t["value"] is None else f"{t['value']:.4f}"
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        print(f"trial {t['trial']:>3} {t['state']:9s} {value:>8}  {t['run']}  {params}", flush=True)

    # SIGTERM (the app's Cancel) stops the running trial after its step; no further trial starts.
    import signal
    import threading

    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    result = search(base, args.trials, timeout, space, args.storage, args.study, on_trial=on_trial, cancel=cancel)
    if cancel.is_set():
        print(f"search {result.study} cancelled after {len(result.trials)} trials")
    done = len(result.trials)
    from .pipeline import metric_text

    chosen = metric_text(result.metric, base.task_spec.kind.headline)
    print(f"study {result.study} ({result.storage}): {done} trials finished, chosen by validation {chosen}")
    if result.best is None:
        print("no trial completed: nothing to evaluate")
        return
    best = result.best
    print(f"best: trial {best['trial']}, run {best['run']}, validation {result.metric} {best['value']:.4f}")
    if args.no_evaluate or cancel.is_set():
        return
    config = EvalConfig(task=base.task, run=best["run"], runs_dir=base.runs_dir, dtype=base.dtype)
    evaluation, written = evaluate(Context.create(config.runs_dir, config.dtype), config, on_progress=_stages())
    print(evaluation.text_report())
    for paths in written:
        print(f"wrote {Path(paths['summary']).parent}")


def _stages():
    """An evaluation's `on_progress` for the terminal: a line as each scoring stage starts, with the time the
    previous one took (tqdm draws the generation bars; bert_score's own bar reports nonsense timings)."""
    import time

    last = {"stage": None, "at": 0.0}

    def report(stage: str, done: int, total: int) -> None:
        if stage == last["stage"]:
            return
        now = time.perf_counter()
        if last["stage"]:
            print(f" {now - last['at']:.1f} s", file=sys.stderr)
        scoring = stage.startswith("scoring")
        if scoring:
            print(f"{stage}...", end="", file=sys.stderr, flush=True)
        last.update(stage=stage if scoring else None, at=now)

    return report


def cmd_evaluate(args) -> None:
    from .allocator import keep_freed_memory
    from .config import EvalConfig, from_args
    from .context import Context
    from .pipeline import evaluate

    keep_freed_memory()
    config = from_args(EvalConfig, args)
    result, written = evaluate(Context.create(config.runs_dir, config.dtype), config, on_progress=_stages())
    print(result.text_report())
    for paths in written:
        print(f"wrote {Path(paths['summary']).parent}")


def cmd_predict(args) -> None:
    from .context import Context
    from .data import normalize_text
    from .evaluation import GenerationSettings
    from .pipeline import generation_cap, open_model, resolve_task

    try:
        text, notice = normalize_text(args.text)
    except LlmftError:
        raise LlmftError("--text is empty") from None
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    ctx = Context.create(args.runs_dir, args.dtype)
    loaded, run_info = open_model(ctx, resolve_task(ctx, args.task, args.run), args.run, args.adapter, args.model)
    task = loaded.task  # as the model and run decide it: a decoder's kind, a file task's stored labels
    if task.input_columns:
        print(
            f"note: task {task.name} fills its prompt from columns {', '.join(task.input_columns)}; --text is "
            "used as the filled prompt",
            file=sys.stderr,
        )
    settings = GenerationSettings(
        max_new_tokens=generation_cap(task, run_info, args.max_new_tokens)[0],
        batch_size=1,
        max_input_tokens=task.max_input_tokens,
    )
    for tuned in (False, True):
        output = task.kind.predict(loaded, [text], settings, tuned, progress=False)[0]
        print(f"{'tuned' if tuned else 'base'}: {task.kind.output_text(task, output)}")


def cmd_export(args) -> None:
    from .export import export_run

    out = export_run(args.run, args.out, merge=args.merge, runs_dir=args.runs_dir, gguf=args.gguf)
    what = "merged model and GGUF files" if args.gguf else "merged model" if args.merge else "adapter"
    print(f"exported {what} of run {args.run} to {out}")


def cmd_push(args) -> None:
    from .export import push_run

    url = push_run(args.run, args.repo_id, private=args.private, merge=args.merge, runs_dir=args.runs_dir)
    print(f"pushed run {args.run} to {args.repo_id}: {url}")


def cmd_leaderboard(args) -> None:
    from .context import Context
    from .leaderboard import leaderboard

    for name, value, low, high in (("--n", args.n, 1, 100_000), ("--max-new-tokens", args.max_new_tokens, 1, 4096)):
        if value is not None and not low <= value <= high:
            raise LlmftError(f"{name} must be between {low} and {high}, got {value}")
    ctx = Context.create(args.runs_dir, args.dtype)
    board, _ = leaderboard(
        ctx,
        args.task,
        args.runs.split(","),
        data=args.data,
        n=args.n,
        seed=args.seed,
        split=args.split,
        max_new_tokens=args.max_new_tokens,
        scorer=args.scorer,
        on_progress=lambda stage, done, total: print(f"{stage} ({done + 1} of {total})", file=sys.stderr),
    )
    print(board.text())
    if args.out:
        paths = board.write(args.out)
        print(f"wrote {', '.join(paths.values())}")


def cmd_votes(args) -> None:
    from .runs import find_run
    from .votes import source_text, tallies, tally_text, write_csv

    run_dir = find_run(args.run, args.runs_dir)
    results = tallies(run_dir)
    if not results:
        print(f"run {args.run} has no votes yet: vote blind in the app's Compare or Evaluate tab")
    for t in results:
        print(f"{source_text(t['source'])}: {tally_text(t)}")
    if args.csv:
        print(f"wrote {write_csv(run_dir, args.csv)}")


def cmd_runs(args) -> None:
    from .runs import list_runs

    for run in list_runs(args.runs_dir):
        loss = run.get("final_loss")
        print(
            f"{run['name']:32s} {run['task']:10s} {run['status']:10s} step {run.get('step', 0):>5} "
            f"loss {loss if loss is None else round(loss, 4)}  {run.get('base_model')}"
        )


COMMANDS = {
    "tasks": cmd_tasks,
    "train": cmd_train,
    "search": cmd_search,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "runs": cmd_runs,
    "leaderboard": cmd_leaderboard,
    "votes": cmd_votes,
    "export": cmd_export,
    "push": cmd_push,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="llmft: %(message)s")
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notes: not the user's concern

    hf_logging.set_verbosity_error()
    debug = args.debug or os.environ.get("LLMFT_DEBUG", "") not in ("", "0")
    try:
        COMMANDS[args.command](args)
    except LlmftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output went to a pager or `head` that stopped reading: not an error
        sys.stderr.close()
        return 0
    except Exception as err:  # the last resort: a bug or an unforeseen failure, still one line
        if debug:
            raise
        from .errors import first_line

        print(f"error: {type(err).__name__}: {first_line(err)} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
