"""Pure builders for the lab: traces in, HTML / DataFrames / Altair charts out.

No Streamlit here, so every function can be tested on hand-built traces. The builders only
render what the loop recorded in ``StepTrace`` (probabilities and kept flags per stage); they
never recompute a distribution.
"""

from __future__ import annotations

import html
import os
from typing import Literal

import altair as alt
import pandas as pd

from decoding.stages import stage_knob
from decoding.trace import Candidate, Generation, StepTrace

# matplotlib's viridis sampled at 0, 1/8, ..., 1 (van der Walt & Smith 2015): perceptually
# uniform, readable in grey scale and by the common colour-vision deficiencies.
VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c",
           "#28ae80", "#5ec962", "#addc30", "#fde725"]

# Okabe & Ito's colour-blind-safe palette for the three states of a candidate.
STATUS_COLOURS = {"chosen": "#D55E00", "kept": "#0072B2", "removed": "#BBBBBB"}

# Visible stand-ins for whitespace, so that " the" and "the" do not look the same.
WHITESPACE_MARKS = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}
EMPTY_MARK = "∅"

FONT_SIZE = 16  # lecture-hall legible

ProbKind = Literal["raw", "final"]


# ---------------------------------------------------------------------- colours

def _hex_to_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def prob_colour(p: float) -> str:
    """Viridis colour of probability ``p`` in [0, 1] (linear interpolation between the stops)."""
    p = min(max(float(p), 0.0), 1.0)
    position = p * (len(VIRIDIS) - 1)
    low = min(int(position), len(VIRIDIS) - 2)
    t = position - low
    a, b = _hex_to_rgb(VIRIDIS[low]), _hex_to_rgb(VIRIDIS[low + 1])
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


def text_colour(background: str) -> str:
    """Black or white, whichever reads better on ``background`` (WCAG relative luminance)."""
    def linear(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in _hex_to_rgb(background))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    # Contrast with black (L + 0.05) / 0.05 against white 1.05 / (L + 0.05): equal at L ≈ 0.179.
    return "#000000" if luminance > 0.179 else "#ffffff"


# ---------------------------------------------------------------------- token text

def _visible_char(ch: str, spaces: bool = True) -> str:
    if ch == " " and not spaces:
        return ch
    mark = WHITESPACE_MARKS.get(ch)
    if mark is not None:
        return mark
    # Other control and format characters (byte-level BPE has a token for each) as escapes.
    return ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"


def visible_text(text: str, spaces: bool = True) -> str:
    """Plain text with whitespace and control characters made visible (chart labels, tables).
    spaces=False leaves spaces as they are (long texts)."""
    if text == "":
        return EMPTY_MARK
    return "".join(_visible_char(ch, spaces) for ch in text)


def _token_inner_html(text: str) -> str:
    """Escaped token text; whitespace as small markers, newlines also break the line."""
    if text == "":
        return f'<span class="ws">{EMPTY_MARK}</span>'
    parts = []
    for ch in text:
        mark = WHITESPACE_MARKS.get(ch)
        if mark is None:
            visible = _visible_char(ch)
            parts.append(html.escape(ch) if visible == ch
                         else f'<span class="ws">{html.escape(visible)}</span>')
        else:
            parts.append(f'<span class="ws">{mark}</span>')
            if ch == "\n":
                parts.append("<br>")
    return "".join(parts)


def _stage_index(kind: ProbKind) -> int:
    return 0 if kind == "raw" else -1


def top_alternatives(step: StepTrace, k: int = 3, kind: ProbKind = "raw") -> list[Candidate]:
    """The ``k`` most likely candidates other than the chosen token, under ``kind``."""
    j = _stage_index(kind)
    others = [c for c in step.candidates if c.token_id != step.token_id]
    return sorted(others, key=lambda c: -c.probs[j])[:k]


def token_tooltip(step: StepTrace, kind: ProbKind = "raw") -> str:
    """Plain-text tooltip: the chosen token's probability and its top-3 alternatives."""
    j = _stage_index(kind)
    lines = [f"step {step.step}: {visible_text(step.token_text)}",
             f"p raw {step.prob_raw:.1%} · p final {step.prob_final:.1%} · rank {step.rank_raw}"]
    alternatives = [f"{visible_text(c.text)} {c.probs[j]:.1%}" for c in top_alternatives(step, 3, kind)]
    if alternatives:
        lines.append(f"alternatives ({kind}): " + ", ".join(alternatives))
    return "\n".join(lines)


