"""The ``make bench`` entries that take a model, run small on the tiny one (the timings mean
nothing here; the lead runs the real bench on a quiet machine): decoding in bf16 vs fp32, and
preference training ours vs the straightforward TRL configuration."""

from __future__ import annotations

import pytest
import torch

from decoding.models import from_model
from decoding.prompts import Prompt
from experiments.bench_dtype import first_difference, run_dtype_bench, token_agreement
from tests.tiny import tiny_lm, tiny_model, tiny_tokenizer


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2, 3], [1, 2]) == 2 and first_difference([], [4]) == 0


def test_token_agreement_by_hand():
    result = token_agreement([[1, 2, 3, 4], [5, 6], [7, 8]], [[1, 2, 9, 9], [5, 6], [0, 8]])
    assert result["identical"] == pytest.approx(1 / 3)
    assert result["agreed_prefix"] == pytest.approx((2 / 4 + 1 + 0) / 3)
    assert result["first_difference"] == [2, None, 0]
    with pytest.raises(ValueError):
        token_agreement([[1]], [])


def test_dtype_entry_runs_on_the_tiny_model(capsys):
    lm = tiny_lm()
    low = from_model(tiny_model(0).to(torch.bfloat16), tiny_tokenizer(), name="tiny-bf16")
    prompts = [Prompt("a", "The cat", "raw"), Prompt("b", "Once upon a time", "raw")]
    report = run_dtype_bench(lm, low, tokens=4, repeats=1, prompts=prompts, max_new_tokens=8)
    assert report["rows"] == 2 and report["prompt_ids"] == ["a", "b"]
    assert 0 <= report["identical"] <= 1 and report["speedup"] > 0
    assert len(report["runs"]["fp32"]) == len(report["runs"]["bf16"]) == 1
    assert "bf16" in capsys.readouterr().out
    same = run_dtype_bench(lm, lm, tokens=4, repeats=1, prompts=prompts, max_new_tokens=8)
    assert same["identical"] == 1.0 and same["agreed_prefix"] == 1.0   # a model agrees with itself
