"""What the Studies page needs besides Streamlit: reading ``runs/<study>/<timestamp>/`` and
running a study in a background process whose log the page tails.

Run directories follow ``experiments.runs`` (``status.json``: incomplete until the study has
written everything). A job is ``declab experiment NAME --quick`` as a child process of the lab
with stdout and stderr in a log file, so the page never blocks on it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.background import job_budget, job_env, lower_priority
from experiments.runs import STATUS_FILE, list_runs, run_status

ROOT = Path(__file__).resolve().parents[1]   # the repository: cwd of a study process
JOBS_DIR = ".jobs"                           # under the runs root; hidden, so never a study
DEFAULT_RUNS_ROOT = "runs"


# ---------------------------------------------------------------------- browsing

def study_names(root: str | os.PathLike) -> list[str]:
    """Folders under ``root`` that hold at least one run directory, sorted."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and list_runs(p.name, base))


def read_status(run: str | os.PathLike) -> dict:
    try:
        data = json.loads((Path(run) / STATUS_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def run_rows(root: str | os.PathLike, name: str) -> list[dict]:
    """The runs of study ``name``, newest first: run folder, status, start, last update, time."""
    rows = []
    for path in reversed(list_runs(name, root)):
        status = read_status(path)
        rows.append({"run": path.name, "status": run_status(path),
                     "started": status.get("started"), "updated": status.get("updated"),
                     "elapsed s": status.get("elapsed_s"),
                     "stopped by": status.get("stopped_by")})
    return rows


@dataclass
class RunFiles:
    report: str | None            # report.md
    tables: list[Path] = field(default_factory=list)   # *.csv
    plots: list[Path] = field(default_factory=list)    # *.png
    status: dict = field(default_factory=dict)


def run_files(path: str | os.PathLike) -> RunFiles:
    """The report, tables and plots of one run directory (top level, sorted by name)."""
    path = Path(path)
    report = path / "report.md"
    return RunFiles(report=report.read_text(encoding="utf-8") if report.is_file() else None,
                    tables=sorted(path.glob("*.csv")), plots=sorted(path.glob("*.png")),
                    status=read_status(path))


# ---------------------------------------------------------------------- jobs

def study_command(name: str, root: str | os.PathLike = DEFAULT_RUNS_ROOT,
                  python: str = sys.executable) -> list[str]:
    """``declab experiment NAME --quick`` with this interpreter; ``--root`` only when the runs
    root is not the default (a study parses its own options, and every study writes under
    ``runs`` by default)."""
    command = [python, "-m", "app.cli", "experiment", name, "--quick"]
    if Path(root) != Path(DEFAULT_RUNS_ROOT):
        command += ["--root", str(root)]
    return command


@dataclass
class Job:
    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen
    started: float

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def running(self) -> bool:
        return self.returncode is None

    def stop(self) -> None:
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_job(name: str, command: list[str], root: str | os.PathLike,
              cwd: str | os.PathLike = ROOT) -> Job:
    """Start ``command`` in the background, stdout and stderr to ``root/.jobs/NAME-<time>.log``,
    under the background CPU budget (``app.background``) so the lab's pages keep generating."""
    log_dir = Path(root) / JOBS_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    budget = job_budget()
    env = job_env({**os.environ, "PYTHONUNBUFFERED": "1"}, budget)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=str(cwd), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
    lower_priority(process.pid, budget)
    return Job(name=name, command=list(command), log_path=log_path, process=process,
               started=time.time())


def log_lines(text: str) -> list[str]:
    """Lines as a terminal shows them: a carriage return (tqdm redrawing its bar) keeps only
    what follows it."""
    return [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]


def read_tail(path: str | os.PathLike, lines: int = 15, max_bytes: int = 64_000) -> str:
    """The last ``lines`` non-empty lines of a log (reading at most its last ``max_bytes``)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    shown = [line for line in log_lines(text) if line.strip()]
    return "\n".join(shown[-lines:])


_PROGRESS = re.compile(r"(\d+)/(\d+)")


def log_progress(text: str) -> tuple[int, int] | None:
    """(done, total) of the last ``n/N`` counter in the log (tqdm's bar), or None."""
    for line in reversed(log_lines(text)):
        for match in reversed(list(_PROGRESS.finditer(line))):
            done, total = int(match.group(1)), int(match.group(2))
            if 0 < total and done <= total:
                return done, total
    return None
