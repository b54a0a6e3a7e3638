"""The lab's pure chart/data builders on hand-built traces (no model, no Streamlit)."""

from __future__ import annotations

import re

import pytest

from app import charts
from decoding.trace import Candidate, Generation, SequenceResult, StepTrace

A, B, C, D = 10, 11, 12, 13

# A repetition penalty that reorders the tokens (C overtakes B), then top_p = 0.7:
# input to top_p, most likely first: A .60, C .25, B .10, D .05 -> cumulative .60, .85 -> the
# nucleus is {A, C}, renormalised to .60/.85 and .25/.85.
STAGES = ["raw", "repetition_penalty", "top_p"]
NUCLEUS = 0.85


def step_with_cut(chosen: int = C) -> StepTrace:
    candidates = [
        Candidate(A, "A", 2.0, [0.50, 0.60, 0.60 / NUCLEUS], [True, True, True]),
        Candidate(B, "B", 1.5, [0.30, 0.10, 0.0], [True, True, False]),
        Candidate(C, "C", 1.0, [0.15, 0.25, 0.25 / NUCLEUS], [True, True, True]),
        Candidate(D, "D", 0.1, [0.05, 0.05, 0.0], [True, True, False]),
    ]
    return StepTrace(step=0, token_id=chosen, token_text="C", prob_raw=0.15,
                     prob_final=0.25 / NUCLEUS, logprob_raw=-1.897, rank_raw=3, rank_final=2,
                     entropy_raw=1.142, entropy_final=0.606, kept_count=2, stages=STAGES,
                     candidates=candidates, raw_logsumexp=3.0)


def generation_of(steps: list[StepTrace]) -> Generation:
    text = "".join(s.token_text for s in steps)
    return Generation(model="hand-built", prompt="p", chat=False, prompt_ids=[1],
                      config={"strategy": "sample", "top_p": 0.7}, chain=STAGES,
                      sequences=[SequenceResult(token_ids=[s.token_id for s in steps], text=text,
                                                finish_reason="length", steps=steps)])


def token_step(index: int, text: str, p: float, alternatives: list[tuple[str, float]]) -> StepTrace:
    chosen = Candidate(100 + index, text, 0.0, [p], [True])
    others = [Candidate(200 + i, t, 0.0, [q], [True]) for i, (t, q) in enumerate(alternatives)]
    return StepTrace(step=index, token_id=100 + index, token_text=text, prob_raw=p, prob_final=p,
                     logprob_raw=0.0, rank_raw=1, rank_final=1, entropy_raw=1.0,
                     entropy_final=1.0, kept_count=5, stages=["raw"],
                     candidates=[chosen] + others, raw_logsumexp=0.0)


# ---------------------------------------------------------------------- stage_frame

def test_stage_frame_rows_in_chain_then_raw_order():
    frame = charts.stage_frame(step_with_cut())
    assert list(frame.columns) == charts.STAGE_COLUMNS
    assert len(frame) == 12
    assert list(frame["stage"]) == [s for s in STAGES for _ in range(4)]
    assert list(frame["stage_index"]) == [j for j in range(3) for _ in range(4)]
    assert list(frame["token"]) == ["A", "B", "C", "D"] * 3
    assert list(frame["token_id"]) == [A, B, C, D] * 3
    assert list(frame["chosen"]) == [False, False, True, False] * 3


def test_stage_frame_probs_kept_and_ghost_bars():
    top_p = charts.stage_frame(step_with_cut()).query("stage == 'top_p'")
    assert list(top_p["prob"]) == pytest.approx([0.60 / NUCLEUS, 0.0, 0.25 / NUCLEUS, 0.0])
    assert list(top_p["prob_in"]) == pytest.approx([0.60, 0.10, 0.25, 0.05])
    assert list(top_p["kept"]) == [True, False, True, False]
    assert list(top_p["removed_here"]) == [False, True, False, True]
    # Removed tokens are drawn at the probability they had entering the cut.
    assert list(top_p["shown"]) == pytest.approx([0.60 / NUCLEUS, 0.10, 0.25 / NUCLEUS, 0.05])
    assert list(top_p["status"]) == ["kept", "removed", "chosen", "removed"]


