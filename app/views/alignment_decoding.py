"""Alignment × decoding: the base model and one or more adapters answer the same prompt with the
same decoding; their answers side by side with stance and implicit reward; for a chosen step of
an adapter's answer, both next-token distributions overlaid; the per-step KL / TV curve; and a
small grid of decodings × models with stance and loop rate (drawn cell by cell as it runs). The steps
where the argmax of base and adapter differ are marked and open with a click.

Presentation only: generation is ``decoding.generate``, the measurements are ``alignment.scoring``
(teacher-forced distributions, KL, TV), ``alignment.stance`` (the stance judge) and
``alignment.evaluate`` (``summarise``, implicit rewards). The step slider and the overlay are a
fragment over recorded data: moving them never calls a model.
"""

from __future__ import annotations

import streamlit as st

from alignment.data import load_stance_records
from alignment.evaluate import (GenerationRecord, Subject, answer_loop, generate_answers, implicit_reward,
                                judge_records, summarise)
from alignment.scoring import step_distributions, stepwise_shift
from alignment.stance import StanceClassifierError, fit_stance_judge
from app import charts_alignment as ca
from app import lab_state
from app.views import realign_panel
from decoding import DecodingConfig, DecodingLabError, GenerationError, generate
from decoding.specs import parse_spec, parse_specs, syntax_help

PROMPT_KEY = "alignment.prompt"
ADAPTERS_KEY = "alignment.adapters"
SPEC_KEY = "alignment.spec"
TOKENS_KEY = "alignment.max_new_tokens"
RESULT_KEY = "alignment.result"
STEP_KEY = "alignment.step"
FOCUS_KEY = "alignment.focus"
FLIP_KEY = "alignment.flip"              # the argmax-flip buttons
SHIFT_CHART_KEY = "alignment.shift_chart"  # + the adapter: its click selection
CLICKED_KEY = "alignment.clicked"          # per chart: the click already followed
GRID_SPECS_KEY = "alignment.grid_specs"
GRID_SAMPLES_KEY = "alignment.grid_samples"
GRID_KEY = "alignment.grid"
RUN_KEY = "alignment.run"
RUN_GRID_KEY = "alignment.run_grid"

DEFAULT_GRID = "greedy\nsample:top_p=0.9\nsample:min_p=0.1\ngreedy:repetition_penalty=1.2"


@st.cache_resource(show_spinner=False, max_entries=2)
def _judge(model: str | None, tiny: bool):
    """The stance judge of the base model, fitted once per process (it refuses to exist below
    its validated accuracy on generated answers: the error is cached as a message)."""
    try:
        return fit_stance_judge(lab_state.get_lm(model, None)), None
    except StanceClassifierError as exc:
        return None, str(exc)


def stance_judge():
    current = lab_state.settings()
    with st.spinner("Fitting the stance judge on the base model (once)…"):
        return _judge(current.model, lab_state.tiny_model_requested())


def _models(adapters: list[str]):
    """(label, LM, adapter meta or None) for the base and each adapter, loaded (cached)."""
    current = lab_state.settings()
    out = [("base", lab_state.get_lm(current.model, None), None)]
    for path in adapters:
        subject = Subject.of_adapter(path)
        out.append((subject.label, lab_state.get_lm(current.model, path), subject))
    return out


def run_models(prompt: str, adapters: list[str], spec_text: str, max_new_tokens: int) -> None:
    if not prompt.strip():
        st.error("The prompt is empty: type a prompt or pick a test prompt.")
        return
    if not adapters:
        st.error("Pick at least one adapter to compare with the base model (train one on the "
                 "Train page, or type its directory in the sidebar's Adapter field first).")
        return
    current = lab_state.settings()
    try:
        config = parse_spec(spec_text, DecodingConfig(max_new_tokens=max_new_tokens, seed=current.seed)).config
        models = _models(adapters)
    except DecodingLabError as exc:
        st.error(str(exc))
        return
    judge, refusal = stance_judge()
    base = models[0][1]
    answers, extras = [], {}
    progress = st.progress(0.0, text="Generating…")
    try:
        for k, (label, lm, subject) in enumerate(models):
            progress.progress(k / len(models), text=f"{label}: generating")
            gen = generate(lm, prompt, config, chat=current.chat)
            seq = gen.sequences[0]
            pieces = lm.token_pieces(seq.token_ids)
            loop = answer_loop(seq.token_ids, pieces=pieces)
            answer = {"model": label, "text": seq.text, "token_ids": list(seq.token_ids),
                      "pieces": pieces,
                      "finish_reason": seq.finish_reason, "loop_period": loop.period if loop else None,
                      "implicit_reward": implicit_reward(lm, base, subject, gen.prompt_ids, list(seq.token_ids))}
            if judge is not None:
                verdict = judge.judge([prompt], [seq.text])[0]
                answer.update(p_support=verdict.p_support, stance=verdict.stance)
            if subject is not None:
                progress.progress((k + 0.5) / len(models), text=f"{label}: comparing with the base, step by step")
                extras[label] = {
                    "distributions": [d.to_dict() for d in step_distributions(lm, base, gen.prompt_ids, seq.token_ids)],
                    "shift": [s.to_dict() for s in stepwise_shift(lm, base, gen.prompt_ids, seq.token_ids)]}
            answers.append(answer)
    except (DecodingLabError, GenerationError) as exc:
        st.error(str(exc))
        return
    finally:
        progress.empty()
    st.session_state[RESULT_KEY] = {"prompt": prompt, "spec": spec_text, "answers": answers,
                                    "extras": extras, "refusal": refusal, "chat": current.chat}
    st.session_state[STEP_KEY] = 0
    # a click on the previous result's chart is not followed into this one
    st.session_state[CLICKED_KEY] = {f"{SHIFT_CHART_KEY}.{label}": _picked_step(f"{SHIFT_CHART_KEY}.{label}")
                                     for label in extras}


def show_answers(result: dict) -> None:
    if result["refusal"]:
        st.warning(f"No stance labels: {result['refusal']}")
    columns = st.columns(len(result["answers"]))
    for column, answer in zip(columns, result["answers"]):
        with column:
            st.markdown(f"**{answer['model']}**")
            stance = answer.get("stance")
            if stance:
                # a label with its probability, not a metric delta (an arrow read as a change)
                st.markdown(f"stance **{stance}** · P(support) {answer['p_support']:.0%}")
            if answer is not result["answers"][0]:
                st.caption(ca.divergence_text(result["answers"][0], answer))
            if answer.get("implicit_reward") is not None:
                st.caption(f"implicit reward β·Σ log π/π_ref = {answer['implicit_reward']:+.2f}")
            st.text(answer["text"] or "(empty)")
    st.dataframe(ca.answers_frame(result["answers"]), hide_index=True, placeholder=lab_state.EMPTY_CELL,
                 column_config={"P(support)": st.column_config.NumberColumn(format="percent"),
                                "implicit reward": st.column_config.NumberColumn(format="%+.2f")})
    base = result["answers"][0]
    for answer in result["answers"][1:]:
        st.markdown(f"**{answer['model']} against the base, token by token** (struck through: only the "
                    f"base's; highlighted: only {answer['model']}'s)")
        st.html(ca.token_diff_html(base, answer))


def _picked_step(chart_key: str) -> int | None:
    """The step a click on the shift chart selected (``charts_alignment.PICK``), or None."""
    event = st.session_state.get(chart_key)
    points = (event or {}).get("selection", {}).get(ca.PICK) or []
    steps = [p["step"] for p in points if isinstance(p, dict) and "step" in p]
    return int(steps[0]) if steps else None


def _follow_click(chart_key: str, last: int) -> None:
    """A new click on the shift chart moves the step slider there (before the slider is drawn:
    a widget's value can only be set before it exists in the run). A click already followed is
    not followed again, so the slider stays where it was moved since."""
    picked = _picked_step(chart_key)
    followed = st.session_state.setdefault(CLICKED_KEY, {})
    if picked is not None and picked <= last and picked != followed.get(chart_key):
        st.session_state[STEP_KEY] = picked
    followed[chart_key] = picked


