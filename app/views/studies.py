"""Studies: browse ``runs/<study>/<timestamp>/`` (report, tables, plots, status) and start a
``--quick`` study in the background, its log tailed and its progress polled by a fragment so the
page never blocks. Presentation only: studies are ``declab experiment`` runs of ``experiments/``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app import lab_state, study_jobs
from app.cli_experiment import STUDIES

K = "studies."
ROOT_KEY = K + "root"
START_NAME_KEY = K + "start_name"
START_KEY = K + "start"
STOP_KEY = K + "stop"
JOB_KEY = K + "job"
STUDY_KEY = K + "study"
RUN_KEY = K + "run"

POLL_S = 2.0


# ---------------------------------------------------------------------- background job

def start_study(name: str, root: str, root_path: Path) -> None:
    job = st.session_state.get(JOB_KEY)
    if job is not None and job.running:
        st.error(f"A study is already running ({job.name}); wait for it or stop it first.")
        return
    command = study_jobs.study_command(name, root)
    try:
        st.session_state[JOB_KEY] = study_jobs.start_job(name, command, root_path)
    except OSError as exc:
        st.error(f"Cannot start {' '.join(command)}: {exc}")


def job_status(job) -> None:
    """Command, progress and the log's last lines (shared by the live and the final view)."""
    text = study_jobs.read_tail(job.log_path, lines=200)
    progress = study_jobs.log_progress(text)
    st.caption(f"`{' '.join(job.command[1:])}` · log: {job.log_path}")
    if job.running:
        if progress is None:
            st.progress(0.0, text="Starting…")
        else:
            done, total = progress
            st.progress(done / total, text=f"{done}/{total} ({done / total:.0%})")
    tail = "\n".join(text.splitlines()[-15:])
    st.code(tail or "(no output yet)", language=None)


@st.fragment(run_every=POLL_S)
def live_job_panel() -> None:
    """Polled every ``POLL_S`` seconds while the job runs; when it ends, the whole page reruns
    once (the new run appears in the list, and polling stops)."""
    job = st.session_state[JOB_KEY]
    if not job.running:
        st.rerun(scope="app")
    st.subheader(f"Running: {job.name} --quick")
    job_status(job)
    if st.button("Stop", key=STOP_KEY):
        job.stop()
        st.rerun(scope="app")


def finished_job_panel(job) -> None:
    code = job.returncode
    if code == 0:
        st.success(f"{job.name} --quick finished; its run is listed below.")
    else:
        st.error(f"{job.name} --quick stopped with exit code {code}; the log's last lines:")
    with st.expander("Log", expanded=code != 0):
        job_status(job)


# ---------------------------------------------------------------------- browsing

def show_run(path: Path) -> None:
    files = study_jobs.run_files(path)
    status = files.status.get("status", "missing")
    if status != "complete":
        st.warning(f"This run is {status}"
                   + (f" (stopped by {files.status['stopped_by']})" if files.status.get("stopped_by")
                      else ": it may still be running, or it was interrupted") + ".")
    tabs = st.tabs(["Report", "Tables", "Plots", "Status"])
    with tabs[0]:
        if files.report is None:
            st.info("No report.md in this run (yet).")
        else:
            st.markdown(files.report)
    with tabs[1]:
        if not files.tables:
            st.info("No tables (*.csv) in this run.")
        for table in files.tables:
            st.markdown(f"**{table.name}**")
            try:
                st.dataframe(pd.read_csv(table), hide_index=True, placeholder=lab_state.EMPTY_CELL)
            except (OSError, ValueError, pd.errors.ParserError) as exc:
                st.error(f"{table.name} cannot be read: {exc}")
    with tabs[2]:
        if not files.plots:
            st.info("No plots (*.png) in this run.")
        for plot in files.plots:
            st.image(str(plot), caption=plot.name)
    with tabs[3]:
        st.json(files.status or {"status": "missing"})


def browse(root: str) -> None:
    names = study_jobs.study_names(root)
    if not names:
        st.info(f"No study runs under {root!r} yet: start one above.")
        return
    name = st.selectbox("Study", names, key=STUDY_KEY, persist_state="session")
    rows = study_jobs.run_rows(root, name)
    st.dataframe(pd.DataFrame(rows), hide_index=True, placeholder=lab_state.EMPTY_CELL)
    run = st.selectbox("Run", [r["run"] for r in rows], key=RUN_KEY,
                       format_func=lambda r: f"{r} ({next(x['status'] for x in rows if x['run'] == r)})", persist_state="session")
    if run is not None:
        show_run(Path(root) / name / run)


# ---------------------------------------------------------------------- page

def render() -> None:
    st.title("Studies")
    st.caption("Each study writes runs/<study>/<timestamp>/ with a report, tables and plots; a run "
               "stays marked incomplete until everything is written.")
    root = st.text_input("Runs folder", study_jobs.DEFAULT_RUNS_ROOT, key=ROOT_KEY,
                         help="Relative to the repository, or an absolute path.", persist_state="session").strip()
    root_path = Path(root) if Path(root).is_absolute() else study_jobs.ROOT / root
    if not root or (root_path.exists() and not root_path.is_dir()):
        st.error(f"runs folder {root!r} is not a folder; allowed: a folder path such as runs")
        return

    st.subheader("Start a quick study")
    job = st.session_state.get(JOB_KEY)
    busy = job is not None and job.running
    c = st.columns([2, 1])
    with c[0]:
        name = st.selectbox("Study to run", sorted(STUDIES), key=START_NAME_KEY, persist_state="session")
    with c[1]:
        st.write("")
        if st.button("Start --quick", type="primary", key=START_KEY, disabled=busy,
                     help="declab experiment NAME --quick, in the background (a few minutes on "
                          "the embedded model)."):
            start_study(name, root, root_path)
            job = st.session_state.get(JOB_KEY)
    if job is not None:
        if job.running:
            live_job_panel()
        else:
            finished_job_panel(job)

    st.divider()
    st.subheader("Runs")
    browse(str(root_path))
