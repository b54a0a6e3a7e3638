"""How sure the model grows of its own loop: the probability of the loop-continuing token per step.

Once a generation has fallen into a loop of period ``p`` (``detect_loop``), the token that
continues the loop at step ``t`` is ``x[t − p]``. We read from the recorded ``StepTrace`` the
probability the model gave that token, step after step. Holtzman et al. 2020 (Fig. 4) and Xu et
al. 2022 (self-reinforcement) show this probability climbing with every repetition: the loop
feeds itself. Nothing is recomputed: the numbers are the loop's own records.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean

from ..errors import DecodingLabError, out_of_range
from ..trace import Generation, SequenceResult, StepTrace
from .loops import detect_loop


@dataclass(frozen=True)
class LoopProbabilityTrace:
    """Per step ``t >= start``: P(x[t − period] | x_<t), raw and after the processor chain.

    ``steps`` are indices into the generated tokens. Inside the loop the continuing token is the
    chosen one, so its probabilities are the step's ``prob_raw`` / ``prob_final``; before the
    loop they come from the recorded candidates, and are ``None`` where the token was outside
    the recorded top-N.
    """

    period: int
    onset: int              # first generated index of the repeating tail (start of cycle 0)
    cycles: int             # complete cycles, cycle 0 included
    start: int              # first step traced (default onset + period: the first repeat)
    steps: list[int]
    targets: list[int]      # x[t − period], the token that continues the loop
    probs_raw: list[float | None]
    probs_final: list[float | None]
    cycle_index: list[int]  # (t − onset) // period: 1 = the first repeat; < 0 before the loop
    first_cycle_probs_raw: list[float]  # raw P of cycle 0's tokens when first generated

    def cycle_means(self) -> list[float | None]:
        """Mean raw probability per cycle, cycle 0 (the first pass) first.

        A partial last cycle is averaged over the steps it has. This is the climb to show:
        cycle 0 is what the model thought of the phrase before it had repeated it.
        """
        means: list[float | None] = [fmean(self.first_cycle_probs_raw)]
        last = max((c for c in self.cycle_index), default=0)
        for cycle in range(1, last + 1):
            values = [p for c, p in zip(self.cycle_index, self.probs_raw)
                      if c == cycle and p is not None]
            means.append(fmean(values) if values else None)
        return means

    def to_dict(self) -> dict:
        return {"period": self.period, "onset": self.onset, "cycles": self.cycles,
                "start": self.start, "steps": list(self.steps), "targets": list(self.targets),
                "probs_raw": list(self.probs_raw), "probs_final": list(self.probs_final),
                "cycle_index": list(self.cycle_index),
                "first_cycle_probs_raw": list(self.first_cycle_probs_raw),
                "cycle_means": self.cycle_means()}

    @classmethod
    def from_dict(cls, data: dict) -> LoopProbabilityTrace:
        fields = {k: v for k, v in data.items() if k != "cycle_means"}
        return cls(**fields)


def _probabilities_of(step: StepTrace, token_id: int) -> tuple[float | None, float | None]:
    """(raw, final) probability of ``token_id`` at ``step``, from the trace."""
    if step.token_id == token_id:
        return step.prob_raw, step.prob_final
    for candidate in step.candidates:
        if candidate.token_id == token_id:
            return candidate.probs[0], candidate.probs[-1]
    return None, None


def _sequence(generation: Generation | SequenceResult, sequence: int) -> SequenceResult:
    if isinstance(generation, SequenceResult):
        return generation
    if not 0 <= sequence < len(generation.sequences):
        raise out_of_range("sequence", sequence,
                           f"0 <= sequence < {len(generation.sequences)} (the returned sequences)")
    return generation.sequences[sequence]


def loop_probability_trace(generation: Generation | SequenceResult, *, sequence: int = 0,
                           start: int | None = None, min_cycles: int = 2,
                           max_period: int | None = None) -> LoopProbabilityTrace | None:
    """The loop-continuation probability of every step from ``start`` (default: the first
    repeat, ``onset + period``) to the end, or ``None`` when the sequence ends in no loop with
    at least ``min_cycles`` cycles.

    ``generation`` must carry step traces (``generate(..., trace=True)``).
    """
    result = _sequence(generation, sequence)
    tokens = list(result.token_ids)
    if not result.steps or len(result.steps) != len(tokens):
        raise DecodingLabError(
            f"the sequence has {len(result.steps)} step traces for {len(tokens)} tokens; allowed: "
            "a generation made with trace=True (one StepTrace per generated token)")
    loop = detect_loop(tokens, min_cycles=min_cycles, max_period=max_period)
    if loop is None or not loop.is_loop:
        return None
    period, onset = loop.period, loop.onset
    first = onset + period if start is None else start
    if not period <= first < len(tokens):
        raise out_of_range("start", start, f"{period} <= start < {len(tokens)} (period .. length)")

    steps = list(range(first, len(tokens)))
    targets = [tokens[t - period] for t in steps]
    pairs = [_probabilities_of(result.steps[t], target) for t, target in zip(steps, targets)]
    return LoopProbabilityTrace(
        period=period, onset=onset, cycles=loop.cycles, start=first, steps=steps,
        targets=targets, probs_raw=[raw for raw, _ in pairs],
        probs_final=[final for _, final in pairs],
        cycle_index=[(t - onset) // period for t in steps],
        first_cycle_probs_raw=[result.steps[t].prob_raw for t in range(onset, onset + period)])
