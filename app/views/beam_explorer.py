"""Beam explorer: the beam tree of one beam search, drawn from the generation's beam trace, and
the finished hypotheses ranked before and after length normalisation. Presentation only: the
tree and the scores are what ``decoding.beam`` recorded."""

from __future__ import annotations

import streamlit as st

from app import charts, charts_beam, lab_state
from app.views import knobs as knobs_ui
from decoding import help_text

K = "beam_explorer."
PROMPT_KEY = K + "prompt"
MAX_NEW_TOKENS_KEY = K + "max_new_tokens"
NUM_BEAMS_KEY = K + "num_beams"
LENGTH_PENALTY_KEY = K + "length_penalty"
EARLY_STOPPING_KEY = K + "early_stopping"
GROUPS_KEY = K + "num_beam_groups"
DIVERSITY_KEY = K + "diversity_penalty"
GENERATE_KEY = K + "generate"
GENERATION_KEY = K + "generation"
INPUTS_KEY = K + "inputs"     # what produced the generation (lab_state.run_inputs)
LAYOUT_KEY = K + "layout"
DECODED_KEY = K + "decoded"   # token id → text of the finished hypotheses' last tokens

MAX_TREE_TOKENS = 24  # more steps than this make a tree nobody can read on a slide


def run_beam_search(prompt: str, knobs: dict) -> None:
    result = lab_state.traced_generation(
        prompt, {"strategy": "beam", "num_return_sequences": knobs["num_beams"], **knobs},
        spinner="Beam search…")
    if result is None:
        # Never leave the previous result under the new error (issue 17).
        for key in (GENERATION_KEY, INPUTS_KEY, DECODED_KEY):
            st.session_state.pop(key, None)
        return
    lm, generation = result
    st.session_state[INPUTS_KEY] = lab_state.run_inputs(prompt, knobs)
    finished = [f for step in generation.beam_steps for f in step.finished]
    st.session_state[GENERATION_KEY] = generation
    st.session_state[DECODED_KEY] = {
        "last": {f.token_ids[-1]: lm.token_text(f.token_ids[-1]) for f in finished},
        "text": {tuple(f.token_ids): lm.decode(f.token_ids) for f in finished}}


def diversity_note(generation) -> str | None:
    """Diverse beam search without a diversity penalty: say so (its groups search alike), and
    that the returned hypotheses repeat when they do."""
    cfg = generation.config
    if cfg.get("num_beam_groups", 1) <= 1 or cfg.get("diversity_penalty", 0.0) > 0:
        return None
    texts = [s.text for s in generation.sequences]
    if len(set(texts)) < len(texts):
        return charts.DUPLICATE_HYPOTHESES
    return ("diversity_penalty = 0: the beam groups are not pushed apart, so this is plain beam "
            "search split into groups; raise diversity_penalty for diverse hypotheses.")


def show_tree(generation, decoded: dict) -> None:
    choice = st.radio("Tree layout", ["auto", "left to right", "top to bottom"], horizontal=True,
                      key=LAYOUT_KEY, persist_state="session",
                      help=f"auto: left to right up to {charts_beam.LR_MAX_STEPS} steps, top to bottom "
                           "beyond (the width of a deep tree left to right would shrink its text). "
                           "The chart's fullscreen button (top right, on hover) shows it larger.")
    rankdir = charts_beam.tree_layout(len(generation.beam_steps), choice)
    dot = charts_beam.beam_tree_dot(generation, token_text=decoded["last"].get, rankdir=rankdir)
    st.graphviz_chart(dot, width="stretch")
    direction = "Left to right, one column" if rankdir == "LR" else "Top to bottom, one row"
    st.caption(f"{direction} per step. Each box: the token a beam added and its "
               "cumulative log-probability Σ log p. Blue: extended at the next step; grey dashed: "
               "pruned (no continuation among the best); white dashed: still running when the "
               "search stopped. Double boxes (■): finished hypotheses with their length-"
               "normalised score; green: returned, grey: dropped from the pool. Vermilion: the "
               "path of the best returned hypothesis."
               + (" Border colours: diverse-beam groups." if
                  generation.config.get("num_beam_groups", 1) > 1 else ""))