TOKEN_CSS = (
    "<style>"
    ".declab-tokens{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:1.15rem;"
    "line-height:2.1;overflow-wrap:anywhere}"
    ".declab-tokens .tok{padding:0.15em 0.05em;margin:0 1px;border-radius:3px}"
    ".declab-tokens .tok.sel{outline:3px solid #D55E00;outline-offset:1px}"
    ".declab-tokens .ws{font-size:0.7em;opacity:0.7}"
    ".declab-legend{display:flex;align-items:center;gap:0.5em;font-size:0.95rem}"
    ".declab-legend .bar{width:14em;height:1em;border-radius:3px}"
    "</style>"
)


def token_html(generation: Generation, kind: ProbKind = "raw", selected: int | None = None) -> str:
    """The generated tokens as HTML spans shaded by their probability (viridis).

    kind: ``"raw"`` shades by the model's own probability of the chosen token, ``"final"`` by
    its probability in the distribution it was drawn from (after the whole chain).
    selected: index of a step to outline. A generation without step traces (beam search) is
    shown as plain text with visible whitespace.
    """
    steps = generation.steps
    if not steps:
        return f'{TOKEN_CSS}<div class="declab-tokens">{_token_inner_html(generation.text)}</div>'
    spans = []
    for i, step in enumerate(steps):
        p = step.prob_raw if kind == "raw" else step.prob_final
        background = prob_colour(p)
        css_class = "tok sel" if i == selected else "tok"
        title = html.escape(token_tooltip(step, kind), quote=True)
        spans.append(
            f'<span class="{css_class}" style="background:{background};'
            f'color:{text_colour(background)}" title="{title}">'
            f"{_token_inner_html(step.token_text)}</span><wbr>")
    return f'{TOKEN_CSS}<div class="declab-tokens">{"".join(spans)}</div>'


def legend_html(kind: ProbKind = "raw") -> str:
    """A colour bar explaining the token shading."""
    gradient = ", ".join(VIRIDIS)
    return (f'{TOKEN_CSS}<div class="declab-legend"><span>p {kind}: 0%</span>'
            f'<span class="bar" style="background:linear-gradient(to right, {gradient})"></span>'
            f"<span>100%</span></div>")


# ---------------------------------------------------------------------- per-stage data

def select_candidates(step: StepTrace, top_n: int | None = None) -> list[Candidate]:
    """The candidates to show: the raw top-n, the final top-n and the chosen token, in raw order
    (the recorder's own rule, applied to a smaller n)."""
    if top_n is None or top_n >= len(step.candidates):
        return list(step.candidates)
    by_raw = sorted(step.candidates, key=lambda c: -c.probs[0])[:top_n]
    by_final = sorted(step.candidates, key=lambda c: -c.probs[-1])[:top_n]
    wanted = {c.token_id for c in by_raw + by_final} | {step.token_id}
    return [c for c in step.candidates if c.token_id in wanted]


def _labels(candidates: list[Candidate]) -> list[str]:
    """Visible token texts, made unique with the token id where two tokens look alike."""
    texts = [visible_text(c.text) for c in candidates]
    return [t if texts.count(t) == 1 else f"{t} #{c.token_id}" for t, c in zip(texts, candidates)]


STAGE_COLUMNS = ["stage", "stage_index", "order", "token", "token_id", "prob", "prob_in", "shown",
                 "kept", "removed_here", "chosen", "status", "cum_prob", "cum_prob_in"]


# Panel names of a two-model stage's second distribution (``StepTrace.second``).
SECOND_PANELS = {"base": "base (adapter off)", "unconditional": "unconditional"}


