"""Traces: what the loop saw and chose at every step, as plain data (dataclasses → JSON).

The lab and the reports render these; they never recompute what the loop already recorded.
``Generation.to_json()`` / ``Generation.from_json()`` round-trip exactly (floats are written with
``repr`` precision by ``json``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# Why a sequence ended (``SequenceResult.finish_reason``): end-of-sequence, a stop string, the
# token budget, the model's context. ``rows.StopChecker`` decides; nothing else spells them.
EOS, STOP_STRING, LENGTH, CONTEXT = "eos", "stop_string", "length", "context"


@dataclass
class Candidate:
    """One token of a step's top-N, followed through every stage of the processor chain.

    ``probs[i]`` is its probability after stage ``i`` (``stages[0]`` is ``"raw"``, the model's
    own softmax); ``kept[i]`` says whether it was still allowed after that stage.
    """

    token_id: int
    text: str
    raw_logit: float
    probs: list[float]
    kept: list[bool]
    second_prob: float | None = None   # under a two-model stage's second distribution (StepTrace.second)


@dataclass
class StepTrace:
    """One generation step of one sequence."""

    step: int
    token_id: int
    token_text: str
    prob_raw: float          # chosen token under the model's raw distribution
    prob_final: float        # ... under the distribution it was drawn from (after all stages)
    logprob_raw: float
    rank_raw: int            # 1 = the most likely token
    rank_final: int
    entropy_raw: float       # nats
    entropy_final: float
    kept_count: int          # tokens with non-zero probability after the last stage
    stages: list[str]
    candidates: list[Candidate]
    raw_logsumexp: float     # log of the raw softmax normaliser: p = exp(logit - lse)
    extra: dict[str, Any] = field(default_factory=dict)  # strategy-specific data
    # What the what-if needs to be exact (``decoding.whatif``; 0 / [] in traces made before):
    stage_kept: list[int] = field(default_factory=list)  # full-vocabulary kept count per stage
    prefix: int = 0          # every token ranked <= prefix by the sampling stages' input is a candidate
    vocab_size: int = 0
    # A two-model stage's second distribution ("base": the adapter disabled; "unconditional":
    # classifier-free guidance's other side), "" without one. Per candidate: ``second_prob``.
    second: str = ""

    @property
    def chosen_candidate(self) -> Candidate | None:
        return next((c for c in self.candidates if c.token_id == self.token_id), None)


@dataclass
class BeamNode:
    """A running beam after a step: where it came from and its cumulative log-probability."""

    beam: int
    parent: int
    token_id: int
    token_text: str
    score: float


@dataclass
class FinishedHypothesis:
    """A hypothesis that ended (end-of-sequence or length) and entered the finished pool."""

    step: int
    parent: int
    token_ids: list[int]
    raw_score: float         # sum of log-probabilities
    score: float             # raw_score / length ** length_penalty
    length: int
    kept: bool               # still among the best num_beams finished at the end


@dataclass
class BeamStep:
    step: int
    beams: list[BeamNode]
    finished: list[FinishedHypothesis]


@dataclass
class SequenceResult:
    """One returned sequence (a sample, or a finished beam hypothesis)."""

    token_ids: list[int]
    text: str
    finish_reason: str
    steps: list[StepTrace] = field(default_factory=list)
    score: float | None = None        # beam: length-normalised score
    sum_logprob: float | None = None  # sum of raw log-probabilities of the generated tokens
    # An engine without traces (decoding.engines, vLLM): per step, its top [token id, log-prob,
    # rank] triples, best first (the chosen token always among them); None when not asked.
    logprobs: list[list[list[float]]] | None = None

    @property
    def mean_logprob(self) -> float | None:
        if self.sum_logprob is None or not self.token_ids:
            return None
        return self.sum_logprob / len(self.token_ids)


@dataclass
class Generation:
    """The result of ``decoding.generate``: the returned sequences and everything traced."""

    model: str
    prompt: str
    chat: bool
    prompt_ids: list[int]
    config: dict[str, Any]
    chain: list[str]
    sequences: list[SequenceResult]
    adapter: str | None = None
    beam_steps: list[BeamStep] = field(default_factory=list)
    elapsed_s: float = 0.0
    # The speculative view of the first sequence when asked (``speculative.SpeculativeView``
    # as a dict: the adapter's answer drafted by its base), else None.
    speculative: dict[str, Any] | None = None

    # The first sequence is "the" generation.
    @property
    def token_ids(self) -> list[int]:
        return self.sequences[0].token_ids

    @property
    def text(self) -> str:
        return self.sequences[0].text

    @property
    def steps(self) -> list[StepTrace]:
        return self.sequences[0].steps

    @property
    def finish_reason(self) -> str:
        return self.sequences[0].finish_reason

    @property
    def hypotheses(self) -> list[SequenceResult]:
        return self.sequences

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Generation":
        data = dict(data)
        data["sequences"] = [_sequence_from_dict(s) for s in data["sequences"]]
        data["beam_steps"] = [
            BeamStep(step=b["step"], beams=[BeamNode(**n) for n in b["beams"]],
                     finished=[FinishedHypothesis(**f) for f in b["finished"]])
            for b in data.get("beam_steps", [])]
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "Generation":
        return cls.from_dict(json.loads(text))


def _sequence_from_dict(data: dict[str, Any]) -> SequenceResult:
    data = dict(data)
    steps = []
    for s in data.get("steps", []):
        s = dict(s)
        s["candidates"] = [Candidate(**c) for c in s["candidates"]]
        steps.append(StepTrace(**s))
    data["steps"] = steps
    return SequenceResult(**data)
