"""Preference math: Bradley–Terry, MaxMin, reward-model, DPO, IPO and ORPO losses with sliders.
No model call: every number comes from ``alignment.preference_math`` (as ``declab prefmath``)."""

from __future__ import annotations

import streamlit as st

from alignment import preference_math as pm
from app import charts_prefmath as cp
from app import lab_state
from app.views.knobs import number_box
from decoding import DecodingLabError

K = "preference_math."
H = pm.PARAM_HELP
BT_RATINGS_KEY, BT_FORM_KEY = K + "bt.ratings", K + "bt.form"
MM_RATINGS_KEY, MM_UTILITY_KEY = K + "maxmin.ratings", K + "maxmin.utility"
RM_CHOSEN_KEY, RM_REJECTED_KEY = K + "rm.r_chosen", K + "rm.r_rejected"
DPO_BETA_KEY = K + "dpo.beta"
IPO_TAU_KEY, IPO_CHOSEN_LEN_KEY, IPO_REJECTED_LEN_KEY = (K + "ipo.tau", K + "ipo.chosen_length",
                                                         K + "ipo.rejected_length")
ORPO_CHOSEN_KEY, ORPO_REJECTED_KEY, ORPO_LAM_KEY = (K + "orpo.chosen_logp", K + "orpo.rejected_logp",
                                                    K + "orpo.lam")
PROBS = ("pi_chosen", "pi_rejected", "ref_chosen", "ref_rejected")
PROB_DEFAULTS = {"pi_chosen": 0.2, "pi_rejected": 0.3, "ref_chosen": 0.2, "ref_rejected": 0.4}


def prob_key(tab: str, name: str) -> str:
    return f"{K}{tab}.{name}"


def metrics(values: list[tuple[str, float]]) -> None:
    for column, (label, value) in zip(st.columns(len(values)), values):
        column.metric(label, f"{value:.4f}")


def guarded(section):
    """Run one calculator; a bad value shows the library's message instead of a traceback."""
    try:
        section()
    except DecodingLabError as exc:
        st.error(str(exc))


def probability_sliders(tab: str) -> dict[str, float]:
    c = st.columns(4)
    values = {}
    for column, name in zip(c, PROBS):
        with column:
            values[name] = st.slider(name, 0.001, 1.0, PROB_DEFAULTS[name], 0.001, format="%.3f",
                                     key=prob_key(tab, name), help=H[name], persist_state="session")
    return values


# ---------------------------------------------------------------------- calculators

def bradley_terry() -> None:
    st.latex(r"P(y_i \succ y_j) = \frac{r_i}{r_i + r_j} \quad\text{or}\quad \sigma(r_i - r_j)")
    c = st.columns([3, 2])
    with c[0]:
        ratings = st.text_input("Ratings r(x, y_i)", "1, 1, 2", key=BT_RATINGS_KEY, help=H["ratings"],
                                persist_state="session")
    with c[1]:
        form = st.radio("Form", ["strength", "logistic"], horizontal=True, key=BT_FORM_KEY,
                        help=H["form"], persist_state="session")
    table = pm.bradley_terry_table(cp.parse_numbers("ratings", ratings), form)
    left, right = st.columns([1, 1])
    with left:
        st.altair_chart(cp.bradley_terry_chart(table), width="content")
    with right:
        st.dataframe(cp.bradley_terry_matrix(table), placeholder=lab_state.EMPTY_CELL, column_config={
            name: st.column_config.NumberColumn(format="percent")
            for name in cp.response_names(len(table.ratings))})
    best = ", ".join(cp.response_names(len(table.ratings))[i] for i in table.most_preferred)
    st.success(f"Most preferred: {best} (wins every comparison with P ≥ 50%).")


def maxmin() -> None:
    st.latex(r"c \in \arg\max_i \; \min_j \; u_j(x, y_i)")
    c = st.columns([3, 2])
    with c[0]:
        text = st.text_area("Ratings per group (one group per line)", "1, 1, 2\n2, 1, 1\n1, 2, 1.5",
                            key=MM_RATINGS_KEY, help=H["group_ratings"], height=110, persist_state="session")
    with c[1]:
        utility = st.radio("Utility", ["rating", "share"], horizontal=True, key=MM_UTILITY_KEY,
                           help=H["utility"], persist_state="session")
    result = pm.maxmin_choice(cp.parse_groups(text), utility)
    st.dataframe(cp.maxmin_frame(result), hide_index=True, placeholder=lab_state.EMPTY_CELL)
    chosen = ", ".join(cp.response_names(len(result.worst_case))[i] for i in result.chosen)
    st.success(f"MaxMin choice: {chosen} (worst-case utility {result.value:.4g}): the answer no "
               "group hates, which need not be any group's favourite.")


