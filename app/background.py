"""The CPU budget of background jobs started from the lab (training runs, studies).

A lecturer's page generates interactively in the lab's own process while a training run or a
study may be running beside it on the same few cores. Unbudgeted, the job takes every core with
as many torch (OpenMP) threads, and OpenMP's default wait policy spins its idle threads, so the
page's generation waits for cores the job holds (issue 17: 64 tokens took 6.8-25 s under load).
A job started from the lab therefore runs with

* ``threads`` torch/OpenMP threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``; torch's default
  thread count follows them, and ``TrainConfig.threads='auto'`` probes only up to it): half the
  cores, at least one, so the page keeps the other half;
* ``OMP_WAIT_POLICY=PASSIVE``: a waiting OpenMP thread sleeps instead of spinning on a core;
* a higher niceness (``nice``, +10): when both want a core, the scheduler favours the page.

The goal is that interactive generation keeps at least half its quiet speed beside a running
job; ``experiments.bench_background`` measures it (tokens/s alone, then beside a budgeted
training run). ``DECLAB_JOB_THREADS`` and ``DECLAB_JOB_NICE`` override the budget, for that
measurement or for a bigger machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

THREADS_ENV = "DECLAB_JOB_THREADS"
NICE_ENV = "DECLAB_JOB_NICE"


@dataclass(frozen=True)
class JobBudget:
    threads: int = field(metadata={"help": "torch/OpenMP threads of a background job (default: "
                                           "half the cores, at least 1)."})
    nice: int = field(default=10, metadata={"help": "Niceness added to a background job (0-19): "
                                                    "the interactive page wins a contested core."})
    wait_policy: str | None = field(default="PASSIVE", metadata={
        "help": "OMP_WAIT_POLICY of a background job: PASSIVE threads sleep while they wait "
                "(None: the OpenMP runtime's default, as the lab's own process)."})

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads={self.threads!r} is out of range; allowed: an integer >= 1")
        if not isinstance(self.nice, int) or not 0 <= self.nice <= 19:
            raise ValueError(f"nice={self.nice!r} is out of range; allowed: an integer in [0, 19]")


def job_budget(cpus: int | None = None, environ: dict[str, str] | None = None) -> JobBudget:
    """The budget for a job on a machine with ``cpus`` cores (default: this one's), with the
    ``DECLAB_JOB_THREADS`` / ``DECLAB_JOB_NICE`` overrides of ``environ``."""
    environ = os.environ if environ is None else environ
    cpus = cpus or os.cpu_count() or 1
    threads = int(environ.get(THREADS_ENV) or max(1, cpus // 2))
    nice = int(environ.get(NICE_ENV) or 10)
    return JobBudget(threads=threads, nice=nice)


def job_env(base: dict[str, str], budget: JobBudget) -> dict[str, str]:
    """``base`` with the budget's thread count and wait policy for every threading library a
    job may use (torch's OpenMP, MKL, OpenBLAS, the tokenizers' Rayon pool off)."""
    threads = str(budget.threads)
    env = {**base, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "OPENBLAS_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
    if budget.wait_policy:
        env["OMP_WAIT_POLICY"] = budget.wait_policy
    else:
        env.pop("OMP_WAIT_POLICY", None)
    return env


def lower_priority(pid: int, budget: JobBudget, group: bool = False) -> None:
    """Raise the niceness of a just-started job (its process group when ``group``: the job's
    children started later inherit it). Done from the lab after ``Popen`` rather than in a
    ``preexec_fn``, which is unsafe in a threaded server. A job that already exited is left."""
    if budget.nice <= 0:
        return
    which = os.PRIO_PGRP if group else os.PRIO_PROCESS
    try:
        os.setpriority(which, pid, max(os.getpriority(which, pid), budget.nice))
    except (ProcessLookupError, PermissionError):
        pass
