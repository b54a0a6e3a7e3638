"""Branching from a recorded step and the what-if re-run of its sampling stages (tiny model)."""

from __future__ import annotations

import math

import pytest
import torch

from decoding import ConfigError, DecodingConfig, generate
from decoding.branch import branch, branch_config, forced_step
from decoding.processors import temperature, top_k_filter, top_p_filter
from decoding.trace import Candidate, StepTrace
from decoding.whatif import (input_stage, kept_set_change, top_n_mass, whatif_config,
                             whatif_step)


def hand_step(logits: list[float], stages=("raw",), chosen: int = 0) -> StepTrace:
    """A step over len(logits) candidates whose raw distribution is softmax(logits) (no tail)."""
    probs = torch.softmax(torch.tensor(logits, dtype=torch.float64), -1).tolist()
    lse = float(torch.logsumexp(torch.tensor(logits, dtype=torch.float64), -1))
    candidates = [Candidate(token_id=i, text=f"t{i}", raw_logit=l, probs=[p] * len(stages),
                            kept=[True] * len(stages)) for i, (l, p) in enumerate(zip(logits, probs))]
    return StepTrace(step=0, token_id=chosen, token_text=f"t{chosen}", prob_raw=probs[chosen],
                     prob_final=probs[chosen], logprob_raw=logits[chosen] - lse, rank_raw=chosen + 1,
                     rank_final=chosen + 1, entropy_raw=0.0, entropy_final=0.0,
                     kept_count=len(logits), stages=list(stages), candidates=candidates,
                     raw_logsumexp=lse)


LOGITS = [3.0, 2.5, 2.0, 1.0, 0.5, 0.0, -1.0, -2.0]


def kept_ids(step: StepTrace) -> list[int]:
    return [c.token_id for c in step.candidates if c.kept[-1]]


# --------------------------------------------------------------------------- what-if

def test_whatif_matches_the_processors_on_the_same_scores():
    step = hand_step(LOGITS)
    scores = torch.tensor([LOGITS])
    expected = top_p_filter(top_k_filter(temperature(scores, 0.7), 5), 0.8)
    result = whatif_step(step, whatif_config({}, temperature=0.7, top_k=5, top_p=0.8))
    assert result.stages == ["raw", "temperature", "top_k", "top_p"]
    assert kept_ids(result) == torch.isfinite(expected[0]).nonzero().flatten().tolist()
    final = torch.softmax(expected[0], -1).tolist()
    assert [c.probs[-1] for c in result.candidates] == pytest.approx(final)
    assert result.kept_count == len(kept_ids(result))


def test_whatif_kept_sets_by_hand():
    step = hand_step(LOGITS)
    assert kept_ids(whatif_step(step, whatif_config({}, top_k=3))) == [0, 1, 2]
    # min-p 0.3: p_i / p_max = exp(l_i - 3) >= 0.3 <=> l_i >= 3 + ln 0.3 = 1.796
    assert kept_ids(whatif_step(step, whatif_config({}, min_p=0.3))) == [0, 1, 2]
    # min-p after T = 2: exp((l_i - 3) / 2) >= 0.3 <=> l_i >= 0.592
    assert kept_ids(whatif_step(step, whatif_config({}, min_p=0.3, temperature=2.0))) == [0, 1, 2, 3]


def test_processor_order_changes_the_kept_set():
    """top-p 0.8 after T = 3 (transformers) keeps more than top-p 0.8 before it (llama.cpp)."""
    step = hand_step(LOGITS)
    hf = whatif_step(step, whatif_config({}, temperature=3.0, top_p=0.8))
    llama = whatif_step(step, whatif_config({}, temperature=3.0, top_p=0.8, processor_order="llama.cpp"))
    assert hf.stages == ["raw", "temperature", "top_p"]
    assert llama.stages == ["raw", "top_p", "temperature"]
    assert kept_ids(llama) == [0, 1, 2]
    # T = 3: p = .231 .195 .165 .119 .100 ...: the cumulative mass reaches 0.8 at token 4
    # (.811); T = 1: p = .441 .268 .162: at token 2 (.871).
    assert kept_ids(hf) == [0, 1, 2, 3, 4]
    added, removed = kept_set_change(llama, hf)
    assert [c.token_id for c in added] == [3, 4] and removed == []


