"""Run-directory browsing and background jobs of the Studies page (no study is run)."""

from __future__ import annotations

import sys

from app import study_jobs as sj
from experiments.runs import open_run


def make_runs(root):
    with open_run("degeneration", root=root, params={"quick": True}) as run:
        run.file("report.md").write_text("# Degeneration study\n\nhello")
        run.file("summary.csv").write_text("strategy,rep_2\ngreedy,50.0\n")
        run.file("figure.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    broken = sj.Path(root) / "degeneration" / "20990101-000000"
    broken.mkdir()
    (broken / "status.json").write_text('{"status": "incomplete", "stopped_by": "KeyboardInterrupt"}')
    (sj.Path(root) / ".jobs").mkdir()
    (sj.Path(root) / "empty-study").mkdir()
    return run.path, broken


def test_study_names_runs_and_files(tmp_path):
    complete, broken = make_runs(tmp_path)
    assert sj.study_names(tmp_path) == ["degeneration"]      # hidden and empty folders skipped
    rows = sj.run_rows(tmp_path, "degeneration")
    assert [r["run"] for r in rows] == [broken.name, complete.name]   # newest first
    assert [r["status"] for r in rows] == ["incomplete", "complete"]
    assert rows[0]["stopped by"] == "KeyboardInterrupt"
    files = sj.run_files(complete)
    assert files.report.startswith("# Degeneration study")
    assert [p.name for p in files.tables] == ["summary.csv"]
    assert [p.name for p in files.plots] == ["figure.png"]
    assert files.status["status"] == "complete"
    assert sj.run_files(broken).report is None
    assert sj.study_names(tmp_path / "missing") == []


def test_study_command_adds_root_only_when_not_default():
    assert sj.study_command("degeneration", python="py") == [
        "py", "-m", "app.cli", "experiment", "degeneration", "--quick"]
    assert sj.study_command("degeneration", "/tmp/r", python="py")[-2:] == ["--root", "/tmp/r"]


def test_log_lines_progress_and_tail(tmp_path):
    text = "loading\nstrategies:  10%|#  | 1/10 [00:01]\r strategies:  30%|###| 3/10 [00:03]\nnote 5 of 8\n"
    assert sj.log_lines(text)[1] == " strategies:  30%|###| 3/10 [00:03]"
    assert sj.log_progress(text) == (3, 10)
    assert sj.log_progress("nothing here") is None
    assert sj.log_progress("bad 7/3") is None
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)))
    assert sj.read_tail(log, lines=3) == "line 27\nline 28\nline 29"
    assert sj.read_tail(tmp_path / "missing.log") == ""


def test_start_job_runs_in_the_background_and_logs(tmp_path):
    job = sj.start_job("fake", [sys.executable, "-c", "print('1/2'); print('2/2')"], tmp_path)
    assert job.log_path.parent == tmp_path / sj.JOBS_DIR
    assert job.process.wait(timeout=30) == 0
    assert not job.running and job.returncode == 0
    assert sj.log_progress(sj.read_tail(job.log_path)) == (2, 2)


def test_stop_ends_a_running_job(tmp_path):
    job = sj.start_job("sleepy", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path)
    assert job.running
    job.stop()
    assert not job.running and job.returncode != 0
