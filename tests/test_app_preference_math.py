"""The Preference math page through AppTest (no model is loaded)."""

from __future__ import annotations

import math

import pytest

from app.views import preference_math as pmp
from tests.app_pages import open_page


@pytest.fixture
def at(monkeypatch):
    return open_page("preference-math", monkeypatch)


def metric(at, label: str) -> float:
    return float(next(m.value for m in at.metric if m.label == label))


def test_page_renders_every_calculator(at):
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == ["Preference math"]
    assert [t.label for t in at.tabs] == list(pmp.SECTIONS)
    assert metric(at, "P(y_w ≻ y_l)") == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-4)


def test_dpo_beta_slider_changes_the_loss(at):
    at.slider(key=pmp.DPO_BETA_KEY).set_value(2.0).run()
    assert not at.exception
    # README's worked example: beta 2 -> loss 0.446287.
    losses = [float(m.value) for m in at.metric if m.label == "loss"]
    assert pytest.approx(0.4463, abs=1e-4) in losses
    at.slider(key=pmp.prob_key("dpo", "pi_chosen")).set_value(0.1).run()
    assert metric(at, "chosen reward") == pytest.approx(2 * math.log(0.1 / 0.2), abs=1e-4)


def test_bradley_terry_table_follows_the_ratings(at):
    at.text_input(key=pmp.BT_RATINGS_KEY).input("1, 3").run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert table.loc["y2", "y1"] == pytest.approx(0.75)
    assert "Most preferred: y2" in at.success[0].value


def test_maxmin_choice_updates(at):
    at.text_area(key=pmp.MM_RATINGS_KEY).input("3, 0, 2\n0, 3, 2").run()
    assert not at.exception
    assert any("MaxMin choice: y3" in s.value for s in at.success)


@pytest.mark.parametrize("key,value,message", [
    (pmp.BT_RATINGS_KEY, "1, x", "item 'x' is not a finite number"),
    (pmp.BT_RATINGS_KEY, "0, 0, 1", "several zeros"),
])
def test_bad_ratings_show_the_library_message(at, key, value, message):
    at.text_input(key=key).input(value).run()
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value
    assert len(at.metric) > 0     # the other calculators still work


def test_bad_group_ratings_show_the_library_message(at):
    at.text_area(key=pmp.MM_RATINGS_KEY).input("1, 2\n1, 2, 3").run()
    assert not at.exception
    assert len(at.error) == 1 and "group_ratings[1] has 3 ratings" in at.error[0].value
