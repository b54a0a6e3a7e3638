"""Preference math against hand-computed values and against TRL 1.16's own loss code."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest

from alignment import preference_math as pm
from decoding.errors import DecodingLabError

# The Saarland week-5 exercise: four subpopulations rate responses y1, y2, y3.
EXERCISE_GROUPS = [[1, 1, 2], [2, 1, 2], [3, 1, 0], [0, 2, 3]]


# --------------------------------------------------------------------------- Bradley–Terry

def test_bt_strength_ratings_1_1_2():
    table = pm.bradley_terry_table([1, 1, 2])
    # P(y3 ≻ y1) = 2/(2+1) = 2/3; P(y1 ≻ y2) = 1/(1+1) = 1/2; P(y1 ≻ y3) = 1/3.
    assert table.matrix[2][0] == pytest.approx(2 / 3)
    assert table.matrix[0][1] == pytest.approx(0.5)
    assert table.matrix[0][2] == pytest.approx(1 / 3)
    assert table.most_preferred == (2,)


def test_bt_strength_rows_are_complementary_and_diagonal_half():
    table = pm.bradley_terry_table([2, 1, 2])
    for i in range(3):
        assert table.matrix[i][i] == 0.5
        for j in range(3):
            assert table.matrix[i][j] + table.matrix[j][i] == pytest.approx(1.0)
    assert table.most_preferred == (0, 2)  # tie listed


def test_bt_strength_allows_one_zero_rating():
    table = pm.bradley_terry_table([3, 1, 0])  # subpopulation 3 of the exercise
    assert table.matrix[0][1] == pytest.approx(0.75)  # 3/(3+1)
    assert table.matrix[2][0] == 0.0 and table.matrix[0][2] == 1.0


def test_bt_logistic_is_sigmoid_of_difference():
    table = pm.bradley_terry_table([1, 1, 2], form="logistic")
    assert table.matrix[2][0] == pytest.approx(1 / (1 + math.exp(-1)))  # σ(2 − 1) ≈ 0.7311
    assert table.matrix[0][1] == pytest.approx(0.5)


@pytest.mark.parametrize("ratings, form, fragment", [
    ([], "strength", "at least 2"),
    ([1], "strength", "at least 2"),
    ([1, -1], "strength", "ratings[1]=-1.0"),
    ([0, 0, 1], "strength", "at most one 0"),
    ([1, float("nan")], "logistic", "ratings[1]"),
    ([1, 2], "softmax", "form='softmax'"),
])
def test_bt_rejects_bad_input(ratings, form, fragment):
    with pytest.raises(DecodingLabError, match=None) as info:
        pm.bradley_terry_table(ratings, form)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- MaxMin

def test_maxmin_exercise_picks_y2_which_no_group_likes_best():
    result = pm.maxmin_choice(EXERCISE_GROUPS)
    # min over groups: y1 → min(1,2,3,0)=0, y2 → min(1,1,1,2)=1, y3 → min(2,2,0,3)=0.
    assert result.worst_case == (0, 1, 0)
    assert result.chosen == (1,) and result.value == 1
    assert result.worst_group == (3, 0, 2)
    assert result.group_favourites == ((2,), (0, 2), (0,), (2,))
    assert all(1 not in fav for fav in result.group_favourites)


def test_maxmin_share_utility_normalises_each_group():
    result = pm.maxmin_choice(EXERCISE_GROUPS, utility="share")
    # y2's shares: 1/4, 1/5, 1/4, 2/5 → worst 1/5; y1 and y3 each get 0 in some group.
    assert result.worst_case == pytest.approx((0.0, 0.2, 0.0))
    assert result.chosen == (1,)


def test_maxmin_ties_are_listed():
    assert pm.maxmin_choice([[1, 1], [2, 2]]).chosen == (0, 1)


@pytest.mark.parametrize("groups, utility, fragment", [
    ([], "rating", "empty"),
    ([[]], "rating", "empty"),
    ([[1, 2], [1]], "rating", "group_ratings[1] has 1 ratings; allowed: 2"),
    ([[1, 2]], "median", "utility='median'"),
    ([[0, 0]], "share", "positive sum"),
])
def test_maxmin_rejects_bad_input(groups, utility, fragment):
    with pytest.raises(DecodingLabError) as info:
        pm.maxmin_choice(groups, utility)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- reward model, DPO

def test_reward_model_loss_exercise():
    result = pm.reward_model_loss(0.5, 0.8)
    # −log σ(0.5 − 0.8) = log(1 + e^0.3) = log(2.349859) ≈ 0.854355
    assert result.loss == pytest.approx(math.log1p(math.exp(0.3)))
    assert result.loss == pytest.approx(0.854355, abs=1e-6)
    assert result.p_chosen == pytest.approx(1 / (1 + math.exp(0.3)))


def test_dpo_exercise_by_hand():
    # π_c=0.2, π_r=0.3, ref_c=0.2, ref_r=0.4, β=2:
    #   chosen_reward   = 2·log(0.2/0.2) = 0
    #   rejected_reward = 2·log(0.3/0.4) = 2·log 0.75 ≈ −0.575364
    #   loss = −log σ(0 − 2 log 0.75) = log(1 + 0.75²) = log(1.5625) = log(25/16) ≈ 0.446287
    result = pm.dpo_loss(0.2, 0.3, 0.2, 0.4, beta=2)
    assert result.chosen_reward == 0.0
    assert result.rejected_reward == pytest.approx(2 * math.log(0.75))
    assert result.margin == pytest.approx(-2 * math.log(0.75))
    assert result.loss == pytest.approx(math.log(25 / 16))


def test_dpo_log_probs_equal_probabilities():
    from_probs = pm.dpo_loss(0.2, 0.3, 0.2, 0.4, beta=2)
    from_logs = pm.dpo_loss(math.log(0.2), math.log(0.3), math.log(0.2), math.log(0.4), beta=2, log_probs=True)
    assert from_logs.loss == pytest.approx(from_probs.loss)
    assert from_logs.rejected_reward == pytest.approx(from_probs.rejected_reward)


def test_dpo_at_reference_is_log2():
    assert pm.dpo_loss(0.3, 0.3, 0.3, 0.3, beta=0.1).loss == pytest.approx(math.log(2))


def test_dpo_beta_sweep_direction_follows_margin_sign():
    # E.5 of the exercise: with ref_r=0.4 the policy already favours y_w → loss falls with β;
    # with ref_r=0.2 it favours y_l more than the reference → loss rises with β.
    betas = [0.1, 0.5, 1, 2, 5]
    falling = [r.loss for r in pm.dpo_beta_sweep(0.2, 0.3, 0.2, 0.4, betas)]
    rising = [r.loss for r in pm.dpo_beta_sweep(0.2, 0.3, 0.2, 0.2, betas)]
    assert falling == sorted(falling, reverse=True)
    assert rising == sorted(rising)
    assert rising[-1] == pytest.approx(-pm.log_sigmoid(-5 * math.log(1.5)))


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(pi_chosen=0.0), "pi_chosen=0.0 is out of range; allowed: 0 < pi_chosen <= 1"),
    (dict(ref_rejected=1.5), "ref_rejected=1.5 is out of range"),
    (dict(beta=0), "beta=0.0 is out of range; allowed: beta > 0"),
    (dict(beta=-1), "beta=-1.0"),
    (dict(pi_chosen=0.5, log_probs=True), "log-probability pi_chosen <= 0"),
    (dict(pi_rejected=float("inf")), "pi_rejected=inf"),
])
def test_dpo_rejects_bad_input(kwargs, fragment):
    args = dict(pi_chosen=0.2, pi_rejected=0.3, ref_chosen=0.2, ref_rejected=0.4, beta=2.0)
    args.update(kwargs)
    if args.get("log_probs"):
        args.update(pi_rejected=-1.0, ref_chosen=-1.0, ref_rejected=-1.0)
    with pytest.raises(DecodingLabError) as info:
        pm.dpo_loss(**args)
    assert fragment in str(info.value)


def test_beta_sweep_rejects_empty():
    with pytest.raises(DecodingLabError, match="betas is empty"):
        pm.dpo_beta_sweep(0.2, 0.3, 0.2, 0.4, [])


# --------------------------------------------------------------------------- IPO, ORPO

def test_ipo_by_hand():
    # h = log(0.2/0.2) − log(0.3/0.4) = −log 0.75 ≈ 0.287682; τ = 0.5 → target 1;
    # loss = (0.287682 − 1)² ≈ 0.507397
    result = pm.ipo_loss(0.2, 0.3, 0.2, 0.4, tau=0.5)
    assert result.h == pytest.approx(-math.log(0.75))
    assert result.target == 1.0
    assert result.loss == pytest.approx((-math.log(0.75) - 1) ** 2)


def test_ipo_length_normalisation():
    # Summed log-ratios +2 over 4 tokens and −3 over 6 tokens → h = 0.5 − (−0.5) = 1.
    result = pm.ipo_loss(-10, -30, -12, -27, tau=0.25, log_probs=True, chosen_length=4, rejected_length=6)
    assert result.h == pytest.approx(1.0)
    assert result.loss == pytest.approx((1.0 - 2.0) ** 2)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(tau=0), "tau=0.0 is out of range; allowed: tau > 0"),
    (dict(chosen_length=0), "chosen_length=0"),
    (dict(rejected_length=2.5), "rejected_length=2.5"),
])
def test_ipo_rejects_bad_input(kwargs, fragment):
    args = dict(pi_chosen=0.2, pi_rejected=0.3, ref_chosen=0.2, ref_rejected=0.4, tau=0.1)
    args.update(kwargs)
    with pytest.raises(DecodingLabError) as info:
        pm.ipo_loss(**args)
    assert fragment in str(info.value)


def test_orpo_by_hand():
    # Mean token log-probs log 0.5 (chosen) and log 0.2 (rejected): odds 1 and 0.25,
    # log OR = log 4; L_OR = −log σ(log 4) = log(1 + 1/4) = log 1.25; L_SFT = log 2.
    result = pm.orpo_loss(math.log(0.5), math.log(0.2), lam=0.5)
    assert result.chosen_odds == pytest.approx(1.0)
    assert result.rejected_odds == pytest.approx(0.25)
    assert result.log_odds_ratio == pytest.approx(math.log(4))
    assert result.or_loss == pytest.approx(math.log(1.25))
    assert result.loss == pytest.approx(math.log(2) + 0.5 * math.log(1.25))
    assert pm.orpo_loss(math.log(0.5), math.log(0.2), lam=0.5, nll=3.0).loss == pytest.approx(
        3.0 + 0.5 * math.log(1.25))


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(chosen_logp=0.0), "chosen_logp=0.0 is out of range"),
    (dict(rejected_logp=0.3), "rejected_logp=0.3"),
    (dict(lam=-0.1), "lam=-0.1 is out of range; allowed: lam >= 0"),
])
def test_orpo_rejects_bad_input(kwargs, fragment):
    args = dict(chosen_logp=-0.5, rejected_logp=-1.0, lam=0.1)
    args.update(kwargs)
    with pytest.raises(DecodingLabError) as info:
        pm.orpo_loss(**args)
    assert fragment in str(info.value)


def test_log_sigmoid_is_stable():
    assert pm.log_sigmoid(1000.0) == 0.0
    assert pm.log_sigmoid(-1000.0) == pytest.approx(-1000.0)


# --------------------------------------------------------------------------- parity with TRL 1.16
#
# TRL has no standalone DPO loss function: the formulas sit inside ``DPOTrainer._compute_loss``,
# which runs the model itself. The harness below runs that *unmodified* method on an instance
# made with ``DPOTrainer.__new__`` (no ``__init__``: no model loading, no dataset), holding only
# the attributes the method reads. The "model" is a stub returning TRL's fused-LM-head output
# fields: per-token log-probs we choose (0 on prompt/padding positions, where TRL's labels are
# −100), and zeros for the logged entropy / mean-logit / top-1 metrics. Reference log-probs take
# TRL's precomputed path (``precompute_ref_log_probs=True``), so no reference forward runs.

import torch  # noqa: E402  (the parity tests below need TRL; the math above does not)
import trl  # noqa: E402

# Batch of 2 pairs, sequence length 8, prompt = positions 0–1. Completion token counts:
# chosen 3 and 5 tokens, rejected 6 and 2 tokens (so length averaging matters for IPO).
CHOSEN_TOKENS = [[-0.5, -1.0, -0.25], [-2.0, -0.1, -0.3, -0.7, -1.1]]
REJECTED_TOKENS = [[-1.5, -0.2, -0.9, -2.2, -0.4, -0.6], [-0.05, -0.3]]
REF_CHOSEN = [-2.5, -3.9]      # summed reference log-probs
REF_REJECTED = [-5.0, -0.6]
SEQ_LEN, PROMPT_LEN = 8, 2


class _StubAccelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(tensor):
        return tensor

    gather_for_metrics = gather


class _StubPolicy:
    """Stands in for ``model(**kwargs, labels=…, fused_lm_head=True)``: fixed per-token log-probs."""

    training = True

    def __init__(self, per_token_logps):
        self.per_token_logps = per_token_logps

    def __call__(self, **kwargs):
        zeros = torch.zeros_like(self.per_token_logps)
        return SimpleNamespace(log_probs=self.per_token_logps, entropy=zeros, mean_logits=zeros,
                               is_top1=zeros.bool())


def _trl_batch():
    rows = CHOSEN_TOKENS + REJECTED_TOKENS  # TRL concatenates [chosen; rejected] along the batch
    completion_mask = torch.zeros(len(rows), SEQ_LEN, dtype=torch.long)
    per_token = torch.zeros(len(rows), SEQ_LEN - 1, dtype=torch.float64)
    for r, tokens in enumerate(rows):
        completion_mask[r, PROMPT_LEN:PROMPT_LEN + len(tokens)] = 1
        # log_probs[:, t] scores token t+1 (the shift of causal LM labels)
        per_token[r, PROMPT_LEN - 1:PROMPT_LEN - 1 + len(tokens)] = torch.tensor(tokens, dtype=torch.float64)
    inputs = {"input_ids": torch.zeros(len(rows), SEQ_LEN, dtype=torch.long),
              "attention_mask": completion_mask.clone().fill_(1), "completion_mask": completion_mask,
              "ref_chosen_logps": torch.tensor(REF_CHOSEN, dtype=torch.float64),
              "ref_rejected_logps": torch.tensor(REF_REJECTED, dtype=torch.float64)}
    return per_token, inputs


def _trl_dpo_loss(loss_type: str, beta: float):
    """Mean loss and logged metrics from TRL's own ``DPOTrainer._compute_loss``."""
    per_token, inputs = _trl_batch()
    trainer = trl.DPOTrainer.__new__(trl.DPOTrainer)
    policy = _StubPolicy(per_token)
    trainer.__dict__.update(
        model=policy, accelerator=_StubAccelerator(), args=SimpleNamespace(), beta=beta,
        loss_types=[loss_type], loss_weights=[1.0], ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", label_smoothing=0.0, use_weighting=False, aux_loss_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    loss = trainer._compute_loss(policy, inputs, return_outputs=False)
    return float(loss), trainer._metrics["train"]


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_dpo_matches_trl_sigmoid_loss(beta):
    trl_loss, metrics = _trl_dpo_loss("sigmoid", beta)
    ours = [pm.dpo_loss(sum(c), sum(r), rc, rr, beta=beta, log_probs=True)
            for c, r, rc, rr in zip(CHOSEN_TOKENS, REJECTED_TOKENS, REF_CHOSEN, REF_REJECTED)]
    assert sum(o.loss for o in ours) / 2 == pytest.approx(trl_loss, rel=1e-9)
    assert sum(o.chosen_reward for o in ours) / 2 == pytest.approx(metrics["rewards/chosen"][0], rel=1e-6)
    assert sum(o.rejected_reward for o in ours) / 2 == pytest.approx(metrics["rewards/rejected"][0], rel=1e-6)
    assert sum(o.margin for o in ours) / 2 == pytest.approx(metrics["rewards/margins"][0], rel=1e-6)


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_ipo_matches_trl_length_averaged_ipo(tau):
    trl_loss, _ = _trl_dpo_loss("ipo", tau)
    ours = [pm.ipo_loss(sum(c), sum(r), rc, rr, tau=tau, log_probs=True,
                        chosen_length=len(c), rejected_length=len(r))
            for c, r, rc, rr in zip(CHOSEN_TOKENS, REJECTED_TOKENS, REF_CHOSEN, REF_REJECTED)]
    assert sum(o.loss for o in ours) / 2 == pytest.approx(trl_loss, rel=1e-9)
    # Without the length arguments (the paper's sequence-level h) the numbers differ.
    paper = [pm.ipo_loss(sum(c), sum(r), rc, rr, tau=tau, log_probs=True)
             for c, r, rc, rr in zip(CHOSEN_TOKENS, REJECTED_TOKENS, REF_CHOSEN, REF_REJECTED)]
    assert sum(o.loss for o in paper) / 2 != pytest.approx(trl_loss, rel=1e-3)


@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_orpo_matches_trl_odds_ratio_loss(lam):
    from trl.experimental.orpo import ORPOTrainer

    chosen = torch.tensor([-0.4, -1.3, -0.05], dtype=torch.float64)   # mean token log-probs
    rejected = torch.tensor([-0.9, -0.2, -2.5], dtype=torch.float64)
    nll = 1.7
    trainer = ORPOTrainer.__new__(ORPOTrainer)
    trainer.__dict__.update(beta=lam, accelerator=_StubAccelerator())
    losses, *_ = trainer.odds_ratio_loss(chosen, rejected)
    trl_loss = nll - float(losses.mean())  # ORPOTrainer.get_batch_loss_metrics: nll_loss − mean(β log σ)
    ours = [pm.orpo_loss(float(c), float(r), lam=lam, nll=nll).loss for c, r in zip(chosen, rejected)]
    assert sum(ours) / 3 == pytest.approx(trl_loss, rel=1e-5)  # TRL casts to float32 first
