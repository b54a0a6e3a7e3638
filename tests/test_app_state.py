"""Settings and results across page changes, and every page by its URL (issue 17), through
AppTest on the tiny random model."""

from __future__ import annotations

import pytest

from app import lab_state
from app.views import beam_explorer as be
from app.views import compare as cp
from app.views import step_inspector as si
from tests.app_pages import open_page, page_urls, switch_page

PAGES = {"step-inspector": "Step inspector", "compare": "Compare decodings",
         "repetition": "Repetition lab", "beam-explorer": "Beam explorer",
         "preference-math": "Preference math", "studies": "Studies",
         "alignment": "Alignment × decoding", "train": "Train an adapter"}
PROMPT = "The unicorn said"


@pytest.mark.parametrize("url_path", sorted(PAGES))
def test_every_page_opens_by_its_url(monkeypatch, url_path):
    at = open_page(url_path, monkeypatch)
    assert not at.exception
    assert at.title[0].value == PAGES[url_path]


def test_the_root_url_opens_the_step_inspector_under_its_own_address(monkeypatch):
    at = open_page("step-inspector", monkeypatch)
    # the default page (served at "/") only forwards: no page sits at "" except it
    assert set(PAGES) <= set(page_urls(at))
    at = switch_page(at, "")
    assert not at.exception and at.title[0].value == "Step inspector"


def sampled_run(at):
    at.text_area(key=si.PROMPT_KEY).input(PROMPT)
    at.radio(key=si.STRATEGY_KEY).set_value("sample").run()
    at.slider(key=si.knob_key("top_p")).set_value(0.8)
    at.number_input(key=si.knob_key("max_new_tokens")).set_value(6)
    at.number_input(key=si.knob_key("min_new_tokens")).set_value(6)
    at.number_input(key=lab_state.SEED_KEY).set_value(7)
    at.toggle(key=lab_state.CHAT_KEY).set_value(False)
    at.button(key=si.GENERATE_KEY).click().run()
    assert not at.exception and not at.error
    return at


def test_prompt_settings_and_result_survive_a_page_change(monkeypatch):
    at = sampled_run(open_page("step-inspector", monkeypatch))
    generation = at.session_state[si.GENERATION_KEY]
    assert generation.config["top_p"] == 0.8 and generation.config["seed"] == 7

    at = switch_page(at, "compare")
    assert at.text_area(key=cp.PROMPT_KEY).value == PROMPT          # the prompt is shared
    assert at.number_input(key=lab_state.SEED_KEY).value == 7
    assert at.toggle(key=lab_state.CHAT_KEY).value is False
    at = switch_page(at, "beam-explorer")
    assert at.text_area(key=be.PROMPT_KEY).value == PROMPT

    at = switch_page(at, "step-inspector")
    assert not at.exception
    assert at.text_area(key=si.PROMPT_KEY).value == PROMPT
    assert at.radio(key=si.STRATEGY_KEY).value == "sample"
    assert at.slider(key=si.knob_key("top_p")).value == 0.8
    assert at.session_state[si.GENERATION_KEY] is generation
    assert at.session_state[si.GENERATE_CALLS_KEY] == 1
    assert not at.warning                                              # settings = the result's
    assert any(s.value.startswith("Step 0: ") for s in at.subheader)


def test_a_prompt_typed_on_another_page_reaches_the_step_inspector(monkeypatch):
    at = open_page("compare", monkeypatch)
    at.text_area(key=cp.PROMPT_KEY).input("Once upon a time").run()
    at = switch_page(at, "step-inspector")
    assert at.text_area(key=si.PROMPT_KEY).value == "Once upon a time"


def test_a_result_is_never_shown_as_made_by_other_settings(monkeypatch):
    at = sampled_run(open_page("step-inspector", monkeypatch))
    at.slider(key=si.knob_key("top_p")).set_value(0.5).run()
    assert [w.value for w in at.warning] == [
        "The result below was produced with other settings (top_p changed since). Generate "
        "again to update it."]
    at.number_input(key=lab_state.SEED_KEY).set_value(8).run()
    assert "(top_p, seed changed since)" in at.warning[0].value
    at.slider(key=si.knob_key("top_p")).set_value(0.8)
    at.number_input(key=lab_state.SEED_KEY).set_value(7).run()
    assert not at.warning


def test_a_failed_generate_removes_the_old_result(monkeypatch):
    at = sampled_run(open_page("step-inspector", monkeypatch))
    at.text_area(key=si.PROMPT_KEY).input("   ")
    at.button(key=si.GENERATE_KEY).click().run()
    assert [e.value for e in at.error] == ["The prompt is empty: type a prompt to continue."]
    assert si.GENERATION_KEY not in at.session_state
    assert not any(s.value.startswith("Step 0: ") for s in at.subheader)


