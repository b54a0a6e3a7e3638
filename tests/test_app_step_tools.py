"""The Step inspector's what-if panel and branches, through AppTest on the tiny random model."""

from __future__ import annotations

import pytest

from app.views import step_branches as sb
from app.views import step_inspector as si
from app.views import step_whatif as sw
from decoding.whatif import whatif_config, whatif_step
from tests.test_app_step_inspector import at, generate  # noqa: F401  (the fixture)


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture
def sampled(at):  # noqa: F811
    at.radio(key=si.STRATEGY_KEY).set_value("sample").run()
    si_number = at.number_input(key=si.knob_key("top_k"))
    si_number.set_value(5)
    generate(at, "The cat")
    assert not at.exception and not at.error
    return at


def test_whatif_starts_from_the_recorded_settings(sampled):
    at = sampled
    generation = at.session_state[si.GENERATION_KEY]
    assert at.number_input(key=sw.key("top_k")).value == 5
    assert at.radio(key=sw.key("processor_order")).value == "transformers"
    step = generation.steps[0]
    # the run's own settings reproduce the run: its kept count, its token's final probability
    assert metric(at, "kept (what-if)") == str(step.kept_count) == "5"
    assert metric(at, "recorded token: p final") == f"{step.prob_final:.1%}"
    assert any(m.value.startswith(f"**Exact**: every token these settings keep is among the "
                                  f"{len(step.candidates)} recorded tokens") for m in at.markdown)
    assert any("newly kept: none  ·  newly removed: none" in c.value.lower() for c in at.caption)


def test_whatif_knobs_change_the_kept_set_without_the_model(sampled):
    at = sampled
    generation = at.session_state[si.GENERATION_KEY]
    at.slider(key=si.STEP_KEY).set_value(2).run()
    at.number_input(key=sw.key("top_k")).set_value(2).run()
    assert not at.exception
    step = generation.steps[2]
    assert metric(at, "kept (what-if)") == "2"
    at.slider(key=sw.key("top_p")).set_value(0.3)
    at.slider(key=sw.key("temperature")).set_value(0.5)
    at.radio(key=sw.key("processor_order")).set_value("llama.cpp").run()
    expected = whatif_step(step, whatif_config(generation.config, top_k=2, top_p=0.3, temperature=0.5,
                                               processor_order="llama.cpp"))
    assert metric(at, "kept (what-if)") == str(expected.kept_count)
    # min_new_tokens (a penalty stage) was recorded: the what-if starts after it
    assert any("what-if chain (llama.cpp order): after min_new_tokens → top_k → top_p → temperature"
               in c.value for c in at.caption)
    assert at.session_state[si.GENERATE_CALLS_KEY] == 1
    assert at.session_state[si.GENERATION_KEY] is generation


def test_whatif_beyond_the_record_says_approximate(sampled):
    at = sampled
    at.number_input(key=sw.key("top_k")).set_value(0)              # off, and a wide nucleus
    at.slider(key=sw.key("top_p")).set_value(0.99).run()
    assert not at.exception
    assert any(m.value.startswith("**Approximate**: they keep") for m in at.markdown)
    at.slider(key=sw.key("top_p")).set_value(1.0).run()             # no cut at T = 1: exact
    assert any(m.value.startswith("**Exact**") for m in at.markdown)
    at.number_input(key=sw.key("top_k")).set_value(3).run()
    assert any(m.value.startswith("**Exact**") for m in at.markdown)


def test_a_new_generation_resets_the_whatif_knobs(sampled):
    at = sampled
    at.number_input(key=sw.key("top_k")).set_value(2).run()
    at.number_input(key=si.knob_key("top_k")).set_value(7)
    at.button(key=si.GENERATE_KEY).click().run()
    assert at.number_input(key=sw.key("top_k")).value == 7


def test_branch_continues_from_an_alternative_and_can_be_inspected(at):  # noqa: F811
    generate(at, "The cat", max_new_tokens=8, min_new_tokens=8)
    original = at.session_state[si.GENERATION_KEY]
    at.slider(key=si.STEP_KEY).set_value(2).run()
    choice = at.selectbox(key=sb.ALTERNATIVE_KEY)
    choice.set_value(_token_id(original.steps[2], choice.options[1])).run()
    at.button(key=sb.BRANCH_BUTTON_KEY).click().run()
    assert not at.exception and not at.error
    branches = at.session_state[sb.BRANCHES_KEY]
    assert len(branches) == 1
    new = branches[0]
    token_id = at.selectbox(key=sb.ALTERNATIVE_KEY).value
    assert new.token_ids[:2] == original.token_ids[:2] and new.token_ids[2] == token_id
    assert token_id != original.token_ids[2] and len(new.token_ids) == 8
    assert at.session_state[si.GENERATE_CALLS_KEY] == 1
    assert "Branches" in [h.value for h in at.main.subheader]
    # the scrubber's text, then the comparison: the original (outlined at no step) and the branch
    assert len(at.html) >= 4 and at.html[-1].value.count('class="tok sel"') == 1

    at.button(key=sb.INSPECT_KEY).click().run()
    assert not at.exception
    assert at.session_state[si.GENERATION_KEY] is new
    assert at.slider(key=si.STEP_KEY).value == 2
    assert at.session_state[sb.BRANCHES_KEY] == [original]

    generate(at, "The dog")
    assert at.session_state[sb.BRANCHES_KEY] == []


def _token_id(step, label: str) -> int:
    """The selectbox shows labels; find the token id whose label it is."""
    format_label = sb.alternative_label(step)
    return next(c.token_id for c in step.candidates if format_label(c.token_id) == label)
