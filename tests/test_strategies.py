"""Strategies beyond transformers' core on the tiny model: diverse beam search, contrastive
search, mirostat v2; the new processors inside the loop (parity where transformers can serve
as the reference); traces and JSON round-trips."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from decoding import DecodingConfig, Generation, generate

PROMPTS = ["The cat sat", "Beam search keeps", "A unicorn lived in", "What is the capital"]


def beam_view(gen: Generation):
    return ([s.token_ids for s in gen.sequences], [s.score for s in gen.sequences],
            [[(b.parent, b.token_id, b.score) for b in st.beams] for st in gen.beam_steps])


# ------------------------------------------------------------------ diverse beam search

@pytest.mark.parametrize("extra", [dict(), dict(length_penalty=0.0, early_stopping="never"),
                                   dict(early_stopping=True, min_new_tokens=3)])
def test_one_group_is_exactly_beam_search(tiny, extra):
    for prompt in PROMPTS[:2]:
        plain = generate(tiny, prompt, DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=10,
                                                      num_return_sequences=3, **extra))
        grouped = generate(tiny, prompt, DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=10,
                                                        num_return_sequences=3, num_beam_groups=1,
                                                        diversity_penalty=5.0, **extra))
        assert beam_view(grouped) == beam_view(plain)
        assert grouped.chain == plain.chain and "diversity_penalty" not in grouped.chain


def test_groups_without_penalty_are_independent_beam_searches(tiny):
    width = 2
    plain = generate(tiny, PROMPTS[2], DecodingConfig(strategy="beam", num_beams=width,
                                                      max_new_tokens=8, num_return_sequences=2))
    grouped = generate(tiny, PROMPTS[2], DecodingConfig(strategy="beam", num_beams=2 * width,
                                                        num_beam_groups=2, max_new_tokens=8,
                                                        num_return_sequences=4))
    a, b = plain.sequences[0].token_ids, plain.sequences[1].token_ids
    assert [s.token_ids for s in grouped.sequences] == [a, a, b, b]
    for mine, ref in zip(grouped.beam_steps, plain.beam_steps):
        for g in range(2):
            group = mine.beams[g * width:(g + 1) * width]
            assert [(n.parent - g * width, n.token_id) for n in group] == \
                [(n.parent, n.token_id) for n in ref.beams]
            # a 4-row batch differs from a 2-row one in the last float bits
            assert [n.score for n in group] == pytest.approx([n.score for n in ref.beams], abs=1e-5)


def test_diversity_penalty_at_the_first_step(tiny):
    """Group 1's first tokens are the best after subtracting penalty · count(group 0's tokens)."""
    ids = tiny.encode(PROMPTS[0])
    penalty = 0.7
    gen = generate(tiny, PROMPTS[0], DecodingConfig(strategy="beam", num_beams=4, num_beam_groups=2,
                                                    diversity_penalty=penalty, max_new_tokens=6))
    assert gen.chain == ["raw", "diversity_penalty"]
    with torch.no_grad():
        logp = torch.log_softmax(tiny.model(torch.tensor([ids])).logits[0, -1].float(), -1)
    first = gen.beam_steps[0].beams
    group0 = [n.token_id for n in first[:2]]
    assert group0 == torch.topk(logp, 2).indices.tolist()
    penalised = logp.clone()
    penalised[group0] -= penalty
    expected = torch.topk(penalised, 2)
    assert [n.token_id for n in first[2:]] == expected.indices.tolist()
    assert [n.score for n in first[2:]] == pytest.approx(expected.values.tolist(), abs=1e-5)
    assert all(n.parent == 2 for n in first[2:])            # group 1 grows from its own first beam


def test_large_diversity_penalty_makes_groups_differ(tiny):
    c = DecodingConfig(strategy="beam", num_beams=4, num_beam_groups=4, diversity_penalty=50.0,
                       max_new_tokens=6, num_return_sequences=4)
    gen = generate(tiny, PROMPTS[1], c)
    for step in gen.beam_steps:
        tokens = [n.token_id for n in step.beams]
        assert len(set(tokens)) == 4                        # every group chose another token
    back = Generation.from_json(gen.to_json())
    assert back == gen


# ------------------------------------------------------------------ contrastive search

@pytest.mark.parametrize("chat", [True, False])
def test_contrastive_alpha_zero_is_greedy(tiny, chat):
    for prompt in PROMPTS:
        greedy = generate(tiny, prompt, DecodingConfig(max_new_tokens=15, repetition_penalty=1.3), chat=chat)
        contrastive = generate(tiny, prompt, DecodingConfig(
            strategy="contrastive", penalty_alpha=0.0, max_new_tokens=15, repetition_penalty=1.3), chat=chat)
        assert contrastive.token_ids == greedy.token_ids


def test_contrastive_trace_records_the_scoring(tiny):
    alpha = 0.6
    gen = generate(tiny, PROMPTS[0], DecodingConfig(strategy="contrastive", penalty_alpha=alpha,
                                                    max_new_tokens=12))
    greedy = generate(tiny, PROMPTS[0], DecodingConfig(max_new_tokens=12))
    assert gen.token_ids != greedy.token_ids                 # the penalty does change the choice
    assert gen.chain == ["raw", "contrastive_top_k"]
    for step in gen.steps:
        cands = step.extra["contrastive"]
        assert len(cands) == 4 and step.kept_count == 4      # top_k 0 -> k = 4
        conf = [c["confidence"] for c in cands]
        assert conf == sorted(conf, reverse=True)
        for c in cands:
            assert c["score"] == pytest.approx((1 - alpha) * c["confidence"]
                                               - alpha * c["degeneration_penalty"], abs=1e-6)
            assert -1.0 - 1e-5 <= c["degeneration_penalty"] <= 1.0 + 1e-5
        best = max(cands, key=lambda c: c["score"])
        assert best["token_id"] == step.token_id
        assert step.chosen_candidate.probs[0] == pytest.approx(best["confidence"], rel=1e-5)
    back = Generation.from_json(gen.to_json())
    assert back == gen and back.to_json() == gen.to_json()
    six = generate(tiny, PROMPTS[0], DecodingConfig(strategy="contrastive", top_k=6, max_new_tokens=3))
    assert all(len(s.extra["contrastive"]) == 6 for s in six.steps)


def test_contrastive_never_picks_a_removed_token(tiny):
    allowed = tiny.encode("The cat", chat=False)[:2]
    banned = {t: -float("inf") for t in range(tiny.vocab_size) if t not in allowed}
    gen = generate(tiny, PROMPTS[0], DecodingConfig(strategy="contrastive", penalty_alpha=0.9,
                                                    max_new_tokens=8, logit_bias=banned))
    assert set(gen.token_ids) <= set(allowed)
    for step in gen.steps:
        assert sum(c["confidence"] > 0 for c in step.extra["contrastive"]) == 2


def test_contrastive_penalty_uses_last_layer_states_of_prompt_and_output(tiny):
    """Recompute step 1's degeneration penalties from a plain forward pass over the context."""
    ids = tiny.encode(PROMPTS[3])
    gen = generate(tiny, PROMPTS[3], DecodingConfig(strategy="contrastive", max_new_tokens=2))
    context = ids + gen.token_ids[:1]
    for cand in gen.steps[1].extra["contrastive"]:
        with torch.no_grad():
            hidden = tiny.model(torch.tensor([context + [cand["token_id"]]]),
                                output_hidden_states=True).hidden_states[-1][0]
        cos = torch.nn.functional.cosine_similarity(hidden[-1][None], hidden[:-1], dim=-1)
        assert cand["degeneration_penalty"] == pytest.approx(float(cos.max()), abs=1e-4)


