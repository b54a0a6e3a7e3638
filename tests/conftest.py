"""Shared fixtures: the tiny in-process model (fast) and the embedded SmolLM2 model (real)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny():
    from tests.tiny import tiny_lm

    return tiny_lm()


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct (dequantised once, then loaded from the cache)."""
    from decoding import load_model

    return load_model()
