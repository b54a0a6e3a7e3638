"""Step 5: a candidate becomes a finding when the rule accepts it (cycles, words, whitespace,
where it ends), and overlapping findings are resolved (see the rule in ``loop_kinds/__init__.py``)."""

from __future__ import annotations

import numpy as np

from .findings import KINDS, Candidate, LoopFinding, LoopRule
from .units import HAS_WORD, words_in


def finish(c: Candidate, text: str | None, offsets: np.ndarray | None, n: int,
           rule: LoopRule) -> LoopFinding | None:
    """The candidate as a finding, or None when the rule rejects it."""
    bounds = [c.start] + c.cycle_ends
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    if min(lengths) < 1:
        return None
    cycles = len(lengths)
    if text is None:
        char_span = (c.start, c.end)
        tail_words = n - c.end
        loop_words = c.end - c.start
        has_word = True
    else:
        char_span = (int(offsets[c.start]), int(offsets[c.end]))
        cycle_text = text[offsets[c.start]:offsets[c.cycle_ends[0]]]
        has_word = bool(HAS_WORD.search(cycle_text))
        tail_words = words_in(text[char_span[1]:])
        loop_words = max(words_in(text[char_span[0]:char_span[1]]), c.end - c.start)
        lead = len(cycle_text) - len(cycle_text.lstrip())
        char_span = (char_span[0] + lead, char_span[1])
    if not has_word or loop_words < rule.min_loop_words:
        return None
    ends_early = tail_words > rule.max_trailing_words
    if ends_early and text is not None:         # an unfinished cycle is not text after the loop
        rest = text[char_span[1]:].strip()
        ends_early = not (rest and cycle_text.strip().startswith(rest))
    if c.kind == "exact":
        needed = rule.min_cycles_mid if ends_early else rule.min_cycles_tail
    else:
        needed = rule.min_cycles_similar if ends_early else rule.min_cycles_similar_tail
    if cycles < needed:
        return None
    return LoopFinding(
        kind=c.kind, onset=c.start, char_onset=char_span[0],
        period=int(np.median(lengths)), cycles=cycles,
        spans=[(a, b) for a, b in zip(bounds[:-1], bounds[1:])], char_span=char_span,
        partial=c.end - c.cycle_ends[-1], ends_early=ends_early, frame=c.frame, slots=c.slots)


def keep_longest(findings: list[LoopFinding]) -> list[LoopFinding]:
    """Overlapping findings resolved, in text order: longest first (characters covered; ties:
    the shorter period, then exact); a finding is kept only where it does not overlap one
    already kept."""
    order = {kind: i for i, kind in enumerate(KINDS)}
    findings = sorted(findings, key=lambda f: (-(f.char_span[1] - f.char_span[0]), f.period,
                                               order[f.kind]))
    kept: list[LoopFinding] = []
    for f in findings:
        if all(f.char_span[1] <= k.char_span[0] or f.char_span[0] >= k.char_span[1] for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.onset)
