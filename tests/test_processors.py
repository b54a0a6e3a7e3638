"""Processors on hand-built tensors: exact kept sets, never in place, and the published
definitions as properties (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decoding import processors as P

INF = float("inf")


def kept(scores: torch.Tensor) -> list[list[int]]:
    return [torch.isfinite(row).nonzero().flatten().tolist() for row in scores]


def probs_from(values: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly the given (normalised) probabilities."""
    p = torch.tensor(values, dtype=torch.float64)
    return torch.log(p / p.sum()).to(torch.float32)[None, :]


# ------------------------------------------------------------------ 2×20 hand-built tensors

@pytest.fixture
def scores_2x20() -> torch.Tensor:
    torch.manual_seed(0)
    first = torch.arange(20, dtype=torch.float32) / 4          # increasing: token 19 best
    second = torch.flip(torch.arange(20, dtype=torch.float32), [0]) / 2  # token 0 best
    return torch.stack([first, second])


def test_top_k_keeps_exactly_k_largest(scores_2x20):
    out = P.top_k_filter(scores_2x20, 3)
    assert kept(out) == [[17, 18, 19], [0, 1, 2]]
    assert torch.equal(out[0, 17:], scores_2x20[0, 17:])


def test_top_k_keeps_ties_with_kth():
    scores = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0]])
    assert kept(P.top_k_filter(scores, 2)) == [[1, 2, 3]]


def test_top_p_keeps_minimal_prefix():
    scores = probs_from([0.5, 0.3, 0.1, 0.06, 0.04])
    assert kept(P.top_p_filter(scores, 0.8)) == [[0, 1]]      # 0.5 + 0.3 reaches 0.8
    assert kept(P.top_p_filter(scores, 0.81)) == [[0, 1, 2]]
    assert kept(P.top_p_filter(scores, 0.4)) == [[0]]
    assert kept(P.top_p_filter(scores, 1.0)) == [[0, 1, 2, 3, 4]]


def test_min_p_threshold_relative_to_top():
    scores = probs_from([0.5, 0.3, 0.1, 0.06, 0.04])
    assert kept(P.min_p_filter(scores, 0.19)) == [[0, 1, 2]]  # threshold 0.095
    assert kept(P.min_p_filter(scores, 0.5)) == [[0, 1]]


def test_typical_keeps_tokens_closest_to_entropy():
    p = [0.4, 0.3, 0.2, 0.1]
    scores = probs_from(p)
    h = -sum(x * math.log(x) for x in p)
    order = sorted(range(4), key=lambda i: abs(-math.log(p[i]) - h))
    # keep by that order until the mass reaches 0.5 (the crossing token included)
    mass, expected = 0.0, []
    for i in order:
        expected.append(i)
        mass += p[i]
        if mass >= 0.5:
            break
    assert kept(P.typical_filter(scores, 0.5)) == [sorted(expected)]


def test_epsilon_and_eta():
    scores = probs_from([0.6, 0.3, 0.0995, 0.0005])
    assert kept(P.epsilon_filter(scores, 0.001)) == [[0, 1, 2]]
    p = torch.softmax(scores, -1)[0]
    h = float(-(p * p.log()).sum())
    eta = min(0.01, math.sqrt(0.01) * math.exp(-h))
    expected = [i for i, x in enumerate(p.tolist()) if x >= eta]
    assert kept(P.eta_filter(scores, 0.01)) == [expected]


def test_min_tokens_to_keep_is_honoured():
    scores = probs_from([0.9, 0.05, 0.03, 0.02])
    assert kept(P.top_p_filter(scores, 0.5, min_tokens_to_keep=3)) == [[0, 1, 2]]
    assert kept(P.min_p_filter(scores, 0.9, min_tokens_to_keep=2)) == [[0, 1]]
    assert kept(P.epsilon_filter(scores, 0.5, min_tokens_to_keep=2)) == [[0, 1]]


def test_repetition_penalty_divides_positive_multiplies_negative():
    scores = torch.tensor([[2.0, -2.0, 1.0, 4.0]])
    out = P.repetition_penalty(scores, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 4.0]]  # once per token, not per occurrence


def test_repetition_penalty_ignores_padding():
    scores = torch.tensor([[2.0, 2.0, 2.0]])
    out = P.repetition_penalty(scores, torch.tensor([[-1, -1, 2]]), 2.0)
    assert out.tolist() == [[2.0, 2.0, 1.0]]


