"""The tuned stance judge study: its settings, its splits, and that its training learns."""

from __future__ import annotations

import numpy as np
import pytest

from alignment.stance import LABELS, StanceConfig, training_rows
from decoding.errors import ConfigError
from experiments import stance_judge_tuned as tj


@pytest.mark.parametrize("changes, name", [({"rank": 0}, "rank"), ({"fold": 5}, "fold"),
                                           ({"learning_rate": 0.0}, "learning_rate"), ({"limit": -1}, "limit")])
def test_settings_refuse_values_out_of_range_by_name(changes, name):
    with pytest.raises(ConfigError, match=name):
        tj.TunedJudgeConfig(**changes)


def test_learning_rate_warms_up_then_decays_to_zero():
    steps = 100
    assert tj.lr_factor(0, steps) == pytest.approx(0.1)
    assert tj.lr_factor(9, steps) == pytest.approx(0.91)
    assert tj.lr_factor(50, steps) == pytest.approx(0.5)
    assert tj.lr_factor(99, steps) == pytest.approx(0.01)


def test_a_dev_fold_is_held_out_by_prompt_and_the_default_scores_the_test_split():
    stance = StanceConfig()
    train, test = training_rows(stance)
    assert tj.split_rows(stance, None) == (train, test)
    dev = [r for r in train if r.split == "dev"]
    held_all = []
    for fold in range(stance.folds):
        fit, held = tj.split_rows(stance, fold)
        assert held and all(r.split == "dev" for r in held)
        assert not {r.prompt_id for r in held} & {r.prompt_id for r in fit}
        assert len(fit) + len(held) == len(train)
        held_all += [r.uid for r in held]
    assert sorted(held_all) == sorted(r.uid for r in dev)


def test_training_lowers_the_cloze_loss_on_its_answers():
    from decoding import load_model

    lm = load_model()                       # its own copy: training wraps the model in place
    stance = StanceConfig()
    train, _ = training_rows(stance)
    rows = [next(r for r in train if r.split == "dev" and r.label == c) for c in LABELS]
    words = tj.verbaliser_ids(lm)
    assert [len(w) for w in words] == [4, 4, 2]
    ids = tj.cloze_ids(lm, rows, 64)
    gold = [LABELS.index(r.label) for r in rows]

    def loss(model) -> float:
        p = tj.probabilities(model, ids, words, lm.tokenizer.pad_token_id or 0, bf16=False)
        assert np.allclose(p.sum(1), 1.0, atol=1e-5)
        return float(-np.mean(np.log(p[np.arange(len(rows)), gold])))

    before = loss(lm.model)
    config = tj.TunedJudgeConfig(learning_rate=2e-3, epochs=4, batch_size=3, max_answer_tokens=64)
    model, facts = tj.train_tuned(lm, rows, np.ones(len(rows)), config, log=lambda _: None)
    assert facts["steps"] == 4
    assert loss(model) < before - 0.1
