"""Decode-time realignment on the Alignment × decoding page: a λ slider re-decodes the prompt with
``realign=λ`` (DeRa, Liu et al. ICML 2024: logits = base + λ (adapter − base)) and shows the
answer, its stance and its loop flag; beside it, the speculative-decoding view of that answer
(the base drafting for the adapter: acceptance 1 − TV per step, a seeded accept/reject trace,
tokens per target forward by draft length).

Presentation only: decoding is ``decoding.generate`` with the ``realign`` knob, the view is
``decoding.speculative``. Answers are kept per (prompt, adapter, decoding, λ), so moving the
slider back to a λ already decoded calls no model.
"""

from __future__ import annotations

import streamlit as st

from alignment.evaluate import answer_loop
from app import lab_state
from decoding import DecodingConfig, DecodingLabError, GenerationError, generate
from decoding.config import help_text
from decoding.specs import parse_spec
from decoding.speculative import answer_distributions, speculative_view
from decoding.stages import KNOBS

LIVE_KEY = "alignment.realign_live"
LAMBDA_KEY = "alignment.realign"
ADAPTER_KEY = "alignment.realign_adapter"
ANSWERS_KEY = "alignment.realign_answers"     # {(prompt, adapter, spec, tokens, chat, λ): answer}


def realign_answer(lm, prompt: str, config: DecodingConfig, lam: float, chat: bool) -> dict:
    """The answer at ``realign=lam``, its loop flag and the speculative view along it."""
    gen = generate(lm, prompt, config.replace(realign=lam), chat=chat, trace=False)
    seq = gen.sequences[0]
    loop = answer_loop(seq.token_ids, pieces=lm.token_pieces(seq.token_ids))
    answer = {"lambda": lam, "text": seq.text, "token_ids": list(seq.token_ids),
              "finish_reason": seq.finish_reason, "loop_period": loop.period if loop else None,
              "speculative": None}
    if seq.token_ids:
        p, q = answer_distributions(lm, gen.prompt_ids, seq.token_ids)
        answer["speculative"] = speculative_view(p, q, seed=config.seed).to_dict()
    return answer


@st.fragment
def render(prompt: str, adapters: list[str], spec_text: str, max_new_tokens: int, judge) -> None:
    """``judge()`` returns (the stance judge or None, the refusal message or None)."""
    st.subheader("Decode-time realignment (DeRa)")
    st.caption("One adapter, decoded with its logits pulled towards or pushed past the base: "
               "λ = 0 is the base, λ = 1 the adapter, λ > 1 stronger alignment (about the adapter "
               "retrained with β/λ). Moving the slider re-decodes this prompt.")
    adapter = (st.selectbox("Adapter to realign", adapters, key=ADAPTER_KEY)
               if len(adapters) > 1 else adapters[0])
    knob = KNOBS["realign"]
    lam = st.slider("λ (realign)", float(knob.low), float(knob.high), 1.0, float(knob.step),
                    key=LAMBDA_KEY, help=help_text("realign"))
    if not st.toggle("Decode live as λ moves", key=LIVE_KEY,
                     help="Off until asked: each new λ decodes the prompt again (two forwards "
                          "per token: the adapter and the base)."):
        return
    current = lab_state.settings()
    try:
        config = parse_spec(spec_text, DecodingConfig(max_new_tokens=max_new_tokens,
                                                      seed=current.seed)).config
        key = (prompt, adapter, spec_text, max_new_tokens, current.chat, current.seed, lam)
        answers = st.session_state.setdefault(ANSWERS_KEY, {})
        if key not in answers:
            with st.spinner(f"Decoding at λ = {lam:g}…"):
                answer = realign_answer(lab_state.get_lm(current.model, adapter), prompt, config,
                                        lam, current.chat)
            judge_, refusal = judge()
            if judge_ is not None:
                verdict = judge_.judge([prompt], [answer["text"]])[0]
                answer.update(stance=verdict.stance, p_support=verdict.p_support)
            answer["refusal"] = refusal
            answers[key] = answer
        answer = answers[key]
    except (DecodingLabError, GenerationError) as exc:
        st.error(str(exc))
        return
    left, right = st.columns([3, 2])
    with left:
        st.markdown(f"**Answer at λ = {lam:g}**")
        if answer.get("stance"):
            # a label with its probability, not a metric delta (an arrow read as a change)
            st.markdown(f"stance **{answer['stance']}** · P(support) {answer['p_support']:.0%}")
        elif answer.get("refusal"):
            st.caption(f"No stance label: {answer['refusal']}")
        loop = answer["loop_period"]
        st.caption(f"{len(answer['token_ids'])} tokens, finish: {answer['finish_reason']}, "
                   + (f"loops (period {loop} tokens)" if loop else "no loop"))
        st.text(answer["text"] or "(empty)")
    view = answer["speculative"]
    with right:
        if view is None:
            return
        st.markdown("**Speculative decoding along this answer** (the base drafts, the adapter "
                    "verifies)")
        st.metric("mean acceptance Σ min(p, q) = 1 − TV", f"{view['mean_acceptance']:.0%}")
        st.caption("Seeded accept/reject per step: "
                   + "".join("✓" if a else "✗" for a in view["accepted"]))
        st.bar_chart({"acceptance": view["acceptance"]}, height=160)
        st.dataframe({"draft": [int(k) for k in view["expected_tokens"]],
                      "tokens / target forward": list(view["expected_tokens"].values()),
                      "eq. 1, mean rate": list(view["expected_tokens_mean_rate"].values())},
                     hide_index=True, column_config={  # short names, 2 decimals: fits half a 1280 page
                         k: st.column_config.NumberColumn(format="%.2f")
                         for k in ("tokens / target forward", "eq. 1, mean rate")})
        st.caption("draft: tokens the base drafts per step; tokens / target forward: expected tokens "
                   "per adapter forward, step by step; eq. 1, mean rate: Leviathan et al.'s eq. 1 at "
                   "the mean acceptance.")