def test_no_repeat_ngram_bans_completions():
    ids = torch.tensor([[5, 6, 7, 5, 6]])           # "5 6" seen before, followed by 7
    out = P.no_repeat_ngram(torch.zeros(1, 10), ids, 3)
    assert kept(out) == [[i for i in range(10) if i != 7]]
    # bigrams: the last token 5 was followed by 6 before
    ids2 = torch.tensor([[5, 6, 7, 5]])
    assert kept(P.no_repeat_ngram(torch.zeros(1, 10), ids2, 2)) == [[i for i in range(10) if i != 6]]


def test_forbid_tokens_and_temperature():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    assert kept(P.forbid_tokens(scores, [2])) == [[0, 1]]
    assert P.temperature(scores, 2.0).tolist() == [[0.5, 1.0, 1.5]]


@pytest.mark.parametrize("fn", [
    lambda s: P.top_k_filter(s, 3), lambda s: P.top_p_filter(s, 0.5), lambda s: P.min_p_filter(s, 0.3),
    lambda s: P.typical_filter(s, 0.5), lambda s: P.epsilon_filter(s, 0.05),
    lambda s: P.eta_filter(s, 0.05), lambda s: P.temperature(s, 0.5),
    lambda s: P.repetition_penalty(s, torch.tensor([[1, 2], [3, 4]]), 1.5),
    lambda s: P.no_repeat_ngram(s, torch.tensor([[1, 2, 1], [3, 4, 3]]), 2),
    lambda s: P.forbid_tokens(s, [0]),
])
def test_processors_never_modify_their_input(fn, scores_2x20):
    before = scores_2x20.clone()
    out = fn(scores_2x20)
    assert torch.equal(scores_2x20, before)
    assert out.data_ptr() != scores_2x20.data_ptr()


# ------------------------------------------------------------------ properties

logit_rows = st.lists(st.floats(min_value=-20, max_value=20, allow_nan=False), min_size=2, max_size=40)


@settings(max_examples=150, deadline=None)
@given(logit_rows, st.floats(min_value=0.01, max_value=1.0))
def test_top_p_kept_set_is_minimal_prefix(values, p):
    scores = torch.tensor([values], dtype=torch.float32)
    out = P.top_p_filter(scores, p)
    probs = torch.softmax(scores, -1)[0]
    keep = torch.isfinite(out[0])
    assert keep.any()
    # every kept token is at least as likely as every removed one
    if (~keep).any():
        assert probs[keep].min() >= probs[~keep].max()
    # the kept mass reaches p (within float error) and dropping the least likely kept token
    # would fall short of it
    kept_mass = float(probs[keep].sum())
    assert kept_mass >= p - 1e-5 or bool(keep.all())
    if keep.sum() > 1:
        assert kept_mass - float(probs[keep].min()) < p + 1e-5


@settings(max_examples=150, deadline=None)
@given(logit_rows, st.integers(min_value=1, max_value=50))
def test_top_k_keeps_k_except_ties(values, k):
    scores = torch.tensor([values], dtype=torch.float32)
    out = P.top_k_filter(scores, k)
    n_kept = int(torch.isfinite(out).sum())
    kk = min(k, len(values))
    as_f32 = scores[0].tolist()
    kth = sorted(as_f32, reverse=True)[kk - 1]
    ties = sum(1 for v in as_f32 if v == kth)
    # ties = occurrences of the k-th value; those ranked above it are all kept anyway
    above = sum(1 for v in as_f32 if v > kth)
    assert n_kept == above + ties and kk <= n_kept


@settings(max_examples=100, deadline=None)
@given(logit_rows, st.floats(min_value=0.05, max_value=1.0), st.floats(min_value=0.0, max_value=1.0),
       st.floats(min_value=0.2, max_value=3.0))
def test_final_distribution_sums_to_one(values, p, min_p, t):
    scores = torch.tensor([values], dtype=torch.float32)
    out = P.min_p_filter(P.top_p_filter(P.temperature(scores, t), p), min_p)
    probs = torch.softmax(out, -1)
    assert torch.isfinite(probs).all()
    assert abs(float(probs.sum()) - 1.0) < 1e-5


def test_entropy_of_uniform_and_masked():
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, -INF, -INF]])
    assert torch.allclose(P.entropy(scores), torch.tensor([math.log(4), math.log(2)]))