def stage_frame(step: StepTrace, top_n: int | None = None) -> pd.DataFrame:
    """One row per (stage, candidate token) of a step, stages in chain order; a two-model
    stage's second distribution (``step.second``) first, at stage_index -1 (``raw`` is then the
    loaded model's, the stage after it the combination).

    prob: probability after the stage (0 once removed); prob_in: probability entering it (for
    ``raw``, the same). shown: the bar length drawn: prob while kept, otherwise the probability
    the token had when it was last kept (a grey "ghost" of what was cut). cum_prob / cum_prob_in:
    cumulative mass of the stage's output / input distribution over the candidates, most likely
    first, this token included (top-p keeps tokens up to the first whose cum_prob_in >= p).
    order: position in raw-probability order (the shared row order of the chart).
    """
    candidates = sorted(select_candidates(step, top_n), key=lambda c: -c.probs[0])  # stable: ties keep record order
    labels = _labels(candidates)
    rows = []
    for j, stage in enumerate(step.stages):
        for order, (c, label) in enumerate(zip(candidates, labels)):
            last_kept = max(k for k in range(j + 1) if c.kept[k] or k == 0)
            rows.append({
                "stage": stage, "stage_index": j, "order": order, "token": label,
                "token_id": c.token_id, "prob": c.probs[j],
                "prob_in": c.probs[j - 1] if j > 0 else c.probs[0],
                "shown": c.probs[j] if c.kept[j] else c.probs[last_kept],
                "kept": bool(c.kept[j]),
                "removed_here": bool(j > 0 and c.kept[j - 1] and not c.kept[j]),
                "chosen": c.token_id == step.token_id,
            })
    if step.second:     # a two-model stage: its second distribution, as a panel before raw
        for order, (c, label) in enumerate(zip(candidates, labels)):
            p = c.second_prob if c.second_prob is not None else 0.0
            rows.append({"stage": SECOND_PANELS.get(step.second, step.second), "stage_index": -1,
                         "order": order, "token": label, "token_id": c.token_id, "prob": p,
                         "prob_in": p, "shown": p, "kept": True, "removed_here": False,
                         "chosen": c.token_id == step.token_id})
    frame = pd.DataFrame(rows, columns=STAGE_COLUMNS[:11])
    frame["status"] = ["chosen" if ch else ("kept" if k else "removed")
                       for ch, k in zip(frame["chosen"], frame["kept"])]
    frame["cum_prob"] = _cumulative(frame, "prob")
    frame["cum_prob_in"] = _cumulative(frame, "prob_in")
    return frame[STAGE_COLUMNS]


def _cumulative(frame: pd.DataFrame, column: str) -> pd.Series:
    """Per stage, the running sum of ``column`` in descending order (ties: raw order)."""
    ranked = frame.sort_values(["stage_index", column, "order"], ascending=[True, False, True],
                               kind="stable")
    return ranked.groupby("stage_index")[column].cumsum().reindex(frame.index)


def top_p_crossing(frame: pd.DataFrame, top_p: float) -> pd.Series | None:
    """The row of the ``top_p`` stage where the cumulative input mass first reaches ``top_p``
    (the last token of the nucleus), or None when that lies beyond the candidates shown."""
    rows = frame[frame["stage"] == "top_p"].sort_values(["cum_prob_in", "order"])
    reached = rows[rows["cum_prob_in"] >= top_p - 1e-9]
    return None if reached.empty else reached.iloc[0]


def top_p_caption(frame: pd.DataFrame, top_p: float) -> str:
    """One sentence on where the nucleus ends among the tokens shown (dashed line in the chart)."""
    crossing = top_p_crossing(frame, top_p)
    if crossing is None:
        return (f"top_p = {top_p:g}: the tokens shown hold less than p, so the nucleus extends "
                "below them.")
    return (f"top_p = {top_p:g}: the cumulative probability reaches p at {crossing['token']} "
            f"({crossing['cum_prob_in']:.1%}, dashed line); less likely tokens fall outside the "
            "nucleus and are removed.")


def stage_titles(config: dict, stages: list[str]) -> dict[str, str]:
    """Panel titles with the knob's value, e.g. ``{"top_p": "top_p = 0.9"}``, for the stages
    set by one ``config`` field (the others keep their name)."""
    titles = {}
    for stage in stages:
        value = config.get(stage_knob(stage))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            titles[stage] = f"{stage} = {value:g}"
    return titles


