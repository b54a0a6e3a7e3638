"""The Studies page through AppTest: browsing a runs folder and a background job (a stand-in
command instead of a real study, so nothing heavy runs)."""

from __future__ import annotations

import sys
import time

import pytest

from app import study_jobs
from app.views import studies as sp
from experiments.runs import open_run
from tests.app_pages import open_page


@pytest.fixture
def runs(tmp_path):
    with open_run("degeneration", root=tmp_path) as run:
        run.file("report.md").write_text("# Degeneration study\n\nThe report.")
        run.file("summary.csv").write_text("strategy,rep_2\ngreedy,50.0\nbeam-4,40.0\n")
    return tmp_path


@pytest.fixture
def at(monkeypatch, runs):
    at = open_page("studies", monkeypatch)
    at.text_input(key=sp.ROOT_KEY).input(str(runs))
    return at.run()


def test_page_browses_a_run(at):
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == ["Studies"]
    assert at.selectbox(key=sp.STUDY_KEY).value == "degeneration"
    assert list(at.dataframe[0].value["status"]) == ["complete"]
    assert any(m.value.startswith("# Degeneration study") for m in at.markdown)
    summary = at.dataframe[1].value
    assert list(summary["strategy"]) == ["greedy", "beam-4"]


def test_an_incomplete_run_is_flagged(at, runs):
    with pytest.raises(RuntimeError):
        with open_run("degeneration", root=runs):
            raise RuntimeError("boom")
    at.run()
    rows = at.dataframe[0].value
    assert list(rows["status"]) == ["incomplete", "complete"]
    assert not at.warning                                  # the selected run is still the first
    at.selectbox(key=sp.RUN_KEY).set_value(rows["run"][0]).run()
    assert "stopped by RuntimeError: boom" in at.warning[0].value


def fake_study(monkeypatch, code: str):
    monkeypatch.setattr(study_jobs, "study_command",
                        lambda name, root: [sys.executable, "-c", code])


def test_starting_a_study_runs_it_in_the_background(at, monkeypatch):
    fake_study(monkeypatch, "print('generations 1/2'); print('generations 2/2'); print('done')")
    at.button(key=sp.START_KEY).click().run()
    assert not at.exception and not at.error
    job = at.session_state[sp.JOB_KEY]
    assert job.process.wait(timeout=30) == 0
    at.run()
    assert not at.exception
    assert "finished" in at.success[0].value
    assert any("done" in c.value for c in at.code)


def test_a_failing_study_shows_an_error_with_its_log(at, monkeypatch):
    fake_study(monkeypatch, "import sys; print('declab: error: bad option'); sys.exit(2)")
    at.button(key=sp.START_KEY).click().run()
    at.session_state[sp.JOB_KEY].process.wait(timeout=30)
    at.run()
    assert not at.exception
    assert len(at.error) == 1 and "exit code 2" in at.error[0].value
    assert any("bad option" in c.value for c in at.code)


def test_a_running_study_shows_progress_and_can_be_stopped(at, monkeypatch):
    fake_study(monkeypatch, "import time; print('step 1/4', flush=True); time.sleep(60)")
    at.button(key=sp.START_KEY).click().run()
    job = at.session_state[sp.JOB_KEY]
    try:
        for _ in range(50):
            if "1/4" in study_jobs.read_tail(job.log_path):
                break
            time.sleep(0.1)
        at.run()
        assert not at.exception
        assert at.button(key=sp.START_KEY).disabled
        assert any(s.value.startswith("Running:") for s in at.subheader)
        at.button(key=sp.STOP_KEY).click().run()
        assert not job.running
    finally:
        job.stop()


def test_a_file_as_runs_folder_is_an_error(at, runs):
    (runs / "file.txt").write_text("x")
    at.text_input(key=sp.ROOT_KEY).input(str(runs / "file.txt")).run()
    assert not at.exception
    assert len(at.error) == 1 and "is not a folder" in at.error[0].value
