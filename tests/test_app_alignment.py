"""The Alignment × decoding page through AppTest, on the tiny random model with a tiny DPO
adapter; and its pure chart builders."""

from __future__ import annotations

import json

import pytest

from alignment.train import TrainConfig, train
from app import charts_alignment as ca
from app import lab_state
from app.views import alignment_decoding as ad
from tests.app_pages import open_page
from tests.tiny import tiny_lm

RECORDS = [{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps.",
            "oppose": f"No, topic {i} hurts."} for i in range(4)]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    data = tmp_path_factory.mktemp("data") / "pairs.json"
    data.write_text(json.dumps(RECORDS))
    out = tmp_path_factory.mktemp("adapters") / "tiny-dpo"
    train(TrainConfig(method="dpo", dataset=str(data), epochs=1, batch_size=2, learning_rate=1e-2,
                      max_length=64, threads=1), out, model=tiny_lm(), progress=False)
    return str(out)


@pytest.fixture
def at(monkeypatch, adapter):
    page = open_page("alignment", monkeypatch)
    page.session_state[lab_state.ADAPTER_KEY] = adapter
    page.run()
    page.multiselect(key=ad.ADAPTERS_KEY).select(adapter)
    return page.run()


def test_base_and_adapter_answer_side_by_side_and_the_step_view_needs_no_model(at, adapter, monkeypatch):
    assert not at.exception
    at.text_area(key=ad.PROMPT_KEY).input("Is topic 1 good?")
    at.number_input(key=ad.TOKENS_KEY).set_value(8)
    at.button(key=ad.RUN_KEY).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    result = at.session_state[ad.RESULT_KEY]
    assert [a["model"] for a in result["answers"]] == ["base", "tiny-dpo"]
    # the tiny model cannot separate stances: the classifier refuses, and the page says so
    assert result["refusal"] and "below min_kappa" in result["refusal"]
    assert any("No stance labels" in w.value for w in at.warning)
    steps = result["extras"]["tiny-dpo"]["distributions"]
    assert len(steps) == len(result["answers"][1]["token_ids"])
    assert result["answers"][1]["implicit_reward"] is not None and result["answers"][0]["implicit_reward"] is None
    if len(steps) > 1:   # moving the step slider uses the recorded data only
        monkeypatch.setattr(ad, "generate", lambda *a, **k: pytest.fail("re-generated"))
        at.slider(key=ad.STEP_KEY).set_value(1).run()
        assert not at.exception


def test_grid_has_one_row_per_model_and_decoding(at):
    at.text_area(key=ad.PROMPT_KEY).input("Is topic 2 good?")
    at.number_input(key=ad.TOKENS_KEY).set_value(6)
    at.text_area(key=ad.GRID_SPECS_KEY).input("greedy\nsample:top_p=0.9")
    at.number_input(key=ad.GRID_SAMPLES_KEY).set_value(2)
    at.button(key=ad.RUN_GRID_KEY).click().run()
    assert not at.exception and not at.error
    cells = at.session_state[ad.GRID_KEY]["cells"]
    assert [(c["model"], c["decoding"], c["answers"]) for c in cells] == [
        ("base", "greedy", 1), ("base", "sample:top_p=0.9", 2),
        ("tiny-dpo", "greedy", 1), ("tiny-dpo", "sample:top_p=0.9", 2)]


@pytest.mark.parametrize("prompt, spec, message", [
    ("", "greedy", "prompt is empty"), ("Is topic 1 good?", "sample:top_p=2", "top_p=2"),
    ("Is topic 1 good?", "warp", "unknown strategy")])
def test_bad_input_shows_an_error(at, prompt, spec, message):
    at.text_area(key=ad.PROMPT_KEY).input(prompt)
    at.text_input(key=ad.SPEC_KEY).input(spec)
    at.button(key=ad.RUN_KEY).click().run()
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]


def test_overlay_and_shift_frames():
    step = {"step": 0, "chosen_id": 7, "token_ids": (7, 3), "tokens": (" yes", "no"),
            "policy": (0.6, 0.1), "base": (0.2, 0.5)}
    frame = ca.overlay_frame(step, "dpo")
    assert list(frame["model"]) == ["dpo", "base", "dpo", "base"]
    assert list(frame["probability"]) == [0.6, 0.2, 0.1, 0.5]
    assert list(frame["chosen"]) == [True, True, False, False]
    assert frame["token"].iloc[0] == "1. ·yes"
    ca.overlay_chart(frame).to_dict()
    shift = ca.shift_frame([{"step": 0, "token": "a", "kl": 0.5, "tv": 0.2},
                            {"step": 1, "token": " b", "kl": 0.1, "tv": 0.05}])
    assert len(shift) == 4 and set(shift["measure"]) == {"KL(adapter ‖ base), nats", "total variation"}
    ca.shift_chart(shift, selected=1).to_dict()


def test_realign_slider_re_decodes_and_lambda_0_is_the_base(at, monkeypatch):
    from app.views import realign_panel as rp

    at.text_area(key=ad.PROMPT_KEY).input("Is topic 1 good?")
    at.number_input(key=ad.TOKENS_KEY).set_value(6)
    at.run()
    assert not at.exception and rp.ANSWERS_KEY not in at.session_state   # nothing until asked
    at.toggle(key=rp.LIVE_KEY).set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.slider(key=rp.LAMBDA_KEY).set_value(0.0).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    answers = at.session_state[rp.ANSWERS_KEY]
    by_lambda = {key[-1]: answer for key, answer in answers.items()}
    assert set(by_lambda) == {0.0, 1.0}
    at.button(key=ad.RUN_KEY).click().run()
    result = at.session_state[ad.RESULT_KEY]
    assert by_lambda[0.0]["token_ids"] == result["answers"][0]["token_ids"]      # the base
    assert by_lambda[1.0]["token_ids"] == result["answers"][1]["token_ids"]      # the adapter
    view = by_lambda[1.0]["speculative"]
    assert len(view["acceptance"]) == len(by_lambda[1.0]["token_ids"])
    assert any("mean acceptance" in m.label for m in at.metric)
    # a λ already decoded is shown again without a model call
    monkeypatch.setattr(rp, "generate", lambda *a, **k: pytest.fail("re-generated"))
    at.slider(key=rp.LAMBDA_KEY).set_value(1.0).run()
    assert not at.exception
