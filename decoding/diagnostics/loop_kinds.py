"""Loops as a reader sees them: verbatim, near-verbatim and templated, at the end or mid-text.

``detect_loop`` (``loops.py``) answers one question: does the token sequence *end* in a phrase
repeated verbatim? ``find_loops`` answers the reader's question: where does the text start
going round in circles, and how? Each ``LoopFinding`` has a **kind**:

- ``exact``: cycles identical word for word (Holtzman et al. 2020's "phrase repeated
  consecutively"), found on the tokens themselves, so any period, tail or mid-text;
- ``near``: cycles that are the same text with small edits (words added, dropped or changed
  at different places);
- ``template``: a repeated **frame** with short **slots** that change cycle after cycle
  ("The animals are all in horror. / ... in terror. / ... in fear.", "### D-One: ### D-Two:");
  the finding reports the frame and each cycle's slot values.

The rule, in four passes and an overlap step (every threshold is a field of ``LoopRule``; the
defaults were tuned on the dev split of the labelled loop set, ``loop_set.py``):

1. **Token pass (exact).** For each period ``p <= max_period`` the matches ``x[i] = x[i - p]``
   form runs (with texts, tokens are compared without the punctuation that ends a word, so
   "Hotel Hotel Hotel." repeats three times);  a run of ``r`` matches is a periodic stretch of ``r + p`` tokens, ``(r + p) // p``
   complete cycles. A stretch counts with ``min_cycles_tail`` (2) cycles when it reaches the
   end of the text (as ``detect_loop``) and ``min_cycles_mid`` (3) elsewhere. A stretch starts
   as early as the tokens repeat; it is moved forward (within one period) to where a unit
   (below) starts, which is where a reader starts it.
2. **Unit pass (near, template; exact across whitespace).** The text is cut into units at
   sentence ends, colons and semicolons followed by space, and newlines (a bare list marker
   "3." stays with its item). Unit ``i`` *matches* unit ``i + k`` when their words (``\\w+`` or
   a run of punctuation) are equal, or when their longest common subsequence covers
   ``similarity`` (0.7) of the longer one. A run of matches at lag ``k`` (``k <= max_unit_lag``)
   is a loop of ``k``-unit cycles. Its frame is the common subsequence of all cycles; the words
   outside it are the slots. ``exact``: every cycle has the same words (e.g. cycles that differ
   only in line breaks). ``template``: fewer than half the neighbouring cycles identical, slots
   filled in at least half the (cycle, slot) cells, at most ``max_slots`` (3) slot positions,
   none longer than ``max_slot_words`` (4) words. ``near``: the rest. A frame of fewer than
   ``min_frame_words`` (3) words needs ``min_cycles_short_frame`` (5) cycles ("Add the flour.
   Add the sugar." is a recipe). Near and template loops need ``min_cycles_similar_tail`` (2)
   cycles when they run to the end of the text, ``min_cycles_similar`` (3) when they stop.
   **Headers** (units ending in ':' with at most ``max_header_words`` (6) words: "### Output:",
   "2. **Salt Cup**:") match each other whatever their words, so list items that copy one
   description under new titles, or paragraphs that come back under changing headers, make
   cycles; but every cycle's worth of matches needs a unit that matches by its words (the same
   headers over new content are a structured answer), and bare headers in a row ("A: B: C:
   ...") need ``min_cycles_bare_headers`` (8) cycles (a blank form has fewer fields).
3. **Block pass (template).** A header that comes back word for word, every at most
   ``max_unit_lag`` units, opening blocks that share ``block_similarity`` (0.4) of the longer
   block's words in any order (a restatement: seed 002's "### Explanation:" refilled each
   round); blocks that are mostly verbatim are left to the unit pass.
4. **Clause pass (exact).** Inside a unit, a phrase of two words or more written again and
   again between commas or "and"/"or" ("thanked Greta Lindqvist, Greta Lindqvist and Greta
   Lindqvist for") is a loop of one cycle per copy; the separators change, so the tokens are
   not periodic.
5. **Overlaps.** Candidates covering the same stretch are resolved by covered characters, the
   longer wins (an exact stretch inside a near loop gives way to the near loop); at equal
   cover, the shorter cycle (two list items per cycle explain no more than one), then exact.
   Every loop covers at least ``min_loop_words`` (6) words or tokens: "no no" is not a loop.

**Whitespace is not a loop**: cycles with no word character ("\\n\\n", "  ", "---") are
dropped in both passes, and units are compared by words, so line breaks never make or break a
cycle. A finding that ends before the text does (more than ``max_trailing_words`` words follow
it, other than an unfinished cycle) is a loop that **stopped**: ``ends_early`` is True.

The onset (``onset`` in tokens, ``char_onset`` in characters, at the first non-space
character) is the start of the first complete cycle: delete every cycle after the first and
the text reads as if the writer had not looped.

Tokens: model token ids with their texts (``pieces``, one string per token, whose
concatenation is the text), or a ``str``, which is split into whitespace tokens with their
exact character offsets. Without ``pieces`` only the token pass runs (there is no text).

Cost: the token pass is ``O(n · max_period)`` vectorised comparisons; the unit pass compares
each unit with the ``max_unit_lag`` units after it, each comparison bounded by
``max_unit_words``²; the block pass compares each header's block with the next one (blocks of
at most ``4 · max_unit_words`` words); the clause pass reads each unit once. All are linear in
the text length for fixed settings
(``python -m experiments.bench_loops``, also in ``make bench``, times 500 to 8,000 tokens).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from numbers import Integral, Real

import numpy as np

from ..errors import DecodingLabError, out_of_range
from .loops import Span, dense_ids

KINDS = ("exact", "near", "template")


@dataclass(frozen=True)
class LoopRule:
    """The thresholds of ``find_loops`` (tuned on the dev split of the labelled loop set)."""

    min_cycles_tail: int = field(default=2, metadata={"help": "Complete cycles an exact loop "
                                 "that runs to the end of the text needs (detect_loop's rule). >= 2."})
    min_cycles_mid: int = field(default=3, metadata={"help": "Complete cycles an exact stretch "
                                "that stops before the end needs. >= 2."})
    min_cycles_similar: int = field(default=3, metadata={"help": "Complete cycles a near or "
                                    "template loop that stops before the end needs. >= 2."})
    min_cycles_similar_tail: int = field(default=2, metadata={"help": "Complete cycles a near "
                                         "or template loop that runs to the end needs. >= 2."})
    min_loop_words: int = field(default=6, metadata={"help": "Words (or tokens, whichever are "
                                "more) a loop must cover, all cycles together: 'no no' is "
                                "emphasis, not a loop. >= 1."})
    max_period: int = field(default=200, metadata={"help": "Longest cycle of the token pass, in "
                            "tokens; longer cycles are found by the unit pass. >= 1."})
    max_unit_lag: int = field(default=8, metadata={"help": "Most units (sentences, lines) in "
                              "one cycle of the unit pass. >= 1."})
    max_unit_words: int = field(default=80, metadata={"help": "Units longer than this many words "
                                "match only when identical (bounds the comparison cost). >= 1."})
    similarity: float = field(default=0.7, metadata={"help": "Share of the longer unit's words "
                              "that a common subsequence must cover for two units to match. (0, 1]."})
    max_slot_words: int = field(default=4, metadata={"help": "Longest slot value of a template "
                                "loop, in words. >= 1."})
    min_frame_words: int = field(default=3, metadata={"help": "Words (not punctuation) the frame "
                                 "of a near or template loop needs, unless it has "
                                 "min_cycles_short_frame cycles. >= 1."})
    min_cycles_short_frame: int = field(default=5, metadata={"help": "Cycles that make a loop of "
                                        "a shorter frame ('### D-One: ### D-Two: ...'). >= 2."})
    block_similarity: float = field(default=0.4, metadata={"help": "Header blocks ('### "
                                    "Explanation: ...') loop when they share this share of the "
                                    "longer block's words, in any order. (0, 1]."})
    max_slots: int = field(default=3, metadata={"help": "Most slot positions per cycle of a "
                           "template loop. >= 1."})
    max_header_words: int = field(default=6, metadata={"help": "Words (not punctuation) a unit "
                                  "ending in ':' may have and still be a header ('### Output:', "
                                  "'2. **Salt Cup**:'); in the unit pass headers match each other. "
                                  ">= 1."})
    min_cycles_bare_headers: int = field(default=8, metadata={"help": "Header units in a row, "
                                         "with nothing between them, that make a loop ('A: B: C: "
                                         "...' running on; a blank form has fewer). >= 2."})
    max_trailing_words: int = field(default=2, metadata={"help": "Words after a loop that still "
                                    "count as its end (not a loop that stopped). >= 0."})

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("similarity", "block_similarity"):
                if (isinstance(value, bool) or not isinstance(value, Real)
                        or not 0 < value <= 1):
                    raise out_of_range(f.name, value, "a number in (0, 1]")
                continue
            low = 2 if f.name.startswith("min_cycles") else 0 if f.name == "max_trailing_words" else 1
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise out_of_range(f.name, value, f"an integer {f.name} >= {low}")


@dataclass(frozen=True)
class LoopFinding:
    """One loop: its kind, where it starts (token and character), its cycles and span.

    ``spans`` are the token spans of the complete cycles (equal lengths for ``exact`` loops of
    the token pass, varying for the unit pass); ``partial`` tokens after the last one belong to an
    unfinished cycle. ``period`` is the median cycle length in tokens. The attribute names match
    ``LoopReport`` (``onset``, ``spans``, ``partial``, ``is_loop``, ``length``), so code that
    highlights a ``LoopReport`` highlights a finding too.
    """

    kind: str
    onset: int                       # token onset
    char_onset: int
    period: int                      # median cycle length, tokens
    cycles: int
    spans: list[Span]                # token span per complete cycle
    char_span: Span                  # characters the loop covers (partial cycle included)
    partial: int = 0                 # tokens of an unfinished last cycle
    ends_early: bool = False         # the text goes on after the loop (a loop that stopped)
    frame: str | None = None         # template loops: the frame, slots shown as "…"
    slots: list[list[str]] | None = None  # template loops: the slot values of each cycle
    is_loop: bool = True

    @property
    def token_span(self) -> Span:
        return (self.onset, self.spans[-1][1] + self.partial)

    @property
    def length(self) -> int:
        """Tokens covered, partial cycle included."""
        return self.token_span[1] - self.onset

    def to_dict(self) -> dict:
        """``LoopReport.to_dict()``'s keys (so old readers keep working) plus the kind fields."""
        data = asdict(self)
        data["spans"] = [list(s) for s in self.spans]
        data["char_span"] = list(self.char_span)
        data["token_span"] = list(self.token_span)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LoopFinding:
        names = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        kept["spans"] = [tuple(s) for s in data["spans"]]
        kept["char_span"] = tuple(data["char_span"])
        return cls(**kept)


