"""Step inspector: generate once, then walk through the steps and watch each stage of the
processor chain (raw → penalties → temperature → truncation) reshape the next-token
distribution; hover a token for its alternatives, re-run a step's sampling stages with other
settings (``step_whatif``), or branch with another token (``step_branches``). Presentation only:
the numbers come from ``decoding.generate``'s trace."""

from __future__ import annotations

import streamlit as st

from app import charts, lab_state
from app.views import knobs, step_branches, step_presentation, step_whatif
from decoding import DecodingConfig, help_text
from decoding.config import STRATEGIES, TWO_MODEL_STRATEGIES
from decoding.guide import AMATEURS
from decoding.stages import KNOBS, PROCESSOR_ORDERS

# Session-state keys of this page (the generation itself and the widgets the code resets).
GENERATION_KEY = "step_inspector.generation"
INPUTS_KEY = "step_inspector.inputs"                   # what produced the generation (run_inputs)
GENERATE_CALLS_KEY = "step_inspector.generate_calls"   # how often generate() ran: scrubbing must not
STEP_KEY = "step_inspector.step"
PROMPT_KEY = "step_inspector.prompt"
STRATEGY_KEY = "step_inspector.strategy"
TOP_N_KEY = "step_inspector.top_n"
SHADE_KEY = "step_inspector.shade"
GENERATE_KEY = "step_inspector.generate"
CHART_KEY = "step_inspector.chart"
PRESENT_KEY = "step_inspector.presentation"

TRACE_TOP = 20
# What the stateful stages trace per step (``StepTrace.extra``), as shown under the metrics.
STATE_LABELS = {"mirostat_mu": "mirostat μ (bits)", "surprise": "surprise of the token (bits)",
                "adaptive_target": "adaptive-p target now",
                "adaptive_p": "token's p before adaptive-p"}
DEFAULTS = DecodingConfig()


def knob_key(name: str) -> str:
    return f"step_inspector.{name}"


# ---------------------------------------------------------------------- controls

def _number(name: str, min_value, max_value=None, step=1, value=None, **kwargs):
    value = getattr(DEFAULTS, name) if value is None else value
    return knobs.number_box(name, min_value, max_value, knob_key(name), value=value, step=step,
                            help=help_text(name), **kwargs)


def _knob(name: str, note: str = ""):
    """A decoding knob with its registry range (``decoding.stages``), starting at the default."""
    return knobs.knob_control(name, knob_key(name), getattr(DEFAULTS, name), note)


def _slider(name: str, min_value: float, max_value: float, step: float, value=None):
    value = getattr(DEFAULTS, name) if value is None else value
    return st.slider(name, min_value=min_value, max_value=max_value, value=value, step=step,
                     help=help_text(name), key=knob_key(name), persist_state="session")


def common_knobs() -> dict:
    c = st.columns(4)
    with c[0]:
        max_new_tokens = _number("max_new_tokens", 1, 1024)
    with c[1]:
        min_new_tokens = _knob("min_new_tokens")
    with c[2]:
        repetition_penalty = _knob("repetition_penalty")
    with c[3]:
        no_repeat_ngram_size = _knob("no_repeat_ngram_size")
    ignore_eos = st.checkbox("ignore_eos", value=DEFAULTS.ignore_eos, help=help_text("ignore_eos"),
                             key=knob_key("ignore_eos"), persist_state="session")
    return dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                ignore_eos=ignore_eos)


