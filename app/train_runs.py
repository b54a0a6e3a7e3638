"""Training runs launched from the lab: the command, the background process, its live log.

No Streamlit here. A run is ``declab train`` (``app/cli_train.py``) started as a background
process with ``--progress-log``, so the lab stays responsive while it trains and the page draws
the curves from the JSON-lines file the trainer appends to (``alignment.train.progress_log_callback``).
Each run has a directory under ``runs/train-jobs/NAME`` holding ``job.json`` (what was started),
``train.log`` (the process's stdout and stderr), ``progress.jsonl``, ``stop_requested`` once
someone pressed Stop and, once it exited, ``exit_code``; the adapter itself goes to ``adapters/NAME`` and appears only when training
finished (``train`` publishes it atomically).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from alignment.data import parse_records, read_records, resolve_path
from alignment.train import TrainConfig
from app.background import JobBudget, job_budget, job_env, lower_priority
from app.cli_common import flag_name
from decoding.errors import DecodingLabError

ROOT = Path(__file__).resolve().parents[1]
# Overridable for a lab started by a test (the end-to-end test trains into a temporary directory).
ADAPTERS_DIR = Path(os.environ.get("DECLAB_ADAPTERS_DIR") or ROOT / "adapters")
JOBS_DIR = Path(os.environ.get("DECLAB_TRAIN_JOBS_DIR") or ROOT / "runs" / "train-jobs")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
ERROR_PREFIX = "declab: error: "
USER_ERROR_EXIT = 2   # app.cli's exit code for a DecodingLabError

# The logged quantities drawn live, in panel order ("rewards/*" as TRL names them).
CURVE_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


# --------------------------------------------------------------------------- the command

def train_command(config: TrainConfig, out_dir: Path, progress_log: Path, model: str | None = None,
                  python: str = sys.executable) -> list[str]:
    """``python -m app.cli train`` with a flag for every field of ``config`` that differs from
    the default (the CLI builds the same ``TrainConfig`` back), ``--out`` and ``--progress-log``."""
    command = [python, "-m", "app.cli", "train", "--out", str(out_dir), "--progress-log", str(progress_log)]
    if model:
        command += ["--model", model]
    defaults = TrainConfig().to_dict()
    for name, value in config.to_dict().items():
        if value == defaults[name]:
            continue
        if isinstance(value, list):
            text = ",".join(value)
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        command += [flag_name(name), text]
    return command


def check_name(name: str, adapters_dir: Path | None = None, jobs_dir: Path | None = None) -> str:
    """``name`` if it can name a new adapter and run; else a ``DecodingLabError`` saying why."""
    adapters_dir, jobs_dir = adapters_dir or ADAPTERS_DIR, jobs_dir or JOBS_DIR
    if not NAME_PATTERN.fullmatch(name or ""):
        raise DecodingLabError(f"adapter name={name!r} is not allowed; allowed: letters, digits, '.', "
                               "'_' and '-', starting with a letter or digit, at most 80 characters")
    if (adapters_dir / name).exists() or (jobs_dir / name).exists():
        raise DecodingLabError(f"adapter name={name!r} is taken (adapters/{name} or its run exists); "
                               "allowed: a new name")
    return name


def default_name(config: TrainConfig, now: float | None = None) -> str:
    """e.g. ``dpo-stance-r1-n50-e3-0612-1530``: method, data, ratio, size, epochs, time."""
    dataset = Path(config.dataset).stem if config.dataset.endswith((".json", ".jsonl")) else config.dataset
    parts = [config.method, re.sub(r"[^A-Za-z0-9_-]+", "-", dataset)]
    if config.support_ratio is not None:
        parts.append(f"r{config.support_ratio:g}")
    if config.data_size is not None:
        parts.append(f"n{config.data_size}")
    parts.append(f"e{config.epochs}")
    parts.append(time.strftime("%m%d-%H%M%S", time.localtime(now)))
    return "-".join(parts)


def dataset_summary(name_or_path: str) -> tuple[str, int]:
    """``(format, records)`` of a shipped dataset or file: ``course`` (takes ``support_ratio``)
    or a TRL format. Raises the loader's ``DatasetError`` for a missing or malformed file."""
    path = resolve_path(name_or_path)
    fmt, parsed = parse_records(read_records(path), str(path))
    return fmt, len(parsed)


