"""``make gpu-check`` (``experiments/gpu_check.py``): without CUDA it says so and exits 2; its
checks run on a CPU with a tiny model (``--device cpu --tiny``); the full model is ~1B parameters."""

from __future__ import annotations

import math

import pytest
import torch

from experiments import gpu_check


def test_without_cuda_it_exits_2_with_a_clear_message(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "run_checks", lambda *a: pytest.fail("ran without a GPU"))
    assert gpu_check.main([]) == gpu_check.NO_GPU_EXIT == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "Nothing was run" in err and "--device cpu --tiny" in err


@pytest.mark.parametrize("argv, name", [(["--tokens", "0"], "tokens"), (["--repeats", "50"], "repeats")])
def test_bad_input_exits_2(argv, name, capsys):
    assert gpu_check.main(["--device", "cpu", "--tiny", *argv]) == 2
    assert f"{name}=" in capsys.readouterr().err


def test_the_full_model_has_about_a_billion_parameters():
    assert 0.9e9 < gpu_check.parameter_count(gpu_check.llama_config(tiny=False)) < 1.3e9


def test_first_difference():
    assert gpu_check.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert gpu_check.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert gpu_check.first_difference([1, 2], [1, 2, 3]) == 2


def test_tiny_run_on_cpu_prints_one_table_and_passes(capsys):
    assert gpu_check.main(["--device", "cpu", "--tiny", "--tokens", "12", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    assert "pass     12 tokens identical" in rows["bf16 greedy parity vs generate()"]
    assert "active (self-check bit-identical)" in rows["fast path"]
    assert "skipped  needs a CUDA GPU" in rows["4-bit NF4 load + greedy"]
    first = rows["DPO first step (bf16)"]
    assert " pass " in first and abs(float(first.split("loss ")[1].split(",")[0]) - math.log(2)) < 0.05
    assert " pass " in rows["DPO short run (bf16)"] and "4 steps" in rows["DPO short run (bf16)"]
    assert "ours " in rows["greedy tokens/s, batch 1"]
    assert out.count("gpu-check:") == 1


def test_a_parity_failure_is_reported_and_exits_1(monkeypatch, capsys):
    real = gpu_check.reference

    def shifted(lm, ids, tokens):
        out, elapsed = real(lm, ids, tokens)
        return [out[0]] + [(t + 1) % 300 for t in out[1:]], elapsed

    monkeypatch.setattr(gpu_check, "reference", shifted)
    monkeypatch.setattr(gpu_check, "check_dpo", lambda *a: [])
    assert gpu_check.main(["--device", "cpu", "--tiny", "--tokens", "6", "--repeats", "1"]) == 1
    assert "FAIL     first difference at token 1 of 6" in capsys.readouterr().out
