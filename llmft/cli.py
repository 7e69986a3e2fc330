"""Command line: python -m llmft tasks|train|evaluate|predict|runs|export|push

Thin: parse arguments, build library objects, call the library, print. Any `LlmftError` becomes one line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import LlmftError
from .tasks import get_task, task_names


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage too)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _add_columns(p):
    p.add_argument("--text-column", help="input text column (default: the task's)")
    p.add_argument(
        "--target-column",
        type=_csv,
        dest="target_columns",
        help="reference column(s), comma-separated for several references",
    )
    p.add_argument("--label-column", help="label column for classification")


DTYPE_HELP = "weights' dtype: auto (fp32 on CPU, bf16 on a bf16 GPU), float32, or bfloat16 (faster on bf16 CPUs)"


def _add_dtype(p: argparse.ArgumentParser) -> None:
    # models.DTYPES, spelled out: importing llmft.models (and torch) would slow down every command's start.
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help=DTYPE_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m llmft", description="Fine-tune small models with LoRA; compare base vs tuned.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("tasks", help="list the tasks and their presets")

    t = sub.add_parser("train", help="train a LoRA adapter; writes a run directory")
    t.add_argument("--task", required=True)
    t.add_argument("--preset", default="quick", choices=["quick", "full"])
    t.add_argument("--model", help="hub id, local folder, or 'minilm' (default: the task's)")
    t.add_argument("--data", help="'sample' (default), a .jsonl/.json/.csv/.tsv/.parquet file, or a hub dataset id")
    t.add_argument("--train-samples", type=int, help="examples drawn from the data (0 = all)")
    steps = t.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=int)
    steps.add_argument("--epochs", type=float)
    t.add_argument("--lr", type=float, dest="learning_rate")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lora-r", type=int)
    t.add_argument("--lora-alpha", type=int)
    t.add_argument("--lora-dropout", type=float)
    t.add_argument(
        "--base-dropout",
        type=float,
        help="dropout inside the frozen base model while training (default: the model's own, 0.1 for the "
        "task models; 0 trains faster on CPU, up to 3x for MiniLM at 512 tokens, and regularises less)",
    )
    t.add_argument("--target-modules", type=_csv)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--run-name")
    t.add_argument("--runs-dir")
    t.add_argument("--resume", action="store_true", help="continue run --run-name from its last checkpoint")
    _add_dtype(t)
    _add_columns(t)

    e = sub.add_parser("evaluate", help="compare base and tuned on test examples")
    e.add_argument("--task", required=True)
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run name (or run directory)")
    src.add_argument("--adapter", help="adapter folder or hub id")
    e.add_argument("--model", help="base model (default: the run's, else the task's)")
    e.add_argument("--data", help="test data (default: the bundled sample)")
    e.add_argument("--split", help="split of the sample or hub dataset (default: the task's test split)")
    e.add_argument("--n", type=int, help="number of test examples (default: the preset's)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--bertscore-model", help="BERTScore scorer (default roberta-large; offline the packaged MiniLM)")
    e.add_argument("--max-new-tokens", type=int)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--out", help="also write examples.csv, summary.json, boxplot.html here")
    e.add_argument("--runs-dir")
    _add_dtype(e)
    _add_columns(e)

    p = sub.add_parser("predict", help="print base and tuned outputs for one text")
    p.add_argument("--task", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run")
    src.add_argument("--adapter")
    p.add_argument("--model")
    p.add_argument("--text", required=True)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--runs-dir")
    _add_dtype(p)

    x = sub.add_parser("export", help="write a run's adapter (or merged model) with a model card")
    x.add_argument("--run", required=True)
    x.add_argument("--out", required=True)
    x.add_argument("--merge", action="store_true", help="merge the adapter into the base model")
    x.add_argument("--runs-dir")

    u = sub.add_parser("push", help="export a run and upload it to the Hugging Face hub")
    u.add_argument("--run", required=True)
    u.add_argument("--repo-id", required=True)
    u.add_argument("--private", action="store_true")
    u.add_argument("--merge", action="store_true")
    u.add_argument("--runs-dir")

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--runs-dir")
    return parser


def cmd_tasks(args) -> None:
    for name in task_names():
        task = get_task(name)
        print(f"{name:10s} {task.kind:15s} model={task.model} data={task.dataset}")
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
    from .allocator import keep_freed_memory
    from .runs import find_run, read_run
    from .training import TrainConfig, config_fields, train

    keep_freed_memory()  # one job per process: trade returning memory to the OS for fewer page faults
    get_task(args.task)
    if args.resume:
        if not args.run_name:
            raise LlmftError("--resume needs --run-name of the run to continue")
        saved = read_run(find_run(args.run_name, args.runs_dir))
        if saved.get("status") == "completed":
            raise LlmftError(f"run {args.run_name} is already completed")
        config = TrainConfig(**saved["config"])
    else:
        # Every TrainConfig field the parser defines, under the same name.
        config = TrainConfig(**{k: getattr(args, k) for k in config_fields() if hasattr(args, k)})
    info = train(config, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun / accelerate launch, the main process reports
    print(
        f"run {info['name']}: {info['status']} in {info['duration_s']:.1f}s, {info['step']} steps, "
        f"final loss {info['final_loss']:.4f}"
    )
    print(f"adapter: {Path(info['dir']) / 'adapter'}")
    print(
        f"evaluate: python -m llmft evaluate --task {config.task} --run {info['name']}"
        + (f" --runs-dir {config.runs_dir}" if config.runs_dir else "")
    )


def cmd_evaluate(args) -> None:
    from .allocator import keep_freed_memory
    from .pipeline import evaluate

    keep_freed_memory()
    columns = {
        "text_column": args.text_column,
        "target_columns": args.target_columns,
        "label_column": args.label_column,
    }
    result = evaluate(
        args.task,
        run=args.run,
        adapter=args.adapter,
        model=args.model,
        data=args.data,
        split=args.split,
        n=args.n,
        seed=args.seed,
        scorer=args.bertscore_model,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        out=args.out,
        runs_dir=args.runs_dir,
        columns=columns,
        dtype=args.dtype,
    )
    print(format_summary(result))
    for paths in result["written"]:
        print(f"wrote {Path(paths['summary']).parent}")


def format_summary(result: dict) -> str:
    """A plain-text table of the paired comparison."""
    head = f"{result['task']}: n={result['n']}, {result.get('dtype', 'float32')} weights"
    if result["scorer"]:
        head += f", BERTScore scorer {result['scorer']}"
    lines = [head, f"{'metric':14s} {'base':>8s} {'tuned':>8s} {'delta':>8s} {'95% CI':>19s} {'p':>9s}  W/T/L"]
    for name, m in result["metrics"].items():
        lines.append(
            f"{name:14s} {m['base_mean']:8.4f} {m['tuned_mean']:8.4f} {m['delta_mean']:+8.4f} "
            f"[{m['ci95'][0]:+.4f}, {m['ci95'][1]:+.4f}] {m['p_value']:9.2g}  "
            f"{m['wins']}/{m['ties']}/{m['losses']}"
        )
    return "\n".join(lines)


def cmd_predict(args) -> None:
    from .data import normalize_text
    from .evaluation import GenerationSettings, classify, generate
    from .tasks import CLASSIFICATION

    try:
        text, notice = normalize_text(args.text)
    except LlmftError:
        raise LlmftError("--text is empty") from None
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    from .pipeline import open_model

    task = get_task(args.task)
    loaded, _ = open_model(task, args.run, args.adapter, args.model, args.runs_dir, dtype=args.dtype)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens or task.max_target_tokens,
        batch_size=1,
        max_input_tokens=task.max_input_tokens,
    )
    for tuned in (False, True):
        label = "tuned" if tuned else "base"
        if task.kind == CLASSIFICATION:
            probs = classify(loaded, [text], settings, tuned, progress=False)[0]
            best = max(range(len(probs)), key=probs.__getitem__)
            detail = ", ".join(f"{name} {p:.3f}" for name, p in zip(task.labels, probs))
            print(f"{label}: {task.labels[best]} ({detail})")
        else:
            print(f"{label}: {generate(loaded, [text], settings, tuned, progress=False)[0]}")


def cmd_export(args) -> None:
    from .export import export_run

    out = export_run(args.run, args.out, merge=args.merge, runs_dir=args.runs_dir)
    print(f"exported {'merged model' if args.merge else 'adapter'} of run {args.run} to {out}")


def cmd_push(args) -> None:
    from .export import push_run

    url = push_run(args.run, args.repo_id, private=args.private, merge=args.merge, runs_dir=args.runs_dir)
    print(f"pushed run {args.run} to {args.repo_id}: {url}")


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
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "runs": cmd_runs,
    "export": cmd_export,
    "push": cmd_push,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="llmft: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        COMMANDS[args.command](args)
    except LlmftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
