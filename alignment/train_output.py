"""What a training run writes: the adapter directory, published atomically (a hidden
``.NAME.*.partial`` directory renamed into place at the end), ``adapter_meta.json`` and the
progress log another process can follow."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from decoding.errors import DecodingLabError, is_real
from decoding.models import LM

from .curves import reward_semantics
from .data import PreferenceDataset
from .train_config import TrainConfig

LOG_HISTORY = "log_history.json"
CURVES_PNG = "training_curves.png"
META_FORMAT = "decoding-lab-adapter/1"


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise DecodingLabError(f"out_dir={str(out_dir)!r} already exists; allowed: a new directory, or "
                               "overwrite=True (CLI: --overwrite) to replace it")


def partial_dir(out_dir: Path) -> Path:
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
        partial.chmod(0o755)  # mkdtemp makes it private; the published adapter is an ordinary directory
        return partial
    except OSError as exc:
        raise DecodingLabError(f"out_dir={str(out_dir)!r}: cannot create a directory beside it "
                               f"({exc.__class__.__name__}: {exc})") from None


def publish(partial: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished ``partial`` directory to ``out_dir``; an old ``out_dir`` is moved aside
    first and deleted only once the new one is in place."""
    check_out_dir(out_dir, overwrite)  # again: another run may have finished meanwhile
    if not out_dir.exists() and not out_dir.is_symlink():
        os.replace(partial, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    aside = old / "previous"
    os.replace(out_dir, aside)
    os.replace(partial, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def final_metrics(log_history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The last logged training step's numbers, plus TRL's run summary (``train_loss``, runtime)."""
    steps = [entry for entry in log_history if "loss" in entry and "train_runtime" not in entry]
    summary = next((entry for entry in reversed(log_history) if "train_runtime" in entry), {})
    metrics = {k: v for k, v in (steps[-1] if steps else {}).items() if is_real(v)}
    metrics.update({k: summary[k] for k in ("train_loss", "train_runtime") if is_real(summary.get(k))})
    return metrics


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def build_meta(config: TrainConfig, lm: LM, dataset: PreferenceDataset, lengths: dict[str, int],
               log_history: list[dict[str, Any]], runtime: dict[str, Any]) -> dict[str, Any]:
    meta = {
        "format": META_FORMAT,
        "base_model": lm.name,
        "base_fingerprint": lm.fingerprint or None,
        "method": config.method,
        "config": config.to_dict(),
        "dataset": {"name": str(config.dataset), "source": dataset.source, "format": dataset.format,
                    "sha256": dataset.sha256, "data_size": dataset.data_size,
                    "support_ratio": dataset.support_ratio, "support_count": dataset.support_count,
                    "pairs": len(dataset), "records_in_file": dataset.records_in_file},
        "tokens": lengths,
        "seed": config.seed,
        "reward_semantics": reward_semantics(log_history, config.method),
        "final_metrics": final_metrics(log_history),
        **runtime,
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if not lm.fingerprint:
        meta["base_fingerprint_note"] = ("not recorded: the base was loaded in 4 bits, whose packed "
                                         "weights do not fingerprint like the full-precision base")
    return meta


def progress_log_callback(path: str | os.PathLike):
    """A ``TrainerCallback`` appending to the JSON-lines file ``path``, one object per line, flushed
    at once: ``{"event": "begin", "max_steps", "epochs"}`` when training starts, then every
    ``log_history`` entry as the trainer logs it (``step`` and ``epoch`` included), then
    ``{"event": "end", "step"}``. The Trainer keeps ``log_history`` in memory until the end; this
    file lets another process (the lab's training page) draw the curves while the run goes on."""
    import json

    from transformers import TrainerCallback

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def append(record: dict[str, Any]) -> None:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    class ProgressLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            append({"event": "begin", "max_steps": state.max_steps, "epochs": args.num_train_epochs})

        def on_log(self, args, state, control, logs=None, **kwargs):
            append({**(logs or {}), "step": state.global_step, "epoch": state.epoch})

        def on_train_end(self, args, state, control, **kwargs):
            append({"event": "end", "step": state.global_step})

    return ProgressLog()
