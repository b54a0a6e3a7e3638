"""Passes 3 and 4 over the units of a text: header blocks refilled each round (template) and
a phrase written again and again inside one sentence (exact); see the rule in
``loop_kinds/__init__.py``."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from .findings import Candidate, LoopRule
from .units import HAS_WORD, WORD, count_words, frame_gaps, lcs


def _shared_words(x: Sequence[str], y: Sequence[str]) -> float:
    """Share of the longer block's words (``\\w`` tokens, case ignored, punctuation left out)
    that the other block holds too, counted with multiplicity and in any order: a block that
    restates the one before in other words ("Water boils at 100 degrees at sea level because the
    pressure is one atmosphere" / "At sea level the pressure is one atmosphere, so water boils
    at 100 degrees") shares most of them, where a common subsequence keeps only one order."""
    a = Counter(w.lower() for w in x if HAS_WORD.search(w))
    b = Counter(w.lower() for w in y if HAS_WORD.search(w))
    longest = max(sum(a.values()), sum(b.values()))
    return sum((a & b).values()) / longest if longest else 0.0


def block_pass(text: str, units: list[tuple[int, int]], words: list[list], rule: LoopRule,
                token_at, n_tokens: int) -> list[Candidate]:
    """Header blocks refilled each round (seed 002's "### Explanation: ... ### Explanation:
    ..."): a header unit (ending in ':') that comes back word for word, every at most
    ``max_unit_lag`` units, with the blocks it opens alike (they share ``block_similarity`` of
    the longer block's words, ``_shared_words``). The content before the first header counts as a
    cycle when it is alike too. Kind ``template``: the header is the frame. Blocks that are
    mostly verbatim are left to the unit and token passes (exact or near loops)."""
    found = []
    positions: dict[tuple, list[int]] = {}
    for i, (lo, hi) in enumerate(units):
        if text[hi - 1] == ":" and HAS_WORD.search(text[lo:hi]):
            positions.setdefault(tuple(words[i]), []).append(i)
    m = len(units)

    def block(a: int, b: int) -> list:
        return sum(words[a:b], [])

    def alike(x: list, y: list) -> bool:          # long blocks: bounds the frame's LCS cost
        return (0 < max(len(x), len(y)) <= 4 * rule.max_unit_words
                and _shared_words(x, y) >= rule.block_similarity)

    for header, where in positions.items():
        k = 0
        while k < len(where) - 1:
            run = [where[k]]
            while (k + 1 < len(where) and 2 <= where[k + 1] - run[-1] <= rule.max_unit_lag
                   and (len(run) < 2 or alike(block(run[-2], run[-1]),
                                              block(run[-1], where[k + 1])))):
                run.append(where[k + 1])
                k += 1
            k += 1
            if len(run) < 2 or not alike(block(run[0], run[1]), block(run[1], run[1] + (
                    run[1] - run[0]))):
                continue
            bounds = list(run)
            tail = min(m, run[-1] + (run[-1] - run[-2]))      # the last block, as long as the one before
            bounds.append(tail)
            headed = [block(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
            if sum(x == y for x, y in zip(headed[:-1], headed[1:])) * 2 >= len(headed) - 1:
                continue                  # blocks mostly verbatim: the other passes' loops
            gap = run[1] - run[0]
            before = run[0] - (gap - 1)                       # content before the first header
            if before >= 0 and alike(block(before, run[0]), block(run[0] + 1, run[1])):
                bounds.insert(0, before)
            blocks = [block(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
            frame = blocks[0]
            for b in blocks[1:]:
                frame = lcs(frame, b)
            slots = [[" ".join(g) for g in frame_gaps(b, frame) if g][:rule.max_slots]
                     for b in blocks]
            cycle_ends = [min(n_tokens, token_at(units[b - 1][1] - 1) + 1) for b in bounds[1:]]
            found.append(Candidate("template", token_at(units[bounds[0]][0]), cycle_ends,
                                   min(n_tokens, token_at(units[-1][1] - 1) + 1)
                                   if tail == m else cycle_ends[-1],
                                   " ".join(header) + " …", slots))
    return found


_CLAUSE_SEP = re.compile(r",\s+(?:(?:and|or)\s+)?|\s+(?:and|or)\s+")


def clause_pass(text: str, units: list[tuple[int, int]], token_at, n_tokens: int
                 ) -> list[Candidate]:
    """A phrase written again and again inside one sentence, joined by commas or "and" ("thanked
    Greta Lindqvist, Greta Lindqvist and Greta Lindqvist for"): the separators change, so the
    tokens are not periodic. Each unit is cut into clauses at ", ", " and ", " or "; a run of
    clauses with the same words (two words at least: "very, very" is emphasis), with the clause
    before it ending in those words and the clause after it starting with them, is an exact loop
    of one cycle per copy. ``finish`` applies the usual cycle counts (three in mid-text)."""
    found = []
    for lo, hi in units:
        seps = list(_CLAUSE_SEP.finditer(text, lo, hi))
        spans = list(zip([lo] + [m.end() for m in seps], [m.start() for m in seps] + [hi]))
        words = [[m for m in WORD.finditer(text, a, b)] for a, b in spans]
        plain = [[m.group(0) for m in ws] for ws in words]
        k = 1
        while k < len(spans):
            phrase = plain[k]
            j = k
            while j < len(spans) and plain[j] == phrase:
                j += 1
            before, after = plain[k - 1], plain[j] if j < len(spans) else []
            n = len(phrase)
            if count_words(phrase) >= 2 and len(before) >= n and before[-n:] == phrase:
                starts = [words[k - 1][-n].start()] + [spans[c][0] for c in range(k, j)]
                last_end = spans[j - 1][1]
                if len(after) >= n and after[:n] == phrase:
                    starts.append(spans[j][0])
                    last_end = words[j][n - 1].end()
                ends = starts[1:] + [last_end]
                cycle_ends = [min(n_tokens, token_at(e - 1) + 1) for e in ends]
                found.append(Candidate("exact", token_at(starts[0]), cycle_ends, cycle_ends[-1]))
            k = max(j, k + 1)
    return found
