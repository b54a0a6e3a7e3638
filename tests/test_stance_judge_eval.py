"""The stance-judge study's split of the test answers into labelling rounds."""

import numpy as np

from alignment.stance import LabelledAnswer, StanceConfig
from experiments import stance_judge_eval as sje


def _row(uid, prompt_id, label):
    return LabelledAnswer(uid, prompt_id, "q", "a", label, "test")


def test_rounds_follow_the_prompt_ids():
    assert sje.labelling_round("t01") == sje.labelling_round("j23") == sje.labelling_round("j30") == "first round"
    assert sje.labelling_round("j61") == sje.labelling_round("j100") == "second round"


def test_each_round_is_scored_on_its_own_answers():
    rows = [_row("g1", "t01", "support"), _row("g2", "j24", "oppose"),
            _row("g3", "j61", "oppose"), _row("g4", "j62", "oppose")]
    # columns: support, oppose, neutral; the judge gets g1, g2 and g3 right, g4 wrong
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1]])
    parts = sje.round_scores(rows, p, StanceConfig())
    assert parts["first round"]["n"] == 2 and parts["first round"]["accuracy"] == 1.0
    assert parts["second round"]["n"] == 2 and parts["second round"]["recall"]["oppose"] == 0.5
