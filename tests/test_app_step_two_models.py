"""The Step inspector's two-model knobs (realign, contrastive decoding, guidance) through AppTest,
on the tiny random model (which has no adapter: realign must say it needs one)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app import lab_state
from app.views import step_inspector as si
from tests.test_app_step_inspector import LAB, generate


@pytest.fixture
def at(monkeypatch) -> AppTest:
    monkeypatch.setenv(lab_state.TINY_MODEL_ENV, "1")
    return AppTest.from_file(LAB, default_timeout=60).run()


def test_guidance_records_the_unconditional_distribution(at):
    at.radio(key=si.knob_key("two_models")).set_value("guidance").run()
    at.slider(key=si.knob_key("guidance_scale")).set_value(3.0)
    at.text_input(key=si.knob_key("negative_prompt")).input("Sampling draws")
    at = generate(at, "The cat sat", max_new_tokens=4, min_new_tokens=0)
    assert not at.exception and not at.error, [e.value for e in at.error]
    gen = at.session_state[si.GENERATION_KEY]
    assert gen.chain == ["raw", "guidance"]
    assert gen.config["guidance_scale"] == 3.0 and gen.config["negative_prompt"] == "Sampling draws"
    assert gen.sequences[0].steps[0].second == "unconditional"


def test_off_by_default_and_realign_without_an_adapter_says_so(at):
    at = generate(at, "The cat sat", max_new_tokens=3, min_new_tokens=0)
    assert at.session_state[si.GENERATION_KEY].chain == ["raw"]
    at.radio(key=si.knob_key("two_models")).set_value("realign").run()
    at = at.button(key=si.GENERATE_KEY).click().run()
    assert not at.exception
    assert any("realign=1.0 needs an adapter" in e.value for e in at.error)


def test_not_offered_for_beam_search(at):
    at.radio(key=si.STRATEGY_KEY).set_value("beam").run()
    assert not at.exception
    assert si.knob_key("two_models") not in [r.key for r in at.radio]
