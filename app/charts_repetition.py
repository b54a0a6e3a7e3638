"""Pure builders for the Compare and Repetition pages: loops highlighted in HTML, the metrics
table, the loop-probability trace and the self-reinforcement curve as Altair charts.

No Streamlit here. The numbers come from ``decoding.diagnostics`` (``find_loops``,
``loop_probability_trace``, ``self_reinforcement``, ``summary.compare_rows``); these functions
only lay them out.
"""

from __future__ import annotations

import html

import altair as alt
import pandas as pd

from decoding.diagnostics import LoopFinding, LoopProbabilityTrace, LoopReport, ReinforcementCurve
from decoding.diagnostics.summary import loop_spans

from .charts import FONT_SIZE, WHITESPACE_MARKS

# Okabe & Ito (2008): colour-blind-safe. Complete cycles alternate yellow / sky blue (dark text
# reads on both); the unfinished last cycle is underlined instead of filled.
CYCLE_COLOURS = ("#F0E442", "#56B4E9")
SERIES_COLOURS = {"raw": "#0072B2", "after the chain": "#D55E00",
                  "TP": "#0072B2", "IP": "#E69F00", "WR": "#009E73"}

LOOP_CSS = (
    "<style>"
    ".declab-loop{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:1.1rem;"
    "line-height:1.9;overflow-wrap:anywhere;white-space:normal}"
    ".declab-loop mark{color:#000;padding:0.1em 0;border-radius:3px}"
    ".declab-loop mark.partial{background:none;text-decoration:underline 3px #D55E00}"
    ".declab-loop .ws{font-size:0.7em;opacity:0.6}"
    "</style>"
)


def _text_html(text: str) -> str:
    """Escaped text; newlines and tabs shown as small marks (a newline also breaks the line).
    Spaces stay spaces: these are whole paragraphs, not single tokens."""
    out = []
    for ch in text:
        if ch in ("\n", "\t", "\r"):
            out.append(f'<span class="ws">{WHITESPACE_MARKS[ch]}</span>')
            if ch == "\n":
                out.append("<br>")
        else:
            out.append(html.escape(ch))
    return "".join(out)


def _cycle_title(loop, k: int) -> str:
    """Tooltip of cycle ``k``: its number, and its slot values for a template loop."""
    slots = getattr(loop, "slots", None)
    if slots and k < len(slots):
        return f"cycle {k + 1}: " + " | ".join(slots[k])
    return f"cycle {k + 1}"


def loop_html(pieces: list[str], loop: LoopReport | LoopFinding | None) -> str:
    """``"".join(pieces)`` as HTML with each cycle of the loop marked (``loop_spans``): complete
    cycles alternate two background colours (a template cycle's tooltip names its slot values),
    the partial last cycle is underlined."""
    out, position = [], 0
    for k, (start, end, partial) in enumerate(loop_spans(loop)):
        out.append(_text_html("".join(pieces[position:start])))
        body = _text_html("".join(pieces[start:end]))
        if partial:
            out.append(f'<mark class="partial" title="unfinished cycle">{body}</mark>')
        else:
            colour = CYCLE_COLOURS[k % 2]
            title = html.escape(_cycle_title(loop, k), quote=True)
            out.append(f'<mark class="cycle" style="background:{colour}" '
                       f'title="{title}">{body}</mark>')
        position = end
    out.append(_text_html("".join(pieces[position:])))
    return f'{LOOP_CSS}<div class="declab-loop">{"".join(out)}</div>'


KIND_WORDS = {"exact": "Loop", "near": "Near-verbatim loop", "template": "Template loop"}


