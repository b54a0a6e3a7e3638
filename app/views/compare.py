"""Compare decodings: one prompt, up to six decoding configs side by side, each text with its
loop highlighted, and one metrics table. Presentation only: the rows come from
``decoding.diagnostics.summary.compare_rows`` (the same numbers as ``declab compare``)."""

from __future__ import annotations

import streamlit as st

from app import charts_repetition as cr
from app import lab_state
from app.views.knobs import number_box
from decoding import DecodingConfig, DecodingLabError, GenerationError, help_text
from decoding.diagnostics.summary import compare_rows, loop_from_dict
from decoding.specs import parse_specs, syntax_help
from experiments.degeneration.strategies import STUDY_STRATEGIES

PROMPT_KEY = "compare.prompt"
SPECS_KEY = "compare.specs"
MAX_NEW_TOKENS_KEY = "compare.max_new_tokens"
IGNORE_EOS_KEY = "compare.ignore_eos"
PRESET_KEY = "compare.preset"
ADD_PRESET_KEY = "compare.add_preset"
RUN_KEY = "compare.run"
RESULT_KEY = "compare.result"

MAX_CONFIGS = 6
DEFAULT_SPECS = "\n".join(["greedy", "beam:num_beams=4", "sample:top_p=0.9",
                           "greedy:repetition_penalty=1.2"])
PRESETS = dict(STUDY_STRATEGIES)


def parse_config_lines(text: str, base: DecodingConfig) -> list:
    """One spec per line (``;`` also separates); at most ``MAX_CONFIGS``."""
    specs = parse_specs(text.replace("\n", ";"), base)
    if len(specs) > MAX_CONFIGS:
        raise DecodingLabError(f"{len(specs)} decoding configs given; allowed: at most "
                               f"{MAX_CONFIGS} side by side")
    return specs


def _add_preset() -> None:
    spec = PRESETS[st.session_state[PRESET_KEY]]
    current = st.session_state.get(SPECS_KEY, "").rstrip()
    st.session_state[SPECS_KEY] = f"{current}\n{spec}" if current else spec


def run_comparison(prompt: str, specs_text: str, max_new_tokens: int, ignore_eos: bool) -> None:
    if not prompt.strip():
        st.error("The prompt is empty: type a prompt to continue.")
        return
    current = lab_state.settings()
    try:
        base = DecodingConfig(max_new_tokens=max_new_tokens, seed=current.seed,
                              ignore_eos=ignore_eos)
        specs = parse_config_lines(specs_text, base)
    except DecodingLabError as exc:
        st.error(str(exc))
        return
    lm = lab_state.load_lm(current)
    if lm is None:
        return
    rows = []
    progress = st.progress(0.0, text="Generating…")
    try:
        for k, spec in enumerate(specs):
            progress.progress(k / len(specs), text=f"Generating {k + 1}/{len(specs)}: {spec.label}")
            rows += compare_rows(lm, prompt, [spec], chat=current.chat)
    except (DecodingLabError, GenerationError) as exc:
        st.error(str(exc))
        return
    finally:
        progress.empty()
    st.session_state[RESULT_KEY] = {"rows": rows, "prompt": prompt, "chat": current.chat,
                                    "model": lm.name,
                                    "inputs": compare_inputs(prompt, specs_text, max_new_tokens, ignore_eos)}


def compare_inputs(prompt: str, specs_text: str, max_new_tokens: int, ignore_eos: bool) -> dict:
    return lab_state.run_inputs(prompt, {"decoding configs": specs_text,
                                         "max_new_tokens": max_new_tokens, "ignore_eos": ignore_eos})


def show_result(result: dict) -> None:
    rows = result["rows"]
    mode = "chat template" if result["chat"] else "raw text"
    st.caption(f"{result['model']} · {mode} · {len(rows)} configs")
    per_row = 3 if len(rows) > 4 else max(len(rows), 1)
    for first in range(0, len(rows), per_row):
        for column, row in zip(st.columns(per_row), rows[first:first + per_row]):
            with column:
                loop = loop_from_dict(row["loop"])
                st.markdown(f"#### `{row['label']}`")
                st.html(cr.loop_html(row["pieces"], loop))
                st.caption(f"{row['n_tokens']} tokens · finish: {row['finish_reason']} · "
                           + cr.loop_sentence(loop))
    st.subheader("Metrics")
    frame = cr.compare_frame(rows)
    st.dataframe(frame, hide_index=True, placeholder=lab_state.EMPTY_CELL, column_config={
        "rep-2 %": st.column_config.NumberColumn(format="%.1f"),
        "rep-3 %": st.column_config.NumberColumn(format="%.1f"),
        "rep-4 %": st.column_config.NumberColumn(format="%.1f"),
        "distinct-2": st.column_config.NumberColumn(format="%.3f"),
        "mean log-prob": st.column_config.NumberColumn(format="%.3f"),
    })
    st.caption("Over the model's token ids. rep-n: share of n-grams that repeat an earlier one "
               "(Su et al. 2022); distinct-2: distinct bigrams / bigrams (Li et al. 2016); loop "
               "period and onset in tokens (empty: no loop); mean log-prob: mean raw "
               "log-probability of the generated tokens, in nats. Highlighted: each cycle of the "
               "text's loop (alternating colours; underlined: the unfinished last one; a template "
               "cycle's tooltip shows its slot values). Loop kind: exact, near (near-verbatim) or "
               "template (a fixed frame with changing slots).")
    if frame["rep-2 %"].notna().any():
        st.altair_chart(cr.rep_chart(frame), width="stretch")


def render() -> None:
    st.title("Compare decodings")
    st.caption(f"One prompt, up to {MAX_CONFIGS} decoding configs side by side. A config is a "
               "strategy spec such as `sample:top_p=0.9,temperature=0.7`, one per line.")
    prompt = lab_state.prompt_box(PROMPT_KEY, height=90, placeholder="The old map showed")
    left, right = st.columns([3, 2])
    with left:
        if SPECS_KEY not in st.session_state:
            st.session_state[SPECS_KEY] = DEFAULT_SPECS
        specs_text = st.text_area("Decoding configs (one spec per line)", key=SPECS_KEY,
                                  height=170, help=syntax_help(), persist_state="session")
    with right:
        st.selectbox("Preset", list(PRESETS), key=PRESET_KEY,
                     help="The degeneration study's strategies.", persist_state="session")
        st.button("Add preset", key=ADD_PRESET_KEY, on_click=_add_preset)
        max_new_tokens = number_box("max_new_tokens", 1, 512, MAX_NEW_TOKENS_KEY, value=48,
                                    help=help_text("max_new_tokens") + " Default for every "
                                         "config; a spec may set its own.")
        ignore_eos = st.checkbox("ignore_eos", key=IGNORE_EOS_KEY, help=help_text("ignore_eos"),
                                 persist_state="session")
    if st.button("Compare", type="primary", key=RUN_KEY):
        st.session_state.pop(RESULT_KEY, None)      # no old result under a new error (issue 17)
        run_comparison(prompt, specs_text, int(max_new_tokens), ignore_eos)
    result = st.session_state.get(RESULT_KEY)
    if result is not None:
        st.divider()
        lab_state.stale_warning(result.get("inputs"),
                                compare_inputs(prompt, specs_text, int(max_new_tokens), ignore_eos),
                                action="Compare")
        show_result(result)
