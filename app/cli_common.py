"""Shared CLI plumbing: dataclass configs become flags, their help text becomes ``--help``.

A knob is explained once, in the ``help`` metadata of its dataclass field; the CLI and the
Streamlit tooltips both read it from there (the TRL ``DPOConfig`` habit).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def field_help(cls: type, name: str) -> str:
    """The help text of dataclass field ``name`` of ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _parse_bool_or_str(text: str) -> bool | str:
    low = text.lower()
    if low in {"true", "1", "yes"}:
        return True
    if low in {"false", "0", "no"}:
        return False
    return text


_ESCAPES = {"\\n": "\n", "\\t": "\t", "\\r": "\r", "\\,": ",", "\\\\": "\\"}


def _unescape(part: str) -> str:
    """``\\n``, ``\\t``, ``\\r``, ``\\,`` and ``\\\\`` typed on a command line become the characters
    (``--dry-sequence-breakers '\\n,:'`` is a newline and a colon)."""
    out, i = [], 0
    while i < len(part):
        pair = part[i:i + 2]
        if pair in _ESCAPES:
            out.append(_ESCAPES[pair])
            i += 2
        else:
            out.append(part[i])
            i += 1
    return "".join(out)


def _parse_list(text: str) -> list[str]:
    """Comma-separated items, with backslash escapes (``\\,`` for a literal comma)."""
    items, current, i = [], [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
        elif text[i] == ",":
            items.append("".join(current))
            current = []
            i += 1
        else:
            current.append(text[i])
            i += 1
    items.append("".join(current))
    return [_unescape(item) for item in items if item != ""]


def _converter(tp: Any):
    """An argparse ``type=`` for a dataclass field annotation."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if set(args) == {bool, str}:
            return _parse_bool_or_str
        if len(args) == 1:
            return _converter(args[0])
        if float in args:
            return float
        return str
    if origin in (list, tuple) or tp in (list, tuple):
        return _parse_list
    if origin is typing.Literal:
        return str
    if tp in (int, float, str):
        return tp
    if tp is bool:
        return _parse_bool_or_str
    return str


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type,
                            skip: set[str] = frozenset()) -> None:
    """Add one ``--flag`` per field of ``cls``; defaults stay unset so the dataclass decides."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f.metadata.get("help", "")
        if default is not None and default != []:
            text = f"{text} (default: {default})"
        group.add_argument(flag_name(f.name), dest=f.name, type=_converter(hints[f.name]),
                           default=argparse.SUPPRESS, help=text.replace("%", "%%"),
                           metavar=f.metadata.get("metavar", f.name.upper()))


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any):
    """Build ``cls`` from the flags that were given (others keep the dataclass defaults)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(overrides)
    return cls(**values)