def loop_sentence(loop: LoopReport | LoopFinding | None) -> str:
    """The detector's verdict in words, for a caption: kind, phrase length, onset, cycles; a
    template's frame and slot values; whether the loop stops before the text ends."""
    if loop is None or not loop.is_loop:
        return "No loop: no stretch of the text goes round in cycles (whitespace does not count)."
    kind = getattr(loop, "kind", "exact")
    cycles = f"{loop.cycles} complete cycles" + (f" + {loop.partial} tokens" if loop.partial else "")
    size = f"a {loop.period}-token phrase" if kind == "exact" else f"cycles of about {loop.period} tokens"
    text = (f"{KIND_WORDS[kind]}: {size} repeated from token {loop.onset} on "
            f"({cycles}, {loop.length} tokens in the loop).")
    if getattr(loop, "ends_early", False):
        text += " The text goes on after it: the loop stopped."
    if getattr(loop, "frame", None) is not None:
        shown = loop.slots if len(loop.slots) <= 8 else loop.slots[:6] + [["…"]] + loop.slots[-1:]
        text += (f" Frame: “{loop.frame}”; slot values per cycle: "
                 + " · ".join(" | ".join(v) for v in shown) + ".")
    return text


# ---------------------------------------------------------------------- compare table

COMPARE_COLUMNS = ["config", "tokens", "finish", "rep-2 %", "rep-3 %", "rep-4 %", "distinct-2",
                   "loop kind", "loop period", "loop onset", "mean log-prob"]


def compare_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per decoding config (``decoding.diagnostics.summary.compare_rows``): length,
    finish reason, rep-2/3/4 in %, distinct-2, loop kind, period and onset (tokens; empty when
    the text does not loop) and the mean raw log-probability of the generated tokens (nats)."""
    records = []
    for r in rows:
        loop = r.get("loop")
        records.append({
            "config": r["label"], "tokens": r["n_tokens"], "finish": r["finish_reason"],
            "rep-2 %": r.get("rep-2"), "rep-3 %": r.get("rep-3"), "rep-4 %": r.get("rep-4"),
            "distinct-2": r.get("distinct-2"),
            "loop kind": loop.get("kind", "exact") if loop else None,
            "loop period": loop["period"] if loop else None,
            "loop onset": loop["onset"] if loop else None,
            "mean log-prob": r.get("mean_logprob"),
        })
    frame = pd.DataFrame(records, columns=COMPARE_COLUMNS)
    for column in ("loop period", "loop onset"):
        frame[column] = frame[column].astype("Int64")
    return frame


def rep_chart(frame: pd.DataFrame) -> alt.Chart:
    """rep-2 per config as horizontal bars (share of repeated bigrams, in %)."""
    data = frame[["config", "rep-2 %"]].dropna().assign(share=lambda f: f["rep-2 %"] / 100)
    bars = alt.Chart(data).mark_bar(color="#0072B2").encode(
        x=alt.X("share:Q", title="repeated bigrams (rep-2)", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        y=alt.Y("config:N", sort=list(data["config"]), title=None),
        tooltip=[alt.Tooltip("config:N"), alt.Tooltip("share:Q", title="rep-2", format=".1%")])
    labels = bars.mark_text(align="left", dx=4, fontSize=FONT_SIZE - 2, color="#000000").encode(
        text=alt.Text("share:Q", format=".0%"))
    return (bars + labels).properties(height=max(80, 36 * len(data))).configure_axis(
        labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE, labelLimit=360)


# ---------------------------------------------------------------------- loop probability

def loop_probability_frame(trace: LoopProbabilityTrace) -> pd.DataFrame:
    """Long format: one row per (step, series) with the probability of the loop-continuing
    token, raw and after the chain; steps where the token was outside the traced top-N
    are left out (their probability was not recorded)."""
    rows = []
    for step, cycle, raw, final in zip(trace.steps, trace.cycle_index, trace.probs_raw,
                                       trace.probs_final):
        for series, p in (("raw", raw), ("after the chain", final)):
            if p is not None:
                rows.append({"step": step, "cycle": cycle, "series": series, "p": p})
    return pd.DataFrame(rows, columns=["step", "cycle", "series", "p"])


def cycle_means_frame(trace: LoopProbabilityTrace) -> pd.DataFrame:
    """Mean raw probability per cycle; cycle 0 is the phrase's first pass (before it repeated)."""
    return pd.DataFrame([{"cycle": k, "label": "first pass" if k == 0 else f"repeat {k}", "p": m}
                         for k, m in enumerate(trace.cycle_means()) if m is not None])


