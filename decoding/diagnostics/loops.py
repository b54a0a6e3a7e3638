"""Find the loop a generation ended in: its period, how many times it went round, where it began.

A sequence ends in a loop of period ``p`` when its tail satisfies ``x[i] = x[i − p]``. For each
candidate ``p`` we measure how far back that holds; the tail it covers is the loop. This is the
structure Holtzman et al. 2020 count ("ends with a phrase repeated consecutively"), reported as
spans so the lab can highlight each cycle in the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DecodingLabError, check_count
from .metrics import as_tokens

Span = tuple[int, int]


@dataclass(frozen=True)
class LoopReport:
    """The repeating tail of a token sequence.

    Cycles are counted forward from ``onset``: ``spans`` holds one half-open token span per
    **complete** cycle, and the ``partial`` tokens after the last span (a cycle cut short by the
    end of the sequence, ``0 <= partial < period``) belong to the loop but are not a cycle.
    """

    period: int  # smallest period p of the repeating tail, in tokens
    cycles: int  # complete cycles of length p in the tail
    onset: int  # first index of the repeating tail
    spans: list[Span]  # [(start, end), ...], one per complete cycle
    is_loop: bool  # cycles >= min_cycles
    partial: int = 0  # tokens of a trailing incomplete cycle

    @property
    def length(self) -> int:
        """Tokens covered by the loop, partial cycle included."""
        return self.cycles * self.period + self.partial

    @property
    def tail_span(self) -> Span:
        """The whole repeating tail as one span (complete cycles and the partial one)."""
        return (self.onset, self.onset + self.length)

    def to_dict(self) -> dict:
        return {
            "period": self.period,
            "cycles": self.cycles,
            "onset": self.onset,
            "spans": [list(span) for span in self.spans],
            "is_loop": self.is_loop,
            "partial": self.partial,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LoopReport:
        return cls(
            period=int(data["period"]),
            cycles=int(data["cycles"]),
            onset=int(data["onset"]),
            spans=[(int(start), int(end)) for start, end in data["spans"]],
            is_loop=bool(data["is_loop"]),
            partial=int(data.get("partial", 0)),
        )


def dense_ids(tokens: list) -> np.ndarray:
    """Tokens (any hashable) as small ints, so each period is one vectorised comparison."""
    index: dict = {}
    dense = (index.setdefault(token, len(index)) for token in tokens)
    return np.fromiter(dense, dtype=np.int64, count=len(tokens))


def periodic_tail_length(ids: np.ndarray, period: int) -> int:
    """Length of the longest tail with ``x[i] = x[i − period]`` (matching run + one period)."""
    same = ids[period:] == ids[:-period]
    mismatches = np.flatnonzero(~same)
    run = len(same) - (int(mismatches[-1]) + 1 if mismatches.size else 0)
    return run + period


def detect_loop(
    tokens: object, min_cycles: int = 2, max_period: int | None = None, min_period: int = 1
) -> LoopReport | None:
    """The loop the sequence ends in, or ``None`` if no period repeats at least twice at the end.

    For every period ``p`` in ``[min_period, max_period]`` the periodic tail is measured; the
    period whose tail covers the most tokens wins, ties going to the smallest (a tail of period
    3 also has period 6, covering no more). A period only counts with two complete cycles in
    its tail, so ``max_period`` above ``len(tokens) // 2`` (the default) is clamped there.
    ``is_loop`` applies the caller's threshold: ``cycles >= min_cycles``.

    "a b c a b c a b" → period 3, onset 0, 2 cycles and a partial of 2 tokens.
    Cost: O(len · max_period) vectorised comparisons, milliseconds for a few thousand tokens.
    """
    min_cycles = check_count("min_cycles", min_cycles, 2)
    min_period = check_count("min_period", min_period, 1)
    tokens = as_tokens(tokens)
    longest_fitting = len(tokens) // 2
    if max_period is None:
        max_period = longest_fitting
    else:
        max_period = check_count("max_period", max_period, min_period)
    ids = dense_ids(tokens)

    best_length, best_period = 0, 0
    for period in range(min_period, min(max_period, longest_fitting) + 1):
        length = periodic_tail_length(ids, period)
        if length >= 2 * period and length > best_length:
            best_length, best_period = length, period
    if best_period == 0:
        return None

    cycles, partial = divmod(best_length, best_period)
    onset = len(tokens) - best_length
    spans = [(onset + k * best_period, onset + (k + 1) * best_period) for k in range(cycles)]
    return LoopReport(
        period=best_period,
        cycles=cycles,
        onset=onset,
        spans=spans,
        is_loop=cycles >= min_cycles,
        partial=partial,
    )


# --------------------------------------------------------------------------- text highlighting


def token_char_offsets(token_texts: Sequence[str]) -> list[Span]:
    """Half-open character span of each token in ``"".join(token_texts)`` (cumulative lengths).

    Correct when the decoded text is exactly the concatenation of the per-token strings, e.g.
    strings produced by decoding the sequence incrementally. Tokenizers whose per-token decode
    adds or drops spaces (SentencePiece's "▁") need offsets from the tokenizer instead.
    """
    offsets: list[Span] = []
    position = 0
    for index, text in enumerate(token_texts):
        if not isinstance(text, str):
            raise DecodingLabError(
                f"token_texts[{index}] of type {type(text).__name__} is not supported; "
                "allowed: a str"
            )
        offsets.append((position, position + len(text)))
        position += len(text)
    return offsets


def spans_to_char_spans(token_spans: Sequence[Span], token_offsets: Sequence[Span]) -> list[Span]:
    """Map half-open token spans to half-open character spans: ``(start of first, end of last)``."""
    char_spans: list[Span] = []
    for start, end in token_spans:
        if not 0 <= start < end <= len(token_offsets):
            raise DecodingLabError(
                f"token span ({start}, {end}) is out of range; "
                f"allowed: 0 <= start < end <= {len(token_offsets)} (the number of tokens)"
            )
        char_spans.append((token_offsets[start][0], token_offsets[end - 1][1]))
    return char_spans