def reward_model() -> None:
    st.latex(r"\mathcal{L}_R = -\log \sigma\big(r(x, y_w) - r(x, y_l)\big)")
    c = st.columns(2)
    with c[0]:
        r_w = st.slider("r_chosen", -5.0, 5.0, 1.0, 0.1, key=RM_CHOSEN_KEY, help=H["r_chosen"],
                        persist_state="session")
    with c[1]:
        r_l = st.slider("r_rejected", -5.0, 5.0, 0.0, 0.1, key=RM_REJECTED_KEY, help=H["r_rejected"],
                        persist_state="session")
    result = pm.reward_model_loss(r_w, r_l)
    metrics([("margin r_w − r_l", result.margin), ("P(y_w ≻ y_l)", result.p_chosen),
             ("loss", result.loss)])


def dpo() -> None:
    st.latex(r"\mathcal{L}_{DPO} = -\log\sigma\Big(\beta\log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}"
             r" - \beta\log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}\Big)")
    probs = probability_sliders("dpo")
    beta = st.slider("β", 0.01, 5.0, 0.1, 0.01, key=DPO_BETA_KEY, help=H["beta"], persist_state="session")
    result = pm.dpo_loss(**probs, beta=beta)
    metrics([("chosen reward", result.chosen_reward), ("rejected reward", result.rejected_reward),
             ("margin", result.margin), ("loss", result.loss)])
    sweep = pm.dpo_beta_sweep(**probs, betas=cp.beta_grid())
    st.altair_chart(cp.beta_sweep_chart(cp.beta_sweep_frame(sweep), beta), width="content")
    st.caption("The β sweep: with a positive log-ratio margin (the policy prefers y_w more than "
               "the reference does) the loss falls as β grows; with a negative one it rises.")


def ipo() -> None:
    st.latex(r"\mathcal{L}_{IPO} = \Big(h - \frac{1}{2\tau}\Big)^2,\quad "
             r"h = \log\frac{\pi_\theta(y_w|x)\,\pi_{ref}(y_l|x)}{\pi_\theta(y_l|x)\,\pi_{ref}(y_w|x)}")
    probs = probability_sliders("ipo")
    c = st.columns(3)
    with c[0]:
        tau = st.slider("τ", 0.01, 5.0, 0.1, 0.01, key=IPO_TAU_KEY, help=H["tau"], persist_state="session")
    with c[1]:
        chosen_length = number_box("chosen_length", 1, 10_000, IPO_CHOSEN_LEN_KEY, value=1,
                                   help=H["chosen_length"])
    with c[2]:
        rejected_length = number_box("rejected_length", 1, 10_000, IPO_REJECTED_LEN_KEY, value=1,
                                     help=H["rejected_length"])
    result = pm.ipo_loss(**probs, tau=tau, chosen_length=int(chosen_length),
                         rejected_length=int(rejected_length))
    metrics([("h", result.h), ("target 1/(2τ)", result.target), ("loss", result.loss)])


def orpo() -> None:
    st.latex(r"\mathcal{L}_{ORPO} = \mathcal{L}_{SFT} + \lambda\,\Big(-\log\sigma\big(\log"
             r"\frac{\mathrm{odds}(y_w)}{\mathrm{odds}(y_l)}\big)\Big),\quad"
             r"\mathrm{odds}(y) = \frac{P(y|x)}{1 - P(y|x)}")
    c = st.columns(3)
    with c[0]:
        chosen = st.slider("chosen_logp", -5.0, -0.01, -0.5, 0.01, key=ORPO_CHOSEN_KEY,
                           help=H["chosen_logp"], persist_state="session")
    with c[1]:
        rejected = st.slider("rejected_logp", -5.0, -0.01, -1.0, 0.01, key=ORPO_REJECTED_KEY,
                             help=H["rejected_logp"], persist_state="session")
    with c[2]:
        lam = st.slider("λ", 0.0, 2.0, 0.1, 0.01, key=ORPO_LAM_KEY, help=H["lam"], persist_state="session")
    result = pm.orpo_loss(chosen, rejected, lam=lam)
    metrics([("odds(y_w)", result.chosen_odds), ("odds(y_l)", result.rejected_odds),
             ("log odds ratio", result.log_odds_ratio), ("L_OR", result.or_loss),
             ("L_SFT", result.sft_loss), ("loss", result.loss)])


SECTIONS = {"Bradley–Terry": bradley_terry, "MaxMin": maxmin, "Reward model": reward_model,
            "DPO": dpo, "IPO": ipo, "ORPO": orpo}


def render() -> None:
    st.title("Preference math")
    st.caption("The formulas of preference learning on numbers you choose. No model is called: "
               "every value comes from alignment.preference_math, as in `declab prefmath`.")
    for tab, section in zip(st.tabs(list(SECTIONS)), SECTIONS.values()):
        with tab:
            guarded(section)