def stage_chart_data(frame: pd.DataFrame, top_p: float | None = None,
                     titles: dict[str, str] | None = None) -> pd.DataFrame:
    """``frame`` plus what ``stage_chart_spec`` draws from: the panel title of each row
    (``titles``, default the stage name), ``x_room`` (the x range: the longest bar plus room for
    its label), and, with ``top_p``, the ``top_p`` row where the nucleus ends (``crossing``,
    ``cut_label``)."""
    data = frame.copy()
    data["stage_title"] = [(titles or {}).get(stage, stage) for stage in data["stage"]]
    # The facet key sorts as text in chain order ("00|raw", "01|top_p", ...); the header shows
    # the part after "|". (A facet sorted by another field is drawn alphabetically once the
    # panels wrap into columns.)
    data["panel"] = [f"{j:02d}|{title}" for j, title in zip(data["stage_index"], data["stage_title"])]
    data["x_room"] = max(float(data["shown"].max()), 1e-6) * 1.3
    # The row key carries its rank ("007 the"); the y axis sorts the keys as text and shows the
    # part after the rank. Sorting by an aggregate of ``order`` instead goes stale when
    # Streamlit swaps the data of the drawn chart (scrubbing): Vega keeps the old position of
    # every token present in both steps, so a 37.8% bar could stay below a 1.1% one.
    data["row"] = [f"{order:03d} {token}" for order, token in zip(data["order"], data["token"])]
    data["crossing"] = False
    data["cut_label"] = ""
    if top_p is not None and (data["stage"] == "top_p").any():
        row = top_p_crossing(data, top_p)
        if row is not None:
            mask = (data["stage"] == "top_p") & (data["token_id"] == row["token_id"])
            data.loc[mask, "crossing"] = True
            data.loc[mask, "cut_label"] = f"p = {top_p:g} reached ({row['cum_prob_in']:.1%})"
    return data


# The stage chart's room: a wide-layout page at 1280 px leaves about 900 px beside the sidebar,
# of which the token labels take up to LABEL_ROOM.
CHART_ROOM, LABEL_ROOM = 900, 220


