"""Errors raised by Decoding Lab.

Every error a user can cause by bad input is a ``DecodingLabError`` (a ``ValueError``), whose
message names the parameter, the value it got and what is allowed. The CLI turns these into a
one-line message and exit code 2; the Streamlit lab shows them in an error box.
"""

from __future__ import annotations


class DecodingLabError(ValueError):
    """Bad input from the user: the message says what was wrong and what is allowed."""


class ConfigError(DecodingLabError):
    """A configuration field outside its allowed range."""


class ModelLoadError(DecodingLabError):
    """A model, tokenizer or adapter that cannot be found or does not fit."""


class GenerationError(RuntimeError):
    """Generation could not continue (for example non-finite logits at some step)."""


def out_of_range(name: str, value: object, allowed: str) -> ConfigError:
    """The standard message: ``top_p=1.5 is out of range; allowed: 0 < top_p <= 1``."""
    return ConfigError(f"{name}={value!r} is out of range; allowed: {allowed}")


def check_number(name: str, value: object, ok, allowed: str) -> None:
    """Refuse ``value`` unless it is a finite real number (not a bool) with ``ok(value)``.

    The processor functions call this on their own parameters, so that a direct call with a bad
    value (``temperature(scores, 0)``) fails with the message ``DecodingConfig`` would give."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or value != value or value in (float("inf"), float("-inf")) or not ok(value)):
        raise out_of_range(name, value, allowed)


def check_integer(name: str, value: object, low: int, note: str = "") -> None:
    """Refuse ``value`` unless it is an integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise out_of_range(name, value, f"an integer >= {low}{note}")