# ------------------------------------------------------------------ mirostat v2

def test_mirostat_follows_its_feedback_rule(tiny):
    tau, eta = 3.0, 0.2
    c = DecodingConfig(strategy="mirostat", mirostat_tau=tau, mirostat_eta=eta, temperature=0.9,
                       top_k=3, max_new_tokens=20, ignore_eos=True, seed=4)
    gen = generate(tiny, PROMPTS[1], c)
    assert gen.chain == ["raw", "ignore_eos", "temperature", "mirostat"]   # top_k is ignored
    assert gen.steps[0].extra["mirostat_mu"] == pytest.approx(2 * tau)
    for step, nxt in zip(gen.steps, gen.steps[1:]):
        mu, observed = step.extra["mirostat_mu"], step.extra["surprise"]
        assert observed == pytest.approx(-math.log2(step.prob_final), rel=1e-4)
        assert nxt.extra["mirostat_mu"] == pytest.approx(mu - eta * (observed - tau), rel=1e-5)
        for cand in step.candidates:          # kept at the mirostat stage <=> surprise <= mu
            before = cand.probs[-2]
            if before > 0 and abs(-math.log2(before) - mu) > 1e-3:
                assert cand.kept[-1] == (-math.log2(before) <= mu or cand.token_id == step.token_id
                                         and step.kept_count == 1)
    assert generate(tiny, PROMPTS[1], c).token_ids == gen.token_ids
    assert generate(tiny, PROMPTS[1], c.replace(seed=5)).token_ids != gen.token_ids
    back = Generation.from_json(gen.to_json())
    assert back == gen


def test_mirostat_several_sequences_keep_their_own_mu(tiny):
    c = DecodingConfig(strategy="mirostat", max_new_tokens=10, num_return_sequences=3, seed=2,
                       ignore_eos=True)
    gen = generate(tiny, PROMPTS[0], c)
    mus = [[s.extra["mirostat_mu"] for s in seq.steps] for seq in gen.sequences]
    assert all(m[0] == pytest.approx(10.0) for m in mus)
    assert len({tuple(m) for m in mus}) > 1


