"""Preference-math builders: parsing, the Bradley–Terry and MaxMin tables, the β sweep."""

from __future__ import annotations

import math

import pytest

from alignment import preference_math as pm
from app import charts_prefmath as cp
from decoding.errors import DecodingLabError


def test_parse_numbers_and_groups():
    assert cp.parse_numbers("ratings", " 1, 1,2.5 ") == [1.0, 1.0, 2.5]
    assert cp.parse_groups("1,2\n\n3,4; 5,6") == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    for bad in ("", "1,,2", "1, x", "1, inf"):
        with pytest.raises(DecodingLabError, match="ratings="):
            cp.parse_numbers("ratings", bad)
    with pytest.raises(DecodingLabError, match="group 2="):
        cp.parse_groups("1,2\n1,y")
    with pytest.raises(DecodingLabError, match="empty"):
        cp.parse_groups(" \n")


def test_bradley_terry_frames_follow_the_table():
    table = pm.bradley_terry_table([1, 1, 2])
    long = cp.bradley_terry_frame(table)
    assert len(long) == 9
    p = {(r, c): v for r, c, v in zip(long["row"], long["column"], long["p"])}
    assert p[("y3", "y1")] == pytest.approx(2 / 3) and p[("y1", "y3")] == pytest.approx(1 / 3)
    assert p[("y2", "y2")] == 0.5
    assert list(long[long["most preferred"]]["row"].unique()) == ["y3"]
    square = cp.bradley_terry_matrix(table)
    assert list(square.columns) == ["rating", "y1", "y2", "y3"]
    assert square.loc["y3", "y1"] == pytest.approx(2 / 3)
    chart = cp.bradley_terry_chart(table).to_dict()
    assert chart["layer"][1]["encoding"]["text"]["format"] == ".0%"


def test_maxmin_frame_marks_the_egalitarian_choice():
    # y3 is nobody's favourite but has the best worst case.
    result = pm.maxmin_choice([[3, 0, 2], [0, 3, 2]])
    frame = cp.maxmin_frame(result)
    assert list(frame.columns) == ["response", "group 1", "group 2", "worst case", "worst for",
                                   "MaxMin choice", "favourite of"]
    assert list(frame["worst case"]) == [0, 0, 2]
    assert list(frame["MaxMin choice"]) == [False, False, True]
    assert list(frame["favourite of"]) == ["group 1", "group 2", ""]


def test_beta_grid_is_log_spaced():
    grid = cp.beta_grid(0.01, 10.0, 4)
    assert grid == pytest.approx([0.01, 0.1, 1.0, 10.0])
    with pytest.raises(DecodingLabError):
        cp.beta_grid(0.0, 1.0)


def test_beta_sweep_frame_and_chart():
    sweep = pm.dpo_beta_sweep(0.2, 0.3, 0.2, 0.4, betas=[0.1, 1.0, 2.0])
    frame = cp.beta_sweep_frame(sweep)
    assert list(frame["beta"]) == [0.1, 1.0, 2.0]
    # README's worked example: beta 2 -> margin 2 log(4/3) = 0.575364, loss 0.446287.
    assert frame.loc[2, "margin"] == pytest.approx(2 * math.log(4 / 3))
    assert frame.loc[2, "loss"] == pytest.approx(0.446287, abs=1e-6)
    assert frame["loss"].is_monotonic_decreasing    # positive margin: loss falls with beta
    chart = cp.beta_sweep_chart(frame, beta=1.0).to_dict()
    left, right = chart["hconcat"]
    assert left["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"
    assert [layer["mark"]["type"] for layer in right["layer"]] == ["line", "rule"]