def _jump_to_flip() -> None:
    picked = st.session_state.get(FLIP_KEY)
    if picked is not None:
        st.session_state[STEP_KEY] = picked


@st.fragment
def step_view(result: dict) -> None:
    """Recorded data only: choosing an adapter, a step, a flip or a point on the chart never
    calls a model."""
    extras = result["extras"]
    if not extras:
        return
    labels = list(extras)
    focus = st.radio("Adapter", labels, horizontal=True, key=FOCUS_KEY) if len(labels) > 1 else labels[0]
    data = extras[focus]
    steps = data["distributions"]
    if not steps:
        st.info(f"{focus} produced no tokens.")
        return
    chart_key = f"{SHIFT_CHART_KEY}.{focus}"
    _follow_click(chart_key, len(steps) - 1)
    flips = ca.argmax_flips(steps)
    if flips:
        by_step = {f["step"]: f for f in flips}
        current = st.session_state.get(STEP_KEY)    # the pill of the step shown, if it is a flip
        st.session_state[FLIP_KEY] = current if current in by_step else None
        st.pills(f"The argmax of {focus} and the base differ at {len(flips)} of {len(steps)} steps "
                 "(base → adapter): click one to open it", list(by_step),
                 format_func=lambda s: ca.flip_label(by_step[s]), key=FLIP_KEY,
                 on_change=_jump_to_flip, width="content")
    else:
        st.caption(f"The argmax of {focus} and the base agree at every step of its answer.")
    step = st.slider("Step of the adapter's answer", 0, len(steps) - 1, key=STEP_KEY) if len(steps) > 1 else 0
    shift = data["shift"][step]
    left, right = st.columns([3, 2])
    with left:
        flip = next((f for f in flips if f["step"] == step), None)
        note = (f" · **argmax differs**: base `{ca.visible_text(flip['base'])}`, {focus} "
                f"`{ca.visible_text(flip['adapter'])}`" if flip else "")
        st.markdown(f"**Next-token distributions at step {step}** (the adapter took "
                    f"`{ca.visible_text(shift['token'])}`, outlined){note}")
        st.altair_chart(ca.overlay_chart(ca.overlay_frame(steps[step], focus)), width="stretch")
    with right:
        st.metric("KL(adapter ‖ base)", f"{shift['kl']:.3f} nats")
        st.metric("total variation", f"{shift['tv']:.0%}")
        st.metric("log π − log π_base of the chosen token", f"{shift['policy_logprob'] - shift['base_logprob']:+.2f}")
    st.markdown("**Per-step shift along the adapter's answer**: where does alignment change the model's "
                "mind? Vermilion ▼: the two argmaxes differ. Click a step to open it above.")
    st.altair_chart(ca.shift_chart(ca.shift_frame(data["shift"], flips), selected=step), width="stretch",
                    height=ca.SHIFT_HEIGHT, on_select="rerun", selection_mode=ca.PICK, key=chart_key)


def show_grid(grid: dict) -> None:
    """The grid's cells so far (all of them once it has finished)."""
    done, total = len(grid["cells"]), grid.get("total", len(grid["cells"]))
    if done < total:
        running = grid.get("running")
        st.caption(f"{done} of {total} cells done" + (f"; now generating: {running}" if running else
                                                      " (the run stopped before the rest)"))
    if grid["refusal"]:
        st.warning(f"No stance labels: {grid['refusal']}")
    elif grid.get("judge"):
        st.caption(f"{grid['judge']}. Intervals: 95 % bootstrap over this prompt's samples (one prompt: "
                   "they show sampling noise only; `declab evaluate` gives intervals over prompts).")
    if grid["cells"]:
        frame = ca.grid_frame(grid["cells"])
        if grid["refusal"]:   # no labels: no stance columns (they read 0 % support, 0 % oppose)
            frame = frame.drop(columns=[c for c in frame.columns if c.split(" ")[0] in ca.STANCE_COLUMNS])
        st.dataframe(frame, hide_index=True, placeholder=lab_state.EMPTY_CELL, column_config={
            k: st.column_config.NumberColumn(format="percent") for k in ("support", "neutral", "oppose", "loops", "EOS")})


