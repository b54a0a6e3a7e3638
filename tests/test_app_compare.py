"""The Compare decodings page through AppTest, on the tiny random model."""

from __future__ import annotations

import pytest

from app.views import compare as cp
from tests.app_pages import open_page


@pytest.fixture
def at(monkeypatch):
    return open_page("compare", monkeypatch)


def compare(at, prompt: str, specs: str, max_new_tokens: int = 12):
    at.text_area(key=cp.PROMPT_KEY).input(prompt)
    at.text_area(key=cp.SPECS_KEY).input(specs)
    at.number_input(key=cp.MAX_NEW_TOKENS_KEY).set_value(max_new_tokens)
    return at.button(key=cp.RUN_KEY).click().run()


def test_page_renders_with_default_specs(at):
    assert not at.exception
    assert [t.value for t in at.title] == ["Compare decodings"]
    assert at.text_area(key=cp.SPECS_KEY).value == cp.DEFAULT_SPECS
    assert cp.RESULT_KEY not in at.session_state


def test_compare_shows_one_text_per_config_and_the_metrics_table(at):
    compare(at, "The cat", "greedy\nbeam:num_beams=2\nsample:top_p=0.9,temperature=0.7")
    assert not at.exception and not at.error
    rows = at.session_state[cp.RESULT_KEY]["rows"]
    assert [r["label"] for r in rows] == ["greedy", "beam:num_beams=2",
                                          "sample:top_p=0.9,temperature=0.7"]
    table = at.dataframe[0].value
    assert list(table["config"]) == [r["label"] for r in rows]
    assert list(table["tokens"]) == [r["n_tokens"] for r in rows]
    assert all(1 <= n <= 12 for n in table["tokens"])
    assert len([h for h in at.html if "declab-loop" in h.value]) == 3


def test_max_new_tokens_and_ignore_eos_change_the_result(at):
    at.checkbox(key=cp.IGNORE_EOS_KEY).check()
    compare(at, "The cat", "greedy", max_new_tokens=5)
    assert at.session_state[cp.RESULT_KEY]["rows"][0]["n_tokens"] == 5
    compare(at, "The cat", "greedy", max_new_tokens=9)
    row = at.session_state[cp.RESULT_KEY]["rows"][0]
    assert row["n_tokens"] == 9 and row["finish_reason"] == "length"
    assert row["config"]["ignore_eos"] is True


def test_add_preset_appends_a_spec(at):
    at.selectbox(key=cp.PRESET_KEY).set_value("greedy + DRY 0.8").run()
    at.button(key=cp.ADD_PRESET_KEY).click().run()
    assert at.text_area(key=cp.SPECS_KEY).value.endswith("\ngreedy:dry_multiplier=0.8")


@pytest.mark.parametrize("prompt,specs,message", [
    ("", "greedy", "empty"),
    ("The cat", "greedy:top_p=2", "top_p=2.0 is out of range"),
    ("The cat", "nucleus", "unknown strategy 'nucleus'"),
    ("The cat", "\n".join(["greedy"] * 7), "at most 6"),
])
def test_bad_input_shows_the_library_message(at, prompt, specs, message):
    compare(at, prompt, specs)
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value
    assert cp.RESULT_KEY not in at.session_state
