"""Pure builders for the Preference math page: input parsing, the Bradley–Terry table, the
MaxMin table and the DPO β sweep. Every number comes from ``alignment.preference_math``."""

from __future__ import annotations

import math

import altair as alt
import pandas as pd

from alignment import preference_math as pm
from decoding.errors import DecodingLabError

from .charts import FONT_SIZE, VIRIDIS


def parse_numbers(name: str, text: str) -> list[float]:
    """``"1, 1, 2"`` → ``[1.0, 1.0, 2.0]``; a ``DecodingLabError`` naming ``name`` otherwise."""
    parts = [p.strip() for p in (text or "").split(",")]
    if not (text or "").strip() or any(p == "" for p in parts):
        raise DecodingLabError(f"{name}={text!r} is not a comma-separated list of numbers; "
                               "allowed: e.g. 1, 1, 2")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DecodingLabError(f"{name}={text!r}: item {part!r} is not a finite number")
        values.append(value)
    return values


def parse_groups(text: str) -> list[list[float]]:
    """One rating list per line (or per ``;``): the MaxMin input."""
    lines = [line for line in (text or "").replace(";", "\n").splitlines() if line.strip()]
    if not lines:
        raise DecodingLabError("group ratings are empty; allowed: one comma-separated list of "
                               "ratings per group, one group per line")
    return [parse_numbers(f"group {j + 1}", line) for j, line in enumerate(lines)]


def response_names(n: int) -> list[str]:
    return [f"y{i + 1}" for i in range(n)]


# ---------------------------------------------------------------------- Bradley–Terry

def bradley_terry_frame(table: pm.BradleyTerryTable) -> pd.DataFrame:
    """Long format: one row per (row response, column response) with P(row ≻ column)."""
    names = response_names(len(table.ratings))
    return pd.DataFrame([{"row": names[i], "column": names[j], "p": table.matrix[i][j],
                          "most preferred": i in table.most_preferred}
                         for i in range(len(names)) for j in range(len(names))])


def bradley_terry_matrix(table: pm.BradleyTerryTable) -> pd.DataFrame:
    """The square table as a DataFrame (rows beat columns), ratings as the first column."""
    names = response_names(len(table.ratings))
    frame = pd.DataFrame(table.matrix, index=names, columns=names)
    frame.insert(0, "rating", table.ratings)
    return frame


def bradley_terry_chart(table: pm.BradleyTerryTable) -> alt.Chart:
    """Heat map of P(row ≻ column) in percent (viridis; 50% on the diagonal)."""
    frame = bradley_terry_frame(table)
    names = response_names(len(table.ratings))
    base = alt.Chart(frame).encode(
        x=alt.X("column:N", sort=names, title="… beats column", axis=alt.Axis(orient="top", labelAngle=0)),
        y=alt.Y("row:N", sort=names, title="row …"))
    cells = base.mark_rect().encode(
        color=alt.Color("p:Q", scale=alt.Scale(domain=[0, 1], range=VIRIDIS), legend=None),
        tooltip=[alt.Tooltip("row:N"), alt.Tooltip("column:N"),
                 alt.Tooltip("p:Q", title="P(row ≻ column)", format=".1%")])
    text = base.mark_text(fontSize=FONT_SIZE + 2, fontWeight="bold").encode(
        text=alt.Text("p:Q", format=".0%"),
        color=alt.condition("datum.p > 0.55", alt.value("#000000"), alt.value("#ffffff")))
    size = 70 * len(names)
    return (cells + text).properties(width=size, height=size).configure_axis(
        labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE)


# ---------------------------------------------------------------------- MaxMin

def maxmin_frame(result: pm.MaxMinChoice) -> pd.DataFrame:
    """One row per response: each group's utility, the worst case, and the MaxMin choice."""
    names = response_names(len(result.worst_case))
    rows = []
    for i, name in enumerate(names):
        row = {"response": name}
        row.update({f"group {j + 1}": u[i] for j, u in enumerate(result.utilities)})
        row["worst case"] = result.worst_case[i]
        row["worst for"] = f"group {result.worst_group[i] + 1}"
        row["MaxMin choice"] = i in result.chosen
        row["favourite of"] = ", ".join(f"group {j + 1}" for j, fav in
                                        enumerate(result.group_favourites) if i in fav)
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- DPO β sweep

def beta_grid(low: float = 0.01, high: float = 10.0, n: int = 61) -> list[float]:
    """``n`` β values spaced evenly in log scale from ``low`` to ``high``."""
    if not 0 < low < high or n < 2:
        raise DecodingLabError(f"beta grid [{low}, {high}] with {n} points; allowed: "
                               "0 < low < high and at least 2 points")
    step = (math.log(high) - math.log(low)) / (n - 1)
    return [math.exp(math.log(low) + k * step) for k in range(n)]


def beta_sweep_frame(results: list[pm.DPOResult]) -> pd.DataFrame:
    """One row per β: the DPO loss, the implicit rewards and their margin."""
    return pd.DataFrame([{"beta": r.beta, "loss": r.loss, "chosen reward": r.chosen_reward,
                          "rejected reward": r.rejected_reward, "margin": r.margin}
                         for r in results])


REWARD_COLOURS = {"chosen reward": "#009E73", "rejected reward": "#D55E00", "margin": "#0072B2"}


def beta_sweep_chart(frame: pd.DataFrame, beta: float | None = None) -> alt.HConcatChart:
    """Left: DPO loss against β (log scale); right: the implicit rewards and margin. A rule
    marks the β of the calculator."""
    x = alt.X("beta:Q", title="β (log scale)", scale=alt.Scale(type="log"))
    loss = alt.Chart(frame).mark_line(strokeWidth=3, color="#000000").encode(
        x=x, y=alt.Y("loss:Q", title="DPO loss"),
        tooltip=[alt.Tooltip("beta:Q", format=".3g"), alt.Tooltip("loss:Q", format=".4f")])
    long = frame.melt(id_vars=["beta"], value_vars=list(REWARD_COLOURS), var_name="quantity")
    rewards = alt.Chart(long).mark_line(strokeWidth=3).encode(
        x=x, y=alt.Y("value:Q", title="implicit reward"),
        color=alt.Color("quantity:N", title=None, legend=alt.Legend(orient="top"),
                        scale=alt.Scale(domain=list(REWARD_COLOURS),
                                        range=list(REWARD_COLOURS.values()))),
        tooltip=[alt.Tooltip("beta:Q", format=".3g"), alt.Tooltip("quantity:N"),
                 alt.Tooltip("value:Q", format=".4f")])
    left, right = loss, rewards
    if beta is not None:
        rule = alt.Chart(pd.DataFrame({"beta": [beta]})).mark_rule(
            strokeDash=[6, 3], color="#777777", strokeWidth=2).encode(x="beta:Q")
        left, right = loss + rule, rewards + rule
    return alt.hconcat(left.properties(width=320, height=280),
                       right.properties(width=320, height=280)).configure_axis(
        labelFontSize=FONT_SIZE, titleFontSize=FONT_SIZE).configure_legend(
        labelFontSize=FONT_SIZE, symbolSize=200)