def test_whatif_starts_after_the_penalty_stages():
    step = hand_step(LOGITS, stages=("raw", "repetition_penalty", "temperature"))
    penalised = [0.05, 0.4, 0.3, 0.1, 0.05, 0.05, 0.03, 0.02]
    for c, p in zip(step.candidates, penalised):
        c.probs = [c.probs[0], p, p]
    assert input_stage(step) == 1 and top_n_mass(step) == pytest.approx(1.0)
    result = whatif_step(step, whatif_config({}, top_k=2))
    assert result.stages == ["after repetition_penalty", "top_k"]
    assert kept_ids(result) == [1, 2]
    assert [c.probs[0] for c in result.candidates] == pytest.approx(penalised)


def test_whatif_reproduces_a_recorded_truncation(tiny):
    gen = generate(tiny, "The cat", DecodingConfig(strategy="sample", max_new_tokens=4, top_k=5,
                                                   min_p=0.2, seed=3, repetition_penalty=1.3))
    for step in gen.steps:
        again = whatif_step(step, whatif_config(gen.config))
        assert kept_ids(again) == kept_ids(step)
        assert again.stages[0] == "after repetition_penalty"
        assert kept_set_change(step, again) == ([], [])
        assert 0 < top_n_mass(step) <= 1 + 1e-6


def test_whatif_config_carries_the_recorded_knobs_and_drops_xtc():
    recorded = DecodingConfig(strategy="sample", top_p=0.9, typical_p=0.7, xtc_probability=0.5,
                              repetition_penalty=1.2, processor_order="llama.cpp").to_dict()
    config = whatif_config(recorded, temperature=0.5)
    assert (config.top_p, config.typical_p, config.temperature) == (0.9, 0.7, 0.5)
    assert config.xtc_probability == 0.0 and config.repetition_penalty == 1.0
    assert config.processor_order == "llama.cpp"


# --------------------------------------------------------------------------- exact what-if

OWN_SETTINGS = [
    dict(top_p=0.9),
    dict(temperature=0.7, top_k=40, top_p=0.9),
    dict(temperature=1.3, min_p=0.1),
    dict(repetition_penalty=1.3, top_p=0.8),
    dict(temperature=0.8, top_p=0.9, processor_order="llama.cpp"),
]