# --------------------------------------------------------------------------- text pieces

_WORD = re.compile(r"\w+|[^\w\s]+")
_HAS_WORD = re.compile(r"\w")


def text_pieces(text: str) -> list[str]:
    """Whitespace tokens with their exact surroundings: ``"".join(pieces) == text``; each piece
    is a word and the whitespace after it (leading whitespace goes with the first word)."""
    if not isinstance(text, str):
        raise DecodingLabError(f"text of type {type(text).__name__} is not supported; allowed: a str")
    pieces = [m.group(0) for m in re.finditer(r"\S+\s*", text)]
    if pieces:
        lead = len(text) - len(text.lstrip())
        pieces[0] = text[:lead] + pieces[0]
    return pieces


_TRAILING_PUNCT = re.compile(r"(?<=\w)[.,;:!?]+$")


def _loose(piece: str) -> str:
    """A token's text as the token pass compares it: without surrounding whitespace and without
    punctuation that ends a word ("Hotel." -> "Hotel"; a lone "." stays)."""
    return _TRAILING_PUNCT.sub("", piece.strip())


def _offsets(pieces: Sequence[str]) -> np.ndarray:
    """Start character of every piece, and the text length at the end (``len(pieces) + 1``)."""
    out = np.zeros(len(pieces) + 1, dtype=np.int64)
    for i, piece in enumerate(pieces):
        if not isinstance(piece, str):
            raise DecodingLabError(f"pieces[{i}] of type {type(piece).__name__} is not supported; "
                                   "allowed: a str")
        out[i + 1] = out[i] + len(piece)
    return out


