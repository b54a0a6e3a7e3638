"""The stance-judge study: its labelling rounds and its learning curve."""

import numpy as np
import pytest

from alignment.stance import LabelledAnswer, StanceConfig
from experiments import stance_judge_eval as sje


def _row(uid, prompt_id, label):
    return LabelledAnswer(uid, prompt_id, "q", "a", label, "test")


def test_rounds_follow_the_prompt_ids():
    assert sje.labelling_round("t01") == sje.labelling_round("j23") == sje.labelling_round("j30") == "first round"
    assert sje.labelling_round("j61") == sje.labelling_round("j100") == "second round"


def test_shipped_judge_set_is_split_by_prompt_and_labelled():
    """The labelled generations: every answer's prompt is a known judge or stance-test prompt
    with the split ``judge_prompts`` gives it (so no prompt is on both sides), every label is one
    of the three, and the third round (j101-j180) is development data only."""
    from alignment.stance import LABELS, load_labelled_answers
    from experiments.stance_judge_set import judge_prompts
    split = {p["id"]: p["split"] for p in judge_prompts()}
    rows = load_labelled_answers("stance-judge")
    assert {r.label for r in rows} <= set(LABELS) and len({r.uid for r in rows}) == len(rows)
    assert all(r.split == split[r.prompt_id] for r in rows)
    third = [r for r in rows if r.prompt_id.startswith("j") and int(r.prompt_id[1:]) > 100]
    assert len(third) == 480 and {r.split for r in third} == {"dev"}
    assert sum(r.split == "test" for r in rows) == 372


def test_each_round_is_scored_on_its_own_answers():
    rows = [_row("g1", "t01", "support"), _row("g2", "j24", "oppose"),
            _row("g3", "j61", "oppose"), _row("g4", "j62", "oppose")]
    # columns: support, oppose, neutral; the judge gets g1, g2 and g3 right, g4 wrong
    p = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1]])
    parts = sje.round_scores(rows, p, StanceConfig())
    assert parts["first round"]["n"] == 2 and parts["first round"]["accuracy"] == 1.0
    assert parts["second round"]["n"] == 2 and parts["second round"]["recall"]["oppose"] == 0.5


def test_curve_splits_never_train_on_a_held_out_prompt():
    groups = [f"p{i // 3}" for i in range(60)]                      # 20 prompts, 3 answers each
    for fraction in (0.25, 1.0):
        splits = sje.curve_splits(groups, fraction, folds=5, seed=1)
        assert sorted(np.concatenate([h for _, h in splits]).tolist()) == list(range(60))   # each held once
        for train, held in splits:
            assert not {groups[i] for i in train} & {groups[i] for i in held}
            assert len({groups[i] for i in train}) == max(2, round(fraction * 16))


def test_curve_splits_refuse_a_bad_fraction():
    with pytest.raises(ValueError, match="fraction=0"):
        sje.curve_splits(["a", "b"], 0, folds=2, seed=0)


def _labelled(labels, prompts, split="dev"):
    return [LabelledAnswer(f"g{i}", p, "q", "a", lab, split) for i, (lab, p) in enumerate(zip(labels, prompts))]


def test_learning_curve_learns_a_real_signal_and_cannot_memorise_prompts():
    rng = np.random.default_rng(0)
    labels = ["support", "oppose", "neutral"]
    n_prompts, per = 30, 4
    prompts = [f"p{i // per}" for i in range(n_prompts * per)]
    y = [labels[i % 3] for i in range(n_prompts * per)]
    # A real signal: the label's one-hot plus noise. The judge learns it from any share of prompts.
    signal = np.eye(3)[[labels.index(v) for v in y]] * 3 + rng.normal(size=(len(y), 3))
    rows = _labelled(y, prompts)
    curve = sje.learning_curve(signal, rows, StanceConfig(l2=1.0), fractions=(0.25, 1.0), repeats=2, folds=5)
    assert [c["fraction"] for c in curve] == [0.25, 1.0]
    assert curve[0]["train_prompts"] < curve[1]["train_prompts"] == 24
    assert curve[1]["kappa"] > 0.8 and curve[1]["n"] == len(y)
    assert set(curve[1]["recall_ci"]) == set(labels)
    gain = curve[1]["accuracy_gain"]                  # paired 0.25 -> 1.0, bootstrap over prompts
    assert gain["from_fraction"] == 0.25 and gain["low"] <= gain["estimate"] <= gain["high"]
    # No signal but the prompt's identity, each prompt's answers sharing one label: a judge that
    # saw the held-out prompt would be perfect; a held-out one is at chance.
    y2 = [labels[(i // per) % 3] for i in range(n_prompts * per)]
    identity = np.eye(n_prompts)[[i // per for i in range(n_prompts * per)]]
    curve = sje.learning_curve(identity, _labelled(y2, prompts), StanceConfig(l2=1.0),
                               fractions=(1.0,), folds=5)
    assert curve[0]["kappa"] < 0.3
