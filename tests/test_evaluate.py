"""Evaluation: teacher-forced scoring, the stance judge, pairwise judging, and the whole
``evaluate`` on the tiny model with a tiny trained adapter; the real judge's agreement with
readers on the embedded model's generated answers."""

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


# --------------------------------------------------------------------------- judge parts

def _labelled(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


LABELLED = [{"uid": f"g{i}", "prompt_id": f"p{i % 4}", "prompt": f"Is topic {i % 4} good?",
             "answer": text, "label": label, "split": "dev" if i % 4 < 2 else "test"}
            for i, (text, label) in enumerate([
                ("Yes, it helps a lot.", "support"), ("No, it hurts.", "oppose"),
                ("The the the the", "neutral"), ("Yes, people love it.", "support"),
                ("No, it fails.", "oppose"), ("Bananas are yellow.", "neutral"),
                ("It helps people.", "support"), ("It hurts people.", "oppose")])]
# the same test answer labelled both ways: no judge can reach accuracy 1.0 on this split
CONTRADICTION = [dict(LABELLED[7], uid="g8", label="support")]


def test_grouped_folds_keep_a_records_answers_together():
    groups = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    folds = stance.grouped_folds(groups, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(10))
    for fold in folds:
        assert all((i ^ 1) in fold for i in fold)


def test_softmax_regression_separates_three_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(m, 0.5, (20, 2)) for m in ([2, 0], [-2, 0], [0, 2])])
    y = np.repeat([0, 1, 2], 20)
    w, b = stance.fit_softmax(stance.Standardiser.fit(x)(x), y, 3, l2=1.0)
    p = stance.softmax(stance.Standardiser.fit(x)(x) @ w + b)
    assert p.shape == (60, 3) and np.allclose(p.sum(1), 1) and (p.argmax(1) == y).mean() >= 0.95


def test_balanced_class_weights_give_every_class_the_same_total_weight():
    config = stance.StanceConfig()
    labels = ["support"] * 6 + ["oppose"] * 2 + ["neutral"] * 4
    w = stance.class_weights(labels, np.ones(len(labels)), config)
    totals = {c: sum(x for lab, x in zip(labels, w) if lab == c) for c in stance.LABELS}
    assert np.allclose(list(totals.values()), len(labels) / 3)
    # zero-weighted rows (references at reference_weight 0) do not count towards their class
    w0 = stance.class_weights(labels + ["oppose"] * 10, np.array([1.0] * 12 + [0.0] * 10), config)
    assert np.allclose(w0[:12], w)
    rows = [stance.LabelledAnswer(uid=str(i), prompt_id="p", prompt="q", answer="a", label=lab, split="dev") for i, lab in enumerate(labels)]
    assert np.allclose(stance.row_weights(rows, config), w)
    assert np.allclose(stance.row_weights(rows, stance.StanceConfig(balance_classes=False)), 1.0)


def test_decide_calls_a_side_only_with_enough_probability():
    config = stance.StanceConfig(min_side_probability=0.6)
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.1, 0.3, 0.6], [0.2, 0.65, 0.15]])
    assert stance.decide(p, config) == ["support", "neutral", "neutral", "oppose"]
    two = stance.StanceConfig(three_way=False, band=0.15)
    assert stance.decide(np.array([[0.5, 0.5], [0.9, 0.1], [0.1, 0.9]]), two) == ["neutral", "support", "oppose"]


def test_judge_validates_on_the_test_split_and_refuses_below_the_threshold(tiny, data, tmp_path):
    labelled = _labelled(tmp_path / "judge.jsonl", LABELLED + CONTRADICTION)
    config = stance.StanceConfig(dataset=str(data), labelled=str(labelled), min_kappa=1.0,
                                 features="answer+likelihood")
    loose = stance.fit_stance_judge(tiny, config, require=False)
    assert loose.examples == {"train": 12 + 4, "test": 5}
    v = loose.validation
    assert v["n"] == 5 and v["accuracy"] <= 0.8 and "labelled test split" in loose.validated_on
    assert sum(map(sum, v["confusion"])) == 5
    with pytest.raises(stance.StanceClassifierError, match="below min_kappa=1.0"):
        stance.fit_stance_judge(tiny, config)
    verdicts = loose.judge(["Is it good?", "Is it good?"], ["Yes, it helps.", ""])
    assert len(verdicts) == 2
    for verdict in verdicts:
        assert verdict.p_support + verdict.p_oppose + verdict.p_neutral == pytest.approx(1.0)
        assert verdict.stance in stance.LABELS


def test_judge_without_labelled_set_cross_validates_on_references(tiny, data):
    judge = stance.fit_stance_judge(tiny, stance.StanceConfig(dataset=str(data), labelled="", folds=3,
                                                              three_way=False, features="answer"),
                                    require=False)
    assert "cross-validation" in judge.validated_on and judge.validation["n"] == 12


def test_labelled_set_bad_line_is_refused_with_its_number(tmp_path):
    bad = _labelled(tmp_path / "bad.jsonl", LABELLED[:2] + [dict(LABELLED[2], label="maybe")])
    with pytest.raises(DecodingLabError, match="line 3"):
        stance.load_labelled_answers(bad)


