"""Repetition lab: why greedy text loops, and what breaks the loop.

- the loop detector (``find_loops``: exact, near-verbatim and template loops, mid-text too) on a
  fresh generation or on pasted text, cycles highlighted, a template's slot values shown;
- the loop-probability trace (``loop_probability_trace``): how sure the model grows of the token
  that continues its own loop, read from the generation's trace;
- the self-reinforcement curve of a sentence (``self_reinforcement``, Xu et al. 2022);
- the same prompt re-run with one repetition fix, one click away.

Presentation only: every number comes from ``decoding`` and ``decoding.diagnostics``.
"""

from __future__ import annotations

import streamlit as st

from app import charts_repetition as cr
from app import lab_state
from app.views.knobs import number_box
from decoding import DecodingConfig, DecodingLabError, GenerationError, generate, help_text
from decoding.diagnostics import loop_probability_trace, self_reinforcement
from decoding.diagnostics.summary import (main_text_loop, model_pieces, sequence_metrics,
                                          whitespace_pieces)
from decoding.specs import parse_spec, syntax_help

K = "repetition."
SOURCE_KEY = K + "source"
PROMPT_KEY = K + "prompt"
SPEC_KEY = K + "spec"
MAX_NEW_TOKENS_KEY = K + "max_new_tokens"
IGNORE_EOS_KEY = K + "ignore_eos"
GENERATE_KEY = K + "generate"
TEXT_KEY = K + "text"
TOKENIZER_KEY = K + "tokenizer"
ANALYSE_KEY = K + "analyse"
SUBJECT_KEY = K + "subject"          # what is analysed: {"kind", "label", "tokens", "pieces", ...}
FIXED_KEY = K + "fixed"              # the subject re-run with a fix
SENTENCE_KEY = K + "sentence"
PREFIX_KEY = K + "prefix"
REPEATS_KEY = K + "repeats"
PROBE_KEY = K + "probe"
CURVE_KEY = K + "curve"

SOURCES = ("Generate", "Paste text")
TRACE_TOP = 20

# One click each: the fixes the degeneration study compares, applied on top of the config used.
FIXES: dict[str, dict] = {
    "repetition_penalty 1.2": {"repetition_penalty": 1.2},
    "no_repeat_ngram_size 3": {"no_repeat_ngram_size": 3},
    "DRY 0.8": {"dry_multiplier": 0.8},
    "min_p 0.1 (sampling)": {"strategy": "sample", "min_p": 0.1},
}


def fix_key(label: str) -> str:
    return K + "fix." + label


# ---------------------------------------------------------------------- subjects

def generation_subject(label: str, generation, lm) -> dict:
    seq = generation.sequences[0]
    return {"kind": "generation", "label": label, "tokens": list(seq.token_ids),
            "pieces": lm.token_pieces(seq.token_ids), "generation": generation,
            "note": f"{generation.model} · {len(seq.token_ids)} tokens · finish: "
                    f"{seq.finish_reason} · chain: {' → '.join(generation.chain)}"}


def _generate_subject(prompt: str, label: str, config, chat: bool) -> dict | None:
    lm = lab_state.load_lm()
    if lm is None:
        return None
    try:
        with st.spinner(f"Generating ({label})…"):
            generation = generate(lm, prompt, config, chat=chat, trace=True, trace_top=TRACE_TOP)
    except (DecodingLabError, GenerationError) as exc:
        st.error(str(exc))
        return None
    return generation_subject(label, generation, lm)


def run_generation(prompt: str, spec: str, max_new_tokens: int, ignore_eos: bool) -> None:
    """Generate (traced) with the spec; the result becomes the page's subject."""
    if not prompt.strip():
        st.error("The prompt is empty: type a prompt to continue.")
        return
    current = lab_state.settings()
    try:
        label, config = parse_spec(spec or "greedy", DecodingConfig(
            max_new_tokens=max_new_tokens, ignore_eos=ignore_eos, seed=current.seed))
    except DecodingLabError as exc:
        st.error(str(exc))
        return
    subject = _generate_subject(prompt, label, config, current.chat)
    if subject is not None:
        st.session_state[SUBJECT_KEY] = subject
        st.session_state.pop(FIXED_KEY, None)


