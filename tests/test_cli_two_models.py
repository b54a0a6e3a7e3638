"""``declab generate`` with the two-model knobs (DecodingConfig fields become flags) and the
speculative view, on the tiny model saved to disk with a random LoRA adapter."""

from __future__ import annotations

import json

import pytest

import app.cli
from tests.tiny import tiny_lora_lm, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-models")
    base = root / "base"
    tiny_model().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    adapter = root / "adapter"
    tiny_lora_lm().model.save_pretrained(adapter)
    return str(base), str(adapter)


def run_json(capsys, *argv) -> dict:
    code = app.cli.main(["generate", "--no-chat", "--max-new-tokens", "8", "--json", *argv,
                         "A unicorn lived in"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_realign_flag_decodes_the_base_at_0_and_the_adapter_at_1(dirs, capsys):
    base, adapter = dirs
    base_tokens = run_json(capsys, "--model", base)["sequences"][0]["token_ids"]
    adapter_tokens = run_json(capsys, "--model", base, "--adapter", adapter)["sequences"][0]["token_ids"]
    assert base_tokens != adapter_tokens
    at_0 = run_json(capsys, "--model", base, "--adapter", adapter, "--realign", "0")
    assert at_0["sequences"][0]["token_ids"] == base_tokens
    assert at_0["chain"] == ["raw", "realign"] and at_0["config"]["realign"] == 0.0
    at_1 = run_json(capsys, "--model", base, "--adapter", adapter, "--realign", "1")
    assert at_1["sequences"][0]["token_ids"] == adapter_tokens


def test_speculative_view_in_json(dirs, capsys):
    base, adapter = dirs
    data = run_json(capsys, "--model", base, "--adapter", adapter, "--speculative",
                    "--ignore-eos", "true")
    view = data["speculative"]
    assert len(view["acceptance"]) == len(view["accepted"]) == 8
    assert all(0.0 <= b <= 1.0 for b in view["acceptance"])
    assert sorted(view["expected_tokens"], key=int) == [str(k) for k in range(1, 9)]
    assert 1.0 <= view["expected_tokens"]["1"] <= view["expected_tokens"]["8"] <= 9.0


@pytest.mark.parametrize("argv, message", [
    (["--realign", "-1"], "realign=-1.0 is out of range"),
    (["--contrastive-alpha", "2"], "contrastive_alpha=2.0 is out of range"),
    (["--amateur", "teacher"], "amateur='teacher' is out of range"),
    (["--realign", "0.5"], "needs an adapter"),
    (["--speculative"], "has no adapter"),
])
def test_bad_two_model_flags_exit_2(dirs, capsys, argv, message):
    code = app.cli.main(["generate", "--model", dirs[0], "--no-chat", "--max-new-tokens", "4",
                         *argv, "A unicorn"])
    assert code == 2
    assert message in capsys.readouterr().err
