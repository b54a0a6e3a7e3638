"""The step inspector's stage chart with a two-model stage: the second distribution is a panel
before raw, then raw (the loaded model) and the combination."""

from __future__ import annotations

import pytest

from app import charts
from decoding import DecodingConfig, generate
from tests.tiny import tiny_lora_lm


@pytest.fixture(scope="module")
def step():
    gen = generate(tiny_lora_lm(), "The cat sat", DecodingConfig(max_new_tokens=2, realign=0.5),
                   chat=False)
    return gen.sequences[0].steps[0]


def test_second_distribution_is_the_first_panel(step):
    frame = charts.stage_frame(step, top_n=8)
    panels = frame.drop_duplicates("stage_index").sort_values("stage_index")["stage"].tolist()
    assert panels == ["base (adapter off)", "raw", "realign"]
    second = frame[frame["stage_index"] == -1].set_index("token_id")["prob"]
    by_id = {c.token_id: c for c in step.candidates}
    assert {t: by_id[t].second_prob for t in second.index} == second.to_dict()
    data = charts.stage_chart_data(frame, titles=charts.stage_titles({"realign": 0.5}, step.stages))
    assert sorted(set(data["panel"]))[:3] == ["-1|base (adapter off)", "00|raw", "01|realign = 0.5"]


def test_one_model_steps_have_no_second_panel(tiny):
    step = generate(tiny, "The cat sat", DecodingConfig(max_new_tokens=2), chat=False).sequences[0].steps[0]
    assert -1 not in set(charts.stage_frame(step)["stage_index"])