def show_ranking(generation, decoded: dict) -> None:
    frame = charts_beam.ranking_frame(generation, decode=lambda ids: decoded["text"][tuple(ids)])
    st.subheader("Finished hypotheses: before and after length normalisation")
    st.dataframe(frame, hide_index=True, placeholder=lab_state.EMPTY_CELL, column_config={
        "Σ log p": st.column_config.NumberColumn(format="%.3f"),
        "score": st.column_config.NumberColumn(format="%.3f")})
    lp = generation.config["length_penalty"]
    st.caption(f"score = Σ log p / L^{lp:g} (length_penalty = {lp:g}); L counts the generated "
               "tokens including end-of-sequence. Beam search ranks by score.")
    ranked = frame.dropna(subset=["score"])
    if len(ranked) > 1:
        by_sum = ranked.sort_values("rank by Σ log p", kind="stable").iloc[0]["text"]
        by_score = ranked.iloc[0]["text"]
        if by_sum != by_score:
            st.info(f"Length normalisation changed the winner: by Σ log p it would be "
                    f"“{by_sum}”, by score it is “{by_score}”.")


def render() -> None:
    st.title("Beam explorer")
    st.caption("Beam search keeps the best partial hypotheses at every step. Watch which survive, "
               "which are pruned, and how length normalisation ranks the finished ones.")
    prompt = lab_state.prompt_box(PROMPT_KEY, height=80, placeholder="The old map showed")
    c = st.columns(4)
    with c[0]:
        max_new_tokens = knobs_ui.number_box("max_new_tokens", 1, MAX_TREE_TOKENS, MAX_NEW_TOKENS_KEY,
                                             value=6, help=help_text("max_new_tokens"))
    with c[1]:
        num_beams = knobs_ui.number_box("num_beams", 1, 8, NUM_BEAMS_KEY, value=3,
                                        help=help_text("num_beams"))
    with c[2]:
        length_penalty = st.slider("length_penalty", -2.0, 3.0, 1.0, 0.1, key=LENGTH_PENALTY_KEY,
                                   help=help_text("length_penalty"), persist_state="session")
    with c[3]:
        early_stopping = st.selectbox("early_stopping", [False, True, "never"],
                                      key=EARLY_STOPPING_KEY, help=help_text("early_stopping"), persist_state="session")
    d = st.columns(4)
    with d[0]:
        groups = knobs_ui.number_box("num_beam_groups", 1, 8, GROUPS_KEY, value=1,
                                     help=help_text("num_beam_groups"))
    with d[1]:
        diversity = knobs_ui.knob_control("diversity_penalty", DIVERSITY_KEY, 0.0)
    knobs = dict(max_new_tokens=int(max_new_tokens), num_beams=int(num_beams),
                 length_penalty=float(length_penalty), early_stopping=early_stopping,
                 num_beam_groups=int(groups), diversity_penalty=float(diversity))
    if st.button("Run beam search", type="primary", key=GENERATE_KEY):
        run_beam_search(prompt, knobs)
    generation = st.session_state.get(GENERATION_KEY)
    if generation is not None:
        st.divider()
        lab_state.stale_warning(st.session_state.get(INPUTS_KEY), lab_state.run_inputs(prompt, knobs),
                                action="Run beam search")
        cfg = generation.config
        st.caption(f"{generation.model} · num_beams {cfg['num_beams']} · length_penalty "
                   f"{cfg['length_penalty']:g} · early_stopping {cfg['early_stopping']} · groups "
                   f"{cfg['num_beam_groups']} · {len(generation.beam_steps)} steps · "
                   f"{generation.elapsed_s:.1f} s")
        st.html(charts.token_html(generation))
        note = diversity_note(generation)
        if note:
            st.warning(note)
        decoded = st.session_state[DECODED_KEY]
        show_tree(generation, decoded)
        show_ranking(generation, decoded)
