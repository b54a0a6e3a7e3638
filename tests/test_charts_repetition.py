"""Pure builders of the Compare and Repetition pages, on hand-built loops, rows and curves."""

from __future__ import annotations

import re

import pytest

from app import charts_repetition as cr
from decoding.diagnostics import (
    LoopProbabilityTrace,
    ReinforcementCurve,
    detect_loop,
)
from decoding.diagnostics.summary import loop_spans, model_pieces, whitespace_pieces

# "x a b c a b c a b": period 3 from token 1, two complete cycles and a partial of 2.
PIECES = ["x ", "a ", "b ", "c ", "a ", "b ", "c ", "a ", "b"]


def loop_of(pieces):
    return detect_loop([p.strip() for p in pieces])


# ---------------------------------------------------------------------- loop_html

def test_loop_html_marks_each_cycle_and_the_partial_one():
    loop = loop_of(PIECES)
    assert (loop.period, loop.onset, loop.cycles, loop.partial) == (3, 1, 2, 2)
    out = cr.loop_html(PIECES, loop)
    marks = re.findall(r'<mark class="(\w+)"(?: style="background:(#\w+)")?[^>]*>([^<]*)</mark>', out)
    assert marks == [("cycle", cr.CYCLE_COLOURS[0], "a b c "), ("cycle", cr.CYCLE_COLOURS[1], "a b c "),
                     ("partial", "", "a b")]
    assert "<div class=\"declab-loop\">x <mark" in out


def test_loop_html_without_loop_is_the_escaped_text():
    out = cr.loop_html(["<b>", "1 &", "\n2"], None)
    assert "<mark" not in out
    assert "&lt;b&gt;1 &amp;" in out
    assert '<span class="ws">↵</span><br>2' in out


def test_short_period_loops_are_one_mark():
    pieces = ["the ", "at ", "at ", "at ", "at "]
    spans = loop_spans(loop_of(pieces))
    assert spans == [(1, 5, False)]
    assert cr.loop_html(pieces, loop_of(pieces)).count("<mark") == 1


def test_loop_sentence():
    assert cr.loop_sentence(None).startswith("No loop")
    assert cr.loop_sentence(loop_of(PIECES)) == (
        "Loop: a 3-token phrase repeated from token 1 on (2 complete cycles + 2 tokens, 8 tokens "
        "in the loop).")


def test_whitespace_and_model_pieces_cover_the_text(tiny):
    words, pieces = whitespace_pieces("a  b\nc")
    assert words == ["a", "b", "c"] and pieces == ["a ", "b ", "c"]
    text = "The cat sat on the mat."
    ids, pieces = model_pieces(tiny.tokenizer, text)
    assert "".join(pieces) == text and len(ids) == len(pieces) > 1


# ---------------------------------------------------------------------- compare table

def row(label, n, loop=None, **metrics):
    return {"label": label, "n_tokens": n, "finish_reason": "length", "loop": loop,
            "mean_logprob": -0.5, **metrics}


def test_compare_frame_columns_and_values():
    rows = [row("greedy", 10, {"period": 3, "onset": 4}, **{"rep-2": 50.0, "rep-3": 40.0,
                                                            "rep-4": 30.0, "distinct-2": 0.5}),
            row("sample", 2, None, **{"rep-2": 0.0, "rep-3": None, "rep-4": None,
                                       "distinct-2": 1.0})]
    frame = cr.compare_frame(rows)
    assert list(frame.columns) == cr.COMPARE_COLUMNS
    assert list(frame["config"]) == ["greedy", "sample"]
    assert frame.loc[0, "loop period"] == 3 and frame.loc[0, "loop onset"] == 4
    assert frame["loop period"].isna().tolist() == [False, True]
    assert frame.loc[1, "rep-3 %"] is None or frame["rep-3 %"].isna()[1]
    chart = cr.rep_chart(frame).to_dict()
    data = next(iter(chart["datasets"].values()))
    assert [(d["config"], d["share"]) for d in data] == [("greedy", 0.5), ("sample", 0.0)]


# ---------------------------------------------------------------------- loop probability

def trace() -> LoopProbabilityTrace:
    # period 2, onset 1: steps 3..6 continue the loop; step 4's token was outside the top-N.
    return LoopProbabilityTrace(period=2, onset=1, cycles=3, start=3, steps=[3, 4, 5, 6],
                                targets=[7, 8, 7, 8], probs_raw=[0.4, None, 0.8, 0.9],
                                probs_final=[0.5, None, 0.9, 1.0], cycle_index=[1, 1, 2, 2],
                                first_cycle_probs_raw=[0.1, 0.3])


def test_loop_probability_frame_skips_unrecorded_steps():
    frame = cr.loop_probability_frame(trace())
    assert list(frame["step"]) == [3, 3, 5, 5, 6, 6]
    assert list(frame["series"]) == ["raw", "after the chain"] * 3
    assert list(frame["p"]) == pytest.approx([0.4, 0.5, 0.8, 0.9, 0.9, 1.0])


def test_cycle_means_frame_starts_with_the_first_pass():
    frame = cr.cycle_means_frame(trace())
    assert list(frame["label"]) == ["first pass", "repeat 1", "repeat 2"]
    assert list(frame["p"]) == pytest.approx([0.2, 0.4, 0.85])


def test_loop_probability_chart_has_cycle_rules_and_percent_axis():
    chart = cr.loop_probability_chart(cr.loop_probability_frame(trace()), onset=1, period=2).to_dict()
    rules = next(layer for layer in chart["layer"] if layer["mark"]["type"] == "rule")
    rule_data = chart["datasets"][rules["data"]["name"]]
    assert [d["step"] for d in rule_data] == [3, 5]
    lines = chart["layer"][1]["layer"][0]
    assert lines["encoding"]["y"]["axis"]["format"] == "%"


# ---------------------------------------------------------------------- self-reinforcement

def test_reinforcement_frame_long_format():
    curve = ReinforcementCurve(sentence="s", prefix="", n_tokens=2, tp=[0.1, 0.5, 0.9],
                               ip=[0.0, 1.0, 1.0], wr=[0.0, 0.5, 1.0])
    frame = cr.reinforcement_frame(curve)
    assert len(frame) == 9
    tp = frame[frame["measure"] == "TP"]
    assert list(tp["copy"]) == [0, 1, 2] and list(tp["value"]) == [0.1, 0.5, 0.9]
    chart = cr.reinforcement_chart(frame).to_dict()
    colours = chart["layer"][0]["encoding"]["color"]["scale"]
    assert colours["domain"] == ["TP", "IP", "WR"]
    assert colours["range"] == [cr.SERIES_COLOURS[m] for m in ("TP", "IP", "WR")]
