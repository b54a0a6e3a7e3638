"""The prompt encoded once per pair (``TrainConfig.share_prompt``, ``alignment.prompt_sharing``):
the same hidden states, loss and gradients as the plain forward within float32 rounding, the
plain forward wherever the batch is not a stack of pairs, and the same training curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from alignment.prompt_sharing import SharedPrefixForward
from alignment.train import TrainConfig, train
from decoding.errors import DecodingLabError
from tests.tiny import tiny_lm, tiny_model

# Tolerances (float32): the shared and the plain forward multiply matrices of other shapes, so
# sums are taken in another order. Measured on the tiny model: identical logits and loss,
# gradients within 1.3e-6 of values up to 4.3.
LOSS_REL, GRAD_ATOL, GRAD_RTOL, STATE_ATOL = 1e-6, 1e-5, 1e-4, 1e-5

PROMPTS = [[5, 17, 30, 41, 8], [7, 7, 21], [90, 11, 2, 64, 3, 3, 9]]
CHOSEN = [[9, 60, 12, 33], [50, 3, 44, 1, 1, 2], [5]]
REJECTED = [[9, 61], [51, 3], [6, 7, 8, 9, 10]]       # pair 0 shares one answer token too


def right_padded(rows):
    width = max(map(len, rows))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask


def pair_batch():
    """TRL's layout: every prompt + chosen, then every prompt + rejected."""
    return right_padded([p + c for p, c in zip(PROMPTS, CHOSEN)] + [p + r for p, r in zip(PROMPTS, REJECTED)])


def lora_model():
    model = get_peft_model(tiny_model(0), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                     target_modules=["q_proj", "v_proj", "o_proj"]))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return model


def forward_backward(model, ids, mask):
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=False)
    logp = out.logits.log_softmax(-1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    loss = (logp * mask[:, 1:]).sum()
    loss.backward()
    return loss.detach(), out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                               if p.requires_grad}


def test_same_states_loss_and_gradients_as_the_plain_forward():
    model = lora_model()
    ids, mask = pair_batch()
    plain = forward_backward(model, ids, mask)
    with SharedPrefixForward(model) as sharing:
        shared = forward_backward(model, ids, mask)
    # prompts 5 + 3 + 7 tokens, and pair 0's first answer token
    assert sharing.calls == 1 and sharing.shared_tokens == 5 + 3 + 7 + 1
    assert float(shared[0]) == pytest.approx(float(plain[0]), rel=LOSS_REL)
    real = mask.bool()
    assert torch.allclose(shared[1][real], plain[1][real], atol=STATE_ATOL, rtol=0)
    assert plain[2].keys() == shared[2].keys() and len(plain[2]) == 12
    for name, grad in plain[2].items():
        assert grad.abs().max() > 0, name
        assert torch.allclose(shared[2][name], grad, atol=GRAD_ATOL, rtol=GRAD_RTOL), name
    # uninstalled: the stack's own forward again
    assert "forward" not in model.get_base_model().model.__dict__


@pytest.mark.parametrize("case", ["odd rows", "left padding", "nothing shared", "cache"])
def test_batches_that_are_not_pairs_run_the_plain_forward(case):
    model = lora_model()
    ids, mask = pair_batch()
    fresh_cache = None
    if case == "odd rows":
        ids, mask = ids[:5], mask[:5]
    elif case == "left padding":
        ids, mask = ids.flip(-1), mask.flip(-1)
    elif case == "nothing shared":
        ids = torch.cat([ids[:3], ids[3:] + 1])
    else:                               # generation: a KV cache is passed in
        from transformers import DynamicCache

        fresh_cache = lambda: dict(use_cache=True, past_key_values=DynamicCache(config=model.config))  # noqa: E731
    kwargs = fresh_cache or dict
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, **kwargs()).logits
        with SharedPrefixForward(model) as sharing:
            got = model(input_ids=ids, attention_mask=mask, **kwargs()).logits
    assert sharing.calls == 0 and torch.equal(got, expected)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.json"
    path.write_text(json.dumps([{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps.",
                                 "oppose": f"No, topic {i} hurts."} for i in range(4)]))
    return path


@pytest.mark.parametrize("method, forwards", [("dpo", 2 + 4), ("orpo", 4), ("simpo", 4)])
def test_training_curve_is_the_same_with_a_shared_prompt(tmp_path, data, method, forwards):
    """2 steps x 2 epochs, and DPO's reference pass (2 batches) shares prompts too."""
    losses = {}
    for share in (False, True):
        config = TrainConfig(method=method, dataset=str(data), epochs=2, batch_size=2, learning_rate=1e-2,
                             max_length=64, threads=1, share_prompt=share, precision="fp32")
        result = train(config, tmp_path / str(share), model=tiny_lm(), progress=False)
        losses[share] = [e["loss"] for e in result.log_history if "loss" in e]
        sharing = result.meta["prompt_sharing"]
        assert (sharing is None) == (not share)
    assert sharing["forwards"] == forwards and sharing["shared_tokens"] > 0
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_share_prompt_is_refused_with_top_layers():
    with pytest.raises(DecodingLabError, match=r"^share_prompt=True is out of range; allowed: false with top_layers"):
        TrainConfig(share_prompt=True, top_layers=2)


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_no_padding_beyond_the_batch_longest_sequence(tmp_path, monkeypatch, method):
    """Every training forward is as wide as its longest real row (TRL's collators pad to the
    batch's longest, never to max_length), on pairs of very different lengths."""
    import alignment.train as train_mod
    from alignment.layer_cache import decoder_stack

    records = [{"id": i, "prompt": "Is it good?" + " Really?" * (3 * i), "support": "Yes." + " Sure." * i,
                "oppose": "No."} for i in range(6)]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(records))
    seen = []
    real_build = train_mod.build_trainer

    def build_and_watch(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        def watch(module, args, kwargs):
            mask = kwargs.get("attention_mask")
            seen.append((mask.shape[1], int(mask.sum(-1).max())))
        decoder_stack(trainer.model).register_forward_pre_hook(watch, with_kwargs=True)
        return trainer

    monkeypatch.setattr(train_mod, "build_trainer", build_and_watch)
    config = TrainConfig(method=method, dataset=str(path), epochs=1, batch_size=2, learning_rate=1e-2,
                         max_length=192, threads=1, precision="fp32")
    train(config, tmp_path / "out", model=tiny_lm(), progress=False)
    assert len(seen) >= 3 and len({width for width, _ in seen}) > 1
    assert all(width == longest for width, longest in seen), seen
