"""Step inspector, presentation view: the page a lecturer projects. One large sorted chart of the
selected step's next-token distribution with the cut shaded, temperature / top-k / top-p / min-p
sliders that redraw it at once (``decoding.whatif``: no model call, exact where the record
reaches), and the generated tokens as buttons: a click selects that step. Drawn inside the
scrubber's fragment, so a slider or a click reruns only it."""

from __future__ import annotations

import streamlit as st

from app import charts_presentation as cp
from app.charts import visible_text
from app.views import knobs as controls
from app.views.step_whatif import exactness_note
from decoding import DecodingConfig
from decoding.errors import DecodingLabError
from decoding.trace import Generation
from decoding.whatif import whatif_config, whatif_step

PREFIX = "step_inspector.present."
TOKEN_KEY = PREFIX + "token"
CHART_KEY = PREFIX + "chart"
KNOBS = ("temperature", "top_k", "top_p", "min_p")
TOP_N = 15
DEFAULTS = DecodingConfig()


def key(name: str) -> str:
    return PREFIX + name


def reset(generation: Generation) -> None:
    """The sliders at the generation's own settings (called when a new generation arrives)."""
    for name in KNOBS:
        value = generation.config.get(name, getattr(DEFAULTS, name))
        st.session_state[key(name)] = controls.control_value(name, value)


def _select_step(step_key: str) -> None:
    picked = st.session_state.get(TOKEN_KEY)
    if picked is not None:
        st.session_state[step_key] = picked


def token_labels(generation: Generation) -> list[str]:
    """One label per step, unique: a selection travels as its label, so a token that occurs
    again gets invisible zero-width spaces (else a click on the second "the" picks the first)."""
    labels, seen = [], {}
    for step in generation.steps:
        text = visible_text(step.token_text)
        labels.append(text + "\u200b" * seen.get(text, 0))
        seen[text] = seen.get(text, 0) + 1
    return labels


def token_strip(generation: Generation, index: int, step_key: str) -> None:
    """The generated text as one button per token; clicking one shows its step."""
    labels = token_labels(generation)
    st.session_state[TOKEN_KEY] = index
    st.pills("Generated tokens: click one to show its step", list(range(len(labels))),
             format_func=labels.__getitem__, key=TOKEN_KEY,
             on_change=_select_step, args=(step_key,), width="content")


def presentation(generation: Generation, index: int, step_key: str) -> None:
    if any(key(name) not in st.session_state for name in KNOBS):
        reset(generation)
    token_strip(generation, index, step_key)
    step = generation.steps[index]
    values = {}
    for column, name in zip(st.columns(len(KNOBS)), KNOBS):
        with column:
            values[name] = controls.knob_control(name, key(name))
    try:
        config = whatif_config(generation.config, **values)
    except DecodingLabError as exc:
        st.error(str(exc))
        return
    result = whatif_step(step, config)
    top_p = values["top_p"] if "top_p" in result.stages else None
    frame = cp.presentation_frame(result, top_n=TOP_N, top_p=top_p)
    st.markdown(f"### Step {index}: the model chose **{visible_text(step.token_text)}** · "
                f"{result.kept_count:,} tokens kept")
    st.vega_lite_chart(frame, cp.presentation_spec(len(frame)), width="stretch", key=CHART_KEY)
    st.caption(cp.presentation_caption(frame, top_p) + " Outline: the probability entering the "
               "sampling settings; bar: the probability the token is drawn with.")
    st.markdown(exactness_note(step, result))
