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


def _dist(step, ids, tokens, policy, base):
    return {"step": step, "chosen_id": ids[0], "token_ids": ids, "tokens": tokens, "policy": policy, "base": base}


def test_argmax_flips_mark_where_the_two_models_disagree_whatever_the_kl():
    steps = [_dist(0, (1, 2), ("a", "b"), (0.7, 0.2), (0.6, 0.3)),          # both pick a
             _dist(1, (3, 4), (" ended", " become"), (0.13, 0.12), (0.12, 0.13)),   # a 13 vs 12 % flip
             _dist(2, (5, 6, 7), ("x", "y", "z"), (0.5, 0.3, 0.0), (0.1, 0.2, 0.7))]  # base's top is z
    flips = ca.argmax_flips(steps)
    assert flips == [{"step": 1, "adapter": " ended", "base": " become"},
                     {"step": 2, "adapter": "x", "base": "z"}]
    assert ca.flip_label(flips[0]) == "1: ·become → ·ended"
    shift = [{"step": i, "token": "t", "kl": 0.01, "tv": 0.01} for i in range(3)]
    frame = ca.shift_frame(shift, flips)
    assert frame.groupby("step")["argmax differs"].first().tolist() == [False, True, True]
    spec = ca.shift_chart(frame, selected=1).to_dict()
    assert [(p["name"], p["select"]["fields"]) for p in spec["params"]] == [(ca.PICK, ["step"])]
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]
    assert marks == ["rule", "rule", "line", "point", "rule"]   # flip band, click targets, curves, ▼, selected
    assert spec["params"][0]["views"] == [spec["layer"][1]["name"]]   # a click in a step's column
    assert spec["height"] >= 250


def test_overlay_axis_is_fitted_to_the_data_and_prints_values():
    frame = ca.overlay_frame(_dist(0, (3, 4), ("a", "b"), (0.13, 0.12), (0.12, 0.13)), "dpo")
    assert ca.overlay_domain(frame) == pytest.approx([0.0, 0.13 * 1.25])
    spec = ca.overlay_chart(frame).to_dict()
    assert spec["layer"][0]["encoding"]["x"]["scale"]["domain"] == pytest.approx([0.0, 0.1625])
    assert spec["layer"][1]["mark"]["type"] == "text" and spec["layer"][1]["encoding"]["text"]["format"] == ".1%"


def test_token_diff_marks_the_first_divergence_and_both_sides():
    base = {"model": "base", "token_ids": [1, 2, 3, 4], "pieces": ["The", " sky", " is", " <b>"]}
    other = {"model": "dpo", "token_ids": [1, 2, 5, 4], "pieces": ["The", " sky", " was", " <b>"]}
    html = ca.token_diff_html(base, other)
    body = html.split("</style>")[1]
    assert body == ('<div class="declab-diff"><span class="same">The sky</span><span class="first" '
                    'title="first divergence">▶ step 2</span><del title="only in the base\'s answer"> is</del>'
                    '<ins title="only in dpo\'s answer"> was</ins><span class="same"> &lt;b&gt;</span></div>')
    assert "▶" not in ca.token_diff_html(base, dict(base, model="same"))


def test_grid_cells_are_kept_as_they_finish(at, monkeypatch):
    """A grid that fails at its third cell keeps (and shows) the two cells that finished."""
    from decoding import GenerationError

    real = ad.generate_answers
    calls = []

    def third_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise GenerationError("stopped at the third cell")
        return real(*args, **kwargs)

    monkeypatch.setattr(ad, "generate_answers", third_fails)
    at.text_area(key=ad.PROMPT_KEY).input("Is topic 2 good?")
    at.number_input(key=ad.TOKENS_KEY).set_value(4)
    at.text_area(key=ad.GRID_SPECS_KEY).input("greedy\nsample:top_p=0.9")
    at.number_input(key=ad.GRID_SAMPLES_KEY).set_value(1)
    at.button(key=ad.RUN_GRID_KEY).click().run()
    assert not at.exception
    assert any("third cell" in e.value for e in at.error)
    grid = at.session_state[ad.GRID_KEY]
    assert [(c["model"], c["decoding"]) for c in grid["cells"]] == [("base", "greedy"), ("base", "sample:top_p=0.9")]
    assert grid["total"] == 4 and grid["running"] is None
    assert any("2 of 4 cells done" in c.value for c in at.caption)
    columns = list(at.dataframe[-1].value.columns)
    assert "loops" in columns and "support" not in columns     # the judge refused: no stance columns


def test_a_flip_button_and_a_chart_click_open_that_step(at, monkeypatch):
    at.text_area(key=ad.PROMPT_KEY).input("Is topic 1 good?")
    at.number_input(key=ad.TOKENS_KEY).set_value(8)
    at.button(key=ad.RUN_KEY).click().run()
    result = at.session_state[ad.RESULT_KEY]
    data = result["extras"]["tiny-dpo"]
    # a hand-made flip at the last step, so the test does not depend on the random adapter
    last = len(data["distributions"]) - 1
    assert last >= 2
    d = data["distributions"][last]
    n = len(d["base"])
    d["base"] = tuple(0.9 if j == n - 1 else 0.1 / (n - 1) for j in range(n))   # the base's top: the adapter's last
    at.session_state[ad.RESULT_KEY] = result
    at.run()
    flips = ca.argmax_flips(data["distributions"])
    assert flips and flips[-1]["step"] == last
    monkeypatch.setattr(ad, "generate", lambda *a, **k: pytest.fail("re-generated"))
    at.button_group(key=ad.FLIP_KEY).set_value(last).run()
    assert not at.exception and at.slider(key=ad.STEP_KEY).value == last
    assert any("argmax differs" in m.value for m in at.markdown)
    # a click on the shift chart at step 1 (the selection state Streamlit keeps for the chart)
    chart_key = f"{ad.SHIFT_CHART_KEY}.tiny-dpo"
    at.session_state[chart_key] = {"selection": {ca.PICK: [{"step": 1}]}}
    at.run()
    assert at.slider(key=ad.STEP_KEY).value == 1
    at.slider(key=ad.STEP_KEY).set_value(2).run()                   # the same click is not followed again
    assert at.slider(key=ad.STEP_KEY).value == 2
