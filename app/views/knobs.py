"""Lab controls for the decoding knobs, drawn from the stage registry (``decoding.stages``):
one range, step and help text per config field, shared by the step inspector and its what-if
panel."""

from __future__ import annotations

from typing import Any

import streamlit as st

from decoding import help_text
from decoding.errors import out_of_range
from decoding.stages import KNOBS


def number_box(label: str, low: float | None, high: float | None, key: str, **kwargs) -> Any:
    """A number box that says when an entry is out of range instead of dropping it.

    Streamlit's bounded number box refuses an entry outside ``[min_value, max_value]`` and
    silently keeps its previous value (issue 17). This one has no bounds in the browser: the
    entry is checked here, an error names the field, the value and the range, and the nearest
    allowed value is used (and shown in the box at the next rerun, ``persist_state`` kept)."""
    raw = st.number_input(label, key=key, persist_state="session", **kwargs)
    if raw is None:
        return raw
    allowed = clamp(raw, low, high)
    if allowed != raw:
        st.error(f"{out_of_range(label, raw, range_text(label, low, high))}; using {allowed}")
    return allowed


def clamp(value: float, low: float | None, high: float | None) -> float:
    if low is not None and value < low:
        return type(value)(low)
    if high is not None and value > high:
        return type(value)(high)
    return value


def range_text(name: str, low: float | None, high: float | None) -> str:
    if high is None:
        return f"{name} >= {low:g}"
    if low is None:
        return f"{name} <= {high:g}"
    return f"{low:g} <= {name} <= {high:g}"


def control_value(name: str, value: Any) -> Any:
    """A config value as the control shows it (``None`` = off becomes the control's off value)."""
    knob = KNOBS[name]
    if value is None:
        return knob.none_at
    return min(max(value, type(value)(knob.low)), type(value)(knob.high))   # e.g. top_n_sigma -1: off


def config_value(name: str, value: Any) -> Any:
    """A control's value as the config takes it (the control's off value becomes ``None``)."""
    knob = KNOBS[name]
    if knob.none_at is not None and value <= knob.none_at:
        return None
    return int(value) if isinstance(knob.step, int) and not isinstance(knob.step, bool) else value


def knob_control(name: str, key: str, value: Any = None, note: str = "") -> Any:
    """The slider or number box of config field ``name`` (its registry range); returns the value
    for the config. ``value``: the initial value (None: the one in session state)."""
    knob = KNOBS[name]
    # persist_state: the value survives leaving the page and coming back (issue 17).
    kwargs: dict[str, Any] = {"key": key, "help": help_text(name) + note, "persist_state": "session"}
    if value is not None:
        kwargs["value"] = control_value(name, value)
    if knob.number:
        kwargs.pop("persist_state")
        raw = number_box(name, knob.low, knob.high, step=knob.step, format=knob.fmt, **kwargs)
    else:
        raw = st.slider(name, min_value=knob.low, max_value=knob.high, step=knob.step, **kwargs)
    return config_value(name, raw)
