"""Our loop on a tiny random Llama: parity with transformers' generate(), traces, stopping."""

from __future__ import annotations

import math

import pytest

from decoding import ConfigError, DecodingConfig, Generation, GenerationError, generate, generate_ids
from decoding.loop import decode_batch
from tests.parity import reference

PROMPTS = ["The cat sat", "Beam search keeps", "A unicorn lived in", "What is the capital"]


CONFIGS = [
    DecodingConfig(max_new_tokens=12),
    DecodingConfig(max_new_tokens=12, repetition_penalty=1.5, no_repeat_ngram_size=2),
    DecodingConfig(strategy="sample", max_new_tokens=12, seed=1),
    DecodingConfig(strategy="sample", max_new_tokens=12, seed=2, temperature=0.7, top_k=10, top_p=0.9),
    DecodingConfig(strategy="sample", max_new_tokens=12, seed=3, min_p=0.1, typical_p=0.8),
    DecodingConfig(strategy="sample", max_new_tokens=12, seed=4, epsilon_cutoff=0.003, num_return_sequences=3),
    DecodingConfig(strategy="sample", max_new_tokens=12, seed=5, eta_cutoff=0.003, repetition_penalty=1.3),
    DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=10),
    DecodingConfig(strategy="beam", num_beams=4, max_new_tokens=10, length_penalty=0.0,
                   early_stopping="never", num_return_sequences=4),
    DecodingConfig(strategy="beam", num_beams=2, max_new_tokens=10, early_stopping=True, min_new_tokens=4),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.changed().items()))
@pytest.mark.parametrize("chat", [True, False])
def test_token_identical_to_transformers_on_tiny_model(tiny, config, chat):
    for prompt in PROMPTS[:2]:
        ids = tiny.encode(prompt, chat=chat)
        gen = generate(tiny, prompt, config, chat=chat)
        assert [s.token_ids for s in gen.sequences] == reference(tiny, ids, config)


def test_top_k_1_sampling_equals_greedy(tiny):
    greedy = generate(tiny, PROMPTS[2], DecodingConfig(max_new_tokens=15))
    sampled = generate(tiny, PROMPTS[2], DecodingConfig(strategy="sample", top_k=1, max_new_tokens=15, seed=9))
    assert sampled.token_ids == greedy.token_ids


def test_same_seed_same_tokens_other_seed_differs(tiny):
    c = DecodingConfig(strategy="sample", max_new_tokens=20, seed=11)
    a, b = generate(tiny, PROMPTS[0], c), generate(tiny, PROMPTS[0], c)
    other = generate(tiny, PROMPTS[0], c.replace(seed=12))
    assert a.token_ids == b.token_ids
    assert other.token_ids != a.token_ids


def test_trace_is_consistent(tiny):
    c = DecodingConfig(strategy="sample", max_new_tokens=10, temperature=0.8, top_k=30, top_p=0.9, seed=4)
    gen = generate(tiny, PROMPTS[1], c, trace_top=15)
    assert gen.chain == ["raw", "temperature", "top_k", "top_p"]
    assert len(gen.steps) == len(gen.token_ids)
    for step, token in zip(gen.steps, gen.token_ids):
        assert step.token_id == token
        assert step.stages == gen.chain
        chosen = step.chosen_candidate
        assert chosen is not None and all(chosen.kept)         # the chosen token survived every stage
        assert math.isclose(chosen.probs[-1], step.prob_final, rel_tol=1e-5)
        assert math.isclose(chosen.probs[0], step.prob_raw, rel_tol=1e-5)
        assert 1 <= step.kept_count <= 30
        assert step.entropy_final <= step.entropy_raw + 1.0
        raw = [cand.probs[0] for cand in step.candidates]
        assert raw == sorted(raw, reverse=True)                 # ordered by raw probability
        assert sum(1 for cand in step.candidates if cand.kept[2]) <= 30
        # probability from the stored raw logit and normaliser
        assert math.isclose(math.exp(chosen.raw_logit - step.raw_logsumexp), step.prob_raw, rel_tol=1e-4)
        # top-k stage: exactly the kept tokens are non-zero
        for cand in step.candidates:
            assert (cand.probs[-1] > 0) == cand.kept[-1]


def test_greedy_chain_has_no_sampling_stages(tiny):
    gen = generate(tiny, PROMPTS[0], DecodingConfig(max_new_tokens=3, temperature=0.5, top_p=0.5))
    assert gen.chain == ["raw"]
    assert all(s.rank_raw == 1 for s in gen.steps)


def test_json_round_trip_exact(tiny):
    for c in (DecodingConfig(strategy="sample", max_new_tokens=6, top_p=0.9, num_return_sequences=2),
              DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=6, num_return_sequences=2)):
        gen = generate(tiny, PROMPTS[0], c)
        back = Generation.from_json(gen.to_json())
        assert back == gen
        assert back.to_json() == gen.to_json()


