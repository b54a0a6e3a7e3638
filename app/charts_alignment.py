"""Pure builders for the Alignment × decoding page: the two models' next-token distributions at
one step, the per-step KL / total-variation curve, and the small decodings × adapters grid.

No Streamlit here; the numbers come from ``alignment.scoring`` (teacher-forced distributions,
``stepwise_shift``) and ``alignment.evaluate`` (``summarise``).
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from alignment.bootstrap import percent_interval

from .charts import FONT_SIZE, visible_text

MODEL_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00"]   # Okabe–Ito
FLIP_COLOUR = "#D55E00"   # vermilion: the argmax of adapter and base differ


def overlay_frame(step: dict, policy_label: str, base_label: str = "base") -> pd.DataFrame:
    """Long table (token, model, probability, chosen) for one ``StepDistributions.to_dict()``;
    tokens keep the policy's order, whitespace made visible."""
    rows = []
    for rank, (tid, tok, p, q) in enumerate(zip(step["token_ids"], step["tokens"], step["policy"], step["base"])):
        label = f"{rank + 1}. {visible_text(tok)}"
        chosen = tid == step["chosen_id"]
        rows.append({"token": label, "model": policy_label, "probability": p, "chosen": chosen, "rank": rank})
        rows.append({"token": label, "model": base_label, "probability": q, "chosen": chosen, "rank": rank})
    return pd.DataFrame(rows)


def overlay_domain(frame: pd.DataFrame, headroom: float = 1.25) -> list[float]:
    """The probability axis fitted to the data: 0 to the largest bar plus room for its printed
    value (a 13 % vs 12 % flip on a fixed 0–100 % axis was two stubs)."""
    top = float(frame["probability"].max()) if len(frame) else 1.0
    return [0.0, min(1.0, max(top * headroom, 0.01))]


def overlay_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Grouped horizontal bars: both models' probability of each candidate token, on an axis
    fitted to the data, each value printed beside its bar; the token the adapter's answer took
    is outlined."""
    order = list(dict.fromkeys(frame.sort_values("rank")["token"]))
    models = list(dict.fromkeys(frame["model"]))
    x = alt.X("probability:Q", axis=alt.Axis(format="%", labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE),
              scale=alt.Scale(domain=overlay_domain(frame), clamp=True))
    y = alt.Y("token:N", sort=order, title=None, axis=alt.Axis(labelFontSize=FONT_SIZE, labelLimit=260))
    offset = alt.YOffset("model:N", sort=models)
    base = alt.Chart(frame).encode(y=y, yOffset=offset, x=x)
    bars = base.mark_bar().encode(
        color=alt.Color("model:N", sort=models, scale=alt.Scale(domain=models, range=MODEL_COLOURS[:len(models)]),
                        legend=alt.Legend(orient="bottom", labelFontSize=FONT_SIZE, title=None)),
        stroke=alt.condition("datum.chosen", alt.value("#000000"), alt.value(None)),
        strokeWidth=alt.condition("datum.chosen", alt.value(2), alt.value(0)),
        tooltip=["token", "model", alt.Tooltip("probability:Q", format=".2%")],
    )
    values = base.mark_text(align="left", dx=4, fontSize=FONT_SIZE - 3).encode(
        text=alt.Text("probability:Q", format=".1%"))
    return (bars + values).properties(height=alt.Step(20), width=560)


def argmax_flips(distributions: list[dict]) -> list[dict]:
    """The steps at which the adapter's most likely next token differs from the base's (the
    point where alignment changes the model's mind, whatever the KL), as ``{"step", "adapter",
    "base"}`` with both argmax tokens. Read from ``step_distributions``: each step holds the union
    of both models' top tokens, so both argmaxes are among them."""
    flips = []
    for d in distributions:
        if not d["token_ids"]:
            continue
        top_policy = max(range(len(d["policy"])), key=d["policy"].__getitem__)
        top_base = max(range(len(d["base"])), key=d["base"].__getitem__)
        if d["token_ids"][top_policy] != d["token_ids"][top_base]:
            flips.append({"step": d["step"], "adapter": d["tokens"][top_policy], "base": d["tokens"][top_base]})
    return flips