def test_stage_frame_cumulative_probs_follow_each_stage_order():
    frame = charts.stage_frame(step_with_cut())
    by_stage = {s: frame[frame["stage"] == s] for s in STAGES}
    assert list(by_stage["raw"]["cum_prob"]) == pytest.approx([0.50, 0.80, 0.95, 1.00])
    assert list(by_stage["raw"]["cum_prob_in"]) == pytest.approx([0.50, 0.80, 0.95, 1.00])
    # After the penalty C (.25) ranks before B (.10): A .60, C .85, B .95, D 1.0.
    assert list(by_stage["repetition_penalty"]["cum_prob"]) == pytest.approx([0.60, 0.95, 0.85, 1.00])
    assert list(by_stage["repetition_penalty"]["cum_prob_in"]) == pytest.approx([0.50, 0.80, 0.95, 1.00])
    assert list(by_stage["top_p"]["cum_prob_in"]) == pytest.approx([0.60, 0.95, 0.85, 1.00])
    assert list(by_stage["top_p"]["cum_prob"]) == pytest.approx([0.60 / NUCLEUS, 1.0, 1.0, 1.0])


def test_stage_frame_top_n_keeps_raw_top_final_top_and_chosen():
    frame = charts.stage_frame(step_with_cut(chosen=C), top_n=1)
    assert list(frame.query("stage == 'raw'")["token"]) == ["A", "C"]   # raw top-1, chosen
    frame = charts.stage_frame(step_with_cut(chosen=C), top_n=2)
    assert list(frame.query("stage == 'raw'")["token"]) == ["A", "B", "C"]  # D dropped


def test_top_p_crossing_matches_the_recorded_cut():
    frame = charts.stage_frame(step_with_cut())
    row = charts.top_p_crossing(frame, 0.7)
    assert row["token"] == "C"
    assert row["cum_prob_in"] == pytest.approx(0.85)
    # The nucleus up to the crossing is exactly the kept set the loop recorded.
    stage = frame[frame["stage"] == "top_p"]
    nucleus = set(stage[stage["cum_prob_in"] <= row["cum_prob_in"] + 1e-12]["token"])
    assert nucleus == set(stage[stage["kept"]]["token"]) == {"A", "C"}


def test_top_p_crossing_beyond_shown_tokens_is_none():
    frame = charts.stage_frame(step_with_cut(), top_n=1)   # A and C shown: mass .85
    assert charts.top_p_crossing(frame, 0.9) is None


def test_duplicate_token_texts_get_ids():
    step = step_with_cut()
    step.candidates[1].text = "A"
    frame = charts.stage_frame(step)
    assert list(frame.query("stage == 'raw'")["token"]) == [f"A #{A}", f"A #{B}", "C", "D"]


# ---------------------------------------------------------------------- stage_chart

def _marks(spec: dict) -> list[str]:
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"]
            for layer in spec["layer"]]


def test_stage_chart_panels_in_chain_order_with_top_p_rule():
    chart = charts.stage_chart(charts.stage_frame(step_with_cut()), top_p=0.7).to_dict()
    assert chart["facet"]["field"] == "panel" and chart["facet"]["sort"] == "ascending"
    assert _marks(chart["spec"]) == ["bar", "text", "point", "rule", "text"]
    assert chart["spec"]["layer"][0]["encoding"]["x"]["axis"]["format"] == "%"
    data = next(iter(chart["datasets"].values()))
    panels = sorted({r["panel"] for r in data})   # the facet's text order is the chain order
    assert [p.split("|")[1] for p in panels] == STAGES
    crossing = [(r["stage"], r["token"]) for r in data if r["crossing"]]
    assert crossing == [("top_p", "C")]


