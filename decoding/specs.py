"""Strategy specs: one short string per decoding setting, for ``declab compare`` and the studies.

Grammar (spaces around separators are ignored)::

    SPECS := SPEC ( ";" SPEC | "," SPEC )*
    SPEC  := STRATEGY [ ":" FIELD "=" VALUE ( "," FIELD "=" VALUE )* ]

A comma is read by what follows it: ``FIELD=VALUE`` (it has an ``=``) continues the current
spec, a bare word (no ``=``) starts a new spec and must be a strategy name. So
``greedy,beam:num_beams=4,sample:top_p=0.9,temperature=0.7`` is three specs, the last with two
fields. ``;`` always starts a new spec. A value cannot contain ``,`` or ``;``.

Values are typed from the ``DecodingConfig`` annotation of their field: ``int`` (``4``),
``float`` (``0.9``, ``1e-4``), ``bool`` (``true``/``false``/``yes``/``no``/``1``/``0``),
``X | None`` (``none`` for None), ``bool | str`` (a boolean word or the text), a tuple
(items separated by ``|``: ``stop_strings=###|END``). Strategies and fields are read from
``DecodingConfig`` when a spec is parsed, so a field or strategy added to the config is accepted
here without a change.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any, NamedTuple

from . import config as config_module
from .config import DecodingConfig
from .errors import ConfigError, DecodingLabError

SYNTAX = "STRATEGY[:field=value[,field=value...]], several specs separated by ';' (or ',')"
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}
_NONE = {"none", "null"}


class StrategySpec(NamedTuple):
    """A parsed spec: a label (the spec, normalised) and the config it stands for."""

    label: str
    config: DecodingConfig


def strategies() -> tuple[str, ...]:
    """The strategy names ``DecodingConfig`` accepts now."""
    return tuple(config_module.STRATEGIES)


def spec_fields() -> list[str]:
    """The fields a spec may set (every ``DecodingConfig`` field but ``strategy``)."""
    return [f.name for f in dataclasses.fields(DecodingConfig) if f.init and f.name != "strategy"]


def syntax_help() -> str:
    """The accepted syntax, the strategies and the fields: shown in every spec error."""
    return (f"syntax: {SYNTAX}; strategies: {', '.join(strategies())}; "
            f"fields: {', '.join(spec_fields())}")


def _error(spec: str, problem: str) -> DecodingLabError:
    return DecodingLabError(f"strategy spec {spec!r}: {problem}; {syntax_help()}")


# ---------------------------------------------------------------------- values

def parse_value(text: str, annotation: Any) -> Any:
    """``text`` converted to the type ``annotation`` names; ``ValueError`` if it does not fit."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if type(None) in args and text.lower() in _NONE:
            return None
        errors = []
        for member in sorted(members, key=lambda a: a is str):  # str last: it accepts anything
            try:
                return parse_value(text, member)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(" or ".join(errors))
    if origin is typing.Literal:
        if text not in [str(a) for a in args]:
            raise ValueError(f"one of {', '.join(map(str, args))}")
        return next(a for a in args if str(a) == text)
    if origin in (tuple, list) or annotation in (tuple, list):
        item_type = args[0] if args else str
        items = tuple(parse_value(item, item_type) for item in text.split("|") if item != "")
        return items if origin is tuple or annotation is tuple else list(items)
    if annotation is bool:
        low = text.lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError("true or false")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("an integer") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("a number") from None
    if annotation in (str, typing.Any):
        return text
    raise ValueError(f"a value of type {annotation}")


def format_value(value: Any) -> str:
    """The spec text of a field value (inverse of ``parse_value``)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "|".join(format_value(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------- specs

def split_specs(text: str) -> list[str]:
    """Split a specs string into one string per spec (see the module docstring)."""
    specs: list[str] = []
    for chunk in text.split(";"):
        opened = False  # a ';' closes the current spec
        for piece in (p.strip() for p in chunk.split(",")):
            if not piece:
                continue
            if "=" in piece.split(":", 1)[0]:  # FIELD=VALUE continues the current spec
                if not opened:
                    raise _error(piece, "a spec must start with a strategy name")
                specs[-1] += "," + piece
            else:
                specs.append(piece)
                opened = True
    return specs


def parse_spec(text: str, base: DecodingConfig | None = None) -> StrategySpec:
    """One spec → ``(label, DecodingConfig)``; the config is ``base`` with the spec applied."""
    if not isinstance(text, str) or not text.strip():
        raise _error(str(text), "empty spec")
    text = text.strip()
    name, _, rest = text.partition(":")
    name = name.strip()
    if name not in strategies():
        raise _error(text, f"unknown strategy {name!r}")
    hints = typing.get_type_hints(DecodingConfig)
    allowed = spec_fields()
    values: dict[str, Any] = {}
    parts: list[str] = []
    for item in (p.strip() for p in rest.split(",")) if rest.strip() else []:
        key, eq, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq or not key:
            raise _error(text, f"{item!r} is not field=value")
        if key not in allowed:
            raise _error(text, f"unknown field {key!r}")
        if key in values:
            raise _error(text, f"field {key!r} given twice")
        try:
            values[key] = parse_value(raw, hints[key])
        except ValueError as exc:
            raise _error(text, f"{key}={raw!r} is not {exc}") from None
        parts.append(f"{key}={format_value(values[key])}")
    try:
        config = (base or DecodingConfig()).replace(strategy=name, **values)
    except ConfigError as exc:
        raise DecodingLabError(f"strategy spec {text!r}: {exc}") from None
    label = name + (":" + ",".join(parts) if parts else "")
    return StrategySpec(label, config)


def parse_specs(specs: str | Iterable[str], base: DecodingConfig | None = None) -> list[StrategySpec]:
    """Several specs: one string (``;``/``,``-separated, see above) or a list of such strings."""
    texts = [specs] if isinstance(specs, str) else list(specs)
    pieces = [piece for text in texts for piece in split_specs(text)]
    if not pieces:
        raise DecodingLabError(f"no strategy spec given; {syntax_help()}")
    return [parse_spec(piece, base) for piece in pieces]


def format_spec(config: DecodingConfig, base: DecodingConfig | None = None) -> str:
    """The spec of ``config``: its strategy and the fields that differ from ``base``.

    ``parse_spec(format_spec(c, base), base).config == c`` for any config whose tuple values
    contain no ``|``, ``,`` or ``;``.
    """
    reference = base or DecodingConfig()
    parts = [f"{f.name}={format_value(getattr(config, f.name))}"
             for f in dataclasses.fields(config)
             if f.init and f.name != "strategy" and getattr(config, f.name) != getattr(reference, f.name)]
    return config.strategy + (":" + ",".join(parts) if parts else "")
