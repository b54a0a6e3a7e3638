"""The Step inspector page through Streamlit's AppTest, on the tiny random model.

AppTest (Streamlit 1.67) runs the ``st.navigation`` entrypoint ``app/lab.py`` and renders its
default page. It reruns the whole script on every widget change (no fragment-scoped reruns), so
"scrubbing does not regenerate" is checked on a full rerun: the stronger condition.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import lab_state
from app.views import step_inspector as si
from decoding import Generation

LAB = str(Path(__file__).resolve().parents[1] / "app" / "lab.py")


@pytest.fixture
def at(monkeypatch) -> AppTest:
    monkeypatch.setenv(lab_state.TINY_MODEL_ENV, "1")
    return AppTest.from_file(LAB, default_timeout=60).run()


def number(at: AppTest, name: str):
    return at.number_input(key=si.knob_key(name))


def generate(at: AppTest, prompt: str, *, max_new_tokens: int = 8, min_new_tokens: int = 6) -> AppTest:
    at.text_area(key=si.PROMPT_KEY).input(prompt)
    number(at, "max_new_tokens").set_value(max_new_tokens)
    number(at, "min_new_tokens").set_value(min_new_tokens)
    return at.button(key=si.GENERATE_KEY).click().run()


def test_app_starts_on_the_step_inspector(at):
    assert not at.exception
    assert [t.value for t in at.title] == ["Step inspector"]
    assert at.sidebar.text_input(key=lab_state.MODEL_KEY).value == ""
    assert at.sidebar.toggle(key=lab_state.CHAT_KEY).value is True
    assert si.GENERATION_KEY not in at.session_state


def test_generate_shows_text_and_scrubbing_does_not_regenerate(at):
    generate(at, "The cat")
    assert not at.exception and not at.error
    generation = at.session_state[si.GENERATION_KEY]
    assert isinstance(generation, Generation)
    assert at.session_state[si.GENERATE_CALLS_KEY] == 1
    assert 6 <= len(generation.steps) <= 8
    tokens_html = at.html[0].value
    assert tokens_html.count('class="tok') == len(generation.steps)
    assert tokens_html.count('class="tok sel"') == 1
    step_metrics = len(si.charts.step_metrics(generation.steps[0]))   # then the what-if panel's
    before = [m.value for m in at.metric][:step_metrics]
    assert before[0] == si.charts.visible_text(generation.steps[0].token_text)

    at.slider(key=si.STEP_KEY).set_value(3).run()
    assert not at.exception
    after = [m.value for m in at.metric][:step_metrics]
    assert after != before
    assert after == [v for _, v in si.charts.step_metrics(generation.steps[3])]
    assert at.session_state[si.GENERATE_CALLS_KEY] == 1
    assert at.session_state[si.GENERATION_KEY] is generation
    assert at.subheader[0].value.startswith("Step 3:")


def test_empty_prompt_shows_an_error_not_an_exception(at):
    at.button(key=si.GENERATE_KEY).click().run()
    assert not at.exception
    assert len(at.error) == 1 and "empty" in at.error[0].value
    assert si.GENERATION_KEY not in at.session_state


def test_invalid_config_shows_the_config_message(at):
    generate(at, "The cat", max_new_tokens=4, min_new_tokens=6)
    assert not at.exception
    assert len(at.error) == 1 and "min_new_tokens=6 is out of range" in at.error[0].value


def test_sampling_with_top_p_shows_the_chain_and_the_cut(at):
    at.radio(key=si.STRATEGY_KEY).set_value("sample").run()
    at.slider(key=si.knob_key("temperature")).set_value(0.5)
    at.slider(key=si.knob_key("top_p")).set_value(0.5)
    generate(at, "The cat")
    assert not at.exception and not at.error
    generation = at.session_state[si.GENERATION_KEY]
    assert generation.chain == ["raw", "min_new_tokens", "temperature", "top_p"]
    assert generation.config["top_p"] == 0.5
    captions = [c.value for c in at.caption]
    assert any(c.startswith("top_p = 0.5:") for c in captions)
    assert any("chain: raw → min_new_tokens → temperature → top_p" in c for c in captions)
    assert len(at.get("vega_lite_chart")) == 2   # the recorded step and the what-if panel


def test_beam_shows_hypotheses_and_hides_the_scrubber(at):
    at.radio(key=si.STRATEGY_KEY).set_value("beam").run()
    number(at, "num_beams").set_value(3)
    generate(at, "The cat", max_new_tokens=5, min_new_tokens=0)
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["rank"]) == [1, 2, 3]
    assert table["score"].is_monotonic_decreasing
    assert "Beam explorer" in at.info[0].value
    assert all(s.key != si.STEP_KEY for s in at.slider)


def test_unloadable_model_shows_an_error(monkeypatch):
    monkeypatch.delenv(lab_state.TINY_MODEL_ENV, raising=False)
    at = AppTest.from_file(LAB, default_timeout=60).run()
    at.sidebar.text_input(key=lab_state.MODEL_KEY).input("./no/such/model.gguf")
    generate(at, "The cat")
    assert not at.exception
    assert len(at.error) == 1 and "no such .gguf file" in at.error[0].value


@pytest.mark.parametrize("strategy,chain_stage", [("contrastive", "contrastive_top_k"),
                                                  ("mirostat", "mirostat")])
def test_strategies_beyond_transformers_generate_and_trace(at, strategy, chain_stage):
    at.radio(key=si.STRATEGY_KEY).set_value(strategy).run()
    generate(at, "The cat")
    assert not at.exception and not at.error
    generation = at.session_state[si.GENERATION_KEY]
    assert generation.config["strategy"] == strategy
    assert chain_stage in generation.chain
    assert generation.steps and generation.steps[0].extra


def test_generate_streams_the_text_token_by_token(at, monkeypatch):
    """The page's generation passes an ``on_step`` that writes the text so far (issue 17: tokens
    streamed as they are generated); the streamed text ends as the generation's text."""
    shown = []
    real = lab_state.token_stream

    def spying(box, lm, limit):
        show = real(box, lm, limit)

        def step(index, generated):
            shown.append(lm.decode(generated[0]))
            show(index, generated)
        return step

    monkeypatch.setattr(lab_state, "token_stream", spying)
    generate(at, "The cat")
    assert not at.exception and not at.error
    generation = at.session_state[si.GENERATION_KEY]
    assert len(shown) == len(generation.steps) and shown[-1] == generation.text
    assert not any(lab_state.STREAM_CAPTION.split("{")[0] in c.value for c in at.caption)   # replaced by the result