def test_stage_chart_without_top_p_marks_no_crossing():
    data = charts.stage_chart_data(charts.stage_frame(step_with_cut()))
    assert not data["crossing"].any() and set(data["cut_label"]) == {""}


def test_stage_chart_spec_is_the_same_for_every_step():
    """Only the data changes while scrubbing, so the drawn chart can keep its view."""
    frame = charts.stage_frame(step_with_cut())
    small = charts.stage_frame(step_with_cut(), top_n=1)
    assert charts.stage_chart_spec(4) == charts.stage_chart_spec(4)
    room = charts.stage_chart_data(frame)["x_room"].unique()
    assert list(room) == [pytest.approx(frame["shown"].max() * 1.3)]
    assert len(charts.stage_chart_data(small)) < len(charts.stage_chart_data(frame))


# ---------------------------------------------------------------------- token_html

def test_token_html_escapes_markup():
    gen = generation_of([token_step(0, "<script>alert(1)</script>", 0.5, [('"><b>x', 0.2)])])
    out = charts.token_html(gen)
    assert "<script>" not in out and "<b>" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "&quot;&gt;&lt;b&gt;x 20.0%" in out   # the alternative, escaped inside title="..."


def test_token_html_marks_whitespace_and_newlines():
    out = charts.token_html(generation_of([token_step(0, " the\n", 0.5, [])]))
    assert '<span class="ws">·</span>the<span class="ws">↵</span><br>' in out


def test_token_html_colours_follow_probability():
    gen = generation_of([token_step(0, "a", 0.05, []), token_step(1, "b", 0.9, []),
                         token_step(2, "c", 0.05, [])])
    colours = re.findall(r'style="background:(#[0-9a-f]{6})', charts.token_html(gen))
    assert len(colours) == 3
    assert colours[0] == colours[2] != colours[1]
    assert charts.prob_colour(0.0) == charts.VIRIDIS[0]
    assert charts.prob_colour(1.0) == charts.VIRIDIS[-1]
    # Dark (low-probability) backgrounds get white text, bright ones black.
    assert charts.text_colour(charts.prob_colour(0.0)) == "#ffffff"
    assert charts.text_colour(charts.prob_colour(1.0)) == "#000000"


def test_token_html_tooltip_lists_top_three_alternatives():
    step = token_step(0, "cat", 0.4, [("dog", 0.3), ("cow", 0.1), ("owl", 0.05), ("ant", 0.01)])
    out = charts.token_html(generation_of([step]))
    title = re.search(r'title="([^"]*)"', out).group(1)
    assert "p raw 40.0%" in title
    assert "dog 30.0%, cow 10.0%, owl 5.0%" in title
    assert "ant" not in title


def test_token_html_outlines_selected_step():
    gen = generation_of([token_step(0, "a", 0.5, []), token_step(1, "b", 0.5, [])])
    out = charts.token_html(gen, selected=1)
    assert out.count('class="tok sel"') == 1
    assert out.index('class="tok sel"') > out.index('class="tok"')


def test_step_metrics_values():
    metrics = dict(charts.step_metrics(step_with_cut()))
    assert metrics["chosen token"] == "C"
    assert metrics["rank raw → final"] == "3 → 2"
    assert metrics["entropy raw"] == "1.142 nats"
    assert metrics["kept set"] == "2 tokens"


def test_stage_titles_name_the_knob_values_and_label_the_panels():
    config = {"temperature": 0.7, "top_p": 0.9, "top_k": 0, "no_repeat_ngram_size": 3,
              "ignore_eos": True}
    titles = charts.stage_titles(config, ["raw", "no_repeat_ngram", "ignore_eos", "temperature", "top_p"])
    assert titles == {"no_repeat_ngram": "no_repeat_ngram = 3", "temperature": "temperature = 0.7",
                      "top_p": "top_p = 0.9"}
    data = charts.stage_chart_data(charts.stage_frame(step_with_cut()), titles={"top_p": "top_p = 0.7"})
    panels = data.drop_duplicates("stage").sort_values("stage_index")
    assert list(panels["stage_title"]) == [t if t != "top_p" else "top_p = 0.7" for t in STAGES]


