"""Study settings as command-line flags: the help text of a settings field (its ``knob``
metadata, ``decoding.config.knob``) is the help of its flag, as ``DecodingConfig``'s field help is
the help of ``declab generate``'s flags (``app.cli_common.add_dataclass_arguments``). A knob is
explained once, beside its default."""

from __future__ import annotations

import argparse
import dataclasses


def setting_help(cls: type, name: str, note: str = "") -> str:
    """The help text of the setting ``name`` of ``cls``, the full run's default and ``note``,
    escaped for argparse."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise KeyError(f"{cls.__name__} has no setting {name!r}")
    default = f"{f.default:g}" if isinstance(f.default, float) else f.default
    return f"{f.metadata.get('help', '')} (default {default}{note})".replace("%", "%%")


def add_setting_flag(p: argparse.ArgumentParser, cls: type, name: str, flag: str, type_=float,
                     note: str = "") -> None:
    """``flag`` for the setting ``name`` of ``cls``, its help from the field. The flag's default
    is None: the settings keep their own default and validate a given value."""
    p.add_argument(flag, dest=name, type=type_, default=None, help=setting_help(cls, name, note))
