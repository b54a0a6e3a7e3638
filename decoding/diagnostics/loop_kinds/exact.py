"""Pass 1, the token pass (exact loops): periodic stretches of the tokens themselves, moved
forward to where a reader starts them (see the rule in ``loop_kinds/__init__.py``)."""

from __future__ import annotations

import numpy as np

from .findings import Candidate, LoopRule


def _match_runs(ids: np.ndarray, period: int) -> list[tuple[int, int]]:
    """(start, end) token stretches where ``x[i] = x[i - period]`` holds throughout, each at
    least two periods long (half-open, in tokens)."""
    same = np.concatenate(([False], ids[period:] == ids[:-period], [False]))
    edges = np.flatnonzero(same[1:] != same[:-1])
    runs = []
    for lo, hi in zip(edges[::2], edges[1::2]):
        if hi - lo >= period:             # r matches -> r + p tokens -> >= 2 cycles
            runs.append((int(lo), int(hi) + period))
    return runs


def token_pass(ids: np.ndarray, rule: LoopRule) -> list[Candidate]:
    n = len(ids)
    found = []
    for period in range(1, min(rule.max_period, n // 2) + 1):
        for start, end in _match_runs(ids, period):
            cycles = (end - start) // period
            found.append(Candidate("exact", start,
                                   [start + (k + 1) * period for k in range(cycles)], end))
    return found


def start_at_unit(c: Candidate, offsets: np.ndarray, unit_starts: np.ndarray) -> Candidate:
    """An exact stretch begins as early as the tokens repeat ("red.\n\n### Q ... Mars.\n\n###"
    repeats from the "."); a reader starts it where a sentence or line starts. Shift the cycles
    forward to the first token (within one period) in whose text a unit starts, keeping two
    cycles. ``unit_starts``: sorted character starts of the units."""
    period = c.cycle_ends[0] - c.start
    lo, hi = int(offsets[c.start]), int(offsets[c.start + period])
    first = int(np.searchsorted(unit_starts, lo))      # the first unit start at or after lo
    if first == len(unit_starts) or unit_starts[first] >= hi:
        return c
    token = int(np.searchsorted(offsets, unit_starts[first], side="right")) - 1
    if token == c.start or c.end - token < 2 * period:
        return c
    cycles = (c.end - token) // period
    return Candidate(c.kind, token, [token + (k + 1) * period for k in range(cycles)], c.end)