def test_compare_result_survives_and_a_failed_run_clears_it(monkeypatch):
    at = open_page("compare", monkeypatch)
    at.text_area(key=cp.PROMPT_KEY).input(PROMPT)
    at.text_area(key=cp.SPECS_KEY).input("greedy")
    at.number_input(key=cp.MAX_NEW_TOKENS_KEY).set_value(4)
    at.button(key=cp.RUN_KEY).click().run()
    assert not at.exception and cp.RESULT_KEY in at.session_state
    at = switch_page(switch_page(at, "repetition"), "compare")
    assert at.text_area(key=cp.SPECS_KEY).value == "greedy" and cp.RESULT_KEY in at.session_state
    assert not at.warning
    at.text_area(key=cp.SPECS_KEY).input("nonsense:top_q=3")
    at.button(key=cp.RUN_KEY).click().run()
    assert at.error and cp.RESULT_KEY not in at.session_state


def test_an_out_of_range_number_is_reported_not_silently_dropped(monkeypatch):
    at = open_page("step-inspector", monkeypatch)
    at.number_input(key=si.knob_key("max_new_tokens")).set_value(5000).run()
    assert [e.value for e in at.error] == [
        "max_new_tokens=5000 is out of range; allowed: 1 <= max_new_tokens <= 1024; using 1024"]
    at.radio(key=si.STRATEGY_KEY).set_value("sample").run()
    at.number_input(key=si.knob_key("top_k")).set_value(-3).run()      # a registry knob
    assert any(e.value.startswith("top_k=-3 is out of range; allowed: 0 <= top_k <= 100000; using 0")
               for e in at.error)
    at.number_input(key=si.knob_key("max_new_tokens")).set_value(4)
    at.number_input(key=si.knob_key("top_k")).set_value(5).run()
    assert not at.error


# ---------------------------------------------------------------------- presentation view

def test_presentation_view_redraws_live_and_a_token_click_selects_its_step(monkeypatch):
    from app import charts_presentation as cpres
    from app.views import step_presentation as sp
    from decoding.whatif import whatif_config, whatif_step

    at = sampled_run(open_page("step-inspector", monkeypatch))
    generation = at.session_state[si.GENERATION_KEY]
    at.toggle(key=si.PRESENT_KEY).set_value(True).run()
    assert not at.exception and not at.error
    assert at.slider(key=sp.key("top_p")).value == 0.8                 # the run's own settings
    assert any(m.value.startswith("### Step 0: the model chose") for m in at.markdown)
    assert any(m.value.startswith("**Exact**") for m in at.markdown)
    at.slider(key=sp.key("top_p")).set_value(0.3).run()
    expected = whatif_step(generation.steps[0], whatif_config(generation.config, top_p=0.3))
    assert any(f"{expected.kept_count:,} tokens kept" in m.value for m in at.markdown)
    assert at.session_state[si.GENERATE_CALLS_KEY] == 1                # no model call
    at.button_group(key=sp.TOKEN_KEY).set_value(3).run()                 # click the 4th token
    assert at.session_state[si.STEP_KEY] == 3
    assert any(m.value.startswith("### Step 3: the model chose") for m in at.markdown)
    frame = cpres.presentation_frame(expected, top_n=15, top_p=0.3)
    assert list(frame["p_in"]) == sorted(frame["p_in"], reverse=True)


def test_presentation_frame_sorts_shades_the_cut_and_places_the_line():
    from app import charts_presentation as cpres
    from tests.test_charts import nucleus_step

    step = nucleus_step(0, {"e": 0.011, "d": 0.378, "a": 0.05, "b": 0.02, "c": 0.5, "f": 0.041})
    frame = cpres.presentation_frame(step, top_n=6, top_p=0.9)
    assert list(frame["token"]) == ["c", "d", "a", "f", "b", "e"]
    assert list(frame["status"]) == ["kept", "kept", "kept", "removed", "removed", "removed"]
    assert list(frame["cut_line"]) == [False, False, True, False, False, False]   # .5+.378+.05 >= .9
    assert list(frame["row"])[:2] == ["01 c", "02 d"]
    assert "3 of the 6 tokens shown are kept" in cpres.presentation_caption(frame, 0.9)
    import altair as alt

    records = frame.to_dict("records")
    alt.Chart.from_dict({**cpres.presentation_spec(len(frame)), "data": {"values": records}}, validate=True)
    assert cpres.FONT >= 16
