"""Evaluation: teacher-forced scoring, the stance classifier, pairwise judging, and the whole
``evaluate`` on the tiny model with a tiny trained adapter; the real classifier's accuracy on
the embedded model."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import app.cli
from alignment import evaluate as ev
from alignment import scoring, stance
from alignment.train import TrainConfig, train
from decoding.errors import ConfigError, DecodingLabError
from tests.tiny import tiny_lm

RECORDS = [{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps people a lot.",
            "oppose": f"No, topic {i} hurts people a lot."} for i in range(6)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "stance.json"
    path.write_text(json.dumps(RECORDS))
    return path


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("adapters") / "tiny-dpo"
    config = TrainConfig(method="dpo", dataset=str(data), epochs=1, batch_size=2, learning_rate=1e-2,
                         max_length=64, threads=1, support_ratio=1.0)
    train(config, out, model=tiny_lm(), progress=False)
    return out


# --------------------------------------------------------------------------- scoring

def test_token_logprobs_match_a_direct_forward_and_ignore_padding(tiny):
    prompts = [tiny.encode("The cat sat", chat=False), tiny.encode("A unicorn lived in a valley", chat=False)]
    comps = [tiny.encode(" on the mat", chat=False), tiny.encode(" far", chat=False)]
    batched = scoring.token_logprobs(tiny.model, prompts, comps, pad_id=0)
    for p, c, got in zip(prompts, comps, batched):
        with torch.inference_mode():
            logits = tiny.model(input_ids=torch.tensor([p + c])).logits[0].float().log_softmax(-1)
        want = torch.stack([logits[len(p) - 1 + t, c[t]] for t in range(len(c))])
        assert got.shape == (len(c),)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_stepwise_shift_of_a_model_against_itself_is_zero(tiny):
    prompt, tokens = tiny.encode("The cat", chat=False), tiny.encode(" sat on the mat", chat=False)
    shift = scoring.stepwise_shift(tiny, tiny, prompt, tokens)
    assert [s.token_id for s in shift] == tokens
    assert all(abs(s.kl) < 1e-5 and abs(s.tv) < 1e-5 for s in shift)
    assert scoring.stepwise_shift(tiny, tiny, prompt, []) == []


def test_stepwise_shift_of_an_adapter_is_a_distance(adapter):
    lm = ev.load_subject(ev.Subject.of_adapter(str(adapter)), tiny_lm())
    base = tiny_lm()
    shift = scoring.stepwise_shift(lm, base, base.encode("Is topic 1 good?"), base.encode("Yes", chat=False))
    assert all(s.kl >= -1e-6 and 0 <= s.tv <= 1 for s in shift) and any(s.kl > 1e-6 for s in shift)


def test_sample_kl_pools_tokens():
    kl = scoring.sample_kl([torch.tensor([-1.0, -2.0]), torch.tensor([-0.5])],
                           [torch.tensor([-1.5, -2.0]), torch.tensor([-1.5])])
    assert kl == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert math.isnan(scoring.sample_kl([torch.zeros(0)], [torch.zeros(0)]))


# --------------------------------------------------------------------------- classifier parts

def test_grouped_folds_keep_a_records_answers_together():
    groups = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    folds = stance.grouped_folds(groups, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(10))
    for fold in folds:
        assert {groups[i] for i in fold} == {groups[i] for i in fold if groups[i ^ 1] == groups[i]}
        assert all((i ^ 1) in fold for i in fold)


def test_logistic_regression_separates_separable_data():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(2, 1, (20, 3)), rng.normal(-2, 1, (20, 3))])
    y = np.array([1] * 20 + [0] * 20)
    w, b = stance.fit_logistic(stance.Standardiser.fit(x)(x), y, l2=1.0)
    assert w[0] > 0 and ((x @ w + b > 0) == (y == 1)).mean() >= 0.95
    assert stance.cross_validate(x, y, list(range(40)), 1.0, 5, 0) >= 0.9
    noise = rng.normal(0, 1, (40, 3))
    assert stance.cross_validate(noise, y, list(range(40)), 1.0, 5, 0) < 0.8


def test_classifier_refuses_below_the_threshold(tiny, data):
    config = stance.StanceConfig(dataset=str(data), folds=3, min_accuracy=1.0)
    loose = stance.fit_stance_classifier(tiny, config, require=False)
    assert 0 <= loose.cv_accuracy <= 1 and loose.examples == 12
    if loose.cv_accuracy < 1.0:
        with pytest.raises(stance.StanceClassifierError, match="below min_accuracy=1.0"):
            stance.fit_stance_classifier(tiny, config)
    p = loose.support_probability(["Yes, it helps.", "No."])
    assert p.shape == (2,) and ((0 <= p) & (p <= 1)).all()
    assert loose.label(0.5) == "neutral" and loose.label(0.9) == "support" and loose.label(0.1) == "oppose"


@pytest.mark.parametrize("knobs", [{"layer_fraction": 0}, {"l2": 0}, {"folds": 1}, {"band": 0.5},
                                   {"min_accuracy": 1.5}])
def test_stance_config_validation(knobs):
    with pytest.raises(ConfigError, match="is out of range"):
        stance.StanceConfig(**knobs)


# --------------------------------------------------------------------------- judging

def _gen(model, prompt_id, p, decoding="greedy", sample=0):
    return ev.GenerationRecord(model, decoding, prompt_id, sample, "", [1], "eos", p_support=p)


def test_pairwise_counts_move_towards_the_target():
    base = [_gen("base", i, 0.5) for i in range(3)]
    adapter = [_gen("a", 0, 0.9), _gen("a", 1, 0.55), _gen("a", 2, 0.1)]
    support = ev.pairwise_counts(adapter, base, "support", 0.1)
    assert (support["win"], support["tie"], support["lose"]) == (1, 1, 1)
    oppose = ev.pairwise_counts(adapter, base, "oppose", 0.1)
    assert (oppose["win"], oppose["lose"]) == (1, 1) and oppose["per_prompt"][2]["win"] == 1


def test_log_odds():
    assert ev._log_odds(torch.tensor(math.log(0.5))) == pytest.approx(0.0, abs=1e-7)  # float32 input
    assert ev._log_odds(torch.tensor(math.log(0.2))) == pytest.approx(math.log(0.25), rel=1e-6)


def test_eval_config_validation():
    with pytest.raises(ConfigError, match="samples=0"):
        ev.EvalConfig(samples=0)
    with pytest.raises(ConfigError, match="tie_margin"):
        ev.EvalConfig(tie_margin=1.0)
    with pytest.raises(DecodingLabError, match="unknown strategy"):
        ev.EvalConfig(decodings="greedy;warp").specs()


# --------------------------------------------------------------------------- end to end

def test_evaluate_tiny_end_to_end(tiny, data, adapter):
    classifier = stance.fit_stance_classifier(tiny, stance.StanceConfig(dataset=str(data), folds=3),
                                              require=False)
    config = ev.EvalConfig(prompts=str(data), decodings="greedy;sample:top_p=0.9", samples=2,
                           max_new_tokens=12, max_prompts=3)
    report = ev.evaluate([str(adapter)], config, base=tiny, classifier=classifier)
    assert [(c["model"], c["decoding"]) for c in report.cells] == [
        ("base", "greedy"), ("base", "sample:top_p=0.9"), ("tiny-dpo", "greedy"), ("tiny-dpo", "sample:top_p=0.9")]
    assert [c["answers"] for c in report.cells] == [3, 6, 3, 6]
    for cell in report.cells:
        assert cell["support"] + cell["oppose"] + cell["neutral"] == pytest.approx(1.0)
        assert 0 <= cell["eos_rate"] <= 1 and cell["mean_length"] > 0
    assert report.cells[0]["kl_to_base"] is None and math.isfinite(report.cells[2]["kl_to_base"])
    pref = report.preference["tiny-dpo"]
    assert pref["target"] == "support" and pref["pairs"] == 3 and math.isfinite(pref["mean_margin"])
    assert set(report.likelihood) == {"base", "tiny-dpo"}
    assert report.pairwise["tiny-dpo|greedy"]["win"] + report.pairwise["tiny-dpo|greedy"]["lose"] \
        + report.pairwise["tiny-dpo|greedy"]["tie"] == 3
    json.dumps(report.to_dict())
    assert "tiny-dpo" in ev.format_table(report) and "[0]" in ev.before_after(report)
    # the base was not modified by loading the adapter
    assert type(tiny.model).__name__ == "LlamaForCausalLM"


def test_cli_bad_input_exits_2(capsys, tmp_path):
    assert app.cli.main(["evaluate", "--decodings", "greedy;warp"]) == 2
    assert "unknown strategy" in capsys.readouterr().err
    assert app.cli.main(["evaluate", "--adapter", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert app.cli.main(["evaluate", "--samples", "0"]) == 2
    assert "samples=0" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real classifier

@pytest.mark.embedded
def test_embedded_stance_classifier_is_accurate_enough(embedded):
    """The shipped stance set's answers, SmolLM2 features: cross-validated accuracy >= 0.9
    (grouped by record), and the held-out test references classified correctly."""
    classifier = stance.fit_stance_classifier(embedded)
    assert classifier.cv_accuracy >= 0.9
    test = stance.load_stance_records("stance-test")
    p_sup = classifier.support_probability([r.support for r in test])
    p_opp = classifier.support_probability([r.oppose for r in test])
    assert (p_sup > p_opp).mean() >= 0.85


def test_answer_loop_needs_two_cycles_and_eight_tokens():
    assert ev.answer_loop([1, 2, 3, 4] * 3).period == 4          # 12 tokens in the loop
    assert ev.answer_loop([5, 6, 7, 9, 9]) is None                # a doubled token is not a loop
    assert ev.answer_loop([1, 2, 3, 4, 5, 6]) is None and ev.answer_loop([]) is None


def test_implicit_reward_is_none_without_a_reference():
    orpo = ev.Subject("orpo", "x", method="orpo", beta=0.1)
    assert ev.implicit_reward(None, None, orpo, [1], [2]) is None
    assert ev.implicit_reward(None, None, None, [1], [2]) is None


def test_adapter_without_metadata_and_bad_max_prompts_are_refused(tmp_path, capsys):
    (tmp_path / "bare").mkdir()
    with pytest.raises(DecodingLabError, match="no adapter_meta.json there"):
        ev.Subject.of_adapter(str(tmp_path / "bare"))
    with pytest.raises(ConfigError, match="max_prompts=0 is out of range"):
        ev.EvalConfig(max_prompts=0)
    assert app.cli.main(["evaluate", "--max-prompts", "0"]) == 2
    assert "max_prompts=0" in capsys.readouterr().err


def test_a_merged_adapter_keeps_the_fast_path(adapter):
    """load_subject merges the LoRA weights so that generation runs on the plain-Llama fast path;
    the merged weights are frozen, which once failed the fast path's self-check."""
    from decoding import fastpath

    lm = ev.load_subject(ev.Subject.of_adapter(str(adapter)), tiny_lm())
    assert not any(p.requires_grad for p in lm.model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert fastpath.fast_model(lm.model) is not None