def panel_width(columns: int) -> int:
    """Width of one stage panel: the room shared by ``columns`` panels (at a fixed 180 px, two
    panels left 60% of the page empty on a projector), between 180 and 600 px."""
    return max(180, min(600, (CHART_ROOM - LABEL_ROOM) // max(columns, 1) - 20))


def stage_chart_spec(columns: int = 4) -> dict:
    """Horizontal bars per stage (one panel per stage in chain order), tokens in raw order: a
    Vega-Lite spec without data, for the rows of ``stage_chart_data``.

    Kept tokens are blue, the chosen one vermilion, removed ones grey at the height they had
    before the cut; a dashed rule under the token where top-p's cumulative probability reaches
    p. Everything that changes from step to step is in the data (order by ``order`` and
    ``panel``, the x range from ``x_room``, the height from the number of tokens), so the
    spec is the same for every step with as many panels: Streamlit then swaps the data of the
    drawn chart instead of rebuilding it, which keeps scrubbing fast (see
    ``app/bench_browser.py``). Written as a plain dict: building it through Altair took
    ~130 ms (encoding inference and schema validation) on the 2-core development machine.
    """
    y = {"field": "row", "sort": "ascending", "title": None, "type": "nominal",
         "axis": {"labelExpr": "substring(datum.label, 4)"}}
    band_y = {"field": "row", "sort": "ascending", "type": "nominal", "bandPosition": 1}
    bars = {"mark": {"type": "bar"}, "encoding": {
        "color": {"field": "status", "legend": {"orient": "top"}, "title": None, "type": "nominal",
                  "scale": {"domain": list(STATUS_COLOURS), "range": list(STATUS_COLOURS.values())}},
        "stroke": {"value": "#000000"},
        "strokeWidth": {"condition": {"test": "datum.chosen", "value": 2}, "value": 0},
        "tooltip": [
            {"field": "token", "type": "nominal"},
            {"field": "token_id", "type": "quantitative"},
            {"field": "prob_in", "format": ".2%", "title": "p before", "type": "quantitative"},
            {"field": "prob", "format": ".2%", "title": "p after", "type": "quantitative"},
            {"field": "cum_prob_in", "format": ".1%", "title": "cumulative before", "type": "quantitative"},
            {"field": "status", "type": "nominal"}],
        # Ticks at round percentages, labelled up to 100% (the range runs past it for labels).
        "x": {"axis": {"format": "%", "tickCount": 5, "labelExpr": "datum.value <= 1 ? datum.label : ''"},
              "field": "shown", "title": "probability", "scale": {"nice": False, "zero": True},
              "type": "quantitative"},
        "y": y}}
    y = {"field": "row", "sort": "ascending", "type": "nominal"}      # the layers share the axis
    width = panel_width(columns)
    labels = {"mark": {"type": "text", "align": "left", "dx": 3, "fontSize": FONT_SIZE - 1}, "encoding": {
        "opacity": {"condition": {"test": "datum.kept", "value": 1.0}, "value": 0.5},
        "text": {"field": "shown", "format": ".1%", "type": "quantitative"},
        "x": {"field": "shown", "type": "quantitative"}, "y": y}}
    room = {"mark": {"type": "point", "opacity": 0},
            "encoding": {"x": {"field": "x_room", "type": "quantitative"}, "y": y}}
    crossing = [{"filter": "datum.crossing"}]
    rule = {"mark": {"type": "rule", "color": "#000000", "strokeDash": [6, 3], "strokeWidth": 3},
            "encoding": {"y": band_y}, "transform": crossing}
    cut = {"mark": {"type": "text", "align": "right", "baseline": "top", "dy": 4,
                    "fontSize": FONT_SIZE - 2, "fontWeight": "bold"},
           "encoding": {"text": {"field": "cut_label", "type": "nominal"}, "x": {"value": width - 5},
                        "y": band_y},
           "transform": crossing}
    return {
        "config": {"view": {"continuousWidth": 300, "continuousHeight": 300},
                   "axis": {"labelFontSize": FONT_SIZE, "labelLimit": 220, "titleFontSize": FONT_SIZE},
                   "legend": {"labelFontSize": FONT_SIZE, "symbolSize": 200}},
        "facet": {"field": "panel", "type": "nominal", "title": None, "sort": "ascending",
                  "header": {"labelExpr": "split(datum.value, '|')[1]",
                             "labelFontSize": FONT_SIZE + 2, "labelFontWeight": "bold"}},
        "spec": {"layer": [bars, labels, room, rule, cut], "height": {"step": 26}, "width": width},
        "columns": columns,
    }


def stage_chart(frame: pd.DataFrame, top_p: float | None = None, columns: int = 4,
                titles: dict[str, str] | None = None) -> alt.FacetChart:
    """The stage chart with its data, as an Altair chart validated against the Vega-Lite schema
    (the app passes ``stage_chart_data`` and ``stage_chart_spec`` to ``st.vega_lite_chart``)."""
    data = stage_chart_data(frame, top_p, titles)
    spec = {**stage_chart_spec(min(columns, data["stage"].nunique())),
            "data": {"values": data.to_dict("records")}}
    return alt.FacetChart.from_dict(spec, validate=True)


# ---------------------------------------------------------------------- summaries

def step_metrics(step: StepTrace) -> list[tuple[str, str]]:
    """(label, value) pairs shown as metrics beside the chart."""
    return [
        ("chosen token", visible_text(step.token_text)),
        ("p raw → final", f"{step.prob_raw:.1%} → {step.prob_final:.1%}"),
        ("rank raw → final", f"{step.rank_raw} → {step.rank_final}"),
        ("entropy raw", f"{step.entropy_raw:.3f} nats"),
        ("entropy final", f"{step.entropy_final:.3f} nats"),
        ("kept set", f"{step.kept_count:,} tokens"),
    ]


DUPLICATE_HYPOTHESES = (
    "Some hypotheses are the same text. Beam groups without a diversity penalty "
    "(diversity_penalty = 0) search alike and can return the same hypothesis more than once; "
    "raise diversity_penalty to push the groups apart (Vijayakumar et al. 2016).")


def shared_start(texts: list[str]) -> str:
    """The start every text shares, cut back to the end of a word (never mid-word); "" for
    fewer than two texts."""
    if len(texts) < 2:
        return ""
    start = os.path.commonprefix(texts)
    if all(len(t) == len(start) or t[len(start)] == " " for t in texts):
        return start                                   # ends where a word ends in every text
    return start[:start.rfind(" ") + 1] if " " in start else ""


def hypotheses_frame(generation: Generation) -> pd.DataFrame:
    """The returned sequences (beam hypotheses, best first) with their scores. ``differs``:
    each text after the start they all share ("…" stands for it), so a table whose text cells
    are cut at their width still shows what tells the hypotheses apart; a duplicate says which
    hypothesis it repeats (diverse beam search with diversity_penalty 0 returns some)."""
    texts = [visible_text(s.text, spaces=False) for s in generation.sequences]
    start = shared_start(texts)
    first = {}
    differs = []
    for i, text in enumerate(texts):
        if text in first:
            differs.append(f"(same as #{first[text] + 1})")
        else:
            first[text] = i
            differs.append(("…" + text[len(start):]) if start else text)
    return pd.DataFrame([{
        "rank": i + 1,
        "differs": differs[i],
        "text": texts[i],
        "score": s.score,
        "sum logprob": s.sum_logprob,
        "mean logprob": s.mean_logprob,
        "tokens": len(s.token_ids),
        "finish": s.finish_reason,
    } for i, s in enumerate(generation.sequences)])
