"""Command-line flags generated from the config dataclasses, and one way to report errors.

    p = argparse.ArgumentParser()
    add_config_flags(p, TrainConfig)                 # --batch-size, --lr, ... with help from
    cfg = config_from_args(TrainConfig, p.parse_args())   # each field's docstring

A field `foo_bar` becomes `--foo-bar` in every command, so one idea has one name
everywhere (`--device`, `--seed`, `--batch-size`, ...; tests/test_cli.py checks that every
flag of every `clipsae` subcommand comes from here and means one thing). `Literal` fields
become choices, `bool` fields `--x/--no-x`, `X | None` fields take an X and default to None,
`tuple[X, ...]` fields several values (`--sae a b`; comma-separated with `COMMAS`), a field
without a default a required flag, a field whose type is a config dataclass that class's
flags. Field metadata `POSITIONAL` makes a positional argument, `renamed(...)` another flag.

`run_reporting(prog, fn)` runs an entry point and turns every expected user error into one
line on stderr and a non-zero exit (2; 28 for a full disk; 130 when interrupted): the
`clipsae` command and the `torchrun -m …` entry points share it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import errno
import inspect
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any, Literal, get_args, get_origin

from .errors import USER_ERRORS


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (and its bases): {field: first paragraph}."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split("\n\n")[0].split())
    return docs


def flag_name(field: str) -> str:
    """The flag of a config field: `batch_size` -> `--batch-size`."""
    return "--" + field.replace("_", "-")


COMMAS = {"separator": ","}
"""Field metadata of a `tuple[X, ...]` field written as one comma-separated value
(`--k 16,32,64`) instead of space-separated values (`--sae a b`)."""
COMMAS_OR_SWEEP = {"separator": ",", "words": ("sweep",)}
"""`COMMAS`, or the word `sweep` (kept as the tuple ("sweep",); the config expands it)."""
POSITIONAL = {"positional": True}
"""Field metadata of a field given as a positional argument (`clipsae link A B`)."""


def renamed(flag: str, *older: str) -> dict[str, tuple[str, ...]]:
    """Field metadata of a field whose flag is not its name: `flag`, still read under its
    `older` names (a flag that meant something else in another command got a new name;
    scripts that used the old one keep working)."""
    return {"flags": (flag, *older)}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def is_config(tp: Any) -> bool:
    """Whether a field's type is itself a config dataclass (its fields become flags too)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _comma_list(kind: type, words: tuple[str, ...] = ()) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        if text.strip() in words:  # a named list (`--l1 sweep`), expanded by the config that owns it
            return (text.strip(),)
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {'integers' if kind is int else 'numbers'}, got {text!r}"
            ) from None

    parse.__name__ = f"{kind.__name__} list"  # argparse names the type in its error message
    return parse


def _argparse_kwargs(tp: Any, default: Any, f: dataclasses.Field, required: bool) -> dict[str, Any]:
    tp, _ = _unwrap_optional(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction, "default": default}
    if get_origin(tp) is Literal:
        choices = list(get_args(tp))
        return {"choices": choices, "type": type(choices[0]), "default": default}
    if get_origin(tp) is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any number of values
            if f.metadata.get("separator") == ",":
                words = tuple(f.metadata.get("words", ()))
                metavar = f"{args[0].__name__.upper()},..." + "".join(f"|{w}" for w in words)
                return {"type": _comma_list(args[0], words), "default": default, "metavar": metavar}
            return {"nargs": "+" if required else "*", "type": args[0], "default": default}
        return {
            "nargs": len(args),
            "type": args[0],
            "default": default,
            "metavar": tuple(a.__name__.upper() for a in args),
        }
    if tp in (int, float, str):
        return {"type": tp, "default": default}
    raise TypeError(f"no flag type for {tp!r}")  # a new field type: teach this function


