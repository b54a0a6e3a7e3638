"""The Repetition lab page through AppTest, on the tiny random model."""

from __future__ import annotations

import pytest

from app.views import repetition as rp
from tests.app_pages import open_page

LOOPING_TEXT = "It was late . " + "They're all in shock . " * 4 + "They're all"


@pytest.fixture
def at(monkeypatch):
    return open_page("repetition", monkeypatch)


def generate(at, prompt: str = "The cat", spec: str = "greedy", max_new_tokens: int = 40):
    at.text_area(key=rp.PROMPT_KEY).input(prompt)
    at.text_input(key=rp.SPEC_KEY).input(spec)
    at.number_input(key=rp.MAX_NEW_TOKENS_KEY).set_value(max_new_tokens)
    return at.button(key=rp.GENERATE_KEY).click().run()


def test_page_renders(at):
    assert not at.exception
    assert [t.value for t in at.title] == ["Repetition lab"]
    assert rp.SUBJECT_KEY not in at.session_state


def test_pasted_text_shows_the_loop_and_metrics(at):
    at.radio(key=rp.SOURCE_KEY).set_value("Paste text").run()
    at.text_area(key=rp.TEXT_KEY).input(LOOPING_TEXT)
    at.button(key=rp.ANALYSE_KEY).click().run()
    assert not at.exception and not at.error
    loop_html = next(h.value for h in at.html if "declab-loop" in h.value)
    assert loop_html.count('<mark class="cycle"') == 4 and 'class="partial"' in loop_html
    # cycles start where the sentence does ("They're ..."), not at the "." before it
    assert any("Loop: a 5-token phrase repeated from token 4 on" in c.value for c in at.caption)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["rep-2"] != "0.0%" and float(metrics["rep-4"].rstrip("%")) > 50


def test_pasted_template_loop_shows_its_frame_and_slot_values(at):
    text = ("The gate opened. The animals are all in horror. The animals are all in terror. "
            "The animals are all in fear. The animals are all in awe.")
    at.radio(key=rp.SOURCE_KEY).set_value("Paste text").run()
    at.text_area(key=rp.TEXT_KEY).input(text)
    at.button(key=rp.ANALYSE_KEY).click().run()
    assert not at.exception and not at.error
    loop_html = next(h.value for h in at.html if "declab-loop" in h.value)
    assert loop_html.count('<mark class="cycle"') == 4
    assert 'title="cycle 2: terror"' in loop_html and 'title="cycle 4: awe"' in loop_html
    caption = next(c.value for c in at.caption if "Template loop" in c.value)
    assert "Frame: “The animals are all in … .”" in caption
    assert "horror · terror · fear · awe" in caption


def test_whitespace_only_repetition_is_no_loop_on_the_page(at):
    at.radio(key=rp.SOURCE_KEY).set_value("Paste text").run()
    at.text_area(key=rp.TEXT_KEY).input("The capital of Peru is Lima.\n\n\n\n")
    at.button(key=rp.ANALYSE_KEY).click().run()
    assert any(c.value.endswith("(whitespace does not count).") for c in at.caption)


def test_generation_shows_the_loop_probability_trace(at):
    generate(at)
    assert not at.exception and not at.error
    subject = at.session_state[rp.SUBJECT_KEY]
    assert subject["kind"] == "generation" and len(subject["tokens"]) == 40
    # The tiny model's greedy text with end-of-sequence forbidden loops within 40 tokens.
    assert len(at.get("vega_lite_chart")) == 2
    assert any(c.value.startswith("From step") for c in at.caption)


def test_a_fix_reruns_the_same_prompt_beside_the_original(at):
    generate(at)
    original = at.session_state[rp.SUBJECT_KEY]
    at.button(key=rp.fix_key("no_repeat_ngram_size 3")).click().run()
    assert not at.exception and not at.error
    fixed = at.session_state[rp.FIXED_KEY]
    assert fixed["label"] == "greedy + no_repeat_ngram_size 3"
    assert fixed["generation"].config["no_repeat_ngram_size"] == 3
    assert fixed["generation"].prompt == original["generation"].prompt
    assert fixed["tokens"] != original["tokens"]
    labels = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert labels == ["#### `greedy`", "#### `greedy + no_repeat_ngram_size 3`"]


def test_self_reinforcement_curve(at):
    at.text_input(key=rp.SENTENCE_KEY).input("The cat sat on the mat.")
    at.slider(key=rp.REPEATS_KEY).set_value(4)
    at.button(key=rp.PROBE_KEY).click().run()
    assert not at.exception and not at.error
    curve = at.session_state[rp.CURVE_KEY]
    assert curve.repeats == 4 and curve.ip[0] == 0.0
    assert any(c.value.startswith("'The cat sat on the mat.'") for c in at.caption)


@pytest.mark.parametrize("spec,message", [("greedy:top_k=-1", "top_k=-1 is out of range"),
                                          ("greedy:foo=1", "unknown field 'foo'")])
def test_bad_config_shows_the_library_message(at, spec, message):
    generate(at, spec=spec)
    assert not at.exception
    assert len(at.error) == 1 and message in at.error[0].value


def test_empty_inputs_show_errors(at):
    generate(at, prompt="  ")
    assert len(at.error) == 1 and "empty" in at.error[0].value
    at.text_input(key=rp.SENTENCE_KEY).input(" ")
    at.button(key=rp.PROBE_KEY).click().run()
    assert not at.exception
    assert any("sentence=' ' is empty" in e.value for e in at.error)


def test_a_failed_generate_removes_the_old_result(at):
    generate(at, max_new_tokens=12)
    assert rp.SUBJECT_KEY in at.session_state
    generate(at, spec="greedy:top_k=-1")
    assert len(at.error) == 1 and rp.SUBJECT_KEY not in at.session_state