def flip_label(flip: dict) -> str:
    """``12: ·ended → ·become`` (the base's argmax, then the adapter's)."""
    return f"{flip['step']}: {visible_text(flip['base'])} → {visible_text(flip['adapter'])}"


def shift_frame(steps: list[dict], flips: list[dict] | None = None) -> pd.DataFrame:
    """(step, measure, value, token, argmax differs) for the KL and TV curves of
    ``stepwise_shift``; ``flips`` from ``argmax_flips`` marks the steps where the argmax differs."""
    flipped = {f["step"] for f in flips or []}
    rows = []
    for s in steps:
        token = visible_text(s["token"])
        differs = s["step"] in flipped
        rows.append({"step": s["step"], "measure": "KL(adapter ‖ base), nats", "value": s["kl"], "token": token,
                     "argmax differs": differs})
        rows.append({"step": s["step"], "measure": "total variation", "value": s["tv"], "token": token,
                     "argmax differs": differs})
    return pd.DataFrame(rows, columns=["step", "measure", "value", "token", "argmax differs"])


PICK = "pick"   # the shift chart's click selection (a step), read by the page
# The shift chart's whole height in px (Streamlit sizes a stretched chart with its axes and
# legend inside it; the plot gets ~270 px: the ~80 px chart of issue 17 could not be read).
SHIFT_HEIGHT = 400


def shift_chart(frame: pd.DataFrame, selected: int | None = None) -> alt.LayerChart:
    """KL and TV per step; a vermilion band and ▼ above every step where the argmax differs;
    the selected step as a dashed rule. A click anywhere in a step's column selects it (the
    ``pick`` selection, on the step field): each step has a full-height, nearly transparent
    rule as its target (a click on a line selects the line's first datum, not the step)."""
    pick = alt.selection_point(name=PICK, fields=["step"], on="click", empty=False)
    x = alt.X("step:Q", axis=alt.Axis(labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE, tickMinStep=1))
    line = alt.Chart(frame).mark_line(point=alt.OverlayMarkDef(size=60)).encode(
        x=x,
        y=alt.Y("value:Q", title=None, axis=alt.Axis(labelFontSize=FONT_SIZE)),
        color=alt.Color("measure:N", scale=alt.Scale(range=[MODEL_COLOURS[0], MODEL_COLOURS[2]]),
                        legend=alt.Legend(orient="bottom", labelFontSize=FONT_SIZE, title=None)),
        tooltip=["step", "token", "measure", alt.Tooltip("value:Q", format=".3f"), "argmax differs"],
    )
    per_step = frame.drop_duplicates("step")
    targets = alt.Chart(per_step).mark_rule(strokeWidth=14, opacity=0.01, color="#000000").encode(
        x="step:Q", tooltip=["step", alt.Tooltip("token", title="adapter took"), "argmax differs"],
    ).add_params(pick)
    flips = per_step[per_step["argmax differs"]] if "argmax differs" in per_step else per_step.iloc[:0]
    layers = [targets, line]
    if len(flips):
        layers.insert(0, alt.Chart(flips).mark_rule(color=FLIP_COLOUR, opacity=0.35, strokeWidth=6).encode(
            x="step:Q"))
        layers.append(alt.Chart(flips).mark_point(shape="triangle-down", filled=True, size=140,
                                                  color=FLIP_COLOUR).encode(x="step:Q", y=alt.value(12)))
    if selected is not None:
        layers.append(alt.Chart(pd.DataFrame({"step": [selected]})).mark_rule(
            color="#000000", strokeDash=[4, 3], strokeWidth=2).encode(x="step:Q"))
    return alt.layer(*layers).properties(height=SHIFT_HEIGHT)


def answers_frame(answers: list[dict]) -> pd.DataFrame:
    """One row per model's answer: stance, P(support), implicit reward, length, finish, loop."""
    columns = ["model", "stance", "P(support)", "implicit reward", "tokens", "finish", "loop period"]
    return pd.DataFrame([{"model": a["model"], "stance": a.get("stance") or "–",
                          "P(support)": a.get("p_support"), "implicit reward": a.get("implicit_reward"),
                          "tokens": len(a["token_ids"]), "finish": a["finish_reason"],
                          "loop period": a.get("loop_period")} for a in answers], columns=columns)