def run_grid(prompt: str, adapters: list[str], specs_text: str, samples: int, max_new_tokens: int) -> None:
    """Every (model, decoding) cell in turn; each finished cell is kept in the session and drawn
    at once, so the table grows while the grid runs (a 3 × 4 grid takes minutes on a CPU)."""
    current = lab_state.settings()
    st.session_state.pop(GRID_KEY, None)      # never the old grid under a new run's error
    try:
        specs = parse_specs(specs_text.replace("\n", ";"),
                            DecodingConfig(max_new_tokens=max_new_tokens, seed=current.seed))
        models = _models(adapters)
    except DecodingLabError as exc:
        st.error(str(exc))
        return
    judge, refusal = stance_judge()
    grid = {"cells": [], "refusal": refusal, "judge": judge.describe() if judge is not None else None,
            "total": len(models) * len(specs), "running": None}
    st.session_state[GRID_KEY] = grid
    live = st.empty()
    try:
        for label, lm, _ in models:
            for spec in specs:
                grid["running"] = f"{label} × {spec.label}"
                with live.container():
                    show_grid(grid)
                records: list[GenerationRecord] = generate_answers(lm, label, [(0, prompt)], spec, samples, current.chat)
                if judge is not None:
                    judge_records(judge, records, {0: prompt})
                grid["cells"].append({"model": label, "decoding": spec.label, **summarise(records)})
    except (DecodingLabError, GenerationError) as exc:
        st.error(str(exc))
    finally:
        grid["running"] = None
        live.empty()


def render() -> None:
    st.title("Alignment × decoding")
    st.caption("After DPO or ORPO, what does the model say, and how much of that depends on how you "
               "decode? Base and adapters answer the same prompt with the same decoding.")
    tests = load_stance_records("stance-test")
    pick = st.selectbox("Held-out test prompt", ["(type your own)"] + [r.prompt for r in tests], index=1,
                        key="alignment.pick")
    if PROMPT_KEY not in st.session_state or st.session_state.get("alignment.last_pick") != pick:
        if pick != "(type your own)":
            st.session_state[PROMPT_KEY] = pick
        st.session_state["alignment.last_pick"] = pick
    prompt = st.text_area("Prompt", key=PROMPT_KEY, height=80)
    options = [o for o in lab_state.adapter_options() if o != lab_state.NO_ADAPTER]
    typed = lab_state.settings().adapter
    if typed and typed not in options:
        options.append(typed)
    adapters = st.multiselect("Adapters", options, default=[typed] if typed else options[:1], key=ADAPTERS_KEY,
                              help="Adapters under adapters/ (the Train page writes them there) and the "
                                   "sidebar's Adapter field.")
    c1, c2 = st.columns([3, 1])
    with c1:
        spec = st.text_input("Decoding", value="greedy", key=SPEC_KEY, help=syntax_help())
    with c2:
        max_new_tokens = st.number_input("max_new_tokens", 1, 512, 80, key=TOKENS_KEY)
    if st.button("Generate with every model", type="primary", key=RUN_KEY):
        run_models(prompt, adapters, spec, int(max_new_tokens))
    result = st.session_state.get(RESULT_KEY)
    if result:
        show_answers(result)
        step_view(result)
    if prompt.strip() and adapters:
        realign_panel.render(prompt, adapters, spec, int(max_new_tokens), stance_judge)

    st.subheader("Decodings × models")
    g1, g2 = st.columns([3, 1])
    with g1:
        grid_specs = st.text_area("Decodings (one spec per line)", DEFAULT_GRID, key=GRID_SPECS_KEY, height=110)
    with g2:
        samples = st.number_input("samples (sampling rows)", 1, 8, 3, key=GRID_SAMPLES_KEY)
    if st.button("Run the grid on this prompt", key=RUN_GRID_KEY):
        if not prompt.strip():
            st.error("The prompt is empty: type a prompt or pick a test prompt.")
        else:
            run_grid(prompt, adapters, grid_specs, int(samples), int(max_new_tokens))
    grid = st.session_state.get(GRID_KEY)
    if grid:
        show_grid(grid)
