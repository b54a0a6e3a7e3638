"""Mixed batches: prompts under different configs share one loop, and each request still gets
exactly the tokens (and traces) it gets alone."""

from __future__ import annotations

import pytest

from decoding import ConfigError, DecodingConfig, generate, generate_batch, generate_mixed
from decoding.loop import Request, plan_lanes

from .test_batch import CONFIGS, PROMPTS, same

# Every config of test_batch against every prompt, in an interleaved order: lanes are formed by
# config, so requests of one config are not neighbours in the request list.
MIXED = [(PROMPTS[(i + k) % len(PROMPTS)], c) for k in range(2) for i, c in enumerate(CONFIGS)]


@pytest.mark.parametrize("chat", [True, False])
def test_mixed_requests_are_token_identical_to_single_runs(tiny, chat):
    gens = generate_mixed(tiny, MIXED, chat=chat)
    assert len(gens) == len(MIXED)
    for (prompt, config), gen in zip(MIXED, gens):
        assert gen.prompt == prompt and gen.config == config.to_dict()
        same(gen, generate(tiny, prompt, config, chat=chat, trace=False))


def test_mixed_traces_match_single_traces(tiny):
    requests = [(PROMPTS[0], DecodingConfig(max_new_tokens=6, repetition_penalty=1.3)),
                (PROMPTS[1], DecodingConfig(strategy="sample", seed=2, top_k=5, max_new_tokens=9)),
                (PROMPTS[0], DecodingConfig(strategy="mirostat", seed=1, max_new_tokens=7))]
    for (prompt, config), gen in zip(requests, generate_mixed(tiny, requests, trace=True,
                                                               trace_top=5)):
        single = generate(tiny, prompt, config, trace_top=5)
        assert gen.chain == single.chain
        assert [s.token_id for s in gen.steps] == [s.token_id for s in single.steps]
        assert [s.prob_raw for s in gen.steps] == pytest.approx(
            [s.prob_raw for s in single.steps], abs=1e-5)
        assert [s.prob_final for s in gen.steps] == pytest.approx(
            [s.prob_final for s in single.steps], abs=1e-5)
        if config.strategy == "mirostat":
            assert [s.extra["mirostat_mu"] for s in gen.steps] == pytest.approx(
                [s.extra["mirostat_mu"] for s in single.steps], abs=1e-4)


def test_rows_stop_by_their_own_config(tiny):
    short = DecodingConfig(max_new_tokens=3, ignore_eos=True)
    long = DecodingConfig(strategy="sample", seed=0, max_new_tokens=11, ignore_eos=True)
    gens = generate_mixed(tiny, [(PROMPTS[0], long), (PROMPTS[0], short)])
    assert [len(g.sequences[0].token_ids) for g in gens] == [11, 3]
    assert {g.sequences[0].finish_reason for g in gens} == {"length"}


def test_small_max_rows_splits_without_changing_tokens(tiny):
    together = generate_mixed(tiny, MIXED, chat=False)
    split = generate_mixed(tiny, MIXED, chat=False, max_rows=3)
    for a, b in zip(together, split):
        same(a, b)


def test_lanes_group_equal_configs_and_share_the_prefill(tiny):
    greedy = DecodingConfig(max_new_tokens=4)
    sample = DecodingConfig(strategy="sample", num_return_sequences=3, max_new_tokens=4)
    ids = [tiny.encode(p) for p in PROMPTS[:2]]
    lanes, rows, first = plan_lanes(tiny, [Request(ids[0], greedy, 0), Request(ids[1], sample, 0),
                                           Request(ids[1], greedy, 0)])
    assert [lane.config for lane in lanes] == [greedy, sample]
    assert [(lane.rows.start, lane.rows.stop) for lane in lanes] == [(0, 2), (2, 5)]
    assert first == [0, 2, 1]
    assert rows == [ids[0], ids[1], ids[1], ids[1], ids[1]]
    assert [(g.start, g.stop) for g, _ in lanes[1].groups] == [(0, 3)]