def clear_subject() -> None:
    for key in (SUBJECT_KEY, FIXED_KEY):
        st.session_state.pop(key, None)


def run_fix(subject: dict, fix: str) -> None:
    """The subject's prompt and config again, with the fix ``fix`` on top."""
    generation = subject["generation"]
    try:
        config = DecodingConfig.from_dict(generation.config).replace(**FIXES[fix])
    except DecodingLabError as exc:
        st.error(str(exc))
        return
    fixed = _generate_subject(generation.prompt, f"{subject['label']} + {fix}", config,
                              generation.chat)
    if fixed is not None:
        st.session_state[FIXED_KEY] = fixed


def analyse_text(text: str, tokenizer: str) -> None:
    if not text.strip():
        st.error("The text is empty: paste a text to analyse.")
        return
    if tokenizer == "model":
        lm = lab_state.load_lm()
        if lm is None:
            return
        tokens, pieces = model_pieces(lm.tokenizer, text)
        note = f"model tokenizer ({lm.name}), {len(tokens)} tokens"
    else:
        tokens, pieces = whitespace_pieces(text)
        note = f"whitespace tokens ({len(tokens)} words, shown with single spaces)"
    st.session_state[SUBJECT_KEY] = {"kind": "text", "label": "pasted text", "tokens": tokens,
                                     "pieces": pieces, "note": note}
    st.session_state.pop(FIXED_KEY, None)


# ---------------------------------------------------------------------- display

METRICS_SHOWN = (("rep-2", "rep-2", "{:.1f}%"), ("rep-3", "rep-3", "{:.1f}%"),
                 ("rep-4", "rep-4", "{:.1f}%"), ("distinct-2", "distinct-2", "{:.3f}"),
                 ("diversity", "diversity", "{:.3f}"))


def show_subject(subject: dict) -> None:
    """Highlighted text, the detector's verdict and the repetition metrics."""
    tokens = subject["tokens"]
    loop = main_text_loop(tokens, subject["pieces"])
    st.html(cr.loop_html(subject["pieces"], loop))
    st.caption(f"{subject['note']}. {cr.loop_sentence(loop)}")
    metrics = sequence_metrics(tokens, "".join(subject["pieces"]), strict=False) if tokens else {}
    for column, (label, key, fmt) in zip(st.columns(len(METRICS_SHOWN)), METRICS_SHOWN):
        value = metrics.get(key)
        column.metric(label, "n/a" if value is None else fmt.format(value))


def show_loop_probability(generation) -> None:
    st.subheader("How sure the model grows of its loop")
    try:
        trace = loop_probability_trace(generation)
    except DecodingLabError as exc:
        st.error(str(exc))
        return
    if trace is None:
        st.info("No loop in this generation, so there is no loop-continuing token to follow. "
                "Try greedy decoding with ignore_eos in raw mode (sidebar: chat template off).")
        return
    frame = cr.loop_probability_frame(trace)
    st.altair_chart(cr.loop_probability_chart(frame, trace.onset, trace.period), width="stretch")
    st.altair_chart(cr.cycle_means_chart(cr.cycle_means_frame(trace)), width="stretch")
    st.caption(f"From step {trace.start} on, the token that continues the loop is the one "
               f"{trace.period} tokens back; the chart shows the probability the model gave it, "
               "raw and after the processor chain (dashed lines: cycle starts). The bars average "
               "each cycle; 'first pass' is the phrase before it had ever repeated.")


def fix_buttons(subject: dict) -> None:
    st.subheader("Re-run the same prompt with a repetition fix")
    for column, (label, changes) in zip(st.columns(len(FIXES)), FIXES.items()):
        with column:
            if st.button(label, key=fix_key(label), width="stretch",
                         help="; ".join(f"{k}: {help_text(k)}" for k in changes if k != "strategy")):
                run_fix(subject, label)


def show_fix(original: dict, fixed: dict) -> None:
    left, right = st.columns(2)
    for column, subject in ((left, original), (right, fixed)):
        with column:
            st.markdown(f"#### `{subject['label']}`")
            show_subject(subject)