def sample_knobs() -> dict:
    c = st.columns(5)
    with c[0]:
        temperature = _knob("temperature")
    with c[1]:
        top_k = _knob("top_k")
    with c[2]:
        top_p = _knob("top_p")
    with c[3]:
        min_p = _knob("min_p", " The slider's 0 is off.")
    with c[4]:
        order = st.radio("processor_order", list(PROCESSOR_ORDERS),
                         help=help_text("processor_order"), key=knob_key("processor_order"), persist_state="session")
    with st.expander("More truncation: typical, epsilon, eta, top-H, p-less"):
        e = st.columns(5)
        with e[0]:
            typical_p = _knob("typical_p")
        with e[1]:
            epsilon_cutoff = _knob("epsilon_cutoff")
        with e[2]:
            eta_cutoff = _knob("eta_cutoff")
        with e[3]:
            top_h = _knob("top_h", " The slider's 0 is off.")
        with e[4]:
            p_less = st.checkbox("p_less", value=DEFAULTS.p_less, help=help_text("p_less"),
                                 key=knob_key("p_less"), persist_state="session")
    with st.expander("llama.cpp samplers: top-n-sigma, XTC, dynamic temperature, adaptive-p"):
        e = st.columns(4)
        with e[0]:
            top_n_sigma = _knob("top_n_sigma", " 0 is off.")
        with e[1]:
            xtc_probability = _knob("xtc_probability")
        with e[2]:
            xtc_threshold = _knob("xtc_threshold")
        with e[3]:
            dynatemp_range = _knob("dynatemp_range")
        e = st.columns(4)
        with e[0]:
            dynatemp_exponent = _knob("dynatemp_exponent")
        with e[1]:
            adaptive_target = _knob("adaptive_target", " Below 0 is off.")
        with e[2]:
            adaptive_decay = _knob("adaptive_decay")
    return dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                typical_p=typical_p, epsilon_cutoff=epsilon_cutoff, eta_cutoff=eta_cutoff,
                top_h=top_h, p_less=p_less, top_n_sigma=top_n_sigma,
                xtc_probability=xtc_probability, xtc_threshold=xtc_threshold,
                dynatemp_range=dynatemp_range, dynatemp_exponent=dynatemp_exponent,
                adaptive_target=adaptive_target, adaptive_decay=adaptive_decay,
                processor_order=order)


def penalty_knobs() -> dict:
    """Penalties that apply to every strategy (OpenAI/vLLM and llama.cpp's DRY)."""
    with st.expander("More penalties: frequency, presence, DRY"):
        c = st.columns(4)
        with c[0]:
            frequency_penalty = _knob("frequency_penalty")
        with c[1]:
            presence_penalty = _knob("presence_penalty")
        with c[2]:
            dry_multiplier = _knob("dry_multiplier")
        with c[3]:
            penalize_prompt = st.checkbox("penalize_prompt", value=DEFAULTS.penalize_prompt,
                                          help=help_text("penalize_prompt"),
                                          key=knob_key("penalize_prompt"), persist_state="session")
    return dict(frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                dry_multiplier=dry_multiplier, penalize_prompt=penalize_prompt)


TWO_MODEL_MODES = ("off", "realign", "contrastive decoding", "guidance")


def two_model_knobs(strategy: str) -> dict:
    """A second distribution each step (``decoding.guide``): DeRa realignment or contrastive
    decoding against the base (they need an adapter in the sidebar), or classifier-free
    guidance. Off by default: no second forward."""
    if strategy not in TWO_MODEL_STRATEGIES:
        return {}
    with st.expander("Two models: realignment, contrastive decoding, guidance"):
        mode = st.radio("second distribution", TWO_MODEL_MODES, horizontal=True,
                        key=knob_key("two_models"), persist_state="session",
                        help="realign and contrastive decoding compare the sidebar's adapter with "
                             "its base (the adapter switched off); guidance compares the prompt "
                             "with the unconditional stream. Each runs a second forward per step.")
        if mode == "realign":
            return dict(realign=_registry_slider("realign", 1.0))
        if mode == "contrastive decoding":
            amateur = st.radio("amateur", AMATEURS, horizontal=True, key=knob_key("amateur"),
                               help=help_text("amateur"), persist_state="session")
            return dict(contrastive_alpha=_registry_slider("contrastive_alpha", 0.1), amateur=amateur)
        if mode == "guidance":
            negative = st.text_input("negative_prompt", key=knob_key("negative_prompt"),
                                     help=help_text("negative_prompt"), persist_state="session")
            return dict(guidance_scale=_registry_slider("guidance_scale", 1.5),
                        negative_prompt=negative.strip() or None)
    return {}


def _registry_slider(name: str, value: float) -> float:
    knob = KNOBS[name]
    return _slider(name, float(knob.low), float(knob.high), float(knob.step), value=value)


def contrastive_knobs() -> dict:
    c = st.columns(4)
    with c[0]:
        penalty_alpha = _slider("penalty_alpha", 0.0, 1.0, 0.05)
    with c[1]:
        top_k = _number("top_k", 0, 64)
    return dict(penalty_alpha=penalty_alpha, top_k=top_k)


def mirostat_knobs() -> dict:
    c = st.columns(4)
    with c[0]:
        mirostat_tau = _knob("mirostat_tau")
    with c[1]:
        mirostat_eta = _knob("mirostat_eta")
    with c[2]:
        temperature = _knob("temperature")
    return dict(mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, temperature=temperature)


def beam_knobs() -> dict:
    c = st.columns(4)
    with c[0]:
        num_beams = _number("num_beams", 1, 16)
    with c[1]:
        length_penalty = _number("length_penalty", -5.0, 5.0, step=0.1, format="%.1f")
    with c[2]:
        early_stopping = st.selectbox("early_stopping", [False, True, "never"],
                                      help=help_text("early_stopping"),
                                      key=knob_key("early_stopping"), persist_state="session")
    # Every finished hypothesis is returned, for the hypotheses table.
    return dict(num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
                num_return_sequences=num_beams)


STRATEGY_KNOBS = {"greedy": lambda: {}, "sample": sample_knobs, "beam": beam_knobs,
                  "contrastive": contrastive_knobs, "mirostat": mirostat_knobs}


# ---------------------------------------------------------------------- generation

def run_generation(prompt: str, knobs: dict) -> None:
    """Validate, load the model, generate; store the Generation in session state."""
    inputs = lab_state.run_inputs(prompt, knobs)
    result = lab_state.traced_generation(prompt, knobs, trace_top=TRACE_TOP)
    if result is None:
        # Never leave the previous result under the new error (issue 17).
        st.session_state.pop(GENERATION_KEY, None)
        st.session_state.pop(INPUTS_KEY, None)
        return
    _, generation = result
    st.session_state[GENERATION_KEY] = generation
    st.session_state[INPUTS_KEY] = inputs
    st.session_state[GENERATE_CALLS_KEY] = st.session_state.get(GENERATE_CALLS_KEY, 0) + 1
    # The scrubber and the what-if knobs are drawn later in this run, so this is allowed.
    st.session_state[STEP_KEY] = 0
    step_whatif.reset(generation)
    step_presentation.reset(generation)
    step_branches.clear()


# ---------------------------------------------------------------------- results

@st.fragment
def step_scrubber() -> None:
    """Text, per-stage chart and metrics of one step. A fragment: moving the slider reruns only
    this function, never the generation."""
    generation = st.session_state[GENERATION_KEY]
    steps = generation.steps
    left, right = st.columns([3, 1])
    with left:
        if len(steps) > 1:
            index = st.slider("Step", 0, len(steps) - 1, key=STEP_KEY,
                              help="Pick a generation step: the chart shows its distribution.", persist_state="session")
        else:
            index = 0
    with right:
        present = st.toggle("Presentation view", key=PRESENT_KEY, persist_state="session",
                            help="One large chart for projecting: the sorted distribution with the "
                                 "cut shaded, live temperature / top-k / top-p / min-p sliders, "
                                 "and the tokens as buttons that select their step.")
    if present:
        step_presentation.presentation(generation, index, STEP_KEY)
        return
    with right:
        shade = st.radio("Shade tokens by", ["raw", "final"], horizontal=True, key=SHADE_KEY,
                         help="raw: the model's own probability of each chosen token; final: its "
                              "probability in the distribution it was drawn from (after the chain).", persist_state="session")
    st.html(charts.token_html(generation, kind=shade, selected=index))
    st.html(charts.legend_html(shade))

    step = steps[index]
    st.subheader(f"Step {index}: {charts.visible_text(step.token_text)}")
    metrics = charts.step_metrics(step)
    # Two rows of three: six columns truncate values such as "67.6% → 82.9%" on a laptop screen.
    for row in (metrics[:3], metrics[3:]):
        for column, (label, value) in zip(st.columns(3), row):
            column.metric(label, value)

    state = [f"{label} = {step.extra[name]:.3f}" for name, label in STATE_LABELS.items()
             if name in step.extra]
    if state:
        st.caption("State of the stateful stage at this step: " + " · ".join(state))

    top_n = st.slider("Tokens shown", 3, TRACE_TOP, 10, key=TOP_N_KEY,
                      help="The raw top-n, the final top-n and the chosen token.", persist_state="session")
    frame = charts.stage_frame(step, top_n=top_n)
    top_p = generation.config.get("top_p") if "top_p" in generation.chain else None
    titles = charts.stage_titles(generation.config, step.stages)
    data = charts.stage_chart_data(frame, top_p=top_p, titles=titles)
    st.vega_lite_chart(data, charts.stage_chart_spec(columns=min(4, len(step.stages))),
                       width="content", key=CHART_KEY)
    st.caption("One panel per stage of the chain, in order. Blue: kept; vermilion (outlined): "
               "the chosen token; grey: removed, drawn at the probability it had before the cut.")
    if top_p is not None:
        st.caption(charts.top_p_caption(frame, top_p))
    whatif_tab, branch_tab = st.tabs(["What if…", "Branch"])
    with whatif_tab:
        step_whatif.whatif_panel(generation, step, top_n)
    with branch_tab:
        step_branches.branch_controls(generation, index)
    step_branches.branch_comparison(generation, GENERATION_KEY, STEP_KEY, shade)


def beam_results(generation) -> None:
    st.html(charts.token_html(generation))
    st.dataframe(charts.hypotheses_frame(generation), hide_index=True, placeholder=lab_state.EMPTY_CELL,
                 column_config={"differs": st.column_config.TextColumn(
                     "differs (after the shared start …)", width="large"),
                     "text": st.column_config.TextColumn(width="medium")})
    if any(d.startswith("(same as #") for d in charts.hypotheses_frame(generation)["differs"]):
        st.warning(charts.DUPLICATE_HYPOTHESES)
    st.info("Beam search keeps whole hypotheses rather than a per-step distribution, so the step "
            "scrubber is hidden here. The Beam explorer page shows the beam tree.")


def show_generation(generation) -> None:
    chain = " → ".join(generation.chain)
    st.caption(f"{generation.model} · {len(generation.token_ids)} tokens · "
               f"{generation.elapsed_s:.1f} s · finish: {generation.finish_reason} · chain: {chain}")
    if generation.config.get("strategy") == "beam" or not generation.steps:
        beam_results(generation)
    else:
        step_scrubber()


# ---------------------------------------------------------------------- page

def render() -> None:
    st.title("Step inspector")
    st.caption("Generate once, then scrub through the steps: each panel shows the next-token "
               "distribution after one more stage of the processor chain.")
    prompt = lab_state.prompt_box(PROMPT_KEY, height=100,
                                  placeholder="In a shocking finding, scientists discovered a herd "
                                              "of unicorns living in a remote valley…")
    strategy = st.radio("strategy", STRATEGIES, horizontal=True, key=STRATEGY_KEY,
                        help=help_text("strategy"), persist_state="session")
    knobs = {"strategy": strategy, **common_knobs(), **penalty_knobs(), **STRATEGY_KNOBS[strategy](),
             **two_model_knobs(strategy)}
    if st.button("Generate", type="primary", key=GENERATE_KEY):
        run_generation(prompt, knobs)
    generation = st.session_state.get(GENERATION_KEY)
    if generation is not None:
        st.divider()
        lab_state.stale_warning(st.session_state.get(INPUTS_KEY), lab_state.run_inputs(prompt, knobs))
        show_generation(generation)
