"""Errors raised by Decoding Lab.

Every error a user can cause by bad input is a ``DecodingLabError`` (a ``ValueError``), whose
message names the parameter, the value it got and what is allowed. The CLI turns these into a
one-line message and exit code 2; the Streamlit lab shows them in an error box.
"""

from __future__ import annotations

from numbers import Integral


class DecodingLabError(ValueError):
    """Bad input from the user: the message says what was wrong and what is allowed."""


class ConfigError(DecodingLabError):
    """A configuration field outside its allowed range."""


class ModelLoadError(DecodingLabError):
    """A model, tokenizer or adapter that cannot be found or does not fit."""


class GenerationError(RuntimeError):
    """Generation could not continue (for example non-finite logits at some step)."""


def out_of_range(name: str, value: object, allowed: str,
                 error: type[DecodingLabError] = ConfigError) -> DecodingLabError:
    """The standard message: ``top_p=1.5 is out of range; allowed: 0 < top_p <= 1``, as a
    ``ConfigError`` unless ``error`` names another class (``DatasetError`` for a dataset's knobs)."""
    return error(f"{name}={value!r} is out of range; allowed: {allowed}")


def is_real(value: object) -> bool:
    """A finite real number that is not a bool (``True`` is an ``int`` to Python, not a knob value)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and value == value and value not in (float("inf"), float("-inf")))


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def range_text(name: str, low: float | None = None, high: float | None = None, *, integer: bool = False,
               low_open: bool = False, high_open: bool = False, optional: bool = False) -> str:
    """The "allowed" part of the message for a range: ``0 < learning_rate < 1``, ``beta > 0``,
    ``an integer >= 1``, ``an integer in [0, 10]``, with ``, or None`` when ``optional``."""
    lt_low, lt_high = ("<" if low_open else "<="), ("<" if high_open else "<=")
    if integer:
        if high is None:
            text = f"an integer {'>' if low_open else '>='} {low}" if low is not None else "an integer"
        else:
            text = f"an integer in [{low}, {high}]" if low is not None else f"an integer {lt_high} {high}"
    elif low is not None and high is not None:
        text = f"{low:g} {lt_low} {name} {lt_high} {high:g}"
    elif low is not None:
        text = f"{name} {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        text = f"{name} {lt_high} {high:g}"
    else:
        text = "a finite number"
    return text + (", or None" if optional else "")


def check_range(name: str, value: object, low: float | None = None, high: float | None = None, *,
                integer: bool = False, low_open: bool = False, high_open: bool = False,
                optional: bool = False, allowed: str | None = None,
                error: type[DecodingLabError] = ConfigError) -> None:
    """The one range check of every config and study setting.

    Refuse ``value`` unless it is a real number (an integer when ``integer``; never a bool, NaN or
    infinity) within ``low``..``high`` (either end open or absent); ``None`` passes when
    ``optional``. The message is ``out_of_range``'s, with the range written by ``range_text``
    unless ``allowed`` says it in words; the error is a ``ConfigError`` unless ``error`` says."""
    if value is None and optional:
        return
    ok = is_integer(value) if integer else is_real(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise out_of_range(name, value, allowed or range_text(
            name, low, high, integer=integer, low_open=low_open, high_open=high_open, optional=optional),
            error)


def check_number(name: str, value: object, ok, allowed: str) -> None:
    """Refuse ``value`` unless it is a finite real number (not a bool) with ``ok(value)``: the
    predicate form of ``check_range``, for conditions that are not an interval.

    The processor functions call this on their own parameters, so that a direct call with a bad
    value (``temperature(scores, 0)``) fails with the message ``DecodingConfig`` would give."""
    if not is_real(value) or not ok(value):
        raise out_of_range(name, value, allowed)


def check_integer(name: str, value: object, low: int, note: str = "") -> None:
    """Refuse ``value`` unless it is an integer (not a bool) >= ``low``."""
    check_range(name, value, low, integer=True, allowed=f"an integer >= {low}{note}")


def check_count(name: str, value: object, low: int) -> int:
    """``value`` as an ``int``, refused unless it is an integer >= ``low``: a Python or NumPy
    integer (any ``numbers.Integral``, never a bool), since the diagnostics take counts computed
    from token arrays. Config fields use ``check_range(integer=True)``, whose values must stay
    JSON-serialisable Python ints."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise out_of_range(name, value, f"an integer {name} >= {low}")
    return int(value)
