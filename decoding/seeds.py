"""Sampling seeds for many prompts in one run: independent, recorded, reproducible."""

from __future__ import annotations

import hashlib
from typing import Any


def sample_seed(run_seed: int, prompt_id: Any, sample: int) -> int:
    """The sampling seed of sample ``sample`` of prompt ``prompt_id`` in a run seeded
    ``run_seed``: a hash of the three, so different prompts (and samples) draw independent
    random numbers while the run stays reproducible. (One seed for every prompt makes sample k
    of all prompts share a stream: at seed 0 four prompts' top-p answers opened with the same
    sentence, and the prompts were no longer independent draws.)"""
    digest = hashlib.sha256(f"{run_seed}\x00{prompt_id!r}\x00{sample}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF
