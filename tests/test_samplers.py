"""The processors beyond transformers' core, on hand-built tensors: OpenAI/vLLM penalties, DRY,
XTC, top-n-σ, logit bias, mirostat's truncation, Hamming diversity, the contrastive score;
``min_tokens_to_keep`` everywhere; never in place; the processor orders."""

from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decoding import ConfigError, DecodingConfig
from decoding import processors as P
from decoding import samplers as S
from decoding.chain import StepContext, apply_chain, build_chain, chain_names
from decoding.contrastive import contrastive_scores
from decoding.diverse_beam import hamming_diversity
from decoding.mirostat import mirostat_v2_filter, update_mu
from tests.tiny import tiny_tokenizer

INF = float("inf")


def kept(scores: torch.Tensor) -> list[list[int]]:
    return [torch.isfinite(row).nonzero().flatten().tolist() for row in scores]


def probs_from(values: list[float]) -> torch.Tensor:
    p = torch.tensor(values, dtype=torch.float64)
    return torch.log(p / p.sum()).to(torch.float32)[None, :]


def run_chain(config: DecodingConfig, scores, input_ids, prompt_length, **ctx):
    stages = build_chain(config, [], tiny_tokenizer(), scores.shape[-1])
    out, _ = apply_chain(stages, StepContext(torch.tensor(input_ids), prompt_length, **ctx), scores)
    return out


# ------------------------------------------------------------------ frequency / presence / prompt

def test_frequency_and_presence_count_generated_tokens_only():
    # prompt [3, 3], generated [1, 1, 2]: token 3 occurs only in the prompt
    config = DecodingConfig(frequency_penalty=0.5, presence_penalty=0.25)
    out = run_chain(config, torch.zeros(1, 5), [[3, 3, 1, 1, 2]], prompt_length=2)
    assert out.tolist() == [[0.0, -(0.5 * 2 + 0.25), -(0.5 * 1 + 0.25), 0.0, 0.0]]


def test_frequency_and_presence_functions():
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    generated = torch.tensor([[2, 2, 2, 0]])
    assert S.frequency_penalty(scores, generated, 0.5).tolist() == [[0.5, 1.0, -0.5, 1.0]]
    assert S.presence_penalty(scores, generated, -1.0).tolist() == [[2.0, 1.0, 2.0, 1.0]]
    assert S.token_counts(torch.tensor([[-1, 1, 1]]), 3).tolist() == [[0.0, 2.0, 0.0]]


def test_penalize_prompt_false_counts_generated_tokens_only():
    scores = torch.tensor([[2.0, 2.0, 2.0, 2.0]])
    with_prompt = DecodingConfig(repetition_penalty=2.0)
    without = DecodingConfig(repetition_penalty=2.0, penalize_prompt=False)
    ids = [[3, 1]]  # prompt [3], generated [1]
    assert run_chain(with_prompt, scores, ids, 1).tolist() == [[2.0, 1.0, 2.0, 1.0]]
    assert run_chain(without, scores, ids, 1).tolist() == [[2.0, 1.0, 2.0, 2.0]]
    assert run_chain(without, scores, [[3]], 1).tolist() == [[2.0, 2.0, 2.0, 2.0]]  # first step


# ------------------------------------------------------------------ logit bias

def test_logit_bias_by_id_and_by_string():
    tok = tiny_tokenizer()
    the = tok.encode("The", add_special_tokens=False)
    assert len(the) == 1
    bias = S.resolve_logit_bias(((5, 2.5), ("The", -INF)), tok, len(tok))
    assert bias == {5: 2.5, the[0]: -INF}
    out = S.logit_bias(torch.zeros(1, len(tok)), bias)
    assert out[0, 5] == 2.5 and out[0, the[0]] == -INF
    assert int((out != 0).sum()) == 2


def test_logit_bias_refuses_multi_token_text_and_bad_ids():
    tok = tiny_tokenizer()
    with pytest.raises(ConfigError, match="logit_bias key 'unicorns galore' is [0-9]+ tokens"):
        S.resolve_logit_bias((("unicorns galore", 1.0),), tok, len(tok))
    with pytest.raises(ConfigError, match="token id 9999 is out of range; allowed: 0 <= id < "):
        S.resolve_logit_bias(((9999, 1.0),), tok, len(tok))
    the = tok.encode("The", add_special_tokens=False)[0]
    with pytest.raises(ConfigError, match=f"sets token {the} twice"):
        S.resolve_logit_bias(((the, 1.0), ("The", 2.0)), tok, len(tok))


def test_logit_bias_config_forms_round_trip():
    c = DecodingConfig(logit_bias={7: 1.0, "The": -2})
    assert c.logit_bias == ((7, 1.0), ("The", -2.0))
    assert DecodingConfig(logit_bias=["7=1", "The=-2"]) == c    # the CLI form
    assert DecodingConfig.from_dict(c.to_dict()) == c           # ids stay ids, texts stay texts


# ------------------------------------------------------------------ DRY

def naive_repeat_lengths(tokens, allowed_length, breakers):
    """The definition, O(n²): for every earlier end position, the longest common suffix."""
    n = len(tokens)
    if n <= allowed_length:
        return {}
    limit = next((i for i in range(n) if tokens[n - 1 - i] in breakers), n)
    if limit < allowed_length:
        return {}
    best = {}
    for end in range(n - 1):          # an earlier occurrence ends at `end`, followed by end+1
        length = 0
        while length <= end and tokens[end - length] == tokens[n - 1 - length]:
            length += 1
        length = min(length, limit)
        nxt = tokens[end + 1]
        if length >= allowed_length and best.get(nxt, 0) < length:
            best[nxt] = length
    return best


def test_dry_repeat_lengths_upstream_example():
    # llama.cpp's comment: "a b c c b c y a b c" -> c extends 3, b extends 1, y extends 2
    a, b, c, y = 1, 2, 3, 4
    assert S.dry_repeat_lengths([a, b, c, c, b, c, y, a, b, c], 1) == {c: 3, b: 1, y: 2}
    assert S.dry_repeat_lengths([a, b, c, c, b, c, y, a, b, c], 2) == {c: 3, y: 2}


def test_dry_penalty_exponent_and_allowed_length():
    ctx = torch.tensor([[1, 2, 3, 4, 1, 2, 3]])     # "1 2 3" repeated: 4 would extend L = 3
    out = S.dry_penalty(torch.zeros(1, 10), ctx, multiplier=0.8, base=1.75, allowed_length=2)
    expected = torch.zeros(1, 10)
    expected[0, 4] = -0.8 * 1.75 ** (3 - 2)
    assert torch.allclose(out, expected)
    out3 = S.dry_penalty(torch.zeros(1, 10), ctx, 0.8, 1.75, allowed_length=3)
    assert out3[0, 4].item() == pytest.approx(-0.8) and int((out3 != 0).sum()) == 1
    assert torch.equal(S.dry_penalty(torch.zeros(1, 10), ctx, 0.8, 1.75, allowed_length=4),
                       torch.zeros(1, 10))


def test_dry_breaker_caps_the_match_and_is_never_penalised():
    ctx = torch.tensor([[1, 2, 3, 4, 1, 2, 3]])
    # 1 is a breaker: the repeat cannot reach back across the last 1, so L = 2, not 3
    out = S.dry_penalty(torch.zeros(1, 10), ctx, 0.8, 1.75, 2, breakers={1})
    assert out[0, 4].item() == pytest.approx(-0.8 * 1.75 ** 0)
    # the breaker right before the end leaves fewer than allowed_length tokens: no penalty
    assert S.dry_repeat_lengths([5, 6, 9, 5, 6, 9, 5], 2, {9}) == {}
    # "1 2" repeats and was followed by the breaker 9: 9 would extend it but is exempt
    assert S.dry_repeat_lengths([1, 2, 9, 1, 2], 2, {9}) == {9: 2}
    out = S.dry_penalty(torch.zeros(1, 10), torch.tensor([[1, 2, 9, 1, 2]]), 0.8, 1.75, 2, {9})
    assert torch.equal(out, torch.zeros(1, 10))


def test_dry_exponent_is_clamped_like_llama_cpp():
    ctx = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7]])  # 8 would extend L = 7
    base = 1e10                         # max exponent = int(88.7228391 / ln 1e10) = 3
    out = S.dry_penalty(torch.zeros(1, 10), ctx, 0.5, base, allowed_length=2)
    assert out[0, 8].item() == pytest.approx(-0.5 * base ** 3, rel=1e-6)   # not base ** 5


def test_dry_window_padding_and_rows():
    ctx = torch.tensor([[1, 2, 3, 4, 7, 8, 1, 2, 3], [-1, -1, 5, 6, 7, 5, 6, 0, 0]])
    out = S.dry_penalty(torch.zeros(2, 10), ctx, 1.0, 2.0, 2)
    assert out[0, 4].item() == -2.0 and int((out[0] != 0).sum()) == 1
    assert torch.equal(out[1], torch.zeros(10))       # row 2 ends "0 0": no earlier "0 0"
    window = S.dry_penalty(torch.zeros(2, 10), ctx, 1.0, 2.0, 2, last_n=5)
    assert torch.equal(window[0], torch.zeros(10))   # the first "1 2 3" is outside the window


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=0, max_size=40), st.integers(1, 4),
       st.sets(st.integers(0, 3), max_size=2))
def test_dry_z_algorithm_matches_the_definition(tokens, allowed_length, breakers):
    assert S.dry_repeat_lengths(tokens, allowed_length, breakers) == \
        naive_repeat_lengths(tokens, allowed_length, breakers)


def test_dry_breaker_rule_on_the_tokenizer():
    tok = tiny_tokenizer()
    ids = S.breaker_token_ids(tok, ("\n", ":"))
    texts = [tok.decode([i], skip_special_tokens=False) for i in range(len(tok))]
    assert ids == {i for i, t in enumerate(texts) if "\n" in t or ":" in t}
    assert tok.encode(":", add_special_tokens=False)[0] in ids
    assert S.breaker_token_ids(tok, ()) == frozenset()


# ------------------------------------------------------------------ XTC

def test_xtc_removes_top_choices_but_the_least_likely():
    scores = probs_from([0.4, 0.3, 0.2, 0.1])
    fire = torch.tensor([0.0])
    assert kept(S.xtc_filter(scores, 0.25, 1.0, fire)) == [[1, 2, 3]]   # 0.4 and 0.3 qualify
    assert kept(S.xtc_filter(scores, 0.15, 1.0, fire)) == [[2, 3]]      # 0.4, 0.3, 0.2 qualify
    assert kept(S.xtc_filter(scores, 0.0, 1.0, fire)) == [[3]]          # all qualify


def test_xtc_no_ops():
    scores = probs_from([0.4, 0.3, 0.2, 0.1])
    assert torch.equal(S.xtc_filter(scores, 0.35, 1.0, torch.tensor([0.0])), scores)  # one qualifies
    assert torch.equal(S.xtc_filter(scores, 0.6, 1.0, torch.tensor([0.0])), scores)   # none
    assert torch.equal(S.xtc_filter(scores, 0.25, 0.0, torch.tensor([0.0])), scores)  # probability 0
    assert torch.equal(S.xtc_filter(scores, 0.25, 0.5, torch.tensor([0.7])), scores)  # draw >= p
    # min_tokens_to_keep: removing 2 of 4 would leave 2 < 3 tokens -> the row is left alone
    assert torch.equal(S.xtc_filter(scores, 0.15, 1.0, torch.tensor([0.0]), 3), scores)
    assert kept(S.xtc_filter(scores, 0.15, 1.0, torch.tensor([0.0]), 2)) == [[2, 3]]


def test_xtc_threshold_edge_and_rows():
    tie = torch.tensor([[0.0, 0.0, -INF]])           # p = 0.5, 0.5: both reach threshold 0.5
    assert kept(S.xtc_filter(tie, 0.5, 1.0, torch.tensor([0.0]))) == [[0]]  # lowest id stays
    two = torch.cat([probs_from([0.4, 0.3, 0.2, 0.1])] * 2)
    assert kept(S.xtc_filter(two, 0.25, 0.5, torch.tensor([0.2, 0.9]))) == [[1, 2, 3], [0, 1, 2, 3]]


def test_xtc_draws_one_uniform_per_row_per_step():
    ctx = StepContext(torch.zeros(3, 1, dtype=torch.long), 1,
                      generator=torch.Generator().manual_seed(5))
    first, second = ctx.uniform(3), ctx.uniform(3)
    reference = torch.rand(6, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.cat([first, second]), reference)
    rows = StepContext(torch.zeros(3, 1, dtype=torch.long), 1, row_generators=[
        (slice(0, 2), torch.Generator().manual_seed(1)), (slice(2, 3), torch.Generator().manual_seed(2))])
    draws = rows.uniform(3)
    assert torch.equal(draws[:2], torch.rand(2, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(draws[2:], torch.rand(1, generator=torch.Generator().manual_seed(2)))


# ------------------------------------------------------------------ top-n-sigma

def test_top_n_sigma_hand_built():
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0, -INF]])
    # finite logits 3, 2, 1, 0: mean 1.5, population sigma sqrt(1.25) = 1.118
    assert kept(S.top_n_sigma_filter(scores, 1.0)) == [[0, 1]]        # threshold 1.882
    assert kept(S.top_n_sigma_filter(scores, 2.0)) == [[0, 1, 2]]     # threshold 0.764
    assert kept(S.top_n_sigma_filter(scores, 0.5)) == [[0]]           # threshold 2.441
    assert kept(S.top_n_sigma_filter(scores / 0.3, 1.0)) == [[0, 1]]  # temperature-invariant
    assert kept(S.top_n_sigma_filter(scores, 0.1, min_tokens_to_keep=3)) == [[0, 1, 2]]


# ------------------------------------------------------------------ mirostat, diversity, contrastive

def test_mirostat_v2_truncation_and_update():
    scores = probs_from([0.5, 0.25, 0.125, 0.125])   # surprises 1, 2, 3, 3 bits
    mu = lambda v: torch.tensor([v])                  # noqa: E731
    assert kept(mirostat_v2_filter(scores, mu(2.0))) == [[0, 1]]
    assert kept(mirostat_v2_filter(scores, mu(3.0001))) == [[0, 1, 2, 3]]
    assert kept(mirostat_v2_filter(scores, mu(0.5))) == [[0]]         # the top token always stays
    assert kept(mirostat_v2_filter(scores, mu(0.5), min_tokens_to_keep=2)) == [[0, 1]]
    assert update_mu(torch.tensor([10.0]), torch.tensor([3.0]), tau=5.0, eta=0.1).item() == \
        pytest.approx(10.2)


def test_hamming_diversity_subtracts_counts_of_earlier_groups():
    scores = torch.zeros(2, 5)
    previous = torch.tensor([[1, 1, 3], [4, 4, 4]])
    out = hamming_diversity(scores, previous, 0.5)
    assert out.tolist() == [[0.0, -1.0, 0.0, -0.5, 0.0], [0.0, 0.0, 0.0, 0.0, -1.5]]
    assert torch.equal(hamming_diversity(scores, previous[:, :0], 0.5), scores)  # first group


def test_contrastive_score_hand_checked():
    context = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])            # two context tokens
    candidates = torch.tensor([[[2.0, 0.0], [1.0, 1.0]]])         # parallel to token 0; diagonal
    probs = torch.tensor([[0.6, 0.4]])
    score, penalty = contrastive_scores(context, torch.ones(1, 2), candidates, probs, alpha=0.5)
    # cos = 1 for the first; 1/sqrt(2) against both context tokens for the second
    assert penalty[0].tolist() == pytest.approx([1.0, 1 / math.sqrt(2)])
    assert score[0].tolist() == pytest.approx([0.5 * 0.6 - 0.5 * 1.0, 0.5 * 0.4 - 0.5 / math.sqrt(2)])
    assert int(score.argmax()) == 1                                # the less degenerate one wins
    # context token 0 is padding: the first candidate is now orthogonal to the context
    score, penalty = contrastive_scores(context, torch.tensor([[0, 1]]), candidates, probs, 0.5)
    assert penalty[0].tolist() == pytest.approx([0.0, 1 / math.sqrt(2)])
    assert int(score.argmax()) == 0
    score, _ = contrastive_scores(context, torch.ones(1, 2), candidates, probs, alpha=0.0)
    assert torch.equal(score, probs)                               # alpha 0: confidence only


# ------------------------------------------------------------------ min_tokens_to_keep, purity

TRUNCATIONS = {
    "top_k": lambda s, keep: P.top_k_filter(s, 1, keep),
    "top_p": lambda s, keep: P.top_p_filter(s, 0.1, keep),
    "min_p": lambda s, keep: P.min_p_filter(s, 0.99, keep),
    "typical_p": lambda s, keep: P.typical_filter(s, 0.01, keep),
    "epsilon_cutoff": lambda s, keep: P.epsilon_filter(s, 0.9, keep),
    "eta_cutoff": lambda s, keep: P.eta_filter(s, 0.9, keep),
    "top_n_sigma": lambda s, keep: S.top_n_sigma_filter(s, 0.01, keep),
    "xtc": lambda s, keep: S.xtc_filter(s, 0.0, 1.0, torch.zeros(s.shape[0]), keep),
    "mirostat": lambda s, keep: mirostat_v2_filter(s, torch.zeros(s.shape[0]), keep),
}


@pytest.mark.parametrize("name", TRUNCATIONS)
def test_min_tokens_to_keep_is_honoured_by_every_truncation(name):
    scores = probs_from([0.6, 0.2, 0.1, 0.05, 0.05])
    assert len(kept(TRUNCATIONS[name](scores, 1))[0]) < 3       # it does truncate
    assert len(kept(TRUNCATIONS[name](scores, 3))[0]) >= 3


def test_min_tokens_to_keep_reaches_the_chain():
    config = DecodingConfig(strategy="sample", top_k=1, top_n_sigma=0.01, min_tokens_to_keep=3)
    out = run_chain(config, probs_from([0.6, 0.2, 0.1, 0.05, 0.05]), [[1]], 1)
    assert kept(out) == [[0, 1, 2]]


@pytest.mark.parametrize("fn", [
    lambda s: S.frequency_penalty(s, torch.tensor([[1, 2], [3, 3]]), 0.5),
    lambda s: S.presence_penalty(s, torch.tensor([[1, 2], [3, 3]]), 0.5),
    lambda s: S.logit_bias(s, {1: 2.0, 3: -INF}),
    lambda s: S.dry_penalty(s, torch.tensor([[1, 2, 3, 1, 2], [4, 5, 4, 5, 4]]), 0.8, 1.75, 1),
    lambda s: S.top_n_sigma_filter(s, 1.0),
    lambda s: S.xtc_filter(s, 0.01, 1.0, torch.zeros(2)),
    lambda s: mirostat_v2_filter(s, torch.tensor([3.0, 3.0])),
    lambda s: hamming_diversity(s, torch.tensor([[1, 2], [3, 4]]), 1.0),
])
def test_new_processors_never_modify_their_input(fn):
    scores = torch.stack([torch.arange(20.0) / 4, torch.flip(torch.arange(20.0), [0]) / 2])
    before = scores.clone()
    out = fn(scores)
    assert torch.equal(scores, before)
    assert out.data_ptr() != scores.data_ptr()
    assert not torch.equal(out, scores)                            # and it did something


# ------------------------------------------------------------------ processor orders

ALL_ON = dict(strategy="sample", logit_bias={5: 1.0}, repetition_penalty=1.2, frequency_penalty=0.1,
              presence_penalty=0.1, dry_multiplier=0.8, no_repeat_ngram_size=3, min_new_tokens=2,
              ignore_eos=True, temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, typical_p=0.95,
              epsilon_cutoff=1e-4, eta_cutoff=1e-4, top_n_sigma=1.0, xtc_probability=0.5,
              max_new_tokens=8)


def names_for(**kwargs) -> list[str]:
    return chain_names(build_chain(DecodingConfig(**kwargs), [2], tiny_tokenizer(), 400))[1:]


def test_processor_orders_are_the_documented_lists():
    assert names_for(**ALL_ON) == [
        "logit_bias", "repetition_penalty", "frequency_penalty", "presence_penalty", "dry",
        "no_repeat_ngram", "min_new_tokens", "ignore_eos", "temperature", "top_k", "top_p",
        "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_n_sigma", "xtc"]
    assert names_for(**ALL_ON, processor_order="llama.cpp") == [
        "logit_bias", "min_new_tokens", "ignore_eos", "repetition_penalty", "frequency_penalty",
        "presence_penalty", "no_repeat_ngram", "dry", "top_n_sigma", "top_k", "typical_p",
        "top_p", "min_p", "epsilon_cutoff", "eta_cutoff", "xtc", "temperature"]
    explicit = ["xtc", "temperature", "top_k", "logit_bias"]
    assert names_for(strategy="sample", xtc_probability=0.5, temperature=0.7, top_k=5,
                     logit_bias={5: 1.0}, processor_order=explicit) == explicit
    assert names_for(strategy="sample", top_k=5, processor_order="xtc,top_k,temperature") == ["top_k"]


def test_strategies_run_the_stages_that_make_sense():
    greedy = {**ALL_ON, "strategy": "greedy"}
    penalties = ["logit_bias", "repetition_penalty", "frequency_penalty", "presence_penalty",
                 "dry", "no_repeat_ngram", "min_new_tokens", "ignore_eos"]
    assert names_for(**greedy) == penalties
    assert names_for(**{**greedy, "strategy": "contrastive"}) == penalties
    assert names_for(**{**greedy, "strategy": "beam"}) == penalties
    assert names_for(**{**greedy, "strategy": "mirostat"}) == penalties + ["temperature", "mirostat"]
    diverse = {**greedy, "strategy": "beam", "num_beam_groups": 2, "diversity_penalty": 0.5}
    assert names_for(**diverse) == ["logit_bias", "diversity_penalty"] + penalties[1:]


def test_llama_cpp_order_changes_the_result():
    # temperature first (transformers) vs last (llama.cpp): min-p sees different probabilities
    scores = probs_from([0.5, 0.3, 0.15, 0.05])
    common = dict(strategy="sample", temperature=3.0, min_p=0.5)
    hf = run_chain(DecodingConfig(**common), scores, [[1]], 1)
    llama = run_chain(DecodingConfig(**common, processor_order="llama.cpp"), scores, [[1]], 1)
    assert kept(hf) == [[0, 1, 2]] and kept(llama) == [[0, 1]]


def test_any_permutation_is_an_explicit_order():
    rng = random.Random(0)
    names = names_for(**ALL_ON)
    for _ in range(10):
        rng.shuffle(names)
        assert names_for(**ALL_ON, processor_order=list(names)) == names