def self_reinforcement_section() -> None:
    st.subheader("Self-reinforcement: a sentence repeated")
    st.caption("Xu et al. 2022: feed the sentence N times and score each copy. TP: mean "
               "probability of its tokens; IP: share of tokens more probable than in the first "
               "copy; WR: share that are the model's top choice. Rising curves: the more often the "
               "model has seen a sentence, the surer it is of it.")
    c = st.columns([3, 2, 1])
    with c[0]:
        sentence = st.text_input("Sentence", "The door was locked.", key=SENTENCE_KEY,
                                 persist_state="session")
    with c[1]:
        prefix = st.text_input("Prefix (optional)", "", key=PREFIX_KEY, persist_state="session")
    with c[2]:
        repeats = st.slider("Copies", 2, 20, 10, key=REPEATS_KEY, persist_state="session")
    if st.button("Probe", key=PROBE_KEY):
        lm = lab_state.load_lm()
        if lm is not None:
            try:
                with st.spinner("Scoring the repeated sentence…"):
                    st.session_state[CURVE_KEY] = self_reinforcement(
                        lm.model, lm.tokenizer, sentence, prefix=prefix, repeats=repeats)
            except DecodingLabError as exc:
                st.error(str(exc))
    curve = st.session_state.get(CURVE_KEY)
    if curve is not None:
        st.altair_chart(cr.reinforcement_chart(cr.reinforcement_frame(curve)), width="stretch")
        st.caption(f"'{curve.sentence}' ({curve.n_tokens} tokens per copy): TP "
                   f"{curve.tp[0]:.0%} → {curve.tp[-1]:.0%}, IP {curve.ip[-1]:.0%} and WR "
                   f"{curve.wr[-1]:.0%} at copy {curve.repeats - 1}.")


# ---------------------------------------------------------------------- page

def render() -> None:
    st.title("Repetition lab")
    st.caption("Find the loop a text ends in, watch the model grow surer of it, and break it.")
    source = st.radio("Analyse", SOURCES, horizontal=True, key=SOURCE_KEY, persist_state="session")
    if source == "Generate":
        prompt = lab_state.prompt_box(PROMPT_KEY, height=80,
                                      placeholder="The lighthouse keeper opened the bottle and")
        c = st.columns([2, 1, 1])
        with c[0]:
            spec = st.text_input("Decoding config (strategy spec)", "greedy", key=SPEC_KEY,
                                 help=syntax_help(), persist_state="session")
        with c[1]:
            max_new_tokens = number_box("max_new_tokens", 1, 512, MAX_NEW_TOKENS_KEY, value=64,
                                        help=help_text("max_new_tokens"))
        with c[2]:
            ignore_eos = st.checkbox("ignore_eos", True, key=IGNORE_EOS_KEY,
                                     help=help_text("ignore_eos"), persist_state="session")
        if st.button("Generate", type="primary", key=GENERATE_KEY):
            clear_subject()                      # no old result under a new error (issue 17)
            run_generation(prompt, spec, int(max_new_tokens), ignore_eos)
    else:
        text = st.text_area("Text", key=TEXT_KEY, height=120,
                            placeholder="They're all in shock. They're all in shock. They're all…", persist_state="session")
        tokenizer = st.radio("Tokens", ["whitespace", "model"], horizontal=True, key=TOKENIZER_KEY,
                             help="whitespace: words; model: the model's tokenizer.", persist_state="session")
        if st.button("Analyse", type="primary", key=ANALYSE_KEY):
            clear_subject()
            analyse_text(text, tokenizer)

    subject = st.session_state.get(SUBJECT_KEY)
    if subject is not None:
        st.divider()
        if subject["kind"] == "generation":
            fix_buttons(subject)   # before the results, so a click shows its result in this run
        fixed = st.session_state.get(FIXED_KEY)
        if fixed is not None:
            show_fix(subject, fixed)
        else:
            show_subject(subject)
        if subject["kind"] == "generation":
            show_loop_probability(subject["generation"])
    st.divider()
    self_reinforcement_section()
