"""Speculative acceptance between an adapter (target p) and its base (draft q): Leviathan et al.
2023 / Chen et al. 2023, on hand-made distributions and on the tiny model with a LoRA."""

from __future__ import annotations

import pytest
import torch

from decoding import ConfigError, DecodingConfig, generate
from decoding.errors import DecodingLabError
from decoding.speculative import (accept_trace, acceptance, answer_distributions, expected_tokens,
                                  expected_tokens_iid, speculative_view)
from tests.tiny import tiny_lora_lm

P = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.7, 0.1, 0.1, 0.1], [0.0, 0.0, 0.25, 0.75]])


def test_equal_distributions_accept_everything():
    beta = acceptance(P, P)
    assert beta.tolist() == [1.0, 1.0, 1.0]
    view = speculative_view(P, P, seed=3)
    assert view.accepted == [True, True, True]
    # every draft of k tokens is accepted while the answer lasts (the average over start steps)
    assert view.expected_tokens[1] == pytest.approx(2.0)
    assert view.expected_tokens[2] == pytest.approx((3 + 3 + 2) / 3)
    assert view.expected_tokens_mean_rate == {k: float(k + 1) for k in range(1, 9)}


def test_disjoint_distributions_accept_nothing():
    q = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.0, 0.0]])
    p = P.clone()
    p[1] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert acceptance(p, q).tolist() == [0.0, 0.0, 0.0]
    view = speculative_view(p, q, seed=0)
    assert view.accepted == [False, False, False]
    assert all(v == 1.0 for v in view.expected_tokens.values())


def test_acceptance_is_one_minus_total_variation():
    q = torch.tensor([[0.25, 0.25, 0.5, 0.0], [0.1, 0.7, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    beta = acceptance(P, q)
    tv = 0.5 * (P - q).abs().sum(-1)
    assert torch.allclose(beta, 1 - tv)
    assert beta.tolist() == pytest.approx([0.5, 0.4, 0.5])


def test_expected_tokens_by_hand_and_eq1():
    # start 0: 1 + 0.5 + 0.5*1 = 2; start 1: 1 + 1 + 0 (past the end) = 2
    assert expected_tokens([0.5, 1.0], 2) == pytest.approx(2.0)
    assert expected_tokens_iid(0.5, 2) == pytest.approx((1 - 0.5 ** 3) / 0.5)
    # a long answer with a constant rate: the per-step form tends to eq. 1
    assert expected_tokens([0.6] * 2000, 4) == pytest.approx(expected_tokens_iid(0.6, 4), rel=2e-3)
    with pytest.raises(ConfigError, match="draft_length=0"):
        expected_tokens([0.5], 0)


def test_accept_trace_is_seeded_and_accepts_at_rate_beta():
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).repeat(4000, 1)
    q = torch.tensor([[0.25, 0.25, 0.5, 0.0]]).repeat(4000, 1)
    flags = accept_trace(p, q, torch.Generator().manual_seed(1))
    assert sum(flags) / len(flags) == pytest.approx(0.5, abs=0.03)
    assert flags == accept_trace(p, q, torch.Generator().manual_seed(1))
    assert flags != accept_trace(p, q, torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def adapted():
    return tiny_lora_lm()


def test_view_of_an_adapters_answer(adapted, tiny):
    prompt = adapted.encode("A unicorn lived in", chat=False)
    gen = generate(adapted, "A unicorn lived in", DecodingConfig(max_new_tokens=10, ignore_eos=True),
                   chat=False)
    p, q = answer_distributions(adapted, prompt, gen.token_ids)
    assert p.shape == q.shape == (10, adapted.vocab_size)
    # p is the adapter's own recorded distribution, q the base's (the same model without LoRA)
    for step, row in zip(gen.steps, p):
        assert float(row[step.token_id]) == pytest.approx(step.prob_raw, abs=1e-5)
    with torch.inference_mode():
        base = torch.softmax(tiny.model(torch.tensor([prompt + gen.token_ids])).logits[0, len(prompt) - 1:-1], -1)
    assert torch.allclose(q, base, atol=1e-5)
    view = speculative_view(p, q, seed=0)
    assert 0 < view.mean_acceptance < 1
    assert all(1.0 <= view.expected_tokens[k] <= k + 1 for k in range(1, 9))
    assert [view.expected_tokens[k] for k in range(1, 9)] == sorted(view.expected_tokens.values())
    with pytest.raises(DecodingLabError, match="has no adapter"):
        answer_distributions(tiny, prompt, gen.token_ids)
