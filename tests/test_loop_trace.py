"""The loop-continuation probability trace, on a hand-built Generation and on the tiny model."""

from __future__ import annotations

import math

import pytest

from decoding import DecodingConfig, Generation, generate
from decoding.diagnostics import LoopProbabilityTrace, loop_probability_trace
from decoding.errors import DecodingLabError
from decoding.trace import Candidate, SequenceResult, StepTrace


def _step(i: int, token: int, p_raw: float, p_final: float, others=()) -> StepTrace:
    candidates = [Candidate(token, f"t{token}", 0.0, [p_raw, p_final], [True, True])]
    candidates += [Candidate(t, f"t{t}", 0.0, [pr, pf], [True, pf > 0]) for t, pr, pf in others]
    return StepTrace(step=i, token_id=token, token_text=f"t{token}", prob_raw=p_raw,
                     prob_final=p_final, logprob_raw=math.log(p_raw), rank_raw=1, rank_final=1,
                     entropy_raw=1.0, entropy_final=1.0, kept_count=5, stages=["raw", "x"],
                     candidates=candidates, raw_logsumexp=0.0)


def _generation(tokens, probs, finals=None, others=None) -> Generation:
    finals = finals or probs
    others = others or {}
    steps = [_step(i, t, p, f, others.get(i, ())) for i, (t, p, f) in
             enumerate(zip(tokens, probs, finals))]
    seq = SequenceResult(token_ids=list(tokens), text="", finish_reason="length", steps=steps)
    return Generation(model="hand", prompt="p", chat=False, prompt_ids=[1], config={},
                      chain=["raw", "x"], sequences=[seq])


# tokens: 9, then "1 2 3" three times and a partial "1 2": period 3, onset 1
TOKENS = [9, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2]
PROBS = [0.5, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.92, 0.94, 0.96, 0.97]
FINALS = [p / 2 for p in PROBS]


def test_probabilities_of_the_loop_continuing_token_from_the_first_repeat():
    trace = loop_probability_trace(_generation(TOKENS, PROBS, FINALS))
    assert (trace.period, trace.onset, trace.cycles, trace.start) == (3, 1, 3, 4)
    assert trace.steps == list(range(4, 12))
    assert trace.targets == [TOKENS[t - 3] for t in range(4, 12)]
    assert trace.probs_raw == PROBS[4:]
    assert trace.probs_final == FINALS[4:]
    assert trace.cycle_index == [1, 1, 1, 2, 2, 2, 3, 3]
    assert trace.first_cycle_probs_raw == [0.2, 0.3, 0.4]
    means = trace.cycle_means()
    assert means == pytest.approx([0.3, 0.7, (0.9 + 0.92 + 0.94) / 3, (0.96 + 0.97) / 2])
    assert means == sorted(means)  # the climb this trace exists to show


def test_before_the_loop_the_target_comes_from_the_candidates_or_is_none():
    # step 3 chose 3, but the loop-continuing token there is tokens[0] = 9 (in the candidates);
    # step 2 chose 2 and tokens[-1] does not exist, so start must be >= period
    others = {3: [(9, 0.05, 0.0)]}
    trace = loop_probability_trace(_generation(TOKENS, PROBS, FINALS, others), start=3)
    assert trace.steps[0] == 3 and trace.targets[0] == 9
    assert trace.probs_raw[0] == 0.05 and trace.probs_final[0] == 0.0
    assert trace.cycle_index[0] == 0
    no_candidate = loop_probability_trace(_generation(TOKENS, PROBS, FINALS), start=3)
    assert no_candidate.probs_raw[0] is None and no_candidate.probs_final[0] is None
    with pytest.raises(DecodingLabError, match="start"):
        loop_probability_trace(_generation(TOKENS, PROBS), start=2)


def test_no_loop_gives_none_and_untraced_generations_are_an_error():
    assert loop_probability_trace(_generation([1, 2, 3, 4, 5], [0.5] * 5)) is None
    untraced = _generation(TOKENS, PROBS)
    untraced.sequences[0].steps = []
    with pytest.raises(DecodingLabError, match="trace=True"):
        loop_probability_trace(untraced)


def test_round_trip_through_a_dict():
    trace = loop_probability_trace(_generation(TOKENS, PROBS, FINALS))
    assert LoopProbabilityTrace.from_dict(trace.to_dict()) == trace
    assert trace.to_dict()["cycle_means"] == trace.cycle_means()


def test_on_a_real_generation_of_the_tiny_model(tiny):
    config = DecodingConfig(max_new_tokens=40, ignore_eos=True)
    gen = generate(tiny, "The cat sat on the mat", config, chat=False, trace=True)
    trace = loop_probability_trace(gen)
    assert trace is not None, gen.token_ids  # the random tiny model falls into a loop
    tokens = gen.token_ids
    assert all(tokens[t] == tokens[t - trace.period] for t in trace.steps)
    # inside the loop the continuing token is the chosen one: its trace values, exactly
    assert trace.probs_raw == [gen.steps[t].prob_raw for t in trace.steps]
    assert trace.probs_raw == pytest.approx([math.exp(gen.steps[t].logprob_raw)
                                             for t in trace.steps])
    # the trace is data: the same numbers from the JSON round trip of the generation
    assert loop_probability_trace(Generation.from_json(gen.to_json())) == trace
