"""Train an adapter: pick preference data and knobs, start ``declab train`` in the background,
watch its log and its loss / reward curves live; the adapter then appears in the sidebar.

Presentation only: the knobs are ``TrainConfig`` fields (their help text is the tooltip), the
run is the CLI in its own process (``app.train_runs``), so training never blocks the page.
"""

from __future__ import annotations

import subprocess
import threading

import altair as alt
import streamlit as st

from alignment.data import HELD_OUT_DATASETS, TRAINING_DATASETS, held_out
from alignment.train import METHODS, TrainConfig
from app import lab_state, train_runs
from app.cli_common import field_help
from app.views.knobs import number_box
from decoding.errors import DecodingLabError

PREFIX = "train_adapter."
DATASET_KEY = PREFIX + "dataset"
PATH_KEY = PREFIX + "path"
NAME_KEY = PREFIX + "name"
START_KEY = PREFIX + "start"
SEEN_KEY = PREFIX + "seen_status"      # job name -> last status shown (to notice a finish)
OTHER_FILE = "a file path…"
POLL_SECONDS = 2.0
# Okabe & Ito's colour-blind-safe palette: chosen green, rejected vermilion.
CURVE_COLOURS = {"loss": "#0072B2", "rewards/chosen": "#009E73", "rewards/rejected": "#D55E00",
                 "rewards/margins": "#CC79A7", "rewards/accuracies": "#56B4E9"}
DEFAULTS = TrainConfig()


def key(name: str) -> str:
    return PREFIX + name


def tip(name: str) -> str:
    return field_help(TrainConfig, name)


@st.cache_resource
def processes() -> dict[str, subprocess.Popen]:
    """The runs this lab process started, by name (shared by all sessions: one machine, one
    set of training processes)."""
    return {}


@st.cache_resource
def start_lock() -> threading.Lock:
    """Held while checking that no run trains on the model and starting one: two quick clicks
    on "Start training" (or two sessions) then start one run, not two."""
    return threading.Lock()


# --------------------------------------------------------------------------- the form

def config_knobs() -> dict | None:
    """The chosen ``TrainConfig`` fields; None (with an error box) when the data cannot be read."""
    # The held-out sets (stance-test, stance-judge) are for evaluation only: not offered.
    choice = st.selectbox("dataset", [*TRAINING_DATASETS, OTHER_FILE], key=DATASET_KEY,
                          help=tip("dataset") + " Held out for evaluation, not offered: "
                          + ", ".join(HELD_OUT_DATASETS) + ".", persist_state="session")
    dataset = choice
    if choice == OTHER_FILE:
        dataset = st.text_input("Dataset file", key=PATH_KEY, placeholder="data/pairs.json",
                                help=tip("dataset"), persist_state="session").strip()
        if not dataset:
            st.info("Type the path of a .json / .jsonl preference file.")
            return None
        if held_out(dataset):
            st.error(f"dataset={dataset!r} is the held-out {held_out(dataset)} set, kept for "
                     f"evaluation; allowed: a training set ({', '.join(TRAINING_DATASETS)}) or "
                     "another file")
            return None
    try:
        fmt, records = train_runs.dataset_summary(dataset)
    except DecodingLabError as exc:
        st.error(str(exc))
        return None
    course = fmt == "course"
    st.caption(f"{dataset}: {records} records, {fmt} format"
               + ("" if course else " (chosen/rejected given: support_ratio does not apply)"))
    c = st.columns(3)
    with c[0]:
        method = st.selectbox("method", METHODS, key=key("method"), help=tip("method"),
                              persist_state="session")
    with c[1]:
        support_ratio = st.slider("support_ratio", 0.0, 1.0, 1.0, 0.05, key=key("support_ratio"),
                                  help=tip("support_ratio"), disabled=not course, persist_state="session")
    with c[2]:
        # Keyed per dataset: its range is the dataset's record count.
        data_size = number_box("data_size", 1, records, key(f"data_size.{dataset}"), value=records,
                               help=tip("data_size"))
    c = st.columns(3)
    with c[0]:
        epochs = number_box("epochs", 1, 20, key("epochs"), value=DEFAULTS.epochs, help=tip("epochs"))
    with c[1]:
        beta = number_box("beta", 0.001, 100.0, key("beta"), value=DEFAULTS.beta, step=0.05,
                          format="%.3f", help=tip("beta"))
    with c[2]:
        learning_rate = number_box("learning_rate", 1e-7, 0.5, key("learning_rate"),
                                   value=DEFAULTS.learning_rate, step=1e-5, format="%.1e", help=tip("learning_rate"))
    knobs = dict(method=method, dataset=dataset, data_size=int(data_size), epochs=int(epochs),
                 beta=float(beta), learning_rate=float(learning_rate))
    if course:
        knobs["support_ratio"] = float(support_ratio)
    return knobs


def start(knobs: dict, name: str) -> None:
    """Validate here (instant error box), then start the run in the background, unless a run
    already trains on this model (one at a time per model)."""
    model = lab_state.settings().model
    with start_lock():
        busy = busy_with(model)
        if busy is not None:
            st.warning(busy_message(busy))
            return
        try:
            config = TrainConfig(**knobs)
            name = name.strip() or train_runs.default_name(config)
            job = train_runs.new_job(name, config, model=model)
        except DecodingLabError as exc:
            st.error(str(exc))
            return
        processes()[job.name] = train_runs.launch(job)
    st.toast(f"Training {job.name} started in the background.")


def busy_with(model: str | None) -> train_runs.TrainJob | None:
    jobs = train_runs.list_jobs()
    return train_runs.running_on(model, jobs, {job.name: status_of(job) for job in jobs})