def _default(f: dataclasses.Field, defaults: dict[str, Any]) -> Any:
    if f.name in defaults:
        return defaults[f.name]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_config_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    skip: Iterable[str] = (),
    names: dict[str, str] | None = None,
    required: Iterable[str] = (),
    positional: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
    helps: dict[str, str] | None = None,
) -> list[str]:
    """Add one flag per field of the dataclass `cls` (except `skip`); returns the field names.

    A field without a default is a required flag; a field whose type is a config dataclass
    adds that class's flags (in the same namespace, so `config_from_args` builds it back).
    `names` renames a flag (`{"architecture": "--arch"}`; or the field's metadata `renamed`),
    `required` makes a field's flag required, `positional` makes fields positional arguments
    (in field order; or the field's metadata `POSITIONAL`), `defaults` overrides a default
    shown and used, `helps` replaces a help text. Each action records the field it came from
    (`action.config_field`, e.g. "AtlasConfig.top_images")."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    names, defaults, helps = names or {}, defaults or {}, helps or {}
    skip, required, positional = set(skip), set(required), set(positional)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        if is_config(hints[f.name]):
            group = parser
            if isinstance(parser, argparse.ArgumentParser):  # argparse groups do not nest
                group = parser.add_argument_group(f"{f.name} ({hints[f.name].__name__})", docs.get(f.name))
            added += add_config_flags(
                group,
                hints[f.name],
                skip=skip,
                names=names,
                required=required,
                positional=positional,
                defaults=defaults,
                helps=helps,
            )
            continue
        if f.name in positional or f.metadata.get("positional"):
            kwargs = _argparse_kwargs(hints[f.name], None, f, True)
            kwargs.pop("default", None)
            action = parser.add_argument(f.name, metavar=f.name.upper(), help=_help(helps, docs, f.name), **kwargs)
        else:
            flags = f.metadata.get("flags") or (names.get(f.name, flag_name(f.name)),)
            action = _add_flag(
                parser, f, hints[f.name], flags, _help(helps, docs, f.name), defaults, f.name in required
            )
        action.config_field = f"{cls.__name__}.{f.name}"  # type: ignore[attr-defined]
        added.append(f.name)
    return added


def _help(helps: dict[str, str], docs: dict[str, str], name: str) -> str:
    return helps.get(name, docs.get(name, "")).replace("%", "%%")


def _add_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    f: dataclasses.Field,
    hint: Any,
    flags: tuple[str, ...],
    text: str,
    defaults: dict[str, Any],
    required: bool,
) -> argparse.Action:
    """One `--flag` (and its older names) for field `f`."""
    required = required or (
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in defaults
    )
    kwargs = _argparse_kwargs(hint, _default(f, defaults), f, required)
    if len(flags) > 1:
        text = f"{text} Also read as {', '.join(flags[1:])}, its older name.".strip()
    if required:
        kwargs.pop("default", None)
        kwargs["required"] = True
    elif kwargs.get("action") is not argparse.BooleanOptionalAction:
        text = f"{text} (default: %(default)s)".strip()
    action = parser.add_argument(*flags, dest=f.name, help=text, **kwargs)
    action.older_flags = tuple(flags[1:])  # type: ignore[attr-defined]
    return action


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build the dataclass `cls` from the parsed flags (fields without a flag keep their
    default; nested config dataclasses are built from their own flags) plus `overrides`;
    sequences come back as tuples."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in overrides:
            kwargs[f.name] = overrides[f.name]
        elif is_config(hints[f.name]):
            kwargs[f.name] = config_from_args(hints[f.name], args)
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            if get_origin(_unwrap_optional(hints[f.name])[0]) is tuple and value is not None:
                value = tuple(value)
            kwargs[f.name] = value
    return cls(**kwargs)


def run_reporting(prog: str, fn: Callable[[], int | None]) -> int:
    """Run `fn`; expected user errors become one line on stderr and an exit code."""
    try:
        return int(fn() or 0)
    except USER_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(
            f"{prog}: error: no space left on the device ({exc.filename or exc}). Files are written "
            "atomically, so nothing partial was kept: free some space and run the same command again "
            "(embed resumes from its finished shards).",
            file=sys.stderr,
        )
        return 28
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
