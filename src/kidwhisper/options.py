"""Command-line flags generated from a stage's config dataclass, so that each option is described once.

Every field of the dataclass becomes ``--field-name`` (a nested dataclass field ``lora.r`` becomes
``--lora.r``). Its help text is the comment on the field's line and the comment-only lines right below it,
or a string literal right below the field, followed by the default. ``Literal`` types give ``choices``,
``bool`` a ``--x/--no-x`` pair, list fields take one comma-separated value. Every flag defaults to None,
so :func:`config_from_args` can tell a flag given on the command line from one left out: flags override
the values of ``--config FILE``, which override the dataclass defaults. The resolved object is the one
saved beside every output.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from typing import Any, Literal

from kidwhisper.config import ConfigError, from_dict, read_config_file


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: help text}`` from the comments / string literals beside the fields in ``cls``'s source."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    body = ast.parse(source).body[0].body
    docs: dict[str, str] = {}
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
            continue
        parts = [comments[node.end_lineno]] if node.end_lineno in comments else []
        line = node.end_lineno + 1
        while line in comments and line not in code_lines:  # comment-only lines below the field continue it
            parts.append(comments[line])
            line += 1
        docs[node.target.id] = " ".join(parts)
    return docs


def _unwrap_optional(t: Any) -> Any:
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return t


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _help(doc: str, default: Any) -> str:
    if default is dataclasses.MISSING:
        tail = "required"
    elif isinstance(default, list):
        tail = f"default: {','.join(map(str, default))}"
    else:
        tail = f"default: {default}"
    return (f"{doc} ({tail})" if doc else f"({tail})").replace("%", "%%")


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                    prefix: str = "") -> None:
    """Add one flag per field of dataclass ``cls`` (minus ``skip``) to ``parser``; see the module docstring."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        name = prefix + f.name
        t = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(t):
            add_config_args(parser, t, prefix=name + ".")
            continue
        flag = "--" + name.replace("_", "-")
        kw: dict[str, Any] = {"dest": name, "default": None, "help": _help(docs.get(f.name, ""), _default(f))}
        origin = typing.get_origin(t)
        if t is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            choices = typing.get_args(t)
            kw.update(choices=choices, type=type(choices[0]))
        elif origin is list:
            kw.update(type=str, metavar="A,B,...")
        elif t in (int, float, str):
            kw["type"] = t
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for type {t!r}")
        parser.add_argument(flag, **kw)


def _given(cls: type, args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` given as flags, nested dataclasses as nested dicts."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(t):
            sub = _given(t, args, prefix + f.name + ".")
            if sub:
                out[f.name] = sub
        elif getattr(args, prefix + f.name, None) is not None:
            out[f.name] = getattr(args, prefix + f.name)
    return out


def config_from_args(cls: type, args: argparse.Namespace, extra: dict[str, Any] | None = None,
                     where: str = "options"):
    """Dataclass ``cls`` from ``--config FILE`` (if given), overridden by the flags given, then ``extra``.

    A required field (no default) missing from both is a ConfigError naming its flag.
    """
    data = read_config_file(args.config) if getattr(args, "config", None) else {}
    for key, value in _given(cls, args).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    data.update(extra or {})
    missing = [f.name for f in dataclasses.fields(cls) if _default(f) is dataclasses.MISSING and data.get(f.name) is None]
    if missing:
        raise ConfigError(f"missing required option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return from_dict(cls, data, where=where)