def first_divergence(base_ids: list[int], other_ids: list[int]) -> int | None:
    """The first step at which two answers to the same prompt pick different tokens (a
    shorter answer that is a prefix of the other diverges where it ends); None if identical."""
    for step, (a, b) in enumerate(zip(base_ids, other_ids)):
        if a != b:
            return step
    return None if len(base_ids) == len(other_ids) else min(len(base_ids), len(other_ids))


def divergence_text(base: dict, other: dict) -> str:
    """One line for an adapter's answer: how many tokens it shares with the base's, and the
    two tokens at the first divergence."""
    step = first_divergence(base["token_ids"], other["token_ids"])
    if step is None:
        return "token for token the same as the base's answer"
    def piece(answer: dict) -> str:
        pieces = answer.get("pieces") or []
        return f"`{visible_text(pieces[step])}`" if step < len(pieces) else "(end)"
    return (f"first divergence from the base at step {step}: base {piece(base)} → "
            f"{other['model']} {piece(other)} (the first {step} tokens are shared)")


DIFF_CSS = (
    "<style>.declab-diff{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:1.05rem;"
    "line-height:1.9;white-space:pre-wrap;word-break:break-word}"
    ".declab-diff .same{color:#555555}"
    ".declab-diff ins{background:#CCE6F6;color:#000000;text-decoration:none;border-radius:3px}"
    ".declab-diff del{background:#F6D8CC;color:#000000;border-radius:3px}"
    ".declab-diff .first{background:#D55E00;color:#FFFFFF;border-radius:3px;padding:0 0.3em;"
    "margin-right:0.2em;font-size:0.8em;font-weight:bold}</style>")


def token_diff_html(base: dict, other: dict) -> str:
    """The adapter's answer diffed token by token against the base's (``difflib`` on token ids):
    shared tokens grey, the base's tokens the adapter dropped struck through, the adapter's own
    tokens highlighted, and a "▶ step n" badge at the first divergence."""
    import difflib
    import html

    a, b = base["token_ids"], other["token_ids"]
    pa, pb = base.get("pieces") or [], other.get("pieces") or []
    first = first_divergence(a, b)

    def text(pieces: list[str], i: int, j: int) -> str:
        # newlines and control characters as marks: a base that answers with blank lines
        # would otherwise be a tall empty block
        return html.escape(visible_text("".join(pieces[i:j]), spaces=False))

    parts, marked = [], False
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            parts.append(f'<span class="same">{text(pb, j1, j2)}</span>')
            continue
        if not marked:
            parts.append(f'<span class="first" title="first divergence">▶ step {first}</span>')
            marked = True
        if i2 > i1:
            parts.append(f'<del title="only in the base\'s answer">{text(pa, i1, i2)}</del>')
        if j2 > j1:
            parts.append(f'<ins title="only in {html.escape(other["model"])}\'s answer">{text(pb, j1, j2)}</ins>')
    return f'{DIFF_CSS}<div class="declab-diff">{"".join(parts)}</div>'


def _ci_text(cell: dict, key: str) -> str:
    low, high = cell.get("ci", {}).get(key, (None, None))
    return "" if low is None else f"{percent_interval(low, high)} %"


STANCE_COLUMNS = ("support", "neutral", "oppose")   # grid_frame's stance columns (and their "… 95% CI")


def grid_frame(cells: list[dict]) -> pd.DataFrame:
    """The decodings × adapters grid as a table: support %, neutral %, loop %, mean length, and
    the 95 % bootstrap intervals of support and loop share (``alignment.evaluate.intervals``)."""
    return pd.DataFrame([{"model": c["model"], "decoding": c["decoding"], "answers": c["answers"],
                          "support": c["support"], "support 95% CI": _ci_text(c, "support"),
                          "neutral": c["neutral"], "oppose": c["oppose"], "oppose 95% CI": _ci_text(c, "oppose"),
                          "loops": c["loop_rate"], "loops 95% CI": _ci_text(c, "loop_rate"),
                          "EOS": c["eos_rate"], "tokens": c["mean_length"]}
                         for c in cells])
