"""Preference math on scalars: Bradley–Terry, MaxMin, reward-model, DPO, IPO and ORPO losses.

Pure functions over Python floats (one preference pair at a time), each citing the equation it
implements, so the numbers of a worked exercise can be checked by hand. The batched versions
that train models live in TRL; ``tests/test_preference_math.py`` checks these against TRL 1.16.

Papers: DPO, Rafailov et al. 2023 (arXiv 2305.18290); IPO, Azar et al. 2023 (arXiv 2310.12036);
ORPO, Hong, Lee & Thorne 2024 (arXiv 2403.07691); MaxMin-RLHF, Chakraborty et al. 2024.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from decoding.errors import DecodingLabError

# One help text per knob: the CLI (and any other face) reads it from here.
PARAM_HELP = {
    "ratings": "ratings r(x, y_i) of the responses, comma-separated (e.g. 1,1,2)",
    "form": "Bradley-Terry form: 'strength' P(i>j) = r_i/(r_i+r_j), or 'logistic' P(i>j) = sigmoid(r_i - r_j)",
    "group_ratings": "one rating list per subpopulation, lists separated by ';' (e.g. '1,1,2;2,1,2')",
    "utility": "MaxMin utility: 'rating' min_j r_j(x,y_i) (the exercise), or 'share' r_j,i / sum_k r_j,k",
    "r_chosen": "reward-model score r(x, y_w) of the preferred response",
    "r_rejected": "reward-model score r(x, y_l) of the dispreferred response",
    "pi_chosen": "policy probability pi_theta(y_w|x) in (0, 1] (a log-probability <= 0 with log_probs)",
    "pi_rejected": "policy probability pi_theta(y_l|x) in (0, 1] (a log-probability <= 0 with log_probs)",
    "ref_chosen": "reference probability pi_ref(y_w|x) in (0, 1] (a log-probability <= 0 with log_probs)",
    "ref_rejected": "reference probability pi_ref(y_l|x) in (0, 1] (a log-probability <= 0 with log_probs)",
    "beta": "DPO temperature beta > 0: larger keeps the policy closer to the reference (TRL default 0.1)",
    "beta_sweep": "comma-separated beta values to tabulate the loss over",
    "log_probs": "the four policy/reference values are log-probabilities (e.g. summed token log-probs)",
    "tau": "IPO regularisation tau > 0 (TRL's beta for loss_type='ipo'); the target margin is 1/(2 tau)",
    "chosen_length": "tokens in y_w: IPO divides its log-ratio by this (TRL's length averaging); 1 = paper",
    "rejected_length": "tokens in y_l: IPO divides its log-ratio by this (TRL's length averaging); 1 = paper",
    "chosen_logp": "ORPO: mean per-token log-probability of y_w, < 0",
    "rejected_logp": "ORPO: mean per-token log-probability of y_l, < 0",
    "lam": "ORPO weight lambda >= 0 of the odds-ratio term (TRL's ORPOConfig.beta, default 0.1)",
    "nll": "ORPO: the SFT loss to add (default: -chosen_logp, the chosen per-token NLL)",
}


def _check_finite(name: str, value: float, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DecodingLabError(f"{name}={value!r} is out of range; allowed: {allowed}")
    return float(value)


def _check_positive(name: str, value: float) -> float:
    value = _check_finite(name, value, f"a finite {name} > 0")
    if value <= 0:
        raise DecodingLabError(f"{name}={value!r} is out of range; allowed: {name} > 0")
    return value


def log_sigmoid(x: float) -> float:
    """log σ(x) = −softplus(−x), computed without overflow for large |x|."""
    return -(max(-x, 0.0) + math.log1p(math.exp(-abs(x))))


def sigmoid(x: float) -> float:
    return math.exp(log_sigmoid(x))


def _ties(values: Sequence[float]) -> tuple[int, ...]:
    best = max(values)
    return tuple(i for i, v in enumerate(values) if math.isclose(v, best, rel_tol=1e-12, abs_tol=1e-12))


# --------------------------------------------------------------------------- Bradley–Terry

@dataclass(frozen=True)
class BradleyTerryTable:
    """Pairwise preference table: ``matrix[i][j]`` = P(y_i ≻ y_j), shape (n, n), diagonal 0.5."""

    form: str
    ratings: tuple[float, ...]
    matrix: tuple[tuple[float, ...], ...]
    most_preferred: tuple[int, ...]  # indices of the highest rating (several when tied)

    def to_dict(self) -> dict:
        return asdict(self)


def bradley_terry_table(ratings: Sequence[float], form: str = "strength") -> BradleyTerryTable:
    """Bradley–Terry probabilities P(y_i ≻ y_j) for every pair of responses.

    - ``strength``: P(i ≻ j) = r_i / (r_i + r_j), ratings read as positive strengths
      ("y_3 is liked twice as much as y_1"). A rating of 0 is allowed once (it loses every
      comparison); two zeros would make 0/0.
    - ``logistic``: P(i ≻ j) = σ(r_i − r_j) = exp r_i / (exp r_i + exp r_j), ratings read as
      rewards: the DPO paper's Eq. 1. Equals ``strength`` on exp(r).

    The most preferred response has the highest rating; it wins every comparison with P ≥ 1/2.
    """
    if form not in ("strength", "logistic"):
        raise DecodingLabError(f"form={form!r} is not allowed; allowed: strength, logistic")
    if len(ratings) < 2:
        raise DecodingLabError(f"ratings={list(ratings)!r} has {len(ratings)} value(s); allowed: at least 2")
    values = tuple(_check_finite(f"ratings[{i}]", r, "finite numbers") for i, r in enumerate(ratings))
    if form == "strength":
        for i, r in enumerate(values):
            if r < 0:
                raise DecodingLabError(f"ratings[{i}]={r!r} is out of range; allowed: ratings >= 0 for the "
                                       "strength form P = r_i/(r_i+r_j)")
        if sum(r == 0 for r in values) > 1:
            raise DecodingLabError(f"ratings={list(values)!r} has several zeros; allowed: at most one 0 in the "
                                   "strength form (0/(0+0) is undefined)")

    def p(i: int, j: int) -> float:
        if i == j:
            return 0.5  # a response against itself: a tie by convention
        if form == "strength":
            return values[i] / (values[i] + values[j])
        return sigmoid(values[i] - values[j])

    n = len(values)
    matrix = tuple(tuple(p(i, j) for j in range(n)) for i in range(n))
    return BradleyTerryTable(form, values, matrix, _ties(values))


# --------------------------------------------------------------------------- MaxMin

@dataclass(frozen=True)
class MaxMinChoice:
    """MaxMin over subpopulations: ``utilities[j][i]`` of response i in group j, shape (groups, n)."""

    utility: str
    utilities: tuple[tuple[float, ...], ...]
    worst_case: tuple[float, ...]          # min over groups, per response
    worst_group: tuple[int, ...]           # the group attaining it (first when tied)
    chosen: tuple[int, ...]                # argmax of worst_case (several when tied)
    value: float                           # the max-min utility
    group_favourites: tuple[tuple[int, ...], ...]  # each group's most preferred response(s)

    def to_dict(self) -> dict:
        return asdict(self)


def maxmin_choice(group_ratings: Sequence[Sequence[float]], utility: str = "rating") -> MaxMinChoice:
    """The egalitarian choice c ∈ argmax_i min_j u_j(x, y_i) (MaxMin-RLHF, Chakraborty et al. 2024).

    ``group_ratings[j][i]`` is subpopulation j's rating of response i. With ``utility="rating"``
    u_j = r_j (the Saarland week-5 exercise: maximise the minimum rating across groups). Raw
    ratings assume the groups share one scale; ``utility="share"`` instead uses each group's
    Bradley–Terry choice probability u_j(y_i) = r_j,i / Σ_k r_j,k, which is scale-free per group.
    The choice can be a response that no group likes best: the answer no group hates.
    """
    if utility not in ("rating", "share"):
        raise DecodingLabError(f"utility={utility!r} is not allowed; allowed: rating, share")
    if not group_ratings or not group_ratings[0]:
        raise DecodingLabError("group_ratings is empty; allowed: at least one group with at least one rating")
    n = len(group_ratings[0])
    rows = []
    for j, group in enumerate(group_ratings):
        if len(group) != n:
            raise DecodingLabError(f"group_ratings[{j}] has {len(group)} ratings; allowed: {n} (as group 0), "
                                   "one per response")
        row = [_check_finite(f"group_ratings[{j}][{i}]", r, "finite numbers") for i, r in enumerate(group)]
        if utility == "share":
            if any(r < 0 for r in row) or sum(row) <= 0:
                raise DecodingLabError(f"group_ratings[{j}]={row!r} is out of range; allowed: ratings >= 0 "
                                       "with a positive sum for utility='share'")
            row = [r / sum(row) for r in row]
        rows.append(tuple(row))
    worst = tuple(min(row[i] for row in rows) for i in range(n))
    worst_group = tuple(min(range(len(rows)), key=lambda j: rows[j][i]) for i in range(n))
    chosen = _ties(worst)
    return MaxMinChoice(utility, tuple(rows), worst, worst_group, chosen, worst[chosen[0]],
                        tuple(_ties(row) for row in rows))


# --------------------------------------------------------------------------- reward model

@dataclass(frozen=True)
class RewardModelLoss:
    loss: float          # −log σ(r_w − r_l)
    margin: float        # r_w − r_l
    p_chosen: float      # σ(r_w − r_l): Bradley–Terry P(y_w ≻ y_l)

    def to_dict(self) -> dict:
        return asdict(self)


def reward_model_loss(r_chosen: float, r_rejected: float) -> RewardModelLoss:
    """Reward-model loss for one pair, L_R = −log σ(r(x,y_w) − r(x,y_l)) (DPO paper Eq. 2)."""
    margin = _check_finite("r_chosen", r_chosen, "finite") - _check_finite("r_rejected", r_rejected, "finite")
    return RewardModelLoss(-log_sigmoid(margin), margin, sigmoid(margin))


# --------------------------------------------------------------------------- DPO

@dataclass(frozen=True)
class DPOResult:
    """One pair's DPO numbers; rewards are TRL's ``rewards/chosen`` / ``rewards/rejected``."""

    beta: float
    loss: float             # −log σ(margin)
    chosen_reward: float    # β log πθ(y_w|x)/π_ref(y_w|x)
    rejected_reward: float  # β log πθ(y_l|x)/π_ref(y_l|x)
    margin: float           # chosen_reward − rejected_reward

    def to_dict(self) -> dict:
        return asdict(self)


def as_log_probs(values: dict[str, float], log_probs: bool) -> dict[str, float]:
    """Validate sequence probabilities in (0, 1] (or log-probabilities ≤ 0) and return logs."""
    out = {}
    for name, v in values.items():
        if log_probs:
            v = _check_finite(name, v, f"a finite log-probability {name} <= 0")
            if v > 0:
                raise DecodingLabError(f"{name}={v!r} is out of range; allowed: log-probability {name} <= 0")
            out[name] = v
        else:
            v = _check_finite(name, v, f"0 < {name} <= 1")
            if not 0 < v <= 1:
                raise DecodingLabError(f"{name}={v!r} is out of range; allowed: 0 < {name} <= 1")
            out[name] = math.log(v)
    return out


def dpo_loss(pi_chosen: float, pi_rejected: float, ref_chosen: float, ref_rejected: float,
             beta: float, log_probs: bool = False) -> DPOResult:
    """DPO loss for one pair (Rafailov et al. 2023, Eq. 7):

        L = −log σ(β log πθ(y_w|x)/π_ref(y_w|x) − β log πθ(y_l|x)/π_ref(y_l|x))

    with the implicit rewards r̂(x, y) = β log πθ(y|x)/π_ref(y|x) (§5). Inputs are sequence
    probabilities, or with ``log_probs=True`` sequence log-probabilities (TRL sums token
    log-probs over the completion). Equals TRL ``loss_type="sigmoid"``.
    """
    beta = _check_positive("beta", beta)
    lp = as_log_probs({"pi_chosen": pi_chosen, "pi_rejected": pi_rejected,
                       "ref_chosen": ref_chosen, "ref_rejected": ref_rejected}, log_probs)
    chosen_reward = beta * (lp["pi_chosen"] - lp["ref_chosen"])
    rejected_reward = beta * (lp["pi_rejected"] - lp["ref_rejected"])
    margin = chosen_reward - rejected_reward
    return DPOResult(beta, -log_sigmoid(margin), chosen_reward, rejected_reward, margin)


def dpo_beta_sweep(pi_chosen: float, pi_rejected: float, ref_chosen: float, ref_rejected: float,
                   betas: Sequence[float], log_probs: bool = False) -> list[DPOResult]:
    """``dpo_loss`` at each β: the loss moves with β in the direction of the sign of the log-ratio
    margin (down when the policy already prefers y_w more than the reference does, up otherwise)."""
    if not betas:
        raise DecodingLabError("betas is empty; allowed: at least one beta > 0")
    return [dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, b, log_probs) for b in betas]


# --------------------------------------------------------------------------- IPO

@dataclass(frozen=True)
class IPOResult:
    tau: float
    loss: float          # (h − 1/(2τ))²
    h: float             # length-normalised log-ratio difference
    target: float        # 1/(2τ)
    chosen_logratio: float    # (log πθ(y_w) − log π_ref(y_w)) / |y_w|
    rejected_logratio: float  # (log πθ(y_l) − log π_ref(y_l)) / |y_l|

    def to_dict(self) -> dict:
        return asdict(self)


def ipo_loss(pi_chosen: float, pi_rejected: float, ref_chosen: float, ref_rejected: float, tau: float,
             log_probs: bool = False, chosen_length: int = 1, rejected_length: int = 1) -> IPOResult:
    """IPO loss for one pair (Azar et al. 2023, Eq. 17): L = (h − 1/(2τ))², where

        h = log[πθ(y_w|x) π_ref(y_l|x) / (πθ(y_l|x) π_ref(y_w|x))].

    Unlike DPO's log σ, the square pulls h to a finite target 1/(2τ) instead of pushing it to ∞.
    TRL (``loss_type="ipo"``, τ = ``beta``) divides each log-ratio by its completion's token
    count (a normalisation agreed with the IPO authors); pass ``chosen_length``/``rejected_length``
    with summed log-probs to match it, or leave them at 1 for the paper's sequence-level form.
    """
    tau = _check_positive("tau", tau)
    for name, length in (("chosen_length", chosen_length), ("rejected_length", rejected_length)):
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise DecodingLabError(f"{name}={length!r} is out of range; allowed: an integer >= 1")
    lp = as_log_probs({"pi_chosen": pi_chosen, "pi_rejected": pi_rejected,
                       "ref_chosen": ref_chosen, "ref_rejected": ref_rejected}, log_probs)
    chosen_ratio = (lp["pi_chosen"] - lp["ref_chosen"]) / chosen_length
    rejected_ratio = (lp["pi_rejected"] - lp["ref_rejected"]) / rejected_length
    h = chosen_ratio - rejected_ratio
    target = 1 / (2 * tau)
    return IPOResult(tau, (h - target) ** 2, h, target, chosen_ratio, rejected_ratio)


# --------------------------------------------------------------------------- ORPO

@dataclass(frozen=True)
class ORPOResult:
    lam: float
    loss: float              # L_SFT + λ L_OR
    sft_loss: float          # L_SFT
    or_loss: float           # −log σ(log odds ratio)
    log_odds_ratio: float    # log odds(y_w) − log odds(y_l)
    chosen_odds: float       # P/(1−P), P = exp(mean token log-prob)
    rejected_odds: float

    def to_dict(self) -> dict:
        return asdict(self)


def log1mexp(x: float) -> float:
    """log(1 − eˣ) for x < 0, switching formula at −ln 2 to avoid cancellation (as TRL does)."""
    return math.log1p(-math.exp(x)) if x < -math.log(2) else math.log(-math.expm1(x))


def orpo_loss(chosen_logp: float, rejected_logp: float, lam: float = 0.1,
              nll: float | None = None) -> ORPOResult:
    """ORPO loss for one pair (Hong, Lee & Thorne 2024: odds Eq. 4, objective Eq. 6, L_OR Eq. 7).

    With P(y|x) = exp((1/|y|) Σ_t log P(y_t|x, y_<t)) from the mean token log-probs ``*_logp``:
    odds(y) = P/(1−P), L_OR = −log σ(log odds(y_w)/odds(y_l)) and L_ORPO = L_SFT + λ L_OR.
    L_SFT defaults to the chosen per-token NLL −``chosen_logp``; TRL's ``nll_loss`` also covers
    the prompt tokens, so pass it as ``nll`` to reproduce a TRL log. No reference model.
    """
    lam = _check_finite("lam", lam, "a finite lam >= 0")
    if lam < 0:
        raise DecodingLabError(f"lam={lam!r} is out of range; allowed: lam >= 0")
    for name, v in (("chosen_logp", chosen_logp), ("rejected_logp", rejected_logp)):
        v = _check_finite(name, v, f"a finite mean log-probability {name} < 0")
        if v >= 0:
            raise DecodingLabError(f"{name}={v!r} is out of range; allowed: {name} < 0 (P = 1 has infinite odds)")
    sft = -float(chosen_logp) if nll is None else _check_finite("nll", nll, "a finite number")
    # log odds = log P − log(1 − P), differenced between chosen and rejected (TRL orpo_trainer.py).
    log_odds = (chosen_logp - rejected_logp) - (log1mexp(chosen_logp) - log1mexp(rejected_logp))
    or_loss = -log_sigmoid(log_odds)
    odds = [math.exp(v - log1mexp(v)) for v in (chosen_logp, rejected_logp)]
    return ORPOResult(lam, sft + lam * or_loss, sft, or_loss, log_odds, odds[0], odds[1])
