"""One interval format (``alignment.bootstrap.percent_interval``) behind the reports' tables,
the evaluation table and the app's grid: hand-made cells, exact strings."""

from __future__ import annotations

from alignment import evaluate as ev
from alignment.bootstrap import percent_interval
from app import charts_alignment as ca
from experiments import alignment_kit as kit

# 0.304 -> 30, 0.556 -> 56: whole percent, rounded (no ties, so no half-even surprise).
CELL = {"support": 0.42, "ci": {"support": (0.304, 0.556)}}


def test_percent_interval_rounds_to_whole_percent():
    assert percent_interval(0.304, 0.556) == "30–56"
    assert percent_interval(0.0, 1.0, sep=",") == "0,100"


def test_report_column_app_cell_and_evaluation_table_use_it():
    key, header, cell = kit.with_ci("support", "support [95% CI]")
    assert (key, header, cell(CELL)) == ("support", "support [95% CI]", "42% [30–56]")
    assert kit.md_table([CELL], [kit.with_ci("support", "s")])[-1] == "| 42% [30–56] |"
    assert ca._ci_text(CELL, "support") == "30–56 %"
    assert ca._ci_text(CELL, "loop_rate") == ""          # no interval recorded: an empty cell
    assert ev._ci(CELL, "support") == "[30,56]"