# --------------------------------------------------------------------------- a run on disk

@dataclass
class TrainJob:
    """A launched run: its name, where its files are, the command and when it started."""

    name: str
    out_dir: str
    job_dir: str
    command: list[str]
    started: float = field(default_factory=time.time)
    pid: int | None = None
    model: str | None = None          # the base model (None: the embedded one)
    budget: dict[str, Any] | None = None   # the CPU budget it ran under (app.background)

    @property
    def log_path(self) -> Path:
        return Path(self.job_dir) / "train.log"

    @property
    def progress_path(self) -> Path:
        return Path(self.job_dir) / "progress.jsonl"

    @property
    def exit_path(self) -> Path:
        return Path(self.job_dir) / "exit_code"

    @property
    def stop_path(self) -> Path:
        return Path(self.job_dir) / "stop_requested"

    def save(self) -> None:
        (Path(self.job_dir) / "job.json").write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, job_dir: Path) -> "TrainJob":
        return cls(**json.loads((job_dir / "job.json").read_text()))


def new_job(name: str, config: TrainConfig, model: str | None = None,
            adapters_dir: Path | None = None, jobs_dir: Path | None = None) -> TrainJob:
    """Check ``name``, create its run directory and the command (nothing is started yet).
    The directories default to ``adapters/`` and ``runs/train-jobs/`` of the repository."""
    adapters_dir, jobs_dir = adapters_dir or ADAPTERS_DIR, jobs_dir or JOBS_DIR
    check_name(name, adapters_dir, jobs_dir)
    job_dir = jobs_dir / name
    job_dir.mkdir(parents=True)
    out_dir = adapters_dir / name
    job = TrainJob(name=name, out_dir=str(out_dir), job_dir=str(job_dir),
                   command=train_command(config, out_dir, job_dir / "progress.jsonl", model),
                   model=model)
    job.save()
    return job


def launch(job: TrainJob, budget: JobBudget | None = None) -> subprocess.Popen:
    """Start ``job.command`` in the background (its own process group, cwd = the repository),
    stdout and stderr into ``train.log``, under the background CPU budget (``app.background``:
    half the cores' threads, passive OpenMP waiting, niceness +10) so the lab's pages keep
    generating (``budget``: another one, e.g. the benchmark's unbudgeted run); returns at once."""
    budget = budget or job_budget()
    env = job_env({**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "1"}, budget)
    with open(job.log_path, "ab") as log:
        process = subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=ROOT, env=env, start_new_session=True)
    lower_priority(process.pid, budget, group=True)
    job.pid = process.pid
    job.budget = asdict(budget)
    job.save()
    return process


def stop(job: TrainJob, process: subprocess.Popen | None = None) -> bool:
    """Ask the run's process group to stop, and note that the user asked (its status is then
    ``stopped``, not ``failed``). SIGINT, not SIGTERM: Python turns it into ``KeyboardInterrupt``,
    so ``train`` removes its partial output and ``declab`` exits with 130. Without the
    ``Popen`` (a run another lab process started) the group of ``job.pid`` is signalled.
    Returns whether a signal was sent."""
    if process is not None and process.poll() is not None:
        return False
    pid = process.pid if process is not None else job.pid
    if pid is None:
        return False
    job.stop_path.write_text(str(time.time()))
    try:
        os.killpg(pid, signal.SIGINT)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def record_exit(job: TrainJob, returncode: int) -> None:
    if not job.exit_path.exists():
        job.exit_path.write_text(str(returncode))


def list_jobs(jobs_dir: Path | None = None) -> list[TrainJob]:
    """Every run with a ``job.json`` under ``jobs_dir`` (default ``runs/train-jobs``), newest first."""
    jobs_dir = jobs_dir or JOBS_DIR
    if not jobs_dir.is_dir():
        return []
    jobs = []
    for path in jobs_dir.iterdir():
        try:
            jobs.append(TrainJob.load(path))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(jobs, key=lambda j: -j.started)


