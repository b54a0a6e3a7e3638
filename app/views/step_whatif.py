"""Step inspector, what-if panel: other sampling settings (temperature, top-k, top-p, min-p, and
every other sampling stage of the registry) and either processor order for the selected step,
recomputed from the recorded step (``decoding.whatif``: exact where the record reaches, marked
"approximate" beyond it); no model call. A fragment of its own,
nested in the scrubber: moving a knob reruns only this panel."""

from __future__ import annotations

import streamlit as st

from app import charts
from app.views import knobs as controls
from decoding import DecodingConfig, help_text
from decoding.errors import DecodingLabError
from decoding.stages import KNOBS, PROCESSOR_ORDERS
from decoding.trace import Generation, StepTrace
from decoding.whatif import WHATIF_KNOBS, kept_set_change, top_n_mass, whatif_config, whatif_step

PREFIX = "step_inspector.whatif."
ORDERS = tuple(PROCESSOR_ORDERS)   # ("transformers", "llama.cpp")
MAIN_KNOBS = ("temperature", "top_k", "top_p", "min_p")      # the first row; the rest folded
DEFAULTS = DecodingConfig()


def key(name: str) -> str:
    return PREFIX + name


def reset(generation: Generation) -> None:
    """Set the panel's knobs to the generation's own (called before the panel is drawn)."""
    config = generation.config
    for name in WHATIF_KNOBS:
        value = config.get(name, getattr(DEFAULTS, name))
        st.session_state[key(name)] = (controls.control_value(name, value) if name in KNOBS
                                       else value)
    order = config.get("processor_order")
    st.session_state[key("processor_order")] = order if order in ORDERS else ORDERS[0]


def _control(name: str):
    if name in KNOBS:
        return controls.knob_control(name, key(name),
                                     note=" The control's 0 is off." if KNOBS[name].none_at == 0
                                     else "")
    return st.checkbox(name, key=key(name), help=help_text(name),
                       persist_state="session")      # p_less: on/off


def knobs(generation: Generation) -> dict:
    if key("temperature") not in st.session_state:
        reset(generation)
    values = {}
    c = st.columns(len(MAIN_KNOBS) + 1)
    for column, name in zip(c, MAIN_KNOBS):
        with column:
            values[name] = _control(name)
    with c[-1]:
        values["processor_order"] = st.radio("processor order", ORDERS, key=key("processor_order"),
                                             help=help_text("processor_order"), persist_state="session")
    rest = [name for name in WHATIF_KNOBS if name not in MAIN_KNOBS]
    with st.expander("More sampling stages: " + ", ".join(rest)):
        columns = st.columns(4)
        for i, name in enumerate(rest):
            with columns[i % 4]:
                values[name] = _control(name)
    return values


def _tokens(candidates) -> str:
    # Quoted: a token may itself be a comma.
    return " ".join(f"‹{charts.visible_text(c.text)}›" for c in candidates) or "none"


def exactness_note(step: StepTrace, result: StepTrace) -> str:
    """One line: exact, or approximate and why (the settings reach past the recorded tokens)."""
    recorded = len(step.candidates)
    mass = result.extra.get("recorded_mass", top_n_mass(step))
    if result.extra.get("recorded"):
        return ("**Exact**: the run's own settings, so these are the run's own recorded "
                "distributions; no model call.")
    if result.extra.get("exact") and result.extra.get("tail_kept"):
        return (f"**Exact**: these settings cut nothing and keep the distribution as it was; the "
                f"{recorded} recorded tokens hold {mass:.1%} of it, the rest is kept whole; no "
                "model call.")
    if result.extra.get("exact"):
        return (f"**Exact**: every token these settings keep is among the {recorded} recorded "
                f"tokens ({mass:.1%} of the probability the sampling stages saw); no model call.")
    beyond = result.extra.get("tail_kept", 0)
    why = (f"they keep {beyond} tokens beyond the {recorded} recorded" if beyond else
           f"the result depends on the tokens beyond the {recorded} recorded")
    return (f"**Approximate**: {why} ({mass:.1%} of the probability the sampling stages saw); "
            "the unrecorded rest is taken as spread evenly.")


@st.fragment
def whatif_panel(generation: Generation, step: StepTrace, top_n: int) -> None:
    st.subheader("What if: other sampling settings at this step")
    changes = knobs(generation)
    try:
        config = whatif_config(generation.config, **changes)
    except DecodingLabError as exc:
        st.error(str(exc))
        return
    result = whatif_step(step, config, run=whatif_config(generation.config))
    st.markdown(exactness_note(step, result))
    recorded_chain = " → ".join(step.stages)
    st.caption(f"Recorded chain: {recorded_chain}  ·  what-if chain ({changes['processor_order']} "
               f"order): {' → '.join(result.stages)}")
    added, removed = kept_set_change(step, result)
    recorded_kept = step.kept_count
    c = st.columns(3)
    c[0].metric("kept (what-if)", f"{result.kept_count}",
                delta=f"{result.kept_count - recorded_kept:+d} vs the run ({recorded_kept})",
                delta_color="off", delta_arrow="off")
    c[1].metric("recorded token: p final", f"{result.prob_final:.1%}",
                help="Probability of the token the run chose, under the what-if distribution.")
    c[2].metric("entropy (what-if)", f"{result.entropy_final:.3f} nats")
    st.caption(f"Newly kept: {_tokens(added)}  ·  newly removed: {_tokens(removed)}  "
               f"(compared with the recorded run's kept set among these tokens)")
    frame = charts.stage_frame(result, top_n=top_n)
    top_p = changes["top_p"] if "top_p" in result.stages else None
    titles = charts.stage_titles(changes, result.stages)
    data = charts.stage_chart_data(frame, top_p=top_p, titles=titles)
    st.vega_lite_chart(data, charts.stage_chart_spec(columns=min(4, len(result.stages))),
                       width="content", key=key("chart"))
    if top_p is not None:
        st.caption(charts.top_p_caption(frame, top_p))
