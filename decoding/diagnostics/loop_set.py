"""The labelled loop set and how a loop detector is scored on it.

``data/loop_set.jsonl`` (labelling guide: ``data/README.md``) holds texts of the embedded
model and hand-written ones, each labelled by reading it: is there degenerate repetition, what
kind, at which character does it start, does it stop before the text ends. ``evaluate`` scores a
detector on one split:

- per **labelled kind** (exact, near, template, and "stops" for loops that end before the text):
  recall (share of those texts in which the detector finds a loop) and onset error (mean
  absolute difference, in characters, between the found and the labelled onset, over the
  texts found);
- per **found kind**: precision (share of the texts the detector gives that kind which a reader
  calls degenerate, whatever the labelled kind);
- overall: recall over all degenerate texts, false-positive rate over the others, and how often
  the found kind equals the labelled one.

A text counts as found when the detector reports a loop anywhere in it (micro-averaged over
texts, one verdict per text; the loop it names is the one covering the most characters).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DecodingLabError
from .loop_kinds import KINDS, find_loops, main_loop, text_pieces
from .loops import detect_loop

LOOP_SET_PATH = Path(__file__).resolve().parent / "data" / "loop_set.jsonl"
SPLITS = ("dev", "test")
LABEL_ROWS = (*KINDS, "stops")


@dataclass(frozen=True)
class LabelledText:
    id: str
    group: str          # the prompt (or hand-written case) the text comes from; splits follow it
    source: str         # the decoding ("greedy", "beam-4", ...) or "hand-written"
    mode: str           # "raw" | "chat" | "text"
    split: str          # "dev" | "test"
    text: str
    loop: bool          # degenerate repetition, as a reader sees it
    kind: str | None = None     # exact | near | template
    onset: int | None = None    # character where the repetition starts
    stops: bool = False         # the loop ends before the text does
    note: str = ""


def _parse(line: str, where: str) -> LabelledText:
    try:
        data = json.loads(line)
        item = LabelledText(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise DecodingLabError(f"{where} is not a labelled text ({exc})") from None
    if item.split not in SPLITS:
        raise DecodingLabError(f"{where}: split={item.split!r}; allowed: {' | '.join(SPLITS)}")
    if item.loop:
        if item.kind not in KINDS or not isinstance(item.onset, int) or not (
                0 <= item.onset < len(item.text)):
            raise DecodingLabError(f"{where}: a loop needs kind in {KINDS} and 0 <= onset < "
                                   f"{len(item.text)}; got kind={item.kind!r}, onset={item.onset!r}")
    elif item.kind is not None or item.onset is not None or item.stops:
        raise DecodingLabError(f"{where}: a text without a loop has no kind, onset or stops")
    return item


def load_loop_set(path: str | Path = LOOP_SET_PATH, split: str | None = None) -> list[LabelledText]:
    """The labelled texts (one split, or all with ``split=None``)."""
    if split is not None and split not in SPLITS:
        raise DecodingLabError(f"split={split!r}; allowed: {' | '.join(SPLITS)} or None (all)")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DecodingLabError(f"loop set {str(path)!r} cannot be read ({exc.strerror or exc})") from None
    items = [_parse(line, f"{Path(path).name} line {i + 1}") for i, line in enumerate(lines)
             if line.strip()]
    return [item for item in items if split is None or item.split == split]


# --------------------------------------------------------------------------- detectors
# A detector maps a text to (kind or None, character onset or None).

Verdict = tuple[str | None, int | None]


def _whitespace(text: str) -> tuple[list, list[str]]:
    pieces = text_pieces(text)
    return [p.strip() for p in pieces], pieces


def kinds_detector(tokenize: Callable[[str], tuple[list, list[str]]] = _whitespace
                   ) -> Callable[[str], Verdict]:
    """``find_loops`` on the text's tokens (whitespace tokens unless ``tokenize`` says otherwise:
    it returns (tokens, pieces) with ``"".join(pieces) == text``)."""
    def detect(text: str) -> Verdict:
        tokens, pieces = tokenize(text)
        found = main_loop(find_loops(tokens, pieces)) if len(tokens) >= 2 else None
        return (found.kind, found.char_onset) if found else (None, None)
    return detect


def exact_detector(tokenize: Callable[[str], tuple[list, list[str]]] = _whitespace
                   ) -> Callable[[str], Verdict]:
    """The old rule: ``detect_loop`` (the text ends in a phrase repeated twice), kind "exact"."""
    def detect(text: str) -> Verdict:
        tokens, pieces = tokenize(text)
        loop = detect_loop(tokens) if len(tokens) >= 2 else None
        if loop is None or not loop.is_loop:
            return None, None
        return "exact", sum(len(p) for p in pieces[:loop.onset])
    return detect


# --------------------------------------------------------------------------- scoring


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def evaluate(items: list[LabelledText], detect: Callable[[str], Verdict]) -> dict:
    """The table described in the module docstring, as a dict (``format_table`` prints it)."""
    if not items:
        raise DecodingLabError("no labelled texts to evaluate; allowed: a non-empty list")
    verdicts = [(item, *detect(item.text)) for item in items]
    rows = {}
    for label in LABEL_ROWS:
        chosen = [v for v in verdicts if v[0].loop
                  and (v[0].stops if label == "stops" else v[0].kind == label)]
        found = [v for v in chosen if v[1] is not None]
        errors = [abs(v[2] - v[0].onset) for v in found]
        predicted = [v for v in verdicts if v[1] == label] if label in KINDS else []
        rows[label] = {
            "labelled": len(chosen), "found": len(found),
            "recall": _ratio(len(found), len(chosen)),
            "onset_error": sum(errors) / len(errors) if errors else None,
            "predicted": len(predicted) if label in KINDS else None,
            "precision": (_ratio(sum(v[0].loop for v in predicted), len(predicted))
                          if label in KINDS else None)}
    positives = [v for v in verdicts if v[0].loop]
    negatives = [v for v in verdicts if not v[0].loop]
    found = [v for v in positives if v[1] is not None]
    flagged = [v for v in verdicts if v[1] is not None]
    errors = [abs(v[2] - v[0].onset) for v in found]
    overall = {
        "texts": len(items), "positives": len(positives), "negatives": len(negatives),
        "recall": _ratio(len(found), len(positives)),
        "false_positive_rate": _ratio(sum(v[1] is not None for v in negatives), len(negatives)),
        "precision": _ratio(len(found), len(flagged)),
        "onset_error": sum(errors) / len(errors) if errors else None,
        "kind_agreement": _ratio(sum(v[1] == v[0].kind for v in found), len(found))}
    misses = [v[0].id for v in positives if v[1] is None]
    false_alarms = [v[0].id for v in negatives if v[1] is not None]
    return {"rows": rows, "overall": overall, "misses": misses, "false_alarms": false_alarms}


def _f(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_table(result: dict) -> list[str]:
    """The per-kind rows and the overall line as a Markdown table."""
    lines = ["| kind (labelled) | texts | recall | onset error (chars) | found as kind | precision |",
             "|---|---|---|---|---|---|"]
    for label, r in result["rows"].items():
        lines.append(f"| {label} | {r['labelled']} | {_f(r['recall'])} | {_f(r['onset_error'], 1)} "
                     f"| {_f(r['predicted'])} | {_f(r['precision'])} |")
    o = result["overall"]
    lines.append(f"| **all loops** | {o['positives']} | **{_f(o['recall'])}** | "
                 f"{_f(o['onset_error'], 1)} | – | {_f(o['precision'])} |")
    lines.append(f"| **no loop** | {o['negatives']} | false-positive rate "
                 f"**{_f(o['false_positive_rate'])}** | | | |")
    lines.append(f"\nkind agreement on the loops found: {_f(o['kind_agreement'])}")
    return lines
