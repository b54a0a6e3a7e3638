"""Repetition and diversity metrics over token sequences (pure functions, no model).

Inputs
------
A *sequence* is a list or tuple of hashable tokens (ids or strings), anything with
``.tolist()`` (a 1-D tensor or array), or a ``str``, which is split on whitespace as SimCTG
does. A *corpus* is a list of sequences. Where a corpus is expected:

- a ``str`` or a flat list of ids is a corpus of one sequence;
- a flat list of strings is a list of **texts** (SimCTG's ``text_list``), each split on
  whitespace. To pass one sequence of string tokens, wrap it: ``rep_n([tokens], 2)``.

Scales differ on purpose, to match the papers' tables: ``rep_n`` is a percentage (Su et al.),
``seq_rep_n``, ``distinct_n`` and ``rep_sen`` are fractions in [0, 1] (Welleck et al., Li et
al., Xu et al.), ``repetition_percent`` is a percentage (Holtzman et al.).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from numbers import Integral

from ..errors import DecodingLabError, check_count, out_of_range

Token = Hashable
HOLTZMAN_MAX_PHRASE_LEN = 90
"""Longest phrase ``degen/metrics/repetition.py`` looks for (``max_n = 90``)."""

# Sentence ends for rep-sen: runs of . ! ? or newlines ("..." is one end, not three).
_SENTENCE_END = re.compile(r"[.!?\n]+")


# --------------------------------------------------------------------------- inputs


def as_tokens(sequence: object) -> list[Token]:
    """One token sequence as a list: a ``str`` is split on whitespace, a tensor ``.tolist()``-ed."""
    if isinstance(sequence, str):
        return sequence.split()
    if hasattr(sequence, "tolist") and not isinstance(sequence, (list, tuple)):
        sequence = sequence.tolist()
    if isinstance(sequence, (list, tuple)):
        return list(sequence)
    raise DecodingLabError(
        f"tokens of type {type(sequence).__name__} are not supported; "
        "allowed: a str, or a list/tuple/1-D tensor of tokens"
    )


def as_corpus(corpus: object) -> list[list[Token]]:
    """A corpus as a list of token lists, following the conventions in the module docstring."""
    if isinstance(corpus, str):
        return [corpus.split()]
    if hasattr(corpus, "tolist") and not isinstance(corpus, (list, tuple)):
        corpus = corpus.tolist()  # a 1-D tensor is one sequence, a 2-D one a batch
    if not isinstance(corpus, (list, tuple)):
        raise DecodingLabError(
            f"corpus of type {type(corpus).__name__} is not supported; "
            "allowed: a str, a list of texts, a list of ids or a list of token sequences"
        )
    if len(corpus) == 0:
        raise DecodingLabError("corpus=[] is empty; allowed: at least one sequence")
    if all(isinstance(item, str) for item in corpus):
        return [text.split() for text in corpus]
    if all(isinstance(item, Integral) for item in corpus):
        return [list(corpus)]
    return [as_tokens(item) for item in corpus]


def _check_n(n: object) -> int:
    return check_count("n", n, 1)


def _count_ngrams(corpus: list[list[Token]], n: int) -> tuple[int, int]:
    """(Σ per-sequence distinct n-grams, Σ n-grams); raises if the corpus has no n-gram."""
    unique = total = 0
    for tokens in corpus:
        grams = ngrams(tokens, n)
        unique += len(set(grams))
        total += len(grams)
    if total == 0:
        longest = max(len(tokens) for tokens in corpus)
        allowed = f"1 <= n <= {longest} (the longest sequence has {longest} tokens)"
        raise out_of_range("n", n, allowed)
    return unique, total


# --------------------------------------------------------------------------- n-gram metrics


def ngrams(tokens: object, n: int) -> list[tuple[Token, ...]]:
    """All ``len(tokens) - n + 1`` contiguous n-grams, as tuples, in order.

    A sequence shorter than ``n`` has no n-grams and gives ``[]`` (corpus metrics rely on this,
    as SimCTG's does); ``n < 1`` is an error. Unlike SimCTG's ``eval_text`` (``while end_idx <
    len``), the final n-gram is included.
    """
    n = _check_n(n)
    tokens = as_tokens(tokens)
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def rep_n(corpus: object, n: int) -> float:
    """rep-n of Su et al. 2022 (SimCTG, NeurIPS), in percent.

    ``rep-n = 100 · (1 − Σ_texts |set(ngrams_n)| / Σ_texts |ngrams_n|)``: micro-averaged over
    the corpus, distinct n-grams counted **per text** then summed (``yxuansu/SimCTG``
    ``simctg/evaluation.py::measure_repetition_and_diversity``). Two deliberate differences
    from that code: the final n-gram of each text is counted (SimCTG's loop drops it), and the
    result is not rounded to two decimals.

    Texts shorter than ``n`` contribute no n-grams; a corpus with no n-gram at all is an error.
    """
    unique, total = _count_ngrams(as_corpus(corpus), _check_n(n))
    return 100.0 * (1.0 - unique / total)


def diversity(corpus: object, orders: Sequence[int] = (2, 3, 4)) -> float:
    """diversity of Su et al. 2022: ``Π_{n=2..4} (1 − rep-n / 100)``, in [0, 1].

    Uses the unrounded ``rep_n`` values (SimCTG multiplies the values rounded to 0.01 %).
    """
    corpus = as_corpus(corpus)
    product = 1.0
    for n in orders:
        product *= 1.0 - rep_n(corpus, n) / 100.0
    return product


def seq_rep_n(tokens: object, n: int) -> float:
    """seq-rep-n of one continuation (Welleck et al. 2020, "Neural Text Generation with
    Unlikelihood Training"): ``1 − |set(ngrams_n(x))| / |ngrams_n(x)|``, a fraction in [0, 1).

    Undefined without n-grams, so an empty sequence or one shorter than ``n`` is an error that
    names ``n`` and the sequence length.
    """
    n = _check_n(n)
    tokens = as_tokens(tokens)
    if not tokens:
        raise DecodingLabError("tokens is empty; allowed: a sequence of at least n tokens")
    if len(tokens) < n:
        allowed = f"1 <= n <= {len(tokens)} (the sequence has {len(tokens)} tokens)"
        raise out_of_range("n", n, allowed)
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams)


def mean_seq_rep_n(corpus: object, n: int) -> float:
    """seq-rep-n averaged over continuations (macro mean), as Welleck et al. report it
    (``facebookresearch/unlikelihood_training`` ``custom/metrics.py``, ``pct_repeat_%dgrams``).

    Every continuation must have at least ``n`` tokens; the error names the first that does not.
    """
    n = _check_n(n)
    corpus = as_corpus(corpus)
    for index, tokens in enumerate(corpus):
        if len(tokens) < n:
            raise out_of_range(
                "n", n, f"1 <= n <= {len(tokens)} (continuation {index} has {len(tokens)} tokens)"
            )
    return sum(seq_rep_n(tokens, n) for tokens in corpus) / len(corpus)


def distinct_n(corpus: object, n: int) -> float:
    """distinct-n (Li et al. 2016, NAACL): distinct n-grams over **all** outputs / total n-grams.

    The numerator is one set over the whole corpus (unlike rep-n, which sums per-text sets). The
    denominator is the total number of n-grams, the common variant. Li et al. describe scaling
    by the total number of generated tokens, and ``ari-holtzman/degen`` ``metrics/distinct_n.py``
    counts only n-grams seen exactly once; neither is what this returns.
    """
    n = _check_n(n)
    corpus = as_corpus(corpus)
    _count_ngrams(corpus, n)  # raises if there is no n-gram to divide by
    grams = [gram for tokens in corpus for gram in ngrams(tokens, n)]
    return len(set(grams)) / len(grams)


# --------------------------------------------------------------------------- sentences


def sentences(text: str) -> list[str]:
    """Split on sentence ends (runs of ``.``, ``!``, ``?``, newlines); strip; drop empty pieces."""
    if not isinstance(text, str):
        raise DecodingLabError(
            f"text of type {type(text).__name__} is not supported; allowed: a str"
        )
    return [piece.strip() for piece in _SENTENCE_END.split(text) if piece.strip()]


def rep_sen(text: str) -> float:
    """Repeated-sentence fraction of one continuation: ``(#sentences − #unique) / #sentences``.

    Xu et al. 2022 ("Learning to Break the Loop", NeurIPS; ``Jxu-Thu/DITTO``
    ``report_metrics.py::sentence_repetition_count``). Sentences are compared exactly after
    stripping whitespace. DITTO splits on "." only and drops the text before the first ".";
    here every piece counts and ``!``, ``?`` and newlines also end a sentence. A text with no
    sentence is an error.
    """
    pieces = sentences(text)
    if not pieces:
        raise DecodingLabError(
            f"text={text[:40]!r} has no sentence; allowed: a text with at least one"
        )
    return (len(pieces) - len(set(pieces))) / len(pieces)


def mean_rep_sen(texts: Sequence[str]) -> float:
    """rep-sen averaged over continuations (macro mean), as Xu et al. report it."""
    if isinstance(texts, str) or len(texts) == 0:
        raise DecodingLabError(
            f"texts of type {type(texts).__name__} (length {len(texts)}) is not supported; "
            "allowed: a non-empty list of texts"
        )
    return sum(rep_sen(text) for text in texts) / len(texts)


# --------------------------------------------------------------------------- Holtzman repetition


def _tail_copies(tokens: list[Token], phrase_len: int) -> int:
    """How many consecutive copies of the last ``phrase_len`` tokens end the sequence."""
    end = len(tokens)
    phrase = tokens[end - phrase_len :]
    copies = 1
    while (copies + 1) * phrase_len <= end and tokens[
        end - (copies + 1) * phrase_len : end - copies * phrase_len
    ] == phrase:
        copies += 1
    return copies


def _strip_end(tokens: object, end_token: Token | None) -> list[Token]:
    tokens = as_tokens(tokens)
    if end_token is not None and tokens and tokens[-1] == end_token:
        tokens = tokens[:-1]
    if not tokens:
        raise DecodingLabError("tokens is empty; allowed: at least one token (after end_token)")
    return tokens


def repeated_tail_phrase(
    tokens: object, max_phrase_len: int = HOLTZMAN_MAX_PHRASE_LEN, end_token: Token | None = None
) -> tuple[int, int]:
    """``(phrase_len, copies)`` of the phrase that ends the sequence with the most consecutive
    copies, over phrase lengths 1..``max_phrase_len``; ties go to the shortest phrase.

    This is the search of ``ari-holtzman/degen`` ``metrics/repetition.py`` (``max(range(max_n),
    key=...)``). A trailing ``end_token`` is dropped first, as degen drops GPT-2's end token.
    """
    check_count("max_phrase_len", max_phrase_len, 1)
    tokens = _strip_end(tokens, end_token)
    best_len, best_copies = 1, 0
    for phrase_len in range(1, min(max_phrase_len, len(tokens)) + 1):
        copies = _tail_copies(tokens, phrase_len)
        if copies > best_copies:
            best_len, best_copies = phrase_len, copies
    return best_len, best_copies


def holtzman_repetition(
    tokens: object, max_phrase_len: int = HOLTZMAN_MAX_PHRASE_LEN, end_token: Token | None = None
) -> bool:
    """Whether a generation ends in a repetition loop (Holtzman et al. 2020, "The Curious Case
    of Neural Text Degeneration", ICLR; ``ari-holtzman/degen`` ``metrics/repetition.py``).

    Take the tail phrase with the most consecutive copies (``repeated_tail_phrase``). The
    generation repeats if that phrase has length ℓ ≥ 3 and at least 2 copies, or ℓ < 3 and
    more than 50 copies. As upstream, only the phrase with the most copies is judged: 50 × "a" is
    not flagged even though "a a a" also ends it 16 times.
    """
    phrase_len, copies = repeated_tail_phrase(tokens, max_phrase_len, end_token)
    return copies > 1 and (phrase_len >= 3 or copies > 50)


def repetition_percent(
    corpus: object, max_phrase_len: int = HOLTZMAN_MAX_PHRASE_LEN, end_token: Token | None = None
) -> float:
    """Percentage of generations flagged by ``holtzman_repetition`` (Holtzman et al. Table 1)."""
    corpus = as_corpus(corpus)
    flagged = sum(holtzman_repetition(tokens, max_phrase_len, end_token) for tokens in corpus)
    return 100.0 * flagged / len(corpus)