@pytest.mark.parametrize("knobs", [{"layers": "0"}, {"layers": "0.5+x"}, {"l2": 0}, {"folds": 1}, {"band": 0.5},
                                   {"min_kappa": 1.5}, {"features": "answer+vibes"},
                                   {"min_side_probability": 1.0}, {"reference_weight": -1}])
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
    judge = stance.fit_stance_judge(tiny, stance.StanceConfig(dataset=str(data), labelled="", folds=3,
                                                              features="answer"), require=False)
    config = ev.EvalConfig(prompts=str(data), decodings="greedy;sample:top_p=0.9", samples=2,
                           max_new_tokens=12, max_prompts=3)
    report = ev.evaluate([str(adapter)], config, base=tiny, judge=judge)
    assert [(c["model"], c["decoding"]) for c in report.cells] == [
        ("base", "greedy"), ("base", "sample:top_p=0.9"), ("tiny-dpo", "greedy"), ("tiny-dpo", "sample:top_p=0.9")]
    assert [c["answers"] for c in report.cells] == [3, 6, 3, 6]
    for cell in report.cells:
        assert cell["support"] + cell["oppose"] + cell["neutral"] == pytest.approx(1.0)
        assert 0 <= cell["eos_rate"] <= 1 and cell["mean_length"] > 0
        for name in ("support", "loop_rate"):
            low, high = cell["ci"][name]
            assert low <= cell[name] <= high
    assert report.cells[0]["kl_to_base"] is None and math.isfinite(report.cells[2]["kl_to_base"])
    pref = report.preference["tiny-dpo"]
    assert pref["target"] == "support" and pref["pairs"] == 3 and math.isfinite(pref["mean_margin"])
    assert set(report.likelihood) == {"base", "tiny-dpo"}
    assert report.pairwise["tiny-dpo|greedy"]["win"] + report.pairwise["tiny-dpo|greedy"]["lose"] \
        + report.pairwise["tiny-dpo|greedy"]["tie"] == 3
    diff = report.differences["tiny-dpo|greedy"]["support"]
    assert diff["low"] <= diff["estimate"] <= diff["high"] and diff["prompts"] == 3
    seeds = [g.seed for g in report.generations if g.model == "base" and g.decoding != "greedy"]
    assert len(set(seeds)) == 6 and all(g.seed is None for g in report.generations if g.decoding == "greedy")
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


# --------------------------------------------------------------------------- the real judge

@pytest.mark.embedded
def test_embedded_stance_judge_agrees_with_readers_on_generated_answers(embedded):
    """The shipped judge on the labelled test split of generated answers (prompts it never saw).
    Measured (README, 372 test answers, trained on 792 dev answers since the third labelling
    round): accuracy 0.72, kappa 0.57, support / oppose recall 0.81 / 0.75, 6 % of neutral
    answers called a side with P >= 0.75 (before the third round: 0.65, 0.47, 0.72 / 0.65); the
    first classifier had kappa 0.23 and called 94 % of neutral answers a side. The issue's
    recall goal (0.8 for both sides) is not met for oppose; this pins what is."""
    judge = stance.fit_stance_judge(embedded)
    v = judge.validation
    assert v["n"] == 372 and v["kappa"] >= 0.52 and v["accuracy"] >= 0.68
    assert v["recall"]["support"] >= 0.76 and v["recall"]["oppose"] >= 0.7
    assert v["neutral_called_side_confident"] < 0.2 and v["neutral_called_side"] < 0.5
    test = stance.load_stance_records("stance-test")
    sup = judge.judge([r.prompt for r in test], [r.support for r in test])
    opp = judge.judge([r.prompt for r in test], [r.oppose for r in test])
    assert np.mean([a.p_support > b.p_support for a, b in zip(sup, opp)]) >= 0.85


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


def test_judge_features_cached_row_by_row_equal_the_direct_forward(tiny, tmp_path, monkeypatch):
    """The cache (per pair, family and layer) returns what the forwards compute; a new pair
    computes only itself; the verdict cue after the answer leaves the answer's pooled states
    unchanged (causal attention), so one forward serves both."""
    import dataclasses

    from alignment import stance_features as sf

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lm = dataclasses.replace(tiny, fingerprint="f" * 32)
    prompts, answers = ["Is it good?", "Is it bad?"], ["Yes, it helps.", "No."]
    direct = sf.families(lm, prompts, answers, ["context"], (1, 2))["context"]
    both = sf.families(lm, prompts, answers, ["context", "verdict"], (1, 2))
    np.testing.assert_allclose(both["context"], direct, atol=1e-6)
    assert both["verdict"].shape == (2, len(sf.VERDICT_WORDS))
    np.testing.assert_allclose(np.exp(both["verdict"]).sum(1), 1.0, atol=1e-6)
    cached = sf.feature_matrix(lm, prompts, answers, ["context", "verdict"], (1, 2))
    np.testing.assert_allclose(cached, np.concatenate([direct, both["verdict"]], 1), atol=1e-6)
    calls = []
    real = sf.families
    monkeypatch.setattr(sf, "families", lambda lm_, p, a, k, l: calls.append(len(a)) or real(lm_, p, a, k, l))
    again = sf.feature_matrix(lm, prompts + ["New?"], answers + ["Maybe."], ["context", "verdict"], (1, 2))
    assert calls == [1] and np.allclose(again[:2], cached)
    one_layer = sf.feature_matrix(lm, prompts, answers, ["context"], (2,))
    np.testing.assert_allclose(one_layer, direct[:, direct.shape[1] // 2:], atol=1e-6)