def loop_probability_chart(frame: pd.DataFrame, onset: int, period: int) -> alt.LayerChart:
    """P(loop-continuing token) step by step, raw and after the chain, with a dashed rule at
    every cycle start."""
    colour = alt.Color("series:N", title=None, legend=alt.Legend(orient="top"),
                       scale=alt.Scale(domain=["raw", "after the chain"],
                                       range=[SERIES_COLOURS["raw"],
                                              SERIES_COLOURS["after the chain"]]))
    base = alt.Chart(frame).encode(
        x=alt.X("step:Q", title="generated token index"),
        y=alt.Y("p:Q", title="P(token that continues the loop)", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        color=colour,
        tooltip=[alt.Tooltip("step:Q"), alt.Tooltip("cycle:Q"), alt.Tooltip("series:N"),
                 alt.Tooltip("p:Q", format=".1%")])
    lines = base.mark_line(strokeWidth=3) + base.mark_point(size=60, filled=True)
    last = int(frame["step"].max()) if len(frame) else onset + period
    starts = pd.DataFrame({"step": list(range(onset + period, last + 1, period))})
    rules = alt.Chart(starts).mark_rule(strokeDash=[4, 4], color="#777777").encode(x="step:Q")
    return alt.layer(rules, lines).properties(height=320).configure_axis(
        labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE).configure_legend(
        labelFontSize=FONT_SIZE, symbolSize=200)


def cycle_means_chart(frame: pd.DataFrame) -> alt.Chart:
    """Bars: the mean raw probability of each cycle's tokens, first pass first."""
    bars = alt.Chart(frame).mark_bar(color="#0072B2").encode(
        x=alt.X("label:N", sort=list(frame["label"]), title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("p:Q", title="mean P per cycle", axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("label:N"), alt.Tooltip("p:Q", format=".1%")])
    text = bars.mark_text(baseline="bottom", dy=-4, fontSize=FONT_SIZE - 2, color="#000000").encode(
        text=alt.Text("p:Q", format=".0%"))
    return (bars + text).properties(height=260).configure_axis(
        labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE)


# ---------------------------------------------------------------------- self-reinforcement

MEASURES = {"TP": "mean token probability", "IP": "share more probable than in copy 0",
            "WR": "share that are the argmax"}


def reinforcement_frame(curve: ReinforcementCurve) -> pd.DataFrame:
    """Long format: one row per (copy, measure) with TP, IP and WR (Xu et al. 2022) in [0, 1]."""
    rows = [{"copy": n, "measure": name, "meaning": MEASURES[name], "value": values[n]}
            for name, values in (("TP", curve.tp), ("IP", curve.ip), ("WR", curve.wr))
            for n in range(curve.repeats)]
    return pd.DataFrame(rows, columns=["copy", "measure", "meaning", "value"])


def reinforcement_chart(frame: pd.DataFrame) -> alt.Chart:
    """TP, IP and WR against the copy number: rising curves are self-reinforcement."""
    names = list(MEASURES)
    base = alt.Chart(frame).encode(
        x=alt.X("copy:Q", title="copy of the sentence (0 = first)", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("value:Q", title=None, axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("measure:N", title=None, legend=alt.Legend(orient="top"),
                        scale=alt.Scale(domain=names,
                                        range=[SERIES_COLOURS[n] for n in names])),
        tooltip=[alt.Tooltip("copy:Q"), alt.Tooltip("measure:N"), alt.Tooltip("meaning:N"),
                 alt.Tooltip("value:Q", format=".1%")])
    return (base.mark_line(strokeWidth=3) + base.mark_point(size=70, filled=True)).properties(
        height=320).configure_axis(labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE
    ).configure_legend(labelFontSize=FONT_SIZE, symbolSize=200)
