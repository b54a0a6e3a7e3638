"""Batched generation: every prompt of a batch gets exactly the tokens it gets alone."""

from __future__ import annotations

import pytest

from decoding import ConfigError, DecodingConfig, Generation, generate, generate_batch

# different lengths, so that the batch is left-padded
PROMPTS = ["The cat sat", "Beam search keeps several hypotheses and", "A unicorn lived in",
           "What is the capital of France? The capital"]

CONFIGS = [
    DecodingConfig(max_new_tokens=12),
    DecodingConfig(max_new_tokens=12, repetition_penalty=1.4, frequency_penalty=0.5,
                   dry_multiplier=1.0, no_repeat_ngram_size=3),
    DecodingConfig(strategy="sample", max_new_tokens=12, seed=3, num_return_sequences=2),
    DecodingConfig(strategy="sample", max_new_tokens=12, seed=4, temperature=0.8, top_p=0.9,
                   xtc_probability=0.5, xtc_threshold=0.006, top_n_sigma=2.0,
                   processor_order="llama.cpp"),
    DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=10, num_return_sequences=3),
    DecodingConfig(strategy="beam", num_beams=4, num_beam_groups=2, diversity_penalty=1.0,
                   max_new_tokens=10, num_return_sequences=4),
    DecodingConfig(strategy="contrastive", max_new_tokens=10),
    DecodingConfig(strategy="mirostat", max_new_tokens=12, seed=5, mirostat_tau=3.0),
]


def same(batched: Generation, single: Generation) -> None:
    assert [s.token_ids for s in batched.sequences] == [s.token_ids for s in single.sequences]
    assert [s.finish_reason for s in batched.sequences] == [s.finish_reason for s in single.sequences]
    assert batched.chain == single.chain and batched.prompt_ids == single.prompt_ids
    for b, s in zip(batched.sequences, single.sequences):
        if s.score is not None:
            assert b.score == pytest.approx(s.score, abs=1e-4)


def label(c: DecodingConfig) -> str:
    return ",".join(f"{k}={v}" for k, v in c.changed().items())


@pytest.mark.parametrize("config", CONFIGS, ids=label)
@pytest.mark.parametrize("chat", [True, False])
def test_batch_is_token_identical_to_single_runs(tiny, config, chat):
    batched = generate_batch(tiny, PROMPTS, config, chat=chat)
    assert [g.prompt for g in batched] == PROMPTS
    assert len({len(g.prompt_ids) for g in batched}) > 1          # the batch really was padded
    for prompt, gen in zip(PROMPTS, batched):
        same(gen, generate(tiny, prompt, config, chat=chat, trace=False))


def test_batch_traces_match_single_traces(tiny):
    config = DecodingConfig(strategy="mirostat", max_new_tokens=8, seed=1)
    batched = generate_batch(tiny, PROMPTS, config, trace=True, trace_top=5)
    for prompt, gen in zip(PROMPTS, batched):
        single = generate(tiny, prompt, config, trace_top=5)
        assert [s.token_id for s in gen.steps] == [s.token_id for s in single.steps]
        assert [s.extra["mirostat_mu"] for s in gen.steps] == \
            pytest.approx([s.extra["mirostat_mu"] for s in single.steps], abs=1e-4)
        assert [s.prob_raw for s in gen.steps] == pytest.approx([s.prob_raw for s in single.steps], abs=1e-5)
        assert Generation.from_json(gen.to_json()) == gen


def test_a_prompt_near_the_context_limit_runs_alone(tiny):
    words = 1
    while len(tiny.encode(" ".join(["cat"] * words), chat=False)) < 235:
        words += 1
    long_prompt = " ".join(["cat"] * words)
    prompts = [long_prompt, "The cat sat"]
    config = DecodingConfig(max_new_tokens=30, ignore_eos=True)
    batched = generate_batch(tiny, prompts, config, chat=False)
    assert len(batched[0].prompt_ids) + 30 > tiny.max_context
    for prompt, gen in zip(prompts, batched):
        same(gen, generate(tiny, prompt, config, chat=False, trace=False))
    assert batched[0].finish_reason == "context" and batched[1].finish_reason == "length"
    assert len(batched[1].token_ids) == 30


def test_batch_bad_input(tiny):
    with pytest.raises(ConfigError, match="prompts=\\[\\] is out of range"):
        generate_batch(tiny, [], DecodingConfig())
    with pytest.raises(ConfigError, match="prompt=''"):
        generate_batch(tiny, ["fine", ""], DecodingConfig())
    with pytest.raises(ConfigError, match="trace_top=0"):
        generate_batch(tiny, ["fine"], DecodingConfig(), trace_top=0)


@pytest.mark.embedded
def test_embedded_greedy_batch_of_four(embedded):
    prompts = ["Hi", "Name three colours.", "Explain in one sentence why the sky is blue.",
               "Write a short poem about a unicorn who lives in a remote valley of the Andes."]
    config = DecodingConfig(max_new_tokens=24)
    batched = generate_batch(embedded, prompts, config)
    assert len({len(g.prompt_ids) for g in batched}) == 4
    for prompt, gen in zip(prompts, batched):
        same(gen, generate(embedded, prompt, config, trace=False))
