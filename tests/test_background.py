"""The CPU budget of background jobs started from the lab (app.background): threads, OpenMP
waiting and niceness reach the child process of a study and of a training run."""

from __future__ import annotations

import json
import os
import sys

import pytest

from app import background, study_jobs, train_runs
from alignment.train import TrainConfig

PROBE = ("import json, os, torch\n"
         "print(json.dumps({'omp': os.environ.get('OMP_NUM_THREADS'), "
         "'wait': os.environ.get('OMP_WAIT_POLICY'), 'torch': torch.get_num_threads(), "
         "'nice': os.getpriority(os.PRIO_PROCESS, 0)}))\n")


@pytest.mark.parametrize("cpus, threads", [(1, 1), (2, 1), (3, 1), (8, 4), (64, 32)])
def test_a_job_gets_half_the_cores(cpus, threads):
    assert background.job_budget(cpus, environ={}).threads == threads


def test_the_budget_can_be_overridden_and_is_checked():
    budget = background.job_budget(8, environ={background.THREADS_ENV: "2", background.NICE_ENV: "5"})
    assert (budget.threads, budget.nice) == (2, 5)
    with pytest.raises(ValueError, match="threads=0 is out of range"):
        background.JobBudget(threads=0)
    with pytest.raises(ValueError, match="nice=25 is out of range"):
        background.JobBudget(threads=1, nice=25)


def test_job_env_sets_every_threading_library():
    env = background.job_env({"PATH": "/bin", "OMP_NUM_THREADS": "16"}, background.JobBudget(threads=3))
    assert env["PATH"] == "/bin"
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["OPENBLAS_NUM_THREADS"]) == ("3",) * 3
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["TOKENIZERS_PARALLELISM"] == "false"


def _probe_output(text: str) -> dict:
    return json.loads(next(line for line in text.splitlines() if line.startswith("{")))


def test_a_study_job_runs_under_the_budget(tmp_path, monkeypatch):
    monkeypatch.setenv(background.THREADS_ENV, "1")
    monkeypatch.setenv(background.NICE_ENV, "7")
    job = study_jobs.start_job("probe", [sys.executable, "-c", PROBE], tmp_path)
    assert job.process.wait(timeout=120) == 0
    seen = _probe_output(job.log_path.read_text())
    assert seen["omp"] == "1" and seen["wait"] == "PASSIVE" and seen["torch"] == 1
    # raised to the budget's niceness (never lowered below the lab's own)
    assert seen["nice"] == max(7, os.getpriority(os.PRIO_PROCESS, 0))


def test_a_training_run_runs_under_the_budget(tmp_path, monkeypatch):
    monkeypatch.setenv(background.THREADS_ENV, "1")
    monkeypatch.setenv(background.NICE_ENV, "9")
    job = train_runs.new_job("probe", TrainConfig(), adapters_dir=tmp_path / "a", jobs_dir=tmp_path / "j")
    job.command = [sys.executable, "-c", PROBE]
    process = train_runs.launch(job)
    assert process.wait(timeout=120) == 0
    seen = _probe_output(job.log_path.read_text())
    assert seen["omp"] == "1" and seen["wait"] == "PASSIVE" and seen["torch"] == 1
    assert seen["nice"] == max(9, os.getpriority(os.PRIO_PROCESS, 0))
    assert train_runs.TrainJob.load(tmp_path / "j" / "probe").budget == {
        "threads": 1, "nice": 9, "wait_policy": "PASSIVE"}


def test_the_benchmark_entry_measures_alone_and_beside_both_runs(tiny, tmp_path):
    """On the tiny model, with a stand-in for the training run that writes its ``begin`` record
    and works until stopped: the structure and the stop, not the speeds (measured on a quiet
    machine with ``python -m app.bench_background``)."""
    from app import bench_background as bb

    def stand_in(job):
        script = ("import json, time\nfrom app.interrupts import accept_interrupts\naccept_interrupts()\n"
                  f"open({str(job.progress_path)!r}, 'w').write(json.dumps({{'event': 'begin', 'max_steps': 9}}) + '\\n')\n"
                  "try:\n    time.sleep(120)\nexcept KeyboardInterrupt:\n    raise SystemExit(130)\n")
        return [sys.executable, "-c", script]

    result = bb.run(tiny, tokens=4, tries=2, config=TrainConfig(), jobs_dir=tmp_path, command=stand_in,
                    start_timeout=60)
    assert len(result["alone"]["rates"]) == 2 and result["alone"]["median"] > 0
    for key, threads, policy in (("beside_budgeted", background.job_budget().threads, "PASSIVE"),
                                 ("beside_unbudgeted", os.cpu_count(), None)):
        part = result[key]
        assert part["started_training"] and len(part["rates"]) == 2 and part["ratio"] > 0
        assert part["budget"]["threads"] == threads and part["budget"]["wait_policy"] == policy
        job = train_runs.TrainJob.load(tmp_path / part["job"])
        assert train_runs.job_status(job, None, known=False) == "stopped"
    assert "goal: budgeted ratio >= 0.5" in bb.report(result)
