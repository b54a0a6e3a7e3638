"""Run directories: ``runs/NAME/<timestamp>/``, marked incomplete until the study has finished.

Every study writes into a fresh directory whose ``status.json`` says ``"incomplete"`` from the
first moment, and is switched to ``"complete"`` (atomically, by rename) only after the last file
is written. A run that was interrupted or crashed half-way therefore never looks finished: its
status stays ``"incomplete"`` and records why it stopped.

    with open_run("degeneration", params={...}) as run:
        write_text_atomic(run.file("report.md"), ...)
    # status.json: {"status": "complete", ...}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from decoding.errors import DecodingLabError
from decoding.io import write_json_atomic

STATUS_FILE = "status.json"
COMPLETE, INCOMPLETE = "complete", "incomplete"
DEFAULT_ROOT = Path("runs")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Run:
    """One run directory and its status file."""

    name: str
    path: Path
    started: str
    params: dict[str, Any]
    started_clock: float = 0.0

    def file(self, relative: str) -> Path:
        """A path inside the run directory (parent folders created)."""
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _write_status(self, status: str, **info: Any) -> None:
        write_json_atomic(self.path / STATUS_FILE, {
            "name": self.name, "status": status, "started": self.started,
            "updated": _now(), "params": self.params, **info})

    def progress(self, **info: Any) -> None:
        """Record progress while running (the status stays ``incomplete``)."""
        self._write_status(INCOMPLETE, **info)

    def complete(self, **info: Any) -> None:
        self._write_status(COMPLETE, elapsed_s=round(time.perf_counter() - self.started_clock, 2),
                           **info)

    def abandon(self, reason: str) -> None:
        self._write_status(INCOMPLETE, stopped_by=reason,
                           elapsed_s=round(time.perf_counter() - self.started_clock, 2))


def new_run(name: str, root: str | os.PathLike = DEFAULT_ROOT,
            params: dict[str, Any] | None = None) -> Run:
    """Create ``root/name/<UTC timestamp>/`` with ``status.json`` = incomplete."""
    if not name or "/" in name or name.startswith("."):
        raise DecodingLabError(f"run name {name!r} is not allowed; allowed: a plain folder name")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / name
    base.mkdir(parents=True, exist_ok=True)
    path, suffix = base / stamp, 1
    while True:
        try:
            path.mkdir()
            break
        except FileExistsError:  # two runs in the same second
            suffix += 1
            path = base / f"{stamp}-{suffix}"
    run = Run(name=name, path=path, started=_now(), params=dict(params or {}),
              started_clock=time.perf_counter())
    run._write_status(INCOMPLETE)
    return run


@contextmanager
def open_run(name: str, root: str | os.PathLike = DEFAULT_ROOT,
             params: dict[str, Any] | None = None) -> Iterator[Run]:
    """A new run, marked complete when the block ends normally and left incomplete (with the
    reason) when it raises, Ctrl-C included."""
    run = new_run(name, root, params)
    try:
        yield run
    except BaseException as exc:
        run.abandon(f"{type(exc).__name__}: {exc}".strip().rstrip(":"))
        raise
    run.complete()


def run_status(path: str | os.PathLike) -> str:
    """``complete``, ``incomplete``, or ``missing`` (no readable status file)."""
    try:
        return json.loads((Path(path) / STATUS_FILE).read_text())["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return "missing"


def list_runs(name: str, root: str | os.PathLike = DEFAULT_ROOT,
              complete_only: bool = False) -> list[Path]:
    """The run directories of study ``name``, oldest first."""
    base = Path(root) / name
    if not base.is_dir():
        return []
    runs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [p for p in runs if not complete_only or run_status(p) == COMPLETE]


def latest_run(name: str, root: str | os.PathLike = DEFAULT_ROOT,
               complete_only: bool = True) -> Path | None:
    runs = list_runs(name, root, complete_only)
    return runs[-1] if runs else None