@pytest.mark.parametrize("settings", OWN_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_whatif_with_the_runs_own_settings_reproduces_the_run_exactly(tiny, settings):
    gen = generate(tiny, "The cat", DecodingConfig(strategy="sample", max_new_tokens=6, seed=5,
                                                   **settings))
    for step in gen.steps:
        again = whatif_step(step, whatif_config(gen.config))
        assert again.extra["exact"] and again.extra["tail_kept"] == 0
        assert kept_ids(again) == kept_ids(step)
        assert again.kept_count == step.kept_count
        assert [c.probs[-1] for c in again.candidates] == pytest.approx(
            [c.probs[-1] for c in step.candidates], abs=1e-5)
        assert again.prob_final == pytest.approx(step.prob_final, abs=1e-5)
        # the input bar is the run's own probability, not renormalised over the candidates
        j = input_stage(step)
        assert [c.probs[0] for c in again.candidates] == pytest.approx(
            [c.probs[j] for c in step.candidates], abs=1e-6)


def test_the_record_covers_the_kept_set_and_stays_small_without_truncation(tiny):
    sampled = generate(tiny, "The cat", DecodingConfig(strategy="sample", max_new_tokens=4, top_p=0.9,
                                                       seed=1))
    for step in sampled.steps:
        assert len(kept_ids(step)) == step.kept_count == step.stage_kept[-1]
        assert step.prefix > step.kept_count and step.vocab_size == tiny.vocab_size
    greedy = generate(tiny, "The cat", DecodingConfig(max_new_tokens=4))
    for step in greedy.steps:
        assert step.prefix == 20 and len(step.candidates) <= 41


def test_whatif_says_approximate_only_beyond_the_record(tiny):
    gen = generate(tiny, "The cat", DecodingConfig(strategy="sample", max_new_tokens=3, top_p=0.5,
                                                   seed=2))
    step = gen.steps[0]
    wider = whatif_step(step, whatif_config(gen.config, top_p=0.99))
    assert not wider.extra["exact"] and wider.extra["tail_kept"] > 0
    assert wider.kept_count == len(kept_ids(wider)) + wider.extra["tail_kept"]
    # inside the record: a narrower nucleus, and top-k 5 at another temperature (its kept set
    # and renormalised distribution use the kept tokens' logits only)
    narrower = whatif_step(step, whatif_config(gen.config, top_p=0.3))
    assert narrower.extra["exact"] and set(kept_ids(narrower)) <= set(kept_ids(step))
    hot = whatif_step(step, whatif_config(gen.config, top_p=1.0, top_k=5, temperature=2.0))
    assert hot.extra["exact"] and len(kept_ids(hot)) == 5
    top5 = sorted(step.candidates, key=lambda c: -c.raw_logit)[:5]
    expected = torch.softmax(torch.tensor([c.raw_logit for c in top5], dtype=torch.float64) / 2.0, -1)
    by_id = {c.token_id: c.probs[-1] for c in hot.candidates}
    assert [by_id[c.token_id] for c in top5] == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.parametrize("settings", OWN_SETTINGS + [dict(temperature=0.7), dict(temperature=1.4, top_k=0)],
                         ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_whatif_told_the_runs_own_settings_gives_the_run_itself(tiny, settings):
    """With ``run=`` and the run's own settings the what-if is exact everywhere: recomputed where
    the record allows, else the record itself (no stage cuts at T != 1: the recomputation cannot
    know the tail's shape). Other settings are always recomputed."""
    gen = generate(tiny, "The cat", DecodingConfig(strategy="sample", max_new_tokens=4, seed=3, **settings))
    own = whatif_config(gen.config)
    uncut_hot = gen.config["temperature"] != 1.0 and all(s.kept_count == tiny.vocab_size for s in gen.steps)
    for step in gen.steps:
        again = whatif_step(step, own, run=own)
        j = input_stage(step)
        assert again.extra["exact"] and again.kept_count == step.kept_count
        assert again.extra.get("recorded", False) == (not whatif_step(step, own).extra["exact"])
        assert again.prob_final == pytest.approx(step.prob_final, abs=1e-5)
        assert [c.probs[-1] for c in again.candidates] == pytest.approx([c.probs[-1] for c in step.candidates],
                                                                        abs=1e-5)
        assert again.stages[1:] == step.stages[j + 1:]
        if uncut_hot:
            assert again.extra["recorded"]
        other = whatif_step(step, whatif_config(gen.config, temperature=0.5), run=own)
        assert "recorded" not in other.extra


def test_no_truncation_keeps_the_whole_tail_exactly_and_a_hotter_one_does_not(tiny):
    greedy = generate(tiny, "The cat", DecodingConfig(max_new_tokens=2))
    step = greedy.steps[0]
    same = whatif_step(step, whatif_config(greedy.config))
    assert same.extra["exact"] and same.kept_count == step.kept_count == tiny.vocab_size
    assert [c.probs[-1] for c in same.candidates] == pytest.approx([c.probs[0] for c in step.candidates],
                                                                   abs=1e-6)
    hotter = whatif_step(step, whatif_config(greedy.config, temperature=1.5))
    assert not hotter.extra["exact"]       # the partition at T = 1.5 depends on the tail


def test_an_old_trace_without_the_prefix_is_renormalised_and_approximate():
    step = hand_step(LOGITS)
    step.candidates = step.candidates[:4]                  # a top-4 record of 8 tokens
    result = whatif_step(step, whatif_config({}, top_p=0.9))
    assert not result.extra["exact"]
    assert sum(c.probs[0] for c in result.candidates) == pytest.approx(1.0)
    assert whatif_step(hand_step(LOGITS), whatif_config({}, top_p=0.9)).extra["exact"]


# --------------------------------------------------------------------------- branching

def test_branching_to_the_chosen_token_reproduces_greedy(tiny):
    config = DecodingConfig(max_new_tokens=12, min_new_tokens=10, repetition_penalty=1.3)
    gen = generate(tiny, "The cat", config)
    same = branch(tiny, gen, 4, gen.steps[4].token_id)
    assert same.token_ids == gen.token_ids and same.text == gen.text
    assert [s.step for s in same.steps] == list(range(len(gen.steps)))
    assert [s.token_id for s in same.steps] == gen.token_ids
    assert same.sequences[0].sum_logprob == pytest.approx(gen.sequences[0].sum_logprob, abs=1e-4)


def test_branch_takes_the_alternative_and_continues(tiny):
    config = DecodingConfig(max_new_tokens=10, min_new_tokens=10)
    gen = generate(tiny, "The cat", config)
    step = gen.steps[3]
    alternative = next(c for c in step.candidates if c.token_id != step.token_id)
    other = branch(tiny, gen, 3, alternative.token_id)
    assert other.token_ids[:3] == gen.token_ids[:3] and other.token_ids[3] == alternative.token_id
    assert len(other.token_ids) == 10 and other.finish_reason == "length"
    forced = other.steps[3]
    assert forced.extra["forced_from"] == step.token_id
    assert forced.prob_raw == alternative.probs[0] and forced.rank_raw >= 2
    # the continuation is greedy decoding of the new prefix
    prefix = gen.prompt_ids + other.token_ids[:4]
    expected = tiny.model.generate(torch.tensor([prefix]), max_new_tokens=6, do_sample=False,
                                   min_new_tokens=6)[0, len(prefix):].tolist()
    assert other.token_ids[4:] == expected
    assert gen.token_ids[3] == step.token_id   # the original is untouched


def test_branch_to_eos_or_at_the_last_step_generates_nothing(tiny):
    gen = generate(tiny, "The cat", DecodingConfig(max_new_tokens=5, min_new_tokens=5))
    eos = tiny.eos_token_ids[0]
    last = gen.steps[-1]
    alternative = next(c for c in last.candidates if c.token_id != last.token_id)
    at_end = branch(tiny, gen, 4, alternative.token_id)
    assert at_end.token_ids == gen.token_ids[:4] + [alternative.token_id]
    assert at_end.finish_reason == "length"
    if any(c.token_id == eos for c in gen.steps[1].candidates):
        ended = branch(tiny, gen, 1, eos)
        assert ended.token_ids == gen.token_ids[:1] + [eos] and ended.finish_reason == "eos"


def test_branch_refuses_bad_steps_and_unrecorded_tokens(tiny):
    gen = generate(tiny, "The cat", DecodingConfig(max_new_tokens=4))
    with pytest.raises(ConfigError, match=r"^step=9 is out of range"):
        branch(tiny, gen, 9, 0)
    recorded = {c.token_id for c in gen.steps[0].candidates}
    missing = next(t for t in range(tiny.vocab_size) if t not in recorded)
    with pytest.raises(ConfigError, match=rf"^token_id={missing} is not a recorded candidate"):
        forced_step(gen.steps[0], missing)


def test_branch_config_shortens_the_budgets():
    config = DecodingConfig(max_new_tokens=10, min_new_tokens=6)
    assert (branch_config(config, 4).max_new_tokens, branch_config(config, 4).min_new_tokens) == (6, 2)
    assert branch_config(config, 8).min_new_tokens == 0
    assert branch_config(config, 12).max_new_tokens == 1


def test_forced_step_log_probability_is_consistent():
    step = hand_step(LOGITS)
    forced = forced_step(step, 2)
    assert forced.token_id == 2 and forced.rank_raw == 3 and forced.token_text == "t2"
    assert math.exp(forced.logprob_raw) == pytest.approx(forced.prob_raw)


@pytest.mark.parametrize("config", [DecodingConfig(max_new_tokens=4, repetition_penalty=1.3),
                                    DecodingConfig(strategy="sample", max_new_tokens=4, seed=1)],
                         ids=["greedy", "sample-no-cut"])
def test_runs_that_cut_nothing_skip_the_deep_record_and_stay_exact(tiny, config, monkeypatch):
    """The deep ranking (decoding.recorder.prefix_depth, a top-1001 per row and step) is only
    built where a sampling stage cut the distribution; without a cut the record is the top-N and
    the what-if with the run's own settings is still exact (the tracing overhead it saves is
    measured by ``python -m experiments.bench``: greedy and top-p, tracing on vs off)."""
    from decoding import recorder

    monkeypatch.setattr(recorder, "prefix_depth", lambda *a, **k: pytest.fail("deep record built"))
    gen = generate(tiny, "The cat", config)
    for step in gen.steps:
        assert step.prefix == 20
        again = whatif_step(step, whatif_config(gen.config))
        assert again.extra["exact"] and again.kept_count == step.kept_count
        assert again.prob_final == pytest.approx(step.prob_final, abs=1e-5)


def test_a_cut_run_still_builds_the_deep_record(tiny, monkeypatch):
    from decoding import recorder

    calls = []
    real = recorder.prefix_depth
    monkeypatch.setattr(recorder, "prefix_depth", lambda *a, **k: calls.append(1) or real(*a, **k))
    gen = generate(tiny, "The cat", DecodingConfig(strategy="sample", max_new_tokens=3, top_p=0.9, seed=1))
    assert len(calls) == len(gen.steps) and all(s.prefix > s.kept_count for s in gen.steps)
