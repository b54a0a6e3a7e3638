"""Decoding a model loaded in bfloat16 (``load_model(dtype="bfloat16")``, ``--dtype bfloat16``):
token-identical to transformers' generate() on the same bf16 model, through the fast path (whose
bit-exact self-check holds in bf16) and through transformers' forward when the fast path is off
or its self-check fails."""

from __future__ import annotations

import warnings

import pytest
import torch

import app.cli
from decoding import DecodingConfig, fastpath, generate
from decoding.errors import ModelLoadError
from decoding.models import from_model, load_model
from tests.parity import reference
from tests.tiny import tiny_model, tiny_tokenizer

PROMPTS = ["Is topic 1 good?", "The cat", "Once upon a time"]
CONFIGS = [DecodingConfig(max_new_tokens=24),
           DecodingConfig(strategy="sample", seed=3, top_p=0.9, max_new_tokens=16),
           DecodingConfig(strategy="sample", seed=4, temperature=0.7, top_k=20, num_return_sequences=2,
                          max_new_tokens=12),
           DecodingConfig(strategy="beam", num_beams=3, num_return_sequences=2, max_new_tokens=12)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    tiny_model().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def bf16_lm():
    return from_model(tiny_model(0).to(torch.bfloat16), tiny_tokenizer(), name="tiny-bf16")


def assert_parity(lm, configs=CONFIGS):
    for prompt in PROMPTS:
        ids = lm.encode(prompt, chat=False)
        for config in configs:
            ours = generate(lm, prompt, config, chat=False, trace=False)
            assert [s.token_ids for s in ours.sequences] == reference(lm, ids, config), (prompt, config.changed())


def test_load_model_takes_a_dtype(model_dir):
    lm = load_model(str(model_dir), dtype="bfloat16", device="cpu")
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    full = load_model(str(model_dir), device="cpu")
    assert {p.dtype for p in full.model.parameters()} == {torch.float32}
    assert lm.fingerprint == full.fingerprint  # an adapter trained on one loads on the other
    with pytest.raises(ModelLoadError, match=r"dtype='int8' is not supported; allowed: "):
        load_model(str(model_dir), dtype="int8")


def test_bf16_logits_differ_from_fp32():
    """The precision is real: otherwise the parity below would say nothing about bf16."""
    ids = torch.tensor([tiny_tokenizer()("The cat")["input_ids"]])
    with torch.no_grad():
        low = bf16_lm().model(ids).logits
        full = tiny_model(0)(ids).logits
    assert low.dtype == torch.bfloat16 and not torch.equal(low.float(), full)


def test_bf16_fast_path_passes_its_self_check_and_matches_generate():
    lm = bf16_lm()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # no fallback warning
        fast = fastpath.fast_model(lm.model)
    assert fast is not None and fastpath.self_check(lm.model, fast)
    assert_parity(lm)


def test_bf16_falls_back_to_transformers_when_the_self_check_fails(monkeypatch):
    lm = bf16_lm()
    monkeypatch.setattr(fastpath, "self_check", lambda model, fast, steps=3: False)
    with pytest.warns(RuntimeWarning, match="self-check"):
        assert fastpath.fast_model(lm.model) is None
    assert_parity(lm, CONFIGS[:2])


def test_bf16_without_the_fast_path_matches_generate():
    previous = fastpath.set_enabled(False)
    try:
        assert_parity(bf16_lm(), CONFIGS[:2])
    finally:
        fastpath.set_enabled(previous)


def test_cli_generate_takes_dtype(model_dir, capsys, monkeypatch):
    monkeypatch.setattr(app.cli, "COMMAND_MODULES", ["app.cli_generate"])
    code = app.cli.main(["generate", "The cat", "--model", str(model_dir), "--no-chat", "--dtype", "bfloat16",
                         "--device", "cpu", "--max-new-tokens", "4"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    code = app.cli.main(["generate", "The cat", "--model", str(model_dir), "--dtype", "int8"])
    assert code == 2 and "dtype='int8' is not supported" in capsys.readouterr().err
