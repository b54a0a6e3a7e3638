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

Where each step lives: ``findings.py`` (``LoopRule``, ``LoopFinding``), ``units.py`` (pieces,
units, words, LCS), ``exact.py`` (1, token pass), ``similar.py`` (2, unit pass), ``blocks.py``
(3 and 4, block and clause passes), ``merge.py`` (5, the rule's checks and the overlaps); this
file runs them in order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import DecodingLabError
from ..loops import dense_ids
from .exact import start_at_unit, token_pass
from .findings import KINDS, LoopFinding, LoopRule, describe, main_loop
from .merge import finish, keep_longest
from .similar import unit_pass
from .units import char_offsets, lcs, loose_text, text_pieces, text_units

__all__ = ["KINDS", "LoopFinding", "LoopRule", "describe", "find_loops", "lcs", "main_loop",
           "text_pieces", "text_units"]


def _check_rule(rule: object) -> LoopRule:
    if not isinstance(rule, LoopRule):
        raise DecodingLabError(f"rule of type {type(rule).__name__} is not supported; "
                               "allowed: a LoopRule")
    return rule


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
        offsets = char_offsets(pieces)
        text = "".join(pieces)
    n = len(tokens)
    if n < 2:
        return []
    # With texts, tokens are compared by their text less trailing punctuation ("Hotel." and
    # "Hotel" are the same word in a reader's eyes: a name written three times is a loop whether
    # or not the sentence ends after the third).
    keys = [loose_text(p) for p in pieces] if pieces is not None else tokens
    candidates = token_pass(dense_ids(keys), rule)
    if text is not None:
        starts = np.array([lo for lo, _ in text_units(text)], dtype=np.int64)
        candidates = [start_at_unit(c, offsets, starts) for c in candidates]
        candidates += unit_pass(text, offsets, rule)
    findings = [f for c in candidates if (f := finish(c, text, offsets, n, rule)) is not None]
    return keep_longest(findings)
