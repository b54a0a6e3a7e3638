"""What ``find_loops`` returns and the thresholds it applies: ``LoopRule``, ``LoopFinding``
(with ``main_loop`` and ``describe`` for summaries), and ``Candidate``, a loop a pass proposes
before ``finish`` (``merge.py``) checks it against the rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

from ...errors import check_count, check_range
from ..loops import Span

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
                check_range(f.name, value, 0, 1, low_open=True)
                continue
            low = 2 if f.name.startswith("min_cycles") else 0 if f.name == "max_trailing_words" else 1
            check_count(f.name, value, low)


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


@dataclass
class Candidate:
    """A loop one pass proposes, in tokens; ``finish`` (``merge.py``) turns it into a finding or
    rejects it."""

    kind: str
    start: int          # token
    cycle_ends: list[int]   # token index where each complete cycle ends
    end: int            # token end, partial cycle included
    frame: str | None = None
    slots: list[list[str]] | None = None


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