def test_top_p_caption_names_the_crossing_token():
    frame = charts.stage_frame(step_with_cut())
    assert charts.top_p_caption(frame, 0.7).startswith("top_p = 0.7: the cumulative probability reaches p at C")
    assert "extends below them" in charts.top_p_caption(charts.stage_frame(step_with_cut(), top_n=1), 0.9)


def test_stage_chart_is_plain_json_and_schema_valid():
    import json

    data = charts.stage_chart_data(charts.stage_frame(step_with_cut()), top_p=0.7)
    records = data.to_dict("records")
    assert json.loads(json.dumps(records)) == records   # no numpy scalars
    assert [r["token"] for r in records if r["crossing"]] == ["C"]
    spec = charts.stage_chart_spec(3)
    assert json.loads(json.dumps(spec)) == spec and "data" not in spec
    charts.stage_chart(charts.stage_frame(step_with_cut()), top_p=0.7)   # validates the schema


def test_panels_sort_in_chain_order_when_the_names_do_not():
    """llama.cpp order puts temperature after top_p: the facet key must sort that way as text."""
    step = step_with_cut()
    step.stages = ["raw", "top_p", "temperature"]
    data = charts.stage_chart_data(charts.stage_frame(step), titles={"temperature": "temperature = 1.5"})
    assert [p.split("|")[1] for p in sorted(set(data["panel"]))] == ["raw", "top_p", "temperature = 1.5"]


# ---------------------------------------------------------------------- scrubbing a top-p run

def nucleus_step(index: int, probs: dict[str, float], top_p: float = 0.9) -> StepTrace:
    """A top-p step over ``probs`` (token -> raw probability, given in any order): the nucleus
    is the most likely tokens up to the first whose cumulative mass reaches ``top_p``."""
    ranked = sorted(probs, key=lambda t: -probs[t])
    nucleus, mass = [], 0.0
    for token in ranked:
        nucleus.append(token)
        mass += probs[token]
        if mass >= top_p:
            break
    candidates = [Candidate(ord(t[0]), t, 0.0, [p, p / mass if t in nucleus else 0.0],
                            [True, t in nucleus]) for t, p in probs.items()]
    chosen = candidates[0]
    return StepTrace(step=index, token_id=chosen.token_id, token_text=chosen.text,
                     prob_raw=chosen.probs[0], prob_final=chosen.probs[1], logprob_raw=0.0,
                     rank_raw=1, rank_final=1, entropy_raw=1.0, entropy_final=1.0,
                     kept_count=len(nucleus), stages=["raw", "top_p"], candidates=candidates,
                     raw_logsumexp=0.0)


# The unicorn run's shape: a token on top at one step sinks at the next (and comes back).
SCRUB = [
    {"a": 0.378, "b": 0.30, "c": 0.20, "d": 0.08, "e": 0.011, "f": 0.031},
    {"e": 0.011, "d": 0.378, "a": 0.05, "b": 0.02, "c": 0.5, "f": 0.041},
    {"f": 0.25, "a": 0.011, "b": 0.45, "c": 0.10, "d": 0.15, "e": 0.039},
]


