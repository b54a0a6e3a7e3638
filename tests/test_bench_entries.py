"""The ``make bench`` entries that take a model, run small on the tiny one (the timings mean
nothing here; the lead runs the real bench on a quiet machine): decoding in bf16 vs fp32, and
preference training ours vs the straightforward TRL configuration."""

from __future__ import annotations

import pytest
import torch

from decoding.models import from_model
from decoding.prompts import Prompt
from experiments.bench_dtype import first_difference, run_dtype_bench, token_agreement
from experiments.bench_guide import format_guide_bench, run_guide_bench
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


def test_guide_entry_mixed_batch_matches_two_forwards_on_the_tiny_model():
    """PEFT's per-row adapter switch gives the adapter row the adapter's logits and the other
    row the base's, as two separate forwards do (up to batch rounding)."""
    lm = tiny_lm()
    report = run_guide_bench(lm, steps=4, repeats=1)
    assert report["same_greedy_tokens"] and report["max_logit_difference"] < 1e-4
    assert report["adapter_effect"] > 100 * max(report["max_logit_difference"], 1e-6)
    assert report["two_forwards_ms"] > 0 and report["mixed_batch_ms"] > 0
    assert "mixed-adapter batch" in format_guide_bench(report)
    assert not hasattr(lm.model, "peft_config")      # the LoRA was taken off again


@pytest.mark.parametrize("bf16_cpu", [True, False])
def test_training_entry_reports_both_sides_and_ratios(monkeypatch, bf16_cpu):
    """Straightforward TRL and ours for DPO and ORPO in one call; where the CPU computes in bf16,
    ours in fp32 too (same seed), with held-out preference accuracy beside each."""
    import alignment.train_cpu as train_cpu
    from alignment.bench import bench_training, format_bench

    monkeypatch.setattr(train_cpu, "cpu_has_bf16", lambda cpuinfo=None: bf16_cpu)
    variants = {"shared prompt": {"share_prompt": True}, "top layer": {"top_layers": 1}}
    results = bench_training(data_size=4, epochs=1, model=tiny_lm(), variants=variants)
    assert results["precision"] == ("bf16" if bf16_cpu else "fp32")
    for method in ("dpo", "orpo"):
        row = results[method]
        plain, ours = row["straightforward"], row["ours"]
        assert plain["steps"] == ours["steps"] == 1 and ours["precision"] == results["precision"]
        assert row["speedup"] == round(plain["seconds"] / ours["seconds"], 2)
        assert 0 <= ours["held_out"]["accuracy"] <= 1 and ours["held_out"]["pairs"] == 14
        assert list(row["variants"]) == ["shared prompt", "top layer"]
        for label, run in row["variants"].items():
            assert run["vs_ours"] == round(ours["seconds"] / run["seconds"], 2)
            assert run["changes"] == variants[label] and run["held_out"]["pairs"] == 14
        if bf16_cpu:
            assert row["ours_fp32"]["precision"] == "fp32" and row["bf16_speedup"] > 0
        else:
            assert row["ours_fp32"] is None and row["bf16_speedup"] is None
    table = format_bench(results)
    assert "TRL plain" in table and "fp32/ours" in table
    assert [line.split()[0] for line in table.splitlines()[2:]] == ["dpo", "+", "+", "orpo", "+", "+"]
    assert "+ shared prompt" in table and "+ top layer" in table


def test_profile_of_a_training_run_names_the_ops(tmp_path):
    import json

    from alignment.bench import profile_training
    from alignment.train import TrainConfig

    data = tmp_path / "pairs.json"
    data.write_text(json.dumps([{"id": i, "prompt": f"Is topic {i} good?", "support": "Yes.", "oppose": "No."}
                                for i in range(4)]))
    table = profile_training(TrainConfig(dataset=str(data), epochs=1, batch_size=2, threads=1, max_length=64),
                             tiny_lm(), rows=10)
    assert "Self CPU" in table and "aten::" in table


def test_generation_entry_measures_tracing_overhead_greedy_and_top_p(capsys):
    """Tracing on vs off, for greedy and for top-p (whose trace keeps the what-if's deep record
    at every step): both cases are in ``make bench`` and trace the same tokens as untraced runs."""
    from experiments.bench import run_generation_bench

    results = {r.name: r for r in run_generation_bench(tiny_lm(), tokens=4, repeats=1)}
    for name in ("greedy, tracing on vs off", "top-p 0.9, tracing on vs off"):
        assert results[name].same_tokens and results[name].ratio > 0
    assert "top-p 0.9, tracing on vs off" in capsys.readouterr().out