# --------------------------------------------------------------------------- token pass

@dataclass
class _Candidate:
    kind: str
    start: int          # token
    cycle_ends: list[int]   # token index where each complete cycle ends
    end: int            # token end, partial cycle included
    frame: str | None = None
    slots: list[list[str]] | None = None


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


def _token_pass(ids: np.ndarray, rule: LoopRule) -> list[_Candidate]:
    n = len(ids)
    found = []
    for period in range(1, min(rule.max_period, n // 2) + 1):
        for start, end in _match_runs(ids, period):
            cycles = (end - start) // period
            found.append(_Candidate("exact", start,
                                    [start + (k + 1) * period for k in range(cycles)], end))
    return found


# --------------------------------------------------------------------------- unit pass

_UNIT_END = re.compile(r"[.!?;:]+(?=\s|$)|\n")
_LIST_MARKER = re.compile(r"\s*(?:\d{1,3}|[A-Za-z]|[-*•]|#+)[.):]?\s*")


def text_units(text: str) -> list[tuple[int, int]]:
    """Character spans of the units of ``text``: sentences, clauses ending in ':' or ';', lines.
    Leading/trailing whitespace is left out; units without words or punctuation are dropped, and
    a bare list marker ("3.", "-") is joined to the unit after it."""
    cuts = [0] + [m.end() for m in _UNIT_END.finditer(text)] + [len(text)]
    units: list[tuple[int, int]] = []
    pending = None
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        piece = text[lo:hi]
        if not piece.strip():
            continue
        start = lo + len(piece) - len(piece.lstrip())
        end = hi - (len(piece) - len(piece.rstrip()))
        if pending is not None:
            start = pending
            pending = None
        if _LIST_MARKER.fullmatch(text[start:end]) and hi < len(text):
            pending = start
            continue
        units.append((start, end))
    if pending is not None:
        units.append((pending, len(text.rstrip())))
    return units


def _lcs_table(a: Sequence, b: Sequence) -> np.ndarray:
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=np.int32)
    for i, x in enumerate(a):
        row, nxt = table[i], table[i + 1]
        for j, y in enumerate(b):
            nxt[j + 1] = row[j] + 1 if x == y else max(row[j + 1], nxt[j])
    return table


def lcs(a: Sequence, b: Sequence) -> list:
    """A longest common subsequence of two word lists (the classic dynamic programme)."""
    table = _lcs_table(a, b)
    out, i, j = [], len(a), len(b)
    while i and j:
        if a[i - 1] == b[j - 1]:
            out.append(a[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1, j] >= table[i, j - 1]:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def _gaps(words: Sequence, frame: Sequence) -> list[list]:
    """``words`` aligned to ``frame`` (a subsequence of it): the words in each of the
    ``len(frame) + 1`` gaps around the frame words."""
    gaps: list[list] = [[] for _ in range(len(frame) + 1)]
    table = _lcs_table(words, frame)
    i, j = len(words), len(frame)
    while i:
        if j and words[i - 1] == frame[j - 1] and table[i, j] == table[i - 1, j - 1] + 1:
            i, j = i - 1, j - 1
        else:
            gaps[j].insert(0, words[i - 1])
            i -= 1
    return gaps


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
    gapped = [_gaps(c, frame) for c in cycles]
    slot_at = [g for g in range(len(frame) + 1) if any(gaps[g] for gaps in gapped)]
    values = [[" ".join(gaps[g]) for g in slot_at] for gaps in gapped]
    same_pairs = sum(cycles[k] == cycles[k - 1] for k in range(1, len(cycles)))
    frame_words = sum(bool(_HAS_WORD.search(w)) for w in frame)
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


def _count_words(words: Sequence[str]) -> int:
    return sum(bool(_HAS_WORD.search(w)) for w in words)


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


def _unit_pass(text: str, offsets: np.ndarray, rule: LoopRule) -> list[_Candidate]:
    units = text_units(text)
    words = [_WORD.findall(text[lo:hi]) for lo, hi in units]
    starts = offsets[:-1]
    n_tokens = len(starts)

    def token_at(char: int) -> int:
        """The token whose text holds character ``char``."""
        return max(0, int(np.searchsorted(starts, char, side="right")) - 1)

    header = [text[hi - 1] == ":" and _count_words(ws) <= rule.max_header_words
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
                    found.append(_Candidate(kind, start_tok, cycle_ends,
                                            min(n_tokens, token_at(end_char - 1) + 1),
                                            frame, slots))
            i = j
    return (found + _block_pass(text, units, words, rule, token_at, n_tokens)
            + _clause_pass(text, units, token_at, n_tokens))


def _shared_words(x: Sequence[str], y: Sequence[str]) -> float:
    """Share of the longer block's words (``\\w`` tokens, case ignored, punctuation left out)
    that the other block holds too, counted with multiplicity and in any order: a block that
    restates the one before in other words ("Water boils at 100 degrees at sea level because the
    pressure is one atmosphere" / "At sea level the pressure is one atmosphere, so water boils
    at 100 degrees") shares most of them, where a common subsequence keeps only one order."""
    a = Counter(w.lower() for w in x if _HAS_WORD.search(w))
    b = Counter(w.lower() for w in y if _HAS_WORD.search(w))
    longest = max(sum(a.values()), sum(b.values()))
    return sum((a & b).values()) / longest if longest else 0.0


def _block_pass(text: str, units: list[tuple[int, int]], words: list[list], rule: LoopRule,
                token_at, n_tokens: int) -> list[_Candidate]:
    """Header blocks refilled each round (seed 002's "### Explanation: ... ### Explanation:
    ..."): a header unit (ending in ':') that comes back word for word, every at most
    ``max_unit_lag`` units, with the blocks it opens alike (they share ``block_similarity`` of
    the longer block's words, ``_shared_words``). The content before the first header counts as a
    cycle when it is alike too. Kind ``template``: the header is the frame. Blocks that are
    mostly verbatim are left to the unit and token passes (exact or near loops)."""
    found = []
    positions: dict[tuple, list[int]] = {}
    for i, (lo, hi) in enumerate(units):
        if text[hi - 1] == ":" and _HAS_WORD.search(text[lo:hi]):
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
            slots = [[" ".join(g) for g in _gaps(b, frame) if g][:rule.max_slots] for b in blocks]
            cycle_ends = [min(n_tokens, token_at(units[b - 1][1] - 1) + 1) for b in bounds[1:]]
            found.append(_Candidate("template", token_at(units[bounds[0]][0]), cycle_ends,
                                    min(n_tokens, token_at(units[-1][1] - 1) + 1)
                                    if tail == m else cycle_ends[-1],
                                    " ".join(header) + " …", slots))
    return found


_CLAUSE_SEP = re.compile(r",\s+(?:(?:and|or)\s+)?|\s+(?:and|or)\s+")


def _clause_pass(text: str, units: list[tuple[int, int]], token_at, n_tokens: int
                 ) -> list[_Candidate]:
    """A phrase written again and again inside one sentence, joined by commas or "and" ("thanked
    Greta Lindqvist, Greta Lindqvist and Greta Lindqvist for"): the separators change, so the
    tokens are not periodic. Each unit is cut into clauses at ", ", " and ", " or "; a run of
    clauses with the same words (two words at least: "very, very" is emphasis), with the clause
    before it ending in those words and the clause after it starting with them, is an exact loop
    of one cycle per copy. ``_finish`` applies the usual cycle counts (three in mid-text)."""
    found = []
    for lo, hi in units:
        seps = list(_CLAUSE_SEP.finditer(text, lo, hi))
        spans = list(zip([lo] + [m.end() for m in seps], [m.start() for m in seps] + [hi]))
        words = [[m for m in _WORD.finditer(text, a, b)] for a, b in spans]
        plain = [[m.group(0) for m in ws] for ws in words]
        k = 1
        while k < len(spans):
            phrase = plain[k]
            j = k
            while j < len(spans) and plain[j] == phrase:
                j += 1
            before, after = plain[k - 1], plain[j] if j < len(spans) else []
            n = len(phrase)
            if _count_words(phrase) >= 2 and len(before) >= n and before[-n:] == phrase:
                starts = [words[k - 1][-n].start()] + [spans[c][0] for c in range(k, j)]
                last_end = spans[j - 1][1]
                if len(after) >= n and after[:n] == phrase:
                    starts.append(spans[j][0])
                    last_end = words[j][n - 1].end()
                ends = starts[1:] + [last_end]
                cycle_ends = [min(n_tokens, token_at(e - 1) + 1) for e in ends]
                found.append(_Candidate("exact", token_at(starts[0]), cycle_ends, cycle_ends[-1]))
            k = max(j, k + 1)
    return found


# --------------------------------------------------------------------------- assembling


def _start_at_unit(c: _Candidate, offsets: np.ndarray, unit_starts: np.ndarray) -> _Candidate:
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
    return _Candidate(c.kind, token, [token + (k + 1) * period for k in range(cycles)], c.end)


def _check_rule(rule: object) -> LoopRule:
    if not isinstance(rule, LoopRule):
        raise DecodingLabError(f"rule of type {type(rule).__name__} is not supported; "
                               "allowed: a LoopRule")
    return rule


def _words_in(text: str) -> int:
    return len(_WORD.findall(text))


def _finish(c: _Candidate, text: str | None, offsets: np.ndarray | None, n: int,
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
        has_word = bool(_HAS_WORD.search(cycle_text))
        tail_words = _words_in(text[char_span[1]:])
        loop_words = max(_words_in(text[char_span[0]:char_span[1]]), c.end - c.start)
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


def find_loops(tokens: object, pieces: Sequence[str] | None = None,
               rule: LoopRule = LoopRule()) -> list[LoopFinding]:
    """Every loop of a sequence, in text order (see the module docstring for the rule).

    ``tokens``: model token ids (or any hashable tokens) with ``pieces``, their texts; or a
    ``str``, split into whitespace tokens. Without ``pieces`` only exact loops are found.
    "a b c a b c a b" → one exact finding: period 3, onset 0, 2 cycles, 2 tokens partial.
    """
    rule = _check_rule(rule)
    if isinstance(tokens, str):
        pieces = text_pieces(tokens)
        tokens = [p.strip() for p in pieces]
    elif hasattr(tokens, "tolist") and not isinstance(tokens, (list, tuple)):
        tokens = tokens.tolist()
    if not isinstance(tokens, (list, tuple)):
        raise DecodingLabError(f"tokens of type {type(tokens).__name__} are not supported; "
                               "allowed: a str, or a list/tuple/1-D tensor of tokens")
    tokens = list(tokens)
    text = offsets = None
    if pieces is not None:
        pieces = list(pieces)
        if len(pieces) != len(tokens):
            raise DecodingLabError(f"pieces has {len(pieces)} entries for {len(tokens)} tokens; "
                                   "allowed: one string per token")
        offsets = _offsets(pieces)
        text = "".join(pieces)
    n = len(tokens)
    if n < 2:
        return []
    # With texts, tokens are compared by their text less trailing punctuation ("Hotel." and
    # "Hotel" are the same word in a reader's eyes: a name written three times is a loop whether
    # or not the sentence ends after the third).
    keys = [_loose(p) for p in pieces] if pieces is not None else tokens
    candidates = _token_pass(dense_ids(keys), rule)
    if text is not None:
        starts = np.array([lo for lo, _ in text_units(text)], dtype=np.int64)
        candidates = [_start_at_unit(c, offsets, starts) for c in candidates]
        candidates += _unit_pass(text, offsets, rule)
    findings = [f for c in candidates if (f := _finish(c, text, offsets, n, rule)) is not None]
    # Longest first (characters covered; ties: the shorter period, then exact); keep a finding
    # only where it does not overlap one already kept.
    order = {kind: i for i, kind in enumerate(KINDS)}
    findings.sort(key=lambda f: (-(f.char_span[1] - f.char_span[0]), f.period, order[f.kind]))
    kept: list[LoopFinding] = []
    for f in findings:
        if all(f.char_span[1] <= k.char_span[0] or f.char_span[0] >= k.char_span[1] for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.onset)


def main_loop(findings: Sequence[LoopFinding]) -> LoopFinding | None:
    """The finding that covers the most characters (the loop a summary names), or None."""
    if not findings:
        return None
    return max(findings, key=lambda f: (f.char_span[1] - f.char_span[0], -f.onset))


def describe(finding: LoopFinding | None) -> str:
    """One line for people: kind, where it starts, period, cycles; the frame of a template."""
    if finding is None:
        return "no loop"
    where = "stops before the end" if finding.ends_early else "runs to the end"
    line = (f"{finding.kind} loop from token {finding.onset} (character {finding.char_onset}): "
            f"{finding.cycles} cycles of ~{finding.period} tokens, {where}")
    if finding.frame is not None:
        shown = "; ".join(" | ".join(v) for v in (finding.slots or [])[:6])
        line += f"; frame {finding.frame!r}, slots: {shown}"
    return line
