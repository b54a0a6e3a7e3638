"""``declab experiment realign`` on the tiny model: the plumbing, λ = 0 reproducing the base, the
realigned KL, the settings' validation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import app.cli
from alignment.stance import StanceConfig
from decoding import ConfigError
from experiments import realign as study
from tests.tiny import tiny_lm, tiny_lora_lm

LOOSE = StanceConfig(min_kappa=-1.0)


def test_realign_quick_on_the_tiny_model(tmp_path):
    settings = replace(study.RealignSettings.quick_settings(), pairs=4, test_prompts=2,
                       max_new_tokens=10)
    path = Path(study.run_realign(settings, str(tmp_path), base=tiny_lm(), stance_config=LOOSE))
    data = json.loads((path / "realign.json").read_text())
    assert data["lambda_0_is_base"] is True
    models = [(r["model"], r["decoding"]) for r in data["rows"]]
    assert models == [("dpo-b0.1", "realign=0"), ("dpo-b0.1", "realign=1"), ("dpo-b0.1", "realign=2"),
                      ("base", "greedy"), ("dpo-b0.05", "greedy")]
    zero = data["rows"][0]
    assert zero["kl_to_base"] == pytest.approx(0.0, abs=1e-6)      # π_0 is the base
    [pair] = data["comparison"]
    assert pair["lambda"] == 2.0 and pair["retrained"] == "dpo-b0.05"
    assert pair["mean_p_support"]["difference"] == pytest.approx(
        pair["mean_p_support"]["realigned"] - pair["mean_p_support"]["retrained"])
    text = (path / "report.md").read_text()
    assert "λ = 0 reproduced the base's answers token for token: yes." in text
    assert "λ = 2 vs retrained at β = 0.05" in text


def test_realigned_kl_is_the_adapters_at_1_and_0_at_0():
    from alignment.scoring import token_logprobs

    lm, base = tiny_lora_lm(), tiny_lm()
    prompt, answer = lm.encode("The cat sat", chat=False), [5, 40, 41, 7]
    assert study.realigned_kl(lm, prompt, answer, 0.0) == pytest.approx(0.0, abs=1e-6)
    lp = token_logprobs(lm.model, [prompt], [answer])[0]
    with torch.inference_mode():
        lb = token_logprobs(base.model, [prompt], [answer])[0]
    assert study.realigned_kl(lm, prompt, answer, 1.0) == pytest.approx(float((lp - lb).sum()), abs=1e-4)


@pytest.mark.parametrize("changes, message", [
    (dict(retrain=(3.0,)), "retrain=3.0 is out of range"),
    (dict(retrain=(1.0,)), "retrain=1.0 is out of range"),
    (dict(lambdas=(-1.0,), retrain=()), "lambdas=-1.0 is out of range"),
    (dict(beta=0.0), "beta=0.0 is out of range"),
    (dict(decoding="beam"), "strategy='beam' is out of range"),
])
def test_settings_are_validated(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        study.RealignSettings(**changes)


def test_cli_refuses_a_bad_learning_rate_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(study, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    assert app.cli.main(["experiment", "realign", "--lr", "2", "--root", str(tmp_path)]) == 2
    assert "learning_rate=2.0 is out of range" in capsys.readouterr().err