def busy_message(job: train_runs.TrainJob) -> str:
    return (f"{job.name} is training on this model: the lab trains one run per model at a time "
            "(two runs share the CPU cores and slow each other and the other pages). Stop it "
            "below or wait for it to finish.")


# --------------------------------------------------------------------------- the runs

def status_of(job: train_runs.TrainJob) -> str:
    process = processes().get(job.name)
    returncode = process.poll() if process is not None else None
    if returncode is not None:
        train_runs.record_exit(job, returncode)
    alive = process is None and train_runs.pid_alive(job.pid)
    return train_runs.job_status(job, returncode, known=process is not None, alive=alive)


def stop_button(job: train_runs.TrainJob) -> None:
    """Stop for any running run, the newest or an earlier one, this lab's or another's."""
    if st.button("Stop", key=key(f"stop.{job.name}"), icon=":material/stop:"):
        train_runs.stop(job, processes().get(job.name))
        st.toast(f"Stopping {job.name}…")


def curves_chart(frame) -> alt.Chart:
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("step:Q", title="optimizer step", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),   # a loss near ln 2 moves little
        color=alt.Color("metric:N", title=None, legend=alt.Legend(orient="top", labelFontSize=14),
                        scale=alt.Scale(domain=list(CURVE_COLOURS), range=list(CURVE_COLOURS.values()))),
        tooltip=["step:Q", "metric:N", alt.Tooltip("value:Q", format=".4f")],
    ).properties(height=220).facet(
        facet=alt.Facet("panel:N", title=None, header=alt.Header(labelFontSize=14)), columns=2,
    ).resolve_scale(y="independent")


def show_job(job: train_runs.TrainJob, status: str) -> None:
    begin, entries, _ = train_runs.read_progress(job.progress_path)
    log = train_runs.log_tail(job.log_path)
    # Material icons: emoji need a colour-emoji font, which a bare Linux browser may lack.
    icon = {"running": ":material/hourglass_top:", "finished": ":material/check_circle:",
            "stopped": ":material/stop_circle:", "failed": ":material/error:"}.get(status, ":material/help:")
    st.markdown(f"**{icon} {job.name}** · {status} · `{train_runs.display_path(job.out_dir)}`")
    steps = [e["step"] for e in entries if "train_runtime" not in e]
    if begin and begin.get("max_steps"):
        done = max(steps, default=0)
        st.progress(min(1.0, done / begin["max_steps"]), text=f"step {done} of {begin['max_steps']}")
    elif status == "running":
        st.caption("Loading the model and the data… (the first step appears after that)")
    if status == "stopped":
        st.info("Stopped on request; no adapter was written.")
    if status == "failed":
        message = train_runs.error_message(log)
        st.error(message or "The run stopped without writing an adapter; see the log below.")
    if status == "finished":
        st.success(f"Adapter written to {train_runs.display_path(job.out_dir)}: pick it under "
                   "'Trained adapters' in the sidebar.")
    frame = train_runs.curve_frame(entries)
    if not frame.empty:
        frame["panel"] = ["loss" if m == "loss" else "reward accuracy" if m.endswith("accuracies")
                          else "rewards" for m in frame["metric"]]
        st.altair_chart(curves_chart(frame), width="stretch")
    with st.expander("Log", expanded=status != "finished"):
        st.code(log or "(nothing yet)", language=None)
    if status == "running":
        stop_button(job)


def runs_view() -> None:
    jobs = train_runs.list_jobs()
    if not jobs:
        st.caption("No runs yet.")
        return
    seen = st.session_state.setdefault(SEEN_KEY, {})
    statuses = {job.name: status_of(job) for job in jobs}
    show_job(jobs[0], statuses[jobs[0].name])
    if len(jobs) > 1:
        earlier = jobs[1:]
        running = sum(statuses[job.name] == "running" for job in earlier)
        with st.expander(f"Earlier runs ({len(earlier)}, {running} running)", expanded=running > 0):
            for job in earlier:
                left, right = st.columns([4, 1])
                left.markdown(f"{job.name} · {statuses[job.name]}")
                if statuses[job.name] == "running":
                    with right:
                        stop_button(job)
    # A run that just ended: rerun the whole app so the sidebar lists the new adapter and
    # the polling stops.
    changed = any(seen.get(n) == "running" and s != "running" for n, s in statuses.items())
    seen.update(statuses)
    if changed:
        st.rerun()


def render() -> None:
    st.title("Train an adapter")
    st.caption("Preference training (DPO, IPO, ORPO, SimPO) of a LoRA adapter on the sidebar's "
               "model, as `declab train` in a background process: the page stays usable while it "
               "runs. The finished adapter is listed in the sidebar.")
    knobs = config_knobs()
    name = st.text_input("Adapter name", key=NAME_KEY, placeholder="automatic, e.g. dpo-stance-r1-n50-e3-…",
                         help="The adapter is written to adapters/NAME.", persist_state="session")
    base = lab_state.settings().model or lab_state.EMBEDDED_LABEL
    st.caption(f"Base model (sidebar): {base}")
    busy = busy_with(lab_state.settings().model)
    if st.button("Start training", type="primary", key=START_KEY, icon=":material/model_training:",
                 disabled=knobs is None or busy is not None):
        start(knobs, name)
    if busy is not None:
        st.caption(busy_message(busy))
    st.divider()
    st.subheader("Runs")
    running = any(status_of(job) == "running" for job in train_runs.list_jobs())
    st.fragment(run_every=POLL_SECONDS if running else None)(runs_view)()
