"""Pass 2, the unit pass (near and template loops; exact across whitespace): units that match
their counterpart ``lag`` units later, by words or as headers (see the rule in
``loop_kinds/__init__.py``). It hands the same units to the block and clause passes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .blocks import block_pass, clause_pass
from .findings import Candidate, LoopRule
from .units import HAS_WORD, WORD, count_words, frame_gaps, lcs, text_units


def _units_match(a: list, b: list, rule: LoopRule) -> int:
    """2 identical words, 1 similar (common subsequence >= ``similarity`` of the longer), 0 not."""
    if a == b:
        return 2
    longest = max(len(a), len(b))
    if longest > rule.max_unit_words or min(len(a), len(b)) < 2:
        return 0
    return 1 if len(lcs(a, b)) >= rule.similarity * longest else 0


def _is_prefix(part: list, whole: list, rule: LoopRule) -> bool:
    """Whether ``part`` reads like the start of ``whole`` (a cycle cut short)."""
    head = whole[:len(part)]
    return bool(part) and len(part) < len(whole) and (
        part == head or len(lcs(part, head)) >= rule.similarity * len(part))


def _classify(cycles: list[list], rule: LoopRule) -> tuple[str, str | None, list[list[str]] | None]:
    """kind, frame and slots of a loop whose cycles are word lists."""
    if all(c == cycles[0] for c in cycles):
        return "exact", None, None
    frame = cycles[0]
    for c in cycles[1:]:
        frame = lcs(frame, c)
    gapped = [frame_gaps(c, frame) for c in cycles]
    slot_at = [g for g in range(len(frame) + 1) if any(gaps[g] for gaps in gapped)]
    values = [[" ".join(gaps[g]) for g in slot_at] for gaps in gapped]
    same_pairs = sum(cycles[k] == cycles[k - 1] for k in range(1, len(cycles)))
    frame_words = sum(bool(HAS_WORD.search(w)) for w in frame)
    if frame_words < rule.min_frame_words and len(cycles) < rule.min_cycles_short_frame:
        return "", None, None               # "Add the flour. Add the sugar. ...": a list
    filled = sum(bool(v) for row in values for v in row) / max(1, len(values) * len(slot_at))
    short = all(len(gaps[g]) <= rule.max_slot_words for gaps in gapped for g in slot_at)
    if (same_pairs * 2 < len(cycles) - 1 and filled >= 0.5 and short
            and len(slot_at) <= rule.max_slots):
        pieces = []
        for g, word in enumerate(frame + [None]):
            if g in slot_at:
                pieces.append("…")
            if word is not None:
                pieces.append(word)
        return "template", " ".join(pieces), values
    return "near", None, None


_HEADER_MATCH = 3        # two header units at the same place in their cycles



def _headers_alone(run: Sequence[int], lag: int, cycles: int, rule: LoopRule) -> bool:
    """Whether a run of unit matches at ``lag`` leans on headers alone somewhere: headers match
    each other whatever their words ("### Output:" / "### Note:", "1. **Salt Cup**:" / "2.
    **Harbour Brew**:"), so every ``lag`` consecutive matches (a cycle's worth) need one unit
    that matches by its words. A run of bare headers one after the other ("A: B: C: ...") counts
    from ``min_cycles_bare_headers`` cycles (a blank form has a few fields)."""
    if lag == 1 and all(v == _HEADER_MATCH for v in run):
        return cycles < rule.min_cycles_bare_headers
    for k in range(len(run) - lag + 1):
        if all(v == _HEADER_MATCH for v in run[k:k + lag]):
            return True
    return False


def unit_pass(text: str, offsets: np.ndarray, rule: LoopRule) -> list[Candidate]:
    units = text_units(text)
    words = [WORD.findall(text[lo:hi]) for lo, hi in units]
    starts = offsets[:-1]
    n_tokens = len(starts)

    def token_at(char: int) -> int:
        """The token whose text holds character ``char``."""
        return max(0, int(np.searchsorted(starts, char, side="right")) - 1)

    header = [text[hi - 1] == ":" and count_words(ws) <= rule.max_header_words
              for (lo, hi), ws in zip(units, words)]
    found = []
    m = len(units)
    for lag in range(1, min(rule.max_unit_lag, m // 2) + 1):
        match = [_units_match(words[i], words[i + lag], rule)
                 or (_HEADER_MATCH if header[i] and header[i + lag] else 0)
                 for i in range(m - lag)]
        i = 0
        while i < len(match):
            if not match[i]:
                i += 1
                continue
            j = i
            while j < len(match) and match[j]:
                j += 1
            n_units = (j - i) + lag          # units i .. j + lag - 1
            cycles = n_units // lag
            if cycles >= 2 and not _headers_alone(match[i:j], lag, cycles, rule):
                groups = [sum(words[i + c * lag:i + (c + 1) * lag], []) for c in range(cycles)]
                kind, frame, slots = _classify(groups, rule)
                if kind:
                    first = units[i][0]
                    ends = [units[i + (c + 1) * lag - 1][1] for c in range(cycles)]
                    last_unit = i + n_units - 1
                    nxt = last_unit + 1            # an unfinished cycle: the next unit starts
                    if nxt < m and nxt == len(units) - 1 and _is_prefix(   # like its role does
                            words[nxt], words[nxt - lag], rule):
                        last_unit = nxt
                    end_char = units[last_unit][1]
                    start_tok = token_at(first)
                    cycle_ends = [min(n_tokens, token_at(e - 1) + 1) for e in ends]
                    found.append(Candidate(kind, start_tok, cycle_ends,
                                           min(n_tokens, token_at(end_char - 1) + 1),
                                           frame, slots))
            i = j
    return (found + block_pass(text, units, words, rule, token_at, n_tokens)
            + clause_pass(text, units, token_at, n_tokens))