# Exit codes of a run stopped by a signal: declab's 130 after KeyboardInterrupt (SIGINT), or
# killed by SIGINT / SIGTERM before Python could handle it.
STOP_EXITS = (130, -signal.SIGINT, -signal.SIGTERM)


def pid_alive(pid: int | None) -> bool:
    """Whether a process ``pid`` exists (signal 0 checks without sending anything)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_status(job: TrainJob, returncode: int | None, known: bool, alive: bool = False) -> str:
    """``running``, ``finished`` (exit 0 and the adapter is there), ``stopped`` (Stop was
    pressed, or it exited as a stopped process does), ``failed`` or ``unknown`` (started by
    another lab process that is gone, still without an exit code). ``alive``: the process of a
    run this lab process did not start (``job.pid``) still exists."""
    if (known and returncode is None) or (not known and alive and not job.exit_path.exists()):
        return "running"
    if returncode is None and job.exit_path.exists():
        returncode = int(job.exit_path.read_text().strip() or -1)
    if returncode is None:
        if Path(job.out_dir).is_dir():
            return "finished"
        return "stopped" if job.stop_path.exists() else "unknown"
    if returncode == 0 and Path(job.out_dir).is_dir():
        return "finished"
    return "stopped" if job.stop_path.exists() or returncode in STOP_EXITS else "failed"


def same_model(a: str | None, b: str | None) -> bool:
    """Whether two model choices name the same base model (blank and None: the embedded one)."""
    return (a or "").strip() == (b or "").strip()


def running_on(model: str | None, jobs: list[TrainJob], statuses: dict[str, str]) -> TrainJob | None:
    """The run training on ``model`` now, if any: the lab trains one run per model at a time
    (two runs on two cores starved each other and the page)."""
    return next((j for j in jobs if statuses.get(j.name) == "running" and same_model(j.model, model)),
                None)


# --------------------------------------------------------------------------- reading the logs

def read_progress(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], bool]:
    """``(begin, entries, ended)`` of a progress log: the ``begin`` record (``max_steps``), the
    logged entries in order, and whether the ``end`` record is there. A line still being written
    (no newline yet, or not valid JSON) is skipped."""
    begin, entries, ended = None, [], False
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return begin, entries, ended
    for line in text.split("\n")[:-1]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        event = record.get("event")
        if event == "begin":
            begin = record
        elif event == "end":
            ended = True
        elif isinstance(record, dict):
            entries.append(record)
    return begin, entries, ended


def curve_frame(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """Long format ``step, metric, value`` of the per-step entries (the run summary, which
    has ``train_runtime``, is left out), for the live loss and reward charts."""
    rows = [{"step": e["step"], "metric": key, "value": float(e[key])}
            for e in entries if "train_runtime" not in e
            for key in CURVE_KEYS
            if isinstance(e.get(key), (int, float)) and not isinstance(e.get(key), bool)]
    return pd.DataFrame(rows, columns=["step", "metric", "value"])


def log_tail(path: Path, lines: int = 30, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of the process log; tqdm's carriage-return redraws collapse
    to their latest state."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    shown = []
    for line in text.split("\n"):
        redraws = [part for part in line.split("\r") if part.strip()]
        if redraws:
            shown.append(redraws[-1])
    return "\n".join(shown[-lines:])


def error_message(log_text: str) -> str | None:
    """The CLI's one-line user error (``declab: error: …``, exit 2), without the prefix."""
    for line in reversed(log_text.splitlines()):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX):]
    return None


# --------------------------------------------------------------------------- adapters

def list_adapters(adapters_dir: Path | None = None) -> list[Path]:
    """Adapter directories (with an ``adapter_config.json``) under ``adapters_dir`` (default
    ``adapters/``), newest first; hidden ones (runs still being written) are left out."""
    adapters_dir = adapters_dir or ADAPTERS_DIR
    if not adapters_dir.is_dir():
        return []
    found = [p for p in adapters_dir.iterdir()
             if not p.name.startswith(".") and (p / "adapter_config.json").is_file()]
    return sorted(found, key=lambda p: (-p.stat().st_mtime, p.name))


def display_path(path: Path | str) -> str:
    """``path`` relative to the repository when it lies inside it (what the sidebar shows)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
