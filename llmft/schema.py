"""The schema every config field is declared with: `param` (flag, help, bounds, choices, form group) and what is
derived from it (argparse flags, bound checks, the reproducing command line, the form's fields).

Ground floor: it knows no llmft module but `errors`, so `config`, `tasks` and `models` can all declare fields
and choices with it.
"""

from __future__ import annotations

import argparse
import shlex
import types
import typing
from dataclasses import MISSING, field, fields

from .errors import LlmftError

DTYPES = ("auto", "float32", "bfloat16")
PRESETS = ("quick", "full")
LR_SCHEDULERS = ("linear", "cosine", "constant")
REPORT_TO = ("none", "tensorboard", "trackio", "mlflow")


METADATA = dict(
    flag=None,
    bounds=None,
    interval="[]",
    choices=None,
    group=None,
    preset=False,
    required=False,
    exclusive=None,
    label=None,
    omit_default=False,
)
"""The metadata a config field may carry, with its defaults (see `param`)."""


def param(default=None, help: str = "", **metadata):
    """A config field with its metadata.

    Args:
        default: the field's default.
        help: one line for `--help`, the form's info and the model card.
        metadata: any of `METADATA`'s keys:
            flag: the CLI flag (default: `--` + the name with dashes).
            bounds: (low, high) allowed values; `interval` says which ends are open: "[]", "(]", "[)", "()".
            choices: the allowed values.
            group: where the Fine-tune form shows it: `task`, `data`, `columns`, `hyper`, `run`; None: not in
                the form. `task`, `hyper` and `run` fields are the hyperparameters the Runs tab and the model
                card list.
            preset: None means "the preset's value" (filled in from the task's preset of the same name).
            required: the CLI requires it (and the field has no default).
            exclusive: fields sharing this name are mutually exclusive on the command line.
            label: the form's label (default: the name in words).
            omit_default: leave the flag out of the reproducing command when it holds the default.
    """
    unknown = set(metadata) - set(METADATA)
    if unknown:
        raise TypeError(f"unknown config field metadata: {', '.join(sorted(unknown))}")
    meta = {**METADATA, **metadata, "help": help}
    if meta["required"]:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def label_of(f) -> str:
    """The form's label: `label`, else the name in words (`lora_r` -> "LoRA r")."""
    return f.metadata.get("label") or f.name.replace("_", " ").capitalize().replace("Lora", "LoRA")


def field_type(cls, f) -> type:
    """The field's type without `None`: int, float, str, bool or list (a list or tuple of str)."""
    hint = typing.get_type_hints(cls)[f.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `int | None`
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return list if typing.get_origin(hint) in (list, tuple) else hint


def schema(cls) -> list:
    """The fields of a config class that carry metadata, in declaration order."""
    return [f for f in fields(cls) if "help" in f.metadata]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of `cls`, with help, choices and mutually exclusive groups from the metadata."""
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in schema(cls):
        meta = f.metadata
        target = parser
        if meta["exclusive"]:
            if meta["exclusive"] not in groups:
                groups[meta["exclusive"]] = parser.add_mutually_exclusive_group()
            target = groups[meta["exclusive"]]
        base = field_type(cls, f)
        kwargs = dict(dest=f.name, help=meta["help"] or None)
        if base is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = _csv if base is list else base
            if meta["choices"]:
                kwargs["choices"] = list(meta["choices"])
        if meta["required"]:
            kwargs["required"] = True
        elif f.default is not MISSING:
            kwargs["default"] = f.default
        target.add_argument(flag_of(f), **kwargs)


def from_args(cls, args: argparse.Namespace):
    """Build `cls` from parsed arguments (every field the parser defined, under the same name)."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def cli_args(config, skip: tuple[str, ...] = ()) -> list[str]:
    """The flags that reproduce `config` (None fields, the fields in `skip` and, in an exclusive group, all but
    the first set one are left out)."""
    args, taken = [], set()
    for f in schema(type(config)):
        value, meta = getattr(config, f.name), f.metadata
        if value is None or f.name in skip or (meta["omit_default"] and value == f.default):
            continue
        if meta["exclusive"]:
            if meta["exclusive"] in taken:
                continue
            taken.add(meta["exclusive"])
        if isinstance(value, bool):
            if value:
                args.append(flag_of(f))
            continue
        args += [flag_of(f), ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)]
    return args


def cli_command(config, command: str) -> str:
    """`python -m llmft <command> ...` reproducing `config`."""
    return shlex.join(["python", "-m", "llmft", command, *cli_args(config)])


def bound_error(cls, f, value) -> str | None:
    """Why `value` does not fit field `f` of `cls` (its choices, or its bounds and interval), or None."""
    meta = f.metadata
    if value is None:
        return None
    if meta["choices"] and value not in meta["choices"]:
        return f"must be one of {', '.join(meta['choices'])}, got {value!r}"
    if meta["bounds"] and not isinstance(value, list | tuple):
        low, high = meta["bounds"]
        lo_open, hi_open = meta["interval"][0] == "(", meta["interval"][1] == ")"
        ok = (low < value if lo_open else low <= value) and (value < high if hi_open else value <= high)
        if isinstance(value, bool) or not ok:
            if meta["interval"] == "[]" and field_type(cls, f) is int:
                return f"must be between {low} and {high}, got {value!r}"
            return f"must be in {meta['interval'][0]}{low:g}, {high:g}{meta['interval'][1]}, got {value!r}"
    return None


def check_bounds(config) -> None:
    """Raise `LlmftError` naming the flag for any field outside its bounds or choices."""
    for f in schema(type(config)):
        problem = bound_error(type(config), f, getattr(config, f.name))
        if problem:
            raise LlmftError(f"{flag_of(f).lstrip('-')} {problem}")


def limits_of(cls, name: str) -> dict:
    """The bounds, interval and choices declared on field `name` of `cls`, to give another field the same ones
    (a `TrainConfig` hyperparameter takes those of its `tasks.Preset` field: one declaration of each bound)."""
    meta = cls.__dataclass_fields__[name].metadata
    return {key: meta[key] for key in ("bounds", "interval", "choices")}


def hyperparameters(cls, config: dict) -> list[tuple[str, object]]:
    """(name, value) of the hyperparameter fields set in a run's stored config (the Runs tab, model card)."""
    names = [f.name for f in schema(cls) if f.metadata["group"] in ("task", "hyper", "run")]
    names = [n for n in names if n not in ("task", "model", "run_name")]  # named elsewhere on the card and table
    return [(name, config.get(name)) for name in names if config.get(name) is not None]


def form_fields(cls, group: str) -> list:
    """The fields the Fine-tune form shows in `group`."""
    return [f for f in schema(cls) if f.metadata["group"] == group]