@pytest.mark.parametrize("probs", SCRUB)
def test_top_p_chart_rows_sort_by_probability_at_every_step(probs):
    step = nucleus_step(0, probs)
    data = charts.stage_chart_data(charts.stage_frame(step), top_p=0.9)
    for stage in ("raw", "top_p"):
        rows = data[data["stage"] == stage].sort_values("row")       # the axis' text sort
        assert list(rows["token"]) == sorted(probs, key=lambda t: -probs[t])
        assert [r[4:] for r in rows["row"]] == list(rows["token"])    # the label after the rank
    # the dashed line sits under the last token of the nucleus, at its rank
    crossing = data[data["crossing"]]
    assert list(crossing["stage"]) == ["top_p"]
    assert int(crossing["row"].iloc[0][:3]) == step.kept_count - 1
    assert crossing["token"].iloc[0] == sorted(probs, key=lambda t: -probs[t])[step.kept_count - 1]


def test_the_row_order_is_in_the_data_not_in_an_aggregate_sort():
    """Scrubbing swaps the chart's data: a sort by an aggregate of another field kept the old
    order of the tokens present at both steps (issue 17), the row key itself must carry it."""
    spec = charts.stage_chart_spec()
    for layer in spec["spec"]["layer"]:
        y = layer["encoding"]["y"]
        assert y["field"] == "row" and y["sort"] == "ascending"
    first, later = (charts.stage_chart_data(charts.stage_frame(nucleus_step(i, p)), top_p=0.9)
                    for i, p in ((0, SCRUB[0]), (5, SCRUB[1])))
    key_a = {r: t for r, t in zip(first["row"], first["token"])}
    assert [k for k, t in key_a.items() if t == "a"] == ["000 a"]
    assert "000 a" not in set(later["row"]) and "002 a" in set(later["row"])


# ---------------------------------------------------------------------- beam hypotheses table

def beam_generation(texts: list[str]) -> Generation:
    return Generation(model="hand-built", prompt="p", chat=False, prompt_ids=[1],
                      config={"strategy": "beam"}, chain=["raw"],
                      sequences=[SequenceResult(token_ids=[1, 2], text=t, finish_reason="length",
                                                score=-1.0, sum_logprob=-2.0) for t in texts])


def test_hypotheses_show_what_tells_them_apart_not_the_shared_start():
    frame = charts.hypotheses_frame(beam_generation([
        "The old map showed a river", "The old map showed a road", "The old map showed the sea",
        "The old map showed a river"]))
    # cut back to a word boundary: "a r" is shared by two, "The old map showed " by all
    assert list(frame["differs"]) == ["…a river", "…a road", "…the sea", "(same as #1)"]
    assert list(frame["text"])[0] == "The old map showed a river"
    assert charts.shared_start(["abc", "abd"]) == "" and charts.shared_start(["one"]) == ""
    assert charts.shared_start(["a b", "a b"]) == "a b"


def test_stage_panels_share_the_page_width():
    widths = {n: charts.stage_chart_spec(n)["spec"]["width"] for n in (1, 2, 3, 4)}
    assert widths[1] == 600 and widths[2] == 320 and widths[4] == 180
    assert all(widths[n] * n + charts.LABEL_ROOM <= charts.CHART_ROOM or widths[n] == 180 for n in widths)
    cut = charts.stage_chart_spec(2)["spec"]["layer"][-1]
    assert cut["encoding"]["x"]["value"] == widths[2] - 5         # the "p reached" label's right edge


def test_first_divergence_of_two_answers():
    from app.charts_alignment import divergence_text, first_divergence

    assert first_divergence([1, 2, 3], [1, 2, 4]) == 2
    assert first_divergence([1, 2], [1, 2, 5]) == 2 and first_divergence([1, 2], [1, 2]) is None
    assert first_divergence([], [7]) == 0
    base = {"model": "base", "token_ids": [1, 2, 3], "pieces": ["A", " b", " ended"]}
    other = {"model": "dpo", "token_ids": [1, 2, 9], "pieces": ["A", " b", " become"]}
    text = divergence_text(base, other)
    assert "step 2" in text and "ended" in text and "become" in text and "first 2 tokens" in text
    assert "same" in divergence_text(base, dict(base, model="copy"))
