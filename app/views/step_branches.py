"""Step inspector, branches: pick another token at the selected step and continue generating
from there (``decoding.branch``); every branch is kept and shown beside the original."""

from __future__ import annotations

import streamlit as st

from app import charts, lab_state
from decoding import DecodingLabError, GenerationError
from decoding.branch import branch
from decoding.trace import Generation, StepTrace

BRANCHES_KEY = "step_inspector.branches"          # list of branch Generations, oldest first
ALTERNATIVE_KEY = "step_inspector.branch_token"
BRANCH_BUTTON_KEY = "step_inspector.branch"
SHOWN_BRANCH_KEY = "step_inspector.shown_branch"
INSPECT_KEY = "step_inspector.inspect_branch"
CLEAR_KEY = "step_inspector.clear_branches"


def clear() -> None:
    st.session_state[BRANCHES_KEY] = []
    st.session_state.pop(SHOWN_BRANCH_KEY, None)


def branch_point(generation: Generation) -> int | None:
    """The step whose token was forced, or None for an unbranched generation."""
    return next((s.step for s in generation.steps if "forced_from" in s.extra), None)


def branch_label(index: int, generation: Generation) -> str:
    at = branch_point(generation)
    forced = generation.steps[at] if at is not None else None
    if forced is None:
        return f"branch {index + 1}"
    return (f"branch {index + 1}: step {at} {charts.visible_text(forced.extra['forced_from_text'])}"
            f" → {charts.visible_text(forced.token_text)}")


def alternative_label(step: StepTrace):
    by_id = {c.token_id: c for c in step.candidates}

    def label(token_id: int) -> str:
        c = by_id[token_id]
        state = "kept" if c.kept[-1] else "removed by the chain"
        return (f"{charts.visible_text(c.text)}   raw {c.probs[0]:.1%} · final {c.probs[-1]:.1%}"
                f" ({state})")
    return label


def branch_controls(generation: Generation, index: int) -> None:
    """Pick an alternative at step ``index`` and generate the branch."""
    step = generation.steps[index]
    options = [c.token_id for c in charts.top_alternatives(step, k=len(step.candidates))]
    if not options:
        return
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    with left:
        token_id = st.selectbox(f"Branch: take another token at step {index}", options,
                                format_func=alternative_label(step), key=ALTERNATIVE_KEY,
                                help="The recorded candidates of this step, most likely first. The "
                                     "branch keeps the text before this step, takes this token, "
                                     "and continues with the same decoding settings.", persist_state="session")
    with right:
        clicked = st.button("Continue from here", key=BRANCH_BUTTON_KEY, icon=":material/call_split:")
    if clicked:
        lm = lab_state.load_lm()
        if lm is None:
            return
        try:
            with st.spinner("Generating the branch…"):
                new = branch(lm, generation, index, token_id)
        except (DecodingLabError, GenerationError) as exc:
            st.error(str(exc))
            return
        branches = st.session_state.setdefault(BRANCHES_KEY, [])
        branches.append(new)
        st.session_state[SHOWN_BRANCH_KEY] = len(branches) - 1


def _inspect(generation_key: str, step_key: str) -> None:
    """Swap the shown branch with the generation in the scrubber (a callback: runs before the
    widgets are drawn, so the step slider may be reset)."""
    branches = st.session_state[BRANCHES_KEY]
    shown = st.session_state[SHOWN_BRANCH_KEY]
    current = st.session_state[generation_key]
    st.session_state[generation_key] = branches[shown]
    branches[shown] = current
    st.session_state[step_key] = branch_point(st.session_state[generation_key]) or 0


def branch_comparison(generation: Generation, generation_key: str, step_key: str, shade: str) -> None:
    """The generation in the scrubber beside one of the branches."""
    branches = st.session_state.get(BRANCHES_KEY) or []
    if not branches:
        return
    st.subheader("Branches")
    shown = st.radio("Show", range(len(branches)), format_func=lambda i: branch_label(i, branches[i]),
                     key=SHOWN_BRANCH_KEY, horizontal=True, persist_state="session")
    other = branches[shown]
    left, right = st.columns(2)
    with left:
        own = branch_point(generation)
        st.markdown("**In the scrubber**" + (f" (a branch from step {own})" if own is not None else ""))
        # Outlined: the step where the shown branch leaves this text.
        st.html(charts.token_html(generation, kind=shade, selected=branch_point(other)))
        st.caption(f"{len(generation.token_ids)} tokens · finish: {generation.finish_reason}")
    with right:
        at = branch_point(other)
        st.markdown(f"**{branch_label(shown, other)}**")
        st.html(charts.token_html(other, kind=shade, selected=at))
        st.caption(f"{len(other.token_ids)} tokens · finish: {other.finish_reason} · the outlined "
                   "token was forced")
    c = st.columns([1, 1, 3])
    c[0].button("Inspect this branch", key=INSPECT_KEY, on_click=_inspect,
                args=(generation_key, step_key),
                help="Show this branch in the step scrubber (the current one joins the branches).")
    c[1].button("Clear branches", key=CLEAR_KEY, on_click=clear)
