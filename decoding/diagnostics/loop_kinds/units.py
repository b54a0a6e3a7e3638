"""The text as the passes read it: whitespace pieces with their offsets, units (sentences,
clauses, lines), words, and the longest common subsequence that aligns cycles to a frame."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ...errors import DecodingLabError

# Scripts written without spaces between words: each character is a word of its own, as BERT's
# BasicTokenizer does for CJK ideographs (``_tokenize_chinese_chars``, Devlin et al. 2019); we add
# hiragana, katakana (full and half width), since Japanese has no spaces either. Without it a
# run such as "らららら" would be one word, and a text-only loop in it invisible.
SPACELESS = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
WORD = re.compile(rf"[{SPACELESS}]|[^\W{SPACELESS}]+|[^\w\s]+")
HAS_WORD = re.compile(r"\w")
_PIECE = re.compile(rf"[{SPACELESS}]\s*|[^\s{SPACELESS}]+\s*")


def text_pieces(text: str) -> list[str]:
    """Whitespace tokens with their exact surroundings: ``"".join(pieces) == text``; each piece
    is a word and the whitespace after it (leading whitespace goes with the first word). A
    character of a script written without spaces (``SPACELESS``) is a piece of its own."""
    if not isinstance(text, str):
        raise DecodingLabError(f"text of type {type(text).__name__} is not supported; allowed: a str")
    pieces = [m.group(0) for m in _PIECE.finditer(text)]
    if pieces:
        lead = len(text) - len(text.lstrip())
        pieces[0] = text[:lead] + pieces[0]
    return pieces


_TRAILING_PUNCT = re.compile(r"(?<=\w)[.,;:!?]+$")


def loose_text(piece: str) -> str:
    """A token's text as the token pass compares it: without surrounding whitespace and without
    punctuation that ends a word ("Hotel." -> "Hotel"; a lone "." stays)."""
    return _TRAILING_PUNCT.sub("", piece.strip())


def char_offsets(pieces: Sequence[str]) -> np.ndarray:
    """Start character of every piece, and the text length at the end (``len(pieces) + 1``)."""
    out = np.zeros(len(pieces) + 1, dtype=np.int64)
    for i, piece in enumerate(pieces):
        if not isinstance(piece, str):
            raise DecodingLabError(f"pieces[{i}] of type {type(piece).__name__} is not supported; "
                                   "allowed: a str")
        out[i + 1] = out[i] + len(piece)
    return out


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


def lcs_table(a: Sequence, b: Sequence) -> np.ndarray:
    table = np.zeros((len(a) + 1, len(b) + 1), dtype=np.int32)
    for i, x in enumerate(a):
        row, nxt = table[i], table[i + 1]
        for j, y in enumerate(b):
            nxt[j + 1] = row[j] + 1 if x == y else max(row[j + 1], nxt[j])
    return table


def lcs(a: Sequence, b: Sequence) -> list:
    """A longest common subsequence of two word lists (the classic dynamic programme)."""
    table = lcs_table(a, b)
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


def frame_gaps(words: Sequence, frame: Sequence) -> list[list]:
    """``words`` aligned to ``frame`` (a subsequence of it): the words in each of the
    ``len(frame) + 1`` gaps around the frame words."""
    gaps: list[list] = [[] for _ in range(len(frame) + 1)]
    table = lcs_table(words, frame)
    i, j = len(words), len(frame)
    while i:
        if j and words[i - 1] == frame[j - 1] and table[i, j] == table[i - 1, j - 1] + 1:
            i, j = i - 1, j - 1
        else:
            gaps[j].insert(0, words[i - 1])
            i -= 1
    return gaps


def count_words(words: Sequence[str]) -> int:
    return sum(bool(HAS_WORD.search(w)) for w in words)


def words_in(text: str) -> int:
    return len(WORD.findall(text))