# ------------------------------------------------------------------ new processors in the loop

class DrawOneUniform(LogitsProcessor):
    """A reference for XTC's coin: one uniform per row per step from the global RNG."""

    def __call__(self, input_ids, scores):
        torch.rand(scores.shape[0])
        return scores


def test_xtc_consumes_exactly_one_draw_per_row_and_step(tiny):
    # threshold 1.0 can never have two top choices: the stage only draws its coin
    c = DecodingConfig(strategy="sample", xtc_probability=1.0, xtc_threshold=1.0, max_new_tokens=12,
                       num_return_sequences=2, seed=7)
    ids = tiny.encode(PROMPTS[0])
    gen = generate(tiny, PROMPTS[0], c)
    torch.manual_seed(7)
    out = tiny.model.generate(torch.tensor([ids]), do_sample=True, top_k=0, max_new_tokens=12,
                              num_return_sequences=2,
                              logits_processor=LogitsProcessorList([DrawOneUniform()]))
    eos = set(tiny.eos_token_ids)
    for seq, row in zip(gen.sequences, out[:, len(ids):].tolist()):
        cut = next((i for i, t in enumerate(row) if t in eos), None)
        assert seq.token_ids == (row if cut is None else row[:cut + 1])


def test_xtc_is_reproducible_and_acts(tiny):
    c = DecodingConfig(strategy="sample", xtc_probability=0.5, xtc_threshold=0.006, max_new_tokens=16,
                       seed=3)
    a, b = generate(tiny, PROMPTS[2], c), generate(tiny, PROMPTS[2], c)
    assert a.token_ids == b.token_ids
    fired = [s for s in a.steps if s.candidates[0].kept[-2] and not s.candidates[0].kept[-1]]
    assert fired                                            # the top choice was excluded sometimes
    for s in fired:
        assert s.rank_raw > 1


def test_penalize_prompt_false_matches_transformers_prompt_ignore_length(tiny):
    for prompt in PROMPTS[:3]:
        ids = tiny.encode(prompt)
        gen = generate(tiny, prompt, DecodingConfig(max_new_tokens=15, repetition_penalty=1.8,
                                                    penalize_prompt=False))
        out = tiny.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=15, logits_processor=
                                  LogitsProcessorList([RepetitionPenaltyLogitsProcessor(
                                      1.8, prompt_ignore_length=len(ids))]))
        row = out[0, len(ids):].tolist()
        cut = next((i for i, t in enumerate(row) if t in tiny.eos_token_ids), None)
        assert gen.token_ids == (row if cut is None else row[:cut + 1])


def test_penalties_change_greedy_and_beam(tiny):
    for strategy in ("greedy", "beam"):
        base = DecodingConfig(strategy=strategy, num_beams=2, max_new_tokens=12, ignore_eos=True)
        ref = generate(tiny, PROMPTS[0], base, chat=False)
        assert len(set(ref.token_ids)) < len(ref.token_ids)   # it repeats on the tiny model
        first = ref.token_ids[0]
        for knobs in (dict(frequency_penalty=2.0), dict(presence_penalty=2.0),
                      dict(dry_multiplier=3.0, dry_sequence_breakers=()),
                      dict(logit_bias={first: -float("inf")})):
            gen = generate(tiny, PROMPTS[0], base.replace(**knobs), chat=False)
            assert gen.token_ids != ref.token_ids, (knobs, strategy)
            if "logit_bias" in knobs:
                assert first not in gen.token_ids


def test_dry_stops_a_greedy_loop(tiny):
    c = DecodingConfig(max_new_tokens=40, ignore_eos=True)
    loop = generate(tiny, PROMPTS[1], c, chat=False)
    dry = generate(tiny, PROMPTS[1], c.replace(dry_multiplier=2.0, dry_sequence_breakers=()), chat=False)

    def longest_repeat(tokens):
        from decoding.samplers import dry_repeat_lengths
        return max([0] + [max(dry_repeat_lengths(tokens[:i], 1).values(), default=0)
                          for i in range(2, len(tokens) + 1)])

    assert longest_repeat(loop.token_ids) > longest_repeat(dry.token_ids)


def test_processor_order_is_what_the_trace_shows(tiny):
    c = DecodingConfig(strategy="sample", temperature=2.0, min_p=0.3, top_n_sigma=1.5, max_new_tokens=4,
                       processor_order="llama.cpp")
    gen = generate(tiny, PROMPTS[0], c)
    assert gen.chain == ["raw", "top_n_sigma", "min_p", "temperature"]
    assert all(s.stages == gen.chain for s in gen.steps)
    hf = generate(tiny, PROMPTS[0], c.replace(processor_order="transformers"))
    assert hf.chain == ["raw", "temperature", "min_p", "top_n_sigma"]
