"""Pure builders for the Alignment × decoding page: the two models' next-token distributions at
one step, the per-step KL / total-variation curve, and the small decodings × adapters grid.

No Streamlit here; the numbers come from ``alignment.scoring`` (teacher-forced distributions,
``stepwise_shift``) and ``alignment.evaluate`` (``summarise``).
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .charts import FONT_SIZE, visible_text

MODEL_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00"]   # Okabe–Ito


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


def overlay_chart(frame: pd.DataFrame) -> alt.Chart:
    """Grouped horizontal bars: both models' probability of each candidate token; the token the
    adapter's answer took is outlined."""
    order = list(dict.fromkeys(frame.sort_values("rank")["token"]))
    models = list(dict.fromkeys(frame["model"]))
    return alt.Chart(frame).mark_bar().encode(
        y=alt.Y("token:N", sort=order, title=None, axis=alt.Axis(labelFontSize=FONT_SIZE, labelLimit=260)),
        yOffset=alt.YOffset("model:N", sort=models),
        x=alt.X("probability:Q", axis=alt.Axis(format="%", labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE),
                scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("model:N", sort=models, scale=alt.Scale(domain=models, range=MODEL_COLOURS[:len(models)]),
                        legend=alt.Legend(orient="bottom", labelFontSize=FONT_SIZE, title=None)),
        stroke=alt.condition("datum.chosen", alt.value("#000000"), alt.value(None)),
        strokeWidth=alt.condition("datum.chosen", alt.value(2), alt.value(0)),
        tooltip=["token", "model", alt.Tooltip("probability:Q", format=".1%")],
    ).properties(height=alt.Step(14), width=520)


def shift_frame(steps: list[dict]) -> pd.DataFrame:
    """(step, measure, value, token) for the KL and TV curves of ``stepwise_shift``."""
    rows = []
    for s in steps:
        token = visible_text(s["token"])
        rows.append({"step": s["step"], "measure": "KL(adapter ‖ base), nats", "value": s["kl"], "token": token})
        rows.append({"step": s["step"], "measure": "total variation", "value": s["tv"], "token": token})
    return pd.DataFrame(rows, columns=["step", "measure", "value", "token"])


def shift_chart(frame: pd.DataFrame, selected: int | None = None) -> alt.LayerChart | alt.Chart:
    line = alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("step:Q", axis=alt.Axis(labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE)),
        y=alt.Y("value:Q", title=None, axis=alt.Axis(labelFontSize=FONT_SIZE)),
        color=alt.Color("measure:N", scale=alt.Scale(range=MODEL_COLOURS[:2]),
                        legend=alt.Legend(orient="bottom", labelFontSize=FONT_SIZE, title=None)),
        tooltip=["step", "token", "measure", alt.Tooltip("value:Q", format=".3f")],
    ).properties(height=220, width=640)
    if selected is None:
        return line
    rule = alt.Chart(pd.DataFrame({"step": [selected]})).mark_rule(color="#000000", strokeDash=[4, 3]).encode(x="step:Q")
    return line + rule


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


def _ci_text(cell: dict, key: str) -> str:
    low, high = cell.get("ci", {}).get(key, (None, None))
    return "" if low is None else f"{100 * low:.0f}–{100 * high:.0f} %"


def grid_frame(cells: list[dict]) -> pd.DataFrame:
    """The decodings × adapters grid as a table: support %, neutral %, loop %, mean length, and
    the 95 % bootstrap intervals of support and loop share (``alignment.evaluate.intervals``)."""
    return pd.DataFrame([{"model": c["model"], "decoding": c["decoding"], "answers": c["answers"],
                          "support": c["support"], "support 95% CI": _ci_text(c, "support"),
                          "neutral": c["neutral"], "oppose": c["oppose"], "oppose 95% CI": _ci_text(c, "oppose"),
                          "loops": c["loop_rate"], "loops 95% CI": _ci_text(c, "loop_rate"),
                          "EOS": c["eos_rate"], "tokens": c["mean_length"]}
                         for c in cells])
