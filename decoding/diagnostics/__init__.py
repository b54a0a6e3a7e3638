"""Repetition diagnostics: corpus metrics, the loop a generation ended in, self-reinforcement.

- ``metrics``: rep-n and diversity (Su et al. 2022), seq-rep-n (Welleck et al. 2020),
  distinct-n (Li et al. 2016), rep-sen (Xu et al. 2022), repetition % (Holtzman et al. 2020).
- ``loops``: ``detect_loop`` → ``LoopReport`` (period, cycles, onset, spans to highlight).
- ``loop_kinds``: ``find_loops`` → ``LoopFinding`` per loop: exact, near-verbatim or template
  (frame and slots), at the end or mid-text; whitespace repetition is not a loop.
- ``loop_set``: the labelled loop set and the precision / recall / onset-error table.
- ``loop_trace``: ``loop_probability_trace`` → P(loop-continuing token) per step of a traced loop.
- ``reinforcement``: TP / IP / WR of a sentence repeated N times (Xu et al. 2022).
"""

from .loop_kinds import LoopFinding, LoopRule, describe, find_loops, main_loop, text_pieces
from .loop_trace import LoopProbabilityTrace, loop_probability_trace
from .loops import (
    LoopReport,
    detect_loop,
    periodic_tail_length,
    spans_to_char_spans,
    token_char_offsets,
)
from .metrics import (
    as_corpus,
    as_tokens,
    distinct_n,
    diversity,
    holtzman_repetition,
    mean_rep_sen,
    mean_seq_rep_n,
    ngrams,
    rep_n,
    rep_sen,
    repeated_tail_phrase,
    repetition_percent,
    sentences,
    seq_rep_n,
)
from .reinforcement import (
    MeanReinforcementCurve,
    ReinforcementCurve,
    mean_curve,
    probe_ids,
    self_reinforcement,
)

__all__ = [
    "LoopFinding",
    "LoopRule",
    "describe",
    "find_loops",
    "main_loop",
    "text_pieces",
    "LoopProbabilityTrace",
    "LoopReport",
    "MeanReinforcementCurve",
    "ReinforcementCurve",
    "as_corpus",
    "as_tokens",
    "detect_loop",
    "distinct_n",
    "diversity",
    "holtzman_repetition",
    "loop_probability_trace",
    "mean_curve",
    "mean_rep_sen",
    "mean_seq_rep_n",
    "ngrams",
    "periodic_tail_length",
    "probe_ids",
    "rep_n",
    "rep_sen",
    "repeated_tail_phrase",
    "repetition_percent",
    "self_reinforcement",
    "sentences",
    "seq_rep_n",
    "spans_to_char_spans",
    "token_char_offsets",
]
