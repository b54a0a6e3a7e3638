"""The presentation view's one large chart: the next-token distribution of one step, sorted, with
the truncation cut shaded (the picture Transformer Explainer keeps on screen while its sliders
move).

Rows are the tokens the sampling stages received (raw, or after the penalties), most likely
first. Each row shows the probability it had there (a grey outline) and, for a kept token, the
probability it is drawn with after the sampling settings (blue; vermilion for the token the run
chose). The rows the settings cut are shaded; with top-p, a dashed line sits under the last
token of the nucleus. The data comes from ``decoding.whatif`` (exact where the record reaches).
Pure functions: no Streamlit.
"""

from __future__ import annotations

import pandas as pd

from app.charts import STATUS_COLOURS, visible_text
from decoding.trace import StepTrace

FONT = 18          # >= 16 px on a 1280x720 projector
ROW = 34           # px per token row
LABEL_LIMIT = 260  # px for a token label before it is cut (Vega adds "…" at the end)


def presentation_frame(result: StepTrace, top_n: int = 15, top_p: float | None = None) -> pd.DataFrame:
    """One row per token (the ``top_n`` most likely entering the sampling stages, and the chosen
    token): ``rank`` (1 = most likely), ``row`` (the axis key, ``"01 the"``: its rank, so the axis
    sorts right after the data is swapped), ``token``, ``p_in``, ``p_final`` (0 once cut),
    ``status`` (chosen / kept / removed), ``cum_in`` (mass entering the stages down to this
    token), ``cut_line`` (the row the top-p line sits under)."""
    ranked = sorted(result.candidates, key=lambda c: -c.probs[0])
    shown = ranked[:top_n]
    if result.token_id not in {c.token_id for c in shown}:
        shown += [c for c in ranked[top_n:] if c.token_id == result.token_id]
    rows, cumulative = [], 0.0
    texts = [visible_text(c.text) for c in shown]
    for rank, (c, text) in enumerate(zip(shown, texts), start=1):
        cumulative += c.probs[0]
        label = text if texts.count(text) == 1 else f"{text} #{c.token_id}"
        kept = bool(c.kept[-1])
        rows.append({"rank": rank, "row": f"{rank:02d} {label}", "token": label,
                     "p_in": c.probs[0], "p_final": c.probs[-1] if kept else 0.0,
                     "status": ("removed" if not kept else
                                "chosen" if c.token_id == result.token_id else "kept"),
                     "cum_in": cumulative, "cut_line": False})
    frame = pd.DataFrame(rows)
    if top_p is not None and "top_p" in result.stages:
        reached = frame.index[frame["cum_in"] >= top_p - 1e-9]
        if len(reached):
            frame.loc[reached[0], "cut_line"] = True
    frame["x_max"] = max(float(frame[["p_in", "p_final"]].max().max()), 1e-6) * 1.18
    return frame


def presentation_spec(height_rows: int) -> dict:
    """A Vega-Lite spec (no data) for ``presentation_frame`` rows: one wide chart, text at
    ``FONT`` px, the cut rows shaded, the outline of the incoming probability, the final bars,
    their percentages and the top-p line."""
    y = {"field": "row", "type": "nominal", "sort": "ascending", "title": None,
         "axis": {"labelExpr": "substring(datum.label, 3)", "labelFontSize": FONT,
                  "labelLimit": LABEL_LIMIT}}
    y_plain = {"field": "row", "type": "nominal", "sort": "ascending"}
    x = {"field": "p_final", "type": "quantitative", "title": "probability",
         "scale": {"zero": True, "nice": False},
         "axis": {"format": "%", "labelFontSize": FONT, "titleFontSize": FONT, "tickCount": 5}}
    return {
        "height": {"step": ROW}, "width": "container",
        "layer": [
            {"transform": [{"filter": "datum.status == 'removed'"}],
             "mark": {"type": "rect", "color": "#999999", "opacity": 0.18},
             "encoding": {"y": y_plain, "x": {"value": 0}, "x2": {"value": "width"}}},
            {"mark": {"type": "bar", "fill": None, "stroke": "#777777", "strokeWidth": 1.5},
             "encoding": {"y": y_plain, "x": {"field": "p_in", "type": "quantitative"}}},
            {"mark": {"type": "bar"},
             "encoding": {"y": y, "x": x,
                          "color": {"field": "status", "type": "nominal", "title": None,
                                    "scale": {"domain": list(STATUS_COLOURS),
                                              "range": list(STATUS_COLOURS.values())},
                                    "legend": {"orient": "top", "labelFontSize": FONT}},
                          "tooltip": [{"field": "token", "type": "nominal"},
                                      {"field": "p_in", "format": ".2%", "title": "p entering"},
                                      {"field": "p_final", "format": ".2%", "title": "p drawn with"},
                                      {"field": "cum_in", "format": ".1%", "title": "cumulative"}]}},
            {"mark": {"type": "text", "align": "left", "dx": 6, "fontSize": FONT},
             "encoding": {"y": y_plain,
                          "x": {"field": "label_x", "type": "quantitative"},
                          "text": {"field": "label", "type": "nominal"}},
             "transform": [{"calculate": "max(datum.p_in, datum.p_final)", "as": "label_x"},
                           {"calculate": "datum.status == 'removed' ? 'cut (' + format(datum.p_in, '.1%') + ')'"
                                         " : format(datum.p_final, '.1%')", "as": "label"}]},
            {"mark": {"type": "point", "opacity": 0},
             "encoding": {"y": y_plain, "x": {"field": "x_max", "type": "quantitative"}}},
            {"transform": [{"filter": "datum.cut_line"}],
             "mark": {"type": "rule", "strokeDash": [8, 4], "strokeWidth": 3, "color": "#000000"},
             "encoding": {"y": {**y_plain, "bandPosition": 1}}},
        ],
        "config": {"view": {"stroke": None}, "axis": {"labelFontSize": FONT, "titleFontSize": FONT}},
    }


def presentation_caption(frame: pd.DataFrame, top_p: float | None) -> str:
    kept = int((frame["status"] != "removed").sum())
    text = f"{kept} of the {len(frame)} tokens shown are kept; shaded rows are cut."
    line = frame[frame["cut_line"]]
    if top_p is not None and len(line):
        row = line.iloc[0]
        text += (f" top_p = {top_p:g}: the cumulative probability reaches p at {row['token']} "
                 f"({row['cum_in']:.1%}, dashed line).")
    return text
