"""The Beam explorer page through AppTest, on the tiny random model."""

from __future__ import annotations

import pytest

from app.views import beam_explorer as be
from tests.app_pages import open_page


@pytest.fixture
def at(monkeypatch):
    return open_page("beam-explorer", monkeypatch)


def run(at, prompt="The cat", num_beams=3, max_new_tokens=4, **widgets):
    at.text_area(key=be.PROMPT_KEY).input(prompt)
    at.number_input(key=be.NUM_BEAMS_KEY).set_value(num_beams)
    at.number_input(key=be.MAX_NEW_TOKENS_KEY).set_value(max_new_tokens)
    for key, value in widgets.items():
        widget = next(w for kind in ("slider", "number_input", "selectbox")
                      for w in at.get(kind) if w.key == key)
        widget.set_value(value)
    return at.button(key=be.GENERATE_KEY).click().run()


def test_page_renders(at):
    assert not at.exception
    assert [t.value for t in at.title] == ["Beam explorer"]


def test_beam_search_draws_the_tree_and_ranks_hypotheses(at):
    run(at)
    assert not at.exception and not at.error
    generation = at.session_state[be.GENERATION_KEY]
    assert len(generation.beam_steps) == 4
    assert len(at.get("graphviz_chart")) == 1
    dot = at.get("graphviz_chart")[0].proto.spec
    assert dot.startswith("digraph beam {") and dot.count("b0_") >= 3
    table = at.dataframe[0].value
    assert table["returned"].sum() == 3
    assert at.dataframe[0].proto.placeholder == "–"      # an empty cell is not the word "None"
    assert list(table["rank by score"].dropna()) == sorted(table["rank by score"].dropna())


def test_widgets_change_the_search(at):
    run(at, num_beams=2, max_new_tokens=3)
    first = at.session_state[be.GENERATION_KEY]
    assert first.config["num_beams"] == 2 and len(first.beam_steps[0].beams) == 2
    run(at, num_beams=4, max_new_tokens=3, **{be.GROUPS_KEY: 2, be.DIVERSITY_KEY: 1.0,
                                              be.LENGTH_PENALTY_KEY: 0.0})
    assert not at.exception and not at.error
    second = at.session_state[be.GENERATION_KEY]
    assert (second.config["num_beam_groups"], second.config["diversity_penalty"]) == (2, 1.0)
    assert second.config["length_penalty"] == 0.0
    assert len(second.beam_steps[0].beams) == 4
    assert "diverse-beam groups" in " ".join(c.value for c in at.caption)


def test_bad_input_shows_errors(at):
    run(at, prompt="")
    assert len(at.error) == 1 and "empty" in at.error[0].value
    run(at, num_beams=3, **{be.GROUPS_KEY: 2})
    assert not at.exception
    assert len(at.error) == 1 and "num_beam_groups=2 is out of range" in at.error[0].value


def test_groups_without_a_diversity_penalty_are_named(at):
    run(at, num_beams=4, max_new_tokens=3, **{be.GROUPS_KEY: 2, be.DIVERSITY_KEY: 0.0})
    assert not at.exception and not at.error
    generation = at.session_state[be.GENERATION_KEY]
    assert be.diversity_note(generation) is not None
    assert [w.value for w in at.warning] == [be.diversity_note(generation)]
    run(at, num_beams=4, max_new_tokens=3, **{be.GROUPS_KEY: 2, be.DIVERSITY_KEY: 1.0})
    assert not at.warning