def test_beam_tree_is_recorded(tiny):
    c = DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=8, num_return_sequences=3)
    gen = generate(tiny, PROMPTS[3], c)
    assert len(gen.sequences) == 3
    scores = [s.score for s in gen.sequences]
    assert scores == sorted(scores, reverse=True)
    assert 1 <= len(gen.beam_steps) <= 8
    for step in gen.beam_steps:
        assert len(step.beams) == 3
        assert all(0 <= b.parent < 3 for b in step.beams)
    kept = [f for s in gen.beam_steps for f in s.finished if f.kept]
    assert sorted(f.score for f in kept)[-1] == pytest.approx(scores[0])
    # the returned best hypothesis can be followed back through the tree
    best = gen.sequences[0].token_ids
    assert any(f.token_ids == best for f in kept)


def test_min_new_tokens_and_ignore_eos_forbid_eos(tiny):
    eos = tiny.eos_token_ids[0]
    gen = generate(tiny, PROMPTS[0], DecodingConfig(max_new_tokens=30, ignore_eos=True))
    assert eos not in gen.token_ids and gen.finish_reason == "length"
    assert "ignore_eos" in gen.chain
    gen = generate(tiny, PROMPTS[0], DecodingConfig(max_new_tokens=30, min_new_tokens=25))
    assert eos not in gen.token_ids[:25]


def test_eos_is_returned_like_transformers(tiny):
    eos = tiny.eos_token_ids[0]

    def favour_eos(module, args, output):
        boosted = output.clone()
        boosted[..., eos] += 100.0
        return boosted

    handle = tiny.model.lm_head.register_forward_hook(favour_eos)
    try:
        gen = generate(tiny, PROMPTS[0], DecodingConfig(max_new_tokens=5))
        ref = reference(tiny, tiny.encode(PROMPTS[0]), DecodingConfig(max_new_tokens=5))
    finally:
        handle.remove()
    assert gen.token_ids == [eos] == ref[0]
    assert gen.finish_reason == "eos"


def test_stop_strings_stop_and_are_kept(tiny):
    base = generate(tiny, PROMPTS[2], DecodingConfig(max_new_tokens=20), chat=False)
    assert len(base.text) > 3
    target = base.text[1:3]
    gen = generate(tiny, PROMPTS[2], DecodingConfig(max_new_tokens=20, stop_strings=(target,)), chat=False)
    assert gen.finish_reason == "stop_string"
    assert target in gen.text
    assert len(gen.token_ids) <= len(base.token_ids)


def test_bad_input_is_refused(tiny):
    with pytest.raises(ConfigError, match="prompt=''"):
        generate(tiny, "", DecodingConfig())
    with pytest.raises(ConfigError, match="prompt is 300 tokens long; allowed: fewer than .* 256"):
        generate_ids(tiny, [5] * 300, DecodingConfig())
    with pytest.raises(ConfigError, match="trace_top=0"):
        generate(tiny, "hi", DecodingConfig(), trace_top=0)


def test_context_limit_stops_generation(tiny):
    gen = generate_ids(tiny, [5] * 250, DecodingConfig(max_new_tokens=20, ignore_eos=True))
    assert len(gen.token_ids) == 6 and gen.finish_reason == "context"


def test_non_finite_logits_raise_naming_the_step(tiny):
    calls = {"n": 0}
    head = tiny.model.lm_head

    def poison(module, args, output):
        calls["n"] += 1
        if calls["n"] == 3:
            return output * float("nan")
        return output

    handle = head.register_forward_hook(poison)
    try:
        with pytest.raises(GenerationError, match="step 2"):
            generate(tiny, PROMPTS[0], DecodingConfig(max_new_tokens=10, ignore_eos=True))
    finally:
        handle.remove()


def test_batch_rows_match_single_runs(tiny):
    prompts = [tiny.encode(p, chat=False) for p in PROMPTS]
    for c in (DecodingConfig(max_new_tokens=8), DecodingConfig(strategy="sample", max_new_tokens=8, seed=3)):
        batched, _ = decode_batch(tiny, prompts, c)
        for ids, seqs in zip(prompts, batched):
            single = generate_ids(tiny, ids, c)
            assert seqs[0].token_ids == single.token_ids


@pytest.mark.parametrize("config", [DecodingConfig(max_new_tokens=9),
                                    DecodingConfig(strategy="sample", max_new_tokens=9, seed=3,
                                                   num_return_sequences=2)])
def test_on_step_sees_every_token_as_it_is_generated(tiny, config):
    """The lab streams the text through ``on_step``: once per step, each row's tokens so far,
    growing by one, ending with the returned tokens; the tokens are the same with or without it."""
    seen = []
    gen = generate(tiny, "The cat sat", config, on_step=lambda i, rows: seen.append((i, [list(r) for r in rows])))
    assert [i for i, _ in seen] == list(range(len(seen)))
    assert [len(rows[0]) for _, rows in seen] == list(range(1, len(gen.sequences[0].token_ids) + 1))
    assert seen[-1][1] == [s.token_ids for s in gen.sequences]
    assert gen.token_ids == generate(tiny, "The cat sat", config).token_ids


def test_beam_search_does_not_stream(tiny):
    seen = []
    generate(tiny, "The cat sat", DecodingConfig(strategy="beam", num_beams=2, max_new_tokens=4),
             on_step=lambda i, rows: seen.append(i))
    assert seen == []
