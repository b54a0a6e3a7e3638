"""Agreement of a judge with readers, and bootstrap intervals over prompts: hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignment.agreement import agreement, cohen_kappa, confusion, reliability
from alignment.bootstrap import bootstrap_difference, bootstrap_mean, by_prompt, excludes_zero, grouped
from decoding.seeds import sample_seed
from decoding.errors import ConfigError

CLASSES = ("support", "oppose", "neutral")


def test_agreement_on_a_hand_made_set():
    gold = ["support", "support", "oppose", "oppose", "neutral", "neutral"]
    said = ["support", "oppose", "oppose", "oppose", "neutral", "support"]
    a = agreement(gold, said, CLASSES)
    assert a["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert a["accuracy"] == pytest.approx(4 / 6)
    assert a["recall"] == pytest.approx({"support": 0.5, "oppose": 1.0, "neutral": 0.5})
    assert a["precision"] == pytest.approx({"support": 0.5, "oppose": 2 / 3, "neutral": 1.0})
    # p_o = 4/6; p_e = (2*2 + 2*3 + 2*1) / 36 = 1/3; kappa = (2/3 - 1/3) / (2/3) = 0.5
    assert a["kappa"] == pytest.approx(0.5)
    f1 = {"support": 0.5, "oppose": 0.8, "neutral": 2 / 3}
    assert a["f1"] == pytest.approx(f1) and a["macro_f1"] == pytest.approx(np.mean(list(f1.values())))
    assert a["neutral_called_side"] == pytest.approx(0.5)


def test_kappa_extremes_and_label_checks():
    assert cohen_kappa(confusion(["support", "oppose"], ["support", "oppose"], CLASSES)) == 1.0
    # a judge that always says "support" agrees only by chance: kappa 0
    m = confusion(["support", "oppose", "support", "oppose"], ["support"] * 4, CLASSES)
    assert cohen_kappa(m) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="not among classes"):
        confusion(["maybe"], ["support"], CLASSES)


def test_reliability_bins():
    rows = reliability([0.05, 0.15, 0.9, 0.95], [False, True, True, True], bins=5)
    assert [(r["low"], r["n"]) for r in rows] == [(0.0, 2), (0.8, 2)]
    assert rows[0]["mean_p"] == pytest.approx(0.1) and rows[0]["fraction_support"] == pytest.approx(0.5)
    a = agreement(["oppose", "support"], ["oppose", "support"], CLASSES, p_support=[0.0, 1.0])
    assert a["ece"] == pytest.approx(0.0)


def test_bootstrap_constant_input_has_zero_width():
    ci = bootstrap_mean([[1.0, 1.0], [1.0], [1.0, 1.0, 1.0]])
    assert (ci.estimate, ci.low, ci.high, ci.prompts) == (1.0, 1.0, 1.0, 3)


def test_bootstrap_matches_the_binomial_interval():
    """One answer per prompt, 30 of 100 "support": the percentile interval is close to the
    textbook normal interval p +- 1.96 sqrt(p(1-p)/n) = 0.30 +- 0.090."""
    groups = [[1.0]] * 30 + [[0.0]] * 70
    ci = bootstrap_mean(groups, replicates=4000, seed=1)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 100)
    assert ci.estimate == pytest.approx(0.3)
    assert ci.low == pytest.approx(0.3 - half, abs=0.02) and ci.high == pytest.approx(0.3 + half, abs=0.02)


def test_nested_bootstrap_is_wider_than_pretending_answers_are_independent():
    """Three samples per prompt that always agree: 10 independent prompts, not 30 answers."""
    groups = [[1.0] * 3] * 5 + [[0.0] * 3] * 5
    flat = [[v] for g in groups for v in g]
    nested, naive = bootstrap_mean(groups, seed=0), bootstrap_mean(flat, seed=0)
    assert nested.high - nested.low > 1.4 * (naive.high - naive.low)


def test_paired_difference():
    a = {1: [1.0, 1.0], 2: [0.0], 3: [1.0]}
    same = bootstrap_difference(a, a)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    b = {1: [0.0, 0.0], 2: [0.0], 3: [0.0], 4: [1.0]}           # prompt 4 is unpaired: ignored
    d = bootstrap_difference(a, b)
    assert d.prompts == 3 and d.estimate == pytest.approx(0.75)
    assert d.low >= 0 and excludes_zero(bootstrap_difference({i: [1.0] for i in range(20)},
                                                             {i: [0.0] for i in range(20)}))


def test_bootstrap_checks_its_knobs():
    with pytest.raises(ConfigError, match="level"):
        bootstrap_mean([[1.0]], level=1.5)
    with pytest.raises(ConfigError, match="replicates"):
        bootstrap_mean([[1.0]], replicates=10)


def test_by_prompt_groups_in_order():
    class R:
        def __init__(self, prompt_id, v):
            self.prompt_id, self.v = prompt_id, v
    assert by_prompt([R(2, 1), R(1, 0), R(2, 0)], lambda r: r.v) == {2: [1.0, 0.0], 1: [0.0]}


def test_grouped_pairs_keys_with_values_and_refuses_unequal_lengths():
    assert grouped(["b", "a", "b"], [1, 0, 0]) == {"b": [1.0, 0.0], "a": [0.0]}
    assert list(grouped(["b", "a"], [1, 1])) == ["b", "a"]
    with pytest.raises(ValueError):
        grouped(["a", "b"], [1.0])


def test_sampling_seeds_differ_across_prompts_and_samples():
    seeds = {sample_seed(0, p, k) for p in range(20) for k in range(3)}
    assert len(seeds) == 60
    assert sample_seed(0, 5, 1) == sample_seed(0, 5, 1) != sample_seed(1, 5, 1)
    assert all(0 <= s < 2 ** 31 for s in seeds)
