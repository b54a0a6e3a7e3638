"""The pinned environment: ``constraints.txt`` pins every declared dependency, and on the installed
versions the decoding fast path (``decoding/fastpath.py``) passes its first-use self-check.

The fast path mirrors transformers' Llama forward bit for bit and checks itself on first use
(``fast_model``): when the logits differ it warns and the loop runs through transformers' own,
slower forward for that model. A newer transformers can change the internals it mirrors, so the
self-check falling back is what an upgrade breaks first, and quietly (the results stay right,
only slower). These tests make it loud. One fallback is allowed: where this machine's GEMV
kernels round row-split products differently, ``fast_model`` drops the splits and keeps the
fast path (``tests/test_fastpath.py``); that is not a self-check failure.

To try newer libraries: ``make setup CONSTRAINTS=`` (no pins), then run this file.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
import warnings
from pathlib import Path

import pytest

from decoding import fastpath
from decoding.fastpath import FastLlama, fast_model, unsupported_reason
from tests.tiny import tiny_model

ROOT = Path(__file__).resolve().parent.parent
WATCHED = ("torch", "transformers", "tokenizers", "peft", "trl", "accelerate")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    """``constraints.txt`` as {canonical name: version}."""
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            found[canonical(name)] = version.strip()
    return found


def environment() -> str:
    """The watched libraries' installed versions, each marked when it is not the pinned one."""
    pinned = pins()
    parts = []
    for name in WATCHED:
        installed = importlib.metadata.version(name)
        pin = pinned.get(canonical(name))
        parts.append(f"{name} {installed}" + ("" if installed.split("+")[0] == pin else f" (pinned: {pin})"))
    return ", ".join(parts)


def fast_path_outcome(model) -> tuple[str, list[str]]:
    """How ``fast_model`` handled ``model``: "fast" (the fast path runs; row-split products may
    have been dropped), "self-check failed" (the whole model falls back to transformers) or
    "unsupported: <reason>"; and the warnings it gave."""
    reason = unsupported_reason(model)
    if reason is not None:
        return f"unsupported: {reason}", []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = fast_model(model)
    messages = [str(w.message) for w in caught]
    if fast is None:
        return "self-check failed", messages
    return "fast", messages


def assert_fast(model, what: str) -> None:
    outcome, messages = fast_path_outcome(model)
    assert outcome == "fast", (
        f"FAST PATH FELL BACK on {what}: {outcome}. Generation still works but runs through "
        f"transformers' slower forward. Installed: {environment()}. Warnings: {messages}. If a "
        "newer transformers changed the Llama forward, mirror the change in decoding/fastpath.py "
        "or keep the pins (make setup).")
    assert not any("self-check" in m for m in messages), messages


def test_constraints_pin_every_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    names = {canonical(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in declared}
    missing = sorted(names - set(pins()))
    assert not missing, f"declared in pyproject.toml but not pinned in constraints.txt: {missing}"


def test_makefile_setup_installs_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^CONSTRAINTS \?= constraints\.txt$", makefile, re.M)
    assert "$(PIN)" in makefile and "-c $(CONSTRAINTS)" in makefile


@pytest.mark.parametrize("width", [64, 512])   # 512: wide enough for row-split products
def test_fast_path_self_check_passes_on_this_environment(width):
    model = tiny_model(seed=11, layers=2, hidden=width)
    assert_fast(model, f"the tiny Llama (hidden {width})")


@pytest.mark.embedded
def test_fast_path_self_check_passes_on_the_embedded_model(embedded):
    import copy

    assert_fast(copy.deepcopy(embedded.model), "SmolLM2-135M-Instruct")


def test_the_check_tells_a_self_check_failure_from_dropped_splits(monkeypatch):
    """The outcome above is not a foregone conclusion: a broken mirror reads as a failure, a
    machine that drops row-split products still reads as the fast path."""
    monkeypatch.setattr(FastLlama, "verify_splits", lambda self: self._drop_splits())
    outcome, messages = fast_path_outcome(tiny_model(seed=12))
    assert outcome == "fast" and any("row-split" in m for m in messages)
    monkeypatch.setattr(fastpath, "self_check", lambda model, fast: False)
    outcome, messages = fast_path_outcome(tiny_model(seed=13))
    assert outcome == "self-check failed" and any("self-check" in m for m in messages)
    with pytest.raises(AssertionError, match="FAST PATH FELL BACK"):
        assert_fast(tiny_model(seed=14), "a broken mirror")