def test_mixed_matches_batches_per_config_on_the_embedded_model(embedded):
    prompts = ["The old lighthouse keeper", "Write one sentence about rain."]
    configs = [DecodingConfig(max_new_tokens=24),
               DecodingConfig(strategy="sample", seed=7, top_p=0.9, max_new_tokens=24),
               DecodingConfig(max_new_tokens=24, repetition_penalty=1.2, no_repeat_ngram_size=3),
               DecodingConfig(strategy="sample", seed=3, min_p=0.1, temperature=1.3,
                              max_new_tokens=24, num_return_sequences=2)]
    requests = [(p, c) for c in configs for p in prompts]
    gens = generate_mixed(embedded, requests, chat=False)
    for k, config in enumerate(configs):
        for gen, ref in zip(gens[2 * k:2 * k + 2], generate_batch(embedded, prompts, config,
                                                                   chat=False)):
            same(gen, ref)


@pytest.mark.parametrize("requests, match", [
    ([], "requests"),
    ("The cat", "requests"),
    ([("The cat", {"strategy": "greedy"})], "not a .prompt, DecodingConfig. pair"),
    ([("", DecodingConfig())], "prompt"),
])
def test_mixed_bad_input(tiny, requests, match):
    with pytest.raises(ConfigError, match=match):
        generate_mixed(tiny, requests)


def test_mixed_bad_max_rows(tiny):
    with pytest.raises(ConfigError, match="max_rows=0"):
        generate_mixed(tiny, [("The cat", DecodingConfig())], max_rows=0)


def test_rows_that_finish_early_leave_the_batch_without_changing_tokens(tiny, monkeypatch):
    import decoding.loop as loop

    calls = []
    real = loop.shrink_lanes
    monkeypatch.setattr(loop, "shrink_lanes", lambda lanes, keep: calls.append(len(keep)) or
                        real(lanes, keep))
    configs = [DecodingConfig(max_new_tokens=n, ignore_eos=True) for n in (2, 5, 9)] + [
        DecodingConfig(strategy="sample", seed=4, top_p=0.9, num_return_sequences=2,
                       max_new_tokens=7, ignore_eos=True),
        DecodingConfig(strategy="mirostat", seed=2, max_new_tokens=4, ignore_eos=True),
        DecodingConfig(max_new_tokens=13, repetition_penalty=1.3, no_repeat_ngram_size=2,
                       ignore_eos=True),
        DecodingConfig(strategy="sample", seed=9, min_p=0.05, max_new_tokens=3, ignore_eos=True,
                       xtc_probability=0.5, xtc_threshold=0.006)]
    requests = [(PROMPTS[i % len(PROMPTS)], c) for i, c in enumerate(configs)]
    gens = generate_mixed(tiny, requests, trace=True, trace_top=3)
    assert calls and calls == sorted(calls, reverse=True) and calls[-1] < len(configs) + 1
    for (prompt, config), gen in zip(requests, gens):
        single = generate(tiny, prompt, config, trace_top=3)
        same(gen, single)
        assert [len(s.steps) for s in gen.sequences] == [len(s.token_ids) for s in gen.sequences]
        assert [s.prob_final for s in gen.steps] == pytest.approx(
            [s.prob_final for s in single.steps], abs=1e-5)


def test_a_group_of_samples_leaves_only_when_all_its_rows_are_done(tiny):
    import decoding.loop as loop

    sample = DecodingConfig(strategy="sample", num_return_sequences=2, max_new_tokens=4)
    greedy = DecodingConfig(max_new_tokens=4)
    ids = tiny.encode(PROMPTS[0])
    lanes, rows, _ = plan_lanes(tiny, [Request(ids, greedy, 0), Request(ids, sample, 0),
                                       Request(ids, sample, 1)])
    progress = loop.RowProgress(len(rows), [lambda ids: None] * len(rows))
    where = list(range(len(rows)))
    progress.finish[1] = "eos"                       # one sample of the first group
    assert loop.droppable(lanes, where, progress) is None
    progress.finish[2] = "eos"                       # the whole first group
    keep = loop.droppable(lanes, where, progress)
    assert keep == [0, 3, 4]
    shrunk = loop.shrink_lanes(lanes, keep)
    assert [(lane.rows.start, lane.rows.stop) for lane in shrunk] == [(0, 1), (1, 3)]
    assert [(g.start, g.stop) for g, _ in shrunk[1].groups] == [(0, 2)]
    assert shrunk[1].groups[0][1] is lanes[1].groups[1][1]   # the second prompt's generator
