"""Repetition metrics and the loop detector on hand-built sequences with hand-computed answers."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from decoding.diagnostics import (
    LoopReport,
    detect_loop,
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
    seq_rep_n,
    spans_to_char_spans,
    token_char_offsets,
)
from decoding.errors import DecodingLabError

ABC3 = "a b c a b c a b c"


# --------------------------------------------------------------------------- n-grams


def test_ngrams_includes_the_final_ngram_and_handles_short_input():
    assert ngrams([1, 2, 3, 4], 2) == [(1, 2), (2, 3), (3, 4)]
    assert ngrams("x y", 1) == [("x",), ("y",)]
    assert ngrams([1, 2], 3) == []


@pytest.mark.parametrize("bad_n", [0, -1, 1.5, True])
def test_ngrams_rejects_bad_n(bad_n):
    with pytest.raises(DecodingLabError, match=r"n=.*allowed: an integer n >= 1"):
        ngrams([1, 2, 3], bad_n)


# --------------------------------------------------------------------------- rep-n, diversity


def test_rep_n_counts_the_final_ngram():
    # Bigrams of "a b c a b c a b c": ab bc ca ab bc ca ab bc → 8 in all, 3 distinct.
    # rep-2 = 100 · (1 − 3/8) = 62.5. SimCTG's loop would drop the last "bc": 100 · (1 − 3/7).
    assert rep_n(ABC3, 2) == pytest.approx(62.5)


def test_rep_n_is_micro_averaged_with_per_text_distinct_counts():
    # Text 1 "a b a b a b": 5 bigrams, distinct {ab, ba} = 2. Text 2 "a b": 1 bigram, 1 distinct.
    # rep-2 = 100 · (1 − (2 + 1) / (5 + 1)) = 50.
    assert rep_n(["a b a b a b", "a b"], 2) == pytest.approx(50.0)


def test_rep_n_input_conventions():
    assert rep_n([1, 1, 1, 1], 1) == pytest.approx(75.0)  # a list of ids is one sequence
    assert rep_n([["a", "a", "a", "a"]], 1) == pytest.approx(75.0)  # wrapped string tokens
    # A flat list of strings is a list of texts: 1 + 1 distinct over 2 + 2 tokens.
    assert rep_n(["a a", "a a"], 1) == pytest.approx(50.0)
    # Texts shorter than n add nothing (SimCTG does the same).
    assert rep_n([[1, 2, 1, 2], [3]], 2) == pytest.approx(100 * (1 - 2 / 3))


def test_rep_n_errors_name_n_and_the_longest_sequence():
    with pytest.raises(DecodingLabError, match=r"n=5 .*1 <= n <= 3"):
        rep_n(["a b c", "d e"], 5)
    with pytest.raises(DecodingLabError, match="corpus"):
        rep_n([], 2)


def test_diversity_is_the_product_over_n_2_to_4():
    # "a b c a b c a b c": distinct/total = 3/8 (bigrams), 3/7 (trigrams), 3/6 (4-grams).
    assert diversity(ABC3) == pytest.approx((3 / 8) * (3 / 7) * (3 / 6))
    assert diversity("a b c d e f") == pytest.approx(1.0)


# --------------------------------------------------------------------------- seq-rep-n


def test_seq_rep_n_hand_values():
    assert seq_rep_n(ABC3, 1) == pytest.approx(1 - 3 / 9)
    assert seq_rep_n(ABC3, 4) == pytest.approx(1 - 3 / 6)
    assert seq_rep_n([7, 8, 9], 3) == 0.0


def test_seq_rep_n_errors():
    with pytest.raises(DecodingLabError, match=r"n=3 .*2 tokens"):
        seq_rep_n("a b", 3)
    with pytest.raises(DecodingLabError, match="tokens is empty"):
        seq_rep_n([], 1)
    with pytest.raises(DecodingLabError, match="n=0"):
        seq_rep_n([1, 2], 0)


def test_mean_seq_rep_n_is_a_macro_mean():
    # Text 1: 1 − 2/5 = 0.6, text 2: 0 → mean 0.3 (the micro rep-2 of the same corpus is 50 %).
    assert mean_seq_rep_n(["a b a b a b", "a b"], 2) == pytest.approx(0.3)
    with pytest.raises(DecodingLabError, match=r"n=2 .*continuation 1 has 1 tokens"):
        mean_seq_rep_n([[1, 2], [3]], 2)


# --------------------------------------------------------------------------- distinct-n


def test_distinct_n_uses_one_set_over_the_corpus_and_total_ngrams():
    corpus = ["a b a b a b", "a b"]
    assert distinct_n(corpus, 2) == pytest.approx(2 / 6)  # {ab, ba} over 5 + 1 bigrams
    assert distinct_n(corpus, 1) == pytest.approx(2 / 8)
    with pytest.raises(DecodingLabError, match="n=9"):
        distinct_n(corpus, 9)


# --------------------------------------------------------------------------- rep-sen


def test_rep_sen_splits_on_sentence_ends():
    assert rep_sen("I like it. I like it. You do! I like it?") == pytest.approx(2 / 4)
    assert rep_sen("a\nb\na") == pytest.approx(1 / 3)
    assert rep_sen("Hi... Hi.") == pytest.approx(1 / 2)


def test_rep_sen_keeps_the_first_sentence():
    # DITTO drops "First" and would report 1/2; every sentence counts here.
    assert rep_sen("First. Second. Second.") == pytest.approx(1 / 3)


def test_rep_sen_errors_and_mean():
    with pytest.raises(DecodingLabError, match="no sentence"):
        rep_sen("  ... \n ")
    assert mean_rep_sen(["a. a.", "b. c."]) == pytest.approx(0.25)
    with pytest.raises(DecodingLabError, match="texts"):
        mean_rep_sen([])


# --------------------------------------------------------------------------- Holtzman repetition


def test_holtzman_flags_a_long_phrase_repeated_twice_at_the_end():
    assert holtzman_repetition("x y a b c a b c") is True
    assert holtzman_repetition("the cat sat on the mat") is False
    assert holtzman_repetition("a b c a b c x") is False  # the repeat must end the text


def test_holtzman_short_phrases_need_more_than_50_copies():
    assert holtzman_repetition(["a"] * 51) is True
    assert holtzman_repetition(["a"] * 50) is False  # "a a a" also ends it 16 times: not judged
    assert repeated_tail_phrase(["a"] * 50) == (1, 50)
    assert holtzman_repetition(["a", "b"] * 26) is False
    assert repeated_tail_phrase(["a", "b"] * 26) == (2, 26)
    assert holtzman_repetition(["a", "b"] * 51) is True


def test_holtzman_end_token_and_max_phrase_len():
    assert holtzman_repetition([5, 1, 2, 3, 1, 2, 3, 0], end_token=0) is True
    assert holtzman_repetition([5, 1, 2, 3, 1, 2, 3, 0]) is False
    assert holtzman_repetition("a b c d a b c d", max_phrase_len=3) is False
    with pytest.raises(DecodingLabError, match="tokens is empty"):
        holtzman_repetition([])
    with pytest.raises(DecodingLabError, match="max_phrase_len=0"):
        holtzman_repetition([1], max_phrase_len=0)


def test_repetition_percent():
    corpus = [[1, 2, 3, 1, 2, 3], [1, 2, 3, 4], [4, 4], [7]]
    assert repetition_percent(corpus) == pytest.approx(25.0)


# --------------------------------------------------------------------------- loops


def test_detect_loop_whole_sequence():
    report = detect_loop(ABC3)
    assert report == LoopReport(
        period=3, cycles=3, onset=0, spans=[(0, 3), (3, 6), (6, 9)], is_loop=True, partial=0
    )


def test_detect_loop_onset_after_a_prefix():
    report = detect_loop("x y a b c a b c a b c")
    assert (report.period, report.cycles, report.onset) == (3, 3, 2)
    assert report.spans == [(2, 5), (5, 8), (8, 11)]


def test_detect_loop_partial_last_cycle():
    report = detect_loop("a b c a b c a b")
    assert (report.period, report.cycles, report.onset, report.partial) == (3, 2, 0, 2)
    assert report.spans == [(0, 3), (3, 6)]
    assert report.tail_span == (0, 8)


def test_detect_loop_single_token_and_smallest_period_on_ties():
    report = detect_loop([4, 4, 4, 4])  # periods 1 and 2 both cover 4 tokens
    assert (report.period, report.cycles, report.onset) == (1, 4, 0)


def test_detect_loop_prefers_coverage_over_cycle_count():
    # Period 1 covers "b b b" (3 cycles); period 4 covers all 8 tokens (2 cycles).
    report = detect_loop("a b b b a b b b")
    assert (report.period, report.cycles, report.onset) == (4, 2, 0)


def test_detect_loop_none_and_thresholds():
    assert detect_loop("a b c d e") is None
    assert detect_loop([]) is None
    assert detect_loop([1]) is None
    assert detect_loop("a b a b a b", max_period=1) is None
    assert detect_loop("a a a a a a", min_period=2).period == 2
    report = detect_loop("x a b a b", min_cycles=3)
    assert (report.period, report.cycles, report.is_loop) == (2, 2, False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_cycles": 1}, "min_cycles=1"),
        ({"min_period": 0}, "min_period=0"),
        ({"max_period": 0}, "max_period=0"),
        ({"min_period": 3, "max_period": 2}, r"max_period=2 .*max_period >= 3"),
    ],
)
def test_detect_loop_rejects_bad_arguments(kwargs, message):
    with pytest.raises(DecodingLabError, match=message):
        detect_loop(ABC3, **kwargs)


def test_detect_loop_on_a_long_sequence():
    rng = random.Random(0)
    prefix = [rng.randrange(1000, 2000) for _ in range(1000)]  # disjoint from the loop tokens
    phrase = [rng.randrange(0, 1000) for _ in range(37)]
    tokens = prefix + phrase * 54 + phrase[:5]
    report = detect_loop(tokens)
    assert (report.period, report.cycles, report.onset, report.partial) == (37, 54, 1000, 5)
    assert report.spans[-1] == (1000 + 53 * 37, 1000 + 54 * 37)


def test_loop_report_round_trips_through_a_dict():
    report = detect_loop("x a b a b a")
    assert report.to_dict() == {
        "period": 2,
        "cycles": 2,
        "onset": 1,
        "spans": [[1, 3], [3, 5]],
        "is_loop": True,
        "partial": 1,
    }
    assert LoopReport.from_dict(report.to_dict()) == report


def test_char_spans_highlight_each_cycle_in_the_text():
    token_texts = ["Well", ",", " I", " am", ".", " I", " am", ".", " I"]
    offsets = token_char_offsets(token_texts)
    assert offsets[:3] == [(0, 4), (4, 5), (5, 7)]
    text = "".join(token_texts)
    report = detect_loop(token_texts)
    char_spans = spans_to_char_spans(report.spans, offsets)
    assert [text[start:end] for start, end in char_spans] == [" I am.", " I am."]
    assert spans_to_char_spans([report.tail_span], offsets) == [(5, len(text))]


def test_char_span_errors():
    offsets = token_char_offsets(["a", "b", "c"])
    with pytest.raises(DecodingLabError, match=r"\(2, 2\).*0 <= start < end <= 3"):
        spans_to_char_spans([(2, 2)], offsets)
    with pytest.raises(DecodingLabError, match=r"\(0, 4\)"):
        spans_to_char_spans([(0, 4)], offsets)
    with pytest.raises(DecodingLabError, match=r"token_texts\[1\]"):
        token_char_offsets(["a", 3])


def test_diagnostics_imports_no_ui_or_training_stack():
    code = (
        "import sys, decoding.diagnostics\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('streamlit', 'trl', 'alignment', 'experiments', 'app')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
