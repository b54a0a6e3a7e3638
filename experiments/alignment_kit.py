"""What the alignment studies share: training adapters into a run directory, answering prompts
with several models and decodings, measuring and writing ``results.jsonl`` / ``summary.csv`` /
figures, all atomically inside ``experiments.runs`` run directories.

The measurements themselves live in ``alignment.evaluate`` (stance, side effects, pairwise,
preference accuracy) and ``alignment.scoring`` (KL); this module only orchestrates them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from alignment.bootstrap import percent_interval
from alignment.evaluate import GenerationRecord, Subject, answer_models, summarise
from alignment.stance import StanceJudge
from alignment.train import TrainConfig, check_training_knob, train
from decoding.io import write_bytes_atomic, write_text_atomic
from decoding.models import LM
from decoding.specs import StrategySpec

from decoding.errors import check_range

from .runs import Run
from .settings_flags import add_setting_flag


def study_parser(name: str, doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """The options every alignment study takes: ``--quick``, ``--root``, ``--model``."""
    p = argparse.ArgumentParser(prog=f"declab experiment {name}", description=(doc or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--root", default="runs", help="where run directories go")
    p.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2-135M-Instruct)")
    return p


def add_training_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """``--support-ratio`` and ``--lr``: a study's training direction and step size, help from
    ``cls``'s fields (None: the study's default, validated by its settings)."""
    add_setting_flag(p, cls, "support_ratio", "--support-ratio")
    add_setting_flag(p, cls, "learning_rate", "--lr")


def training_changes(args: argparse.Namespace) -> dict[str, float]:
    """The settings ``add_training_flags``' options override (none given: none)."""
    return {k: v for k, v in ((k, getattr(args, k, None)) for k in ("support_ratio", "learning_rate"))
            if v is not None}


def check_counts(settings: Any, names: Sequence[str]) -> None:
    """Study settings that count things (pairs, epochs, samples, tokens, prompts) must be
    integers >= 1; None stays allowed where the field means "all"."""
    for name in names:
        value = getattr(settings, name)
        if value is not None:
            check_range(name, value, 1, integer=True)


def check_training_knobs(settings: Any, names: Sequence[str] = ("support_ratio", "learning_rate")) -> None:
    """The training knobs a study exposes (``support_ratio``, ``learning_rate``), refused exactly
    as ``TrainConfig`` refuses them (``check_training_knob``), before the study does any work."""
    for name in names:
        check_training_knob(name, getattr(settings, name))


def direction(support_ratio: float) -> str:
    """The stance a training set pulls towards, in words for a report."""
    if support_ratio == 1:
        return "*support*"
    if support_ratio == 0:
        return "*oppose*"
    return f"support on {support_ratio:.0%} of the pairs, oppose on the rest"


def note(text: str) -> None:
    print(f"[study] {text}", file=sys.stderr, flush=True)


@dataclass
class Trained:
    """An adapter trained inside the run: its label, path and the numbers it logged."""

    label: str
    path: Path
    config: TrainConfig
    seconds: float
    final_metrics: dict[str, float]
    log_history: list[dict]
    precision: str = "fp32"          # the arithmetic train() used (TrainConfig.precision resolved)

    @property
    def subject(self) -> Subject:
        return Subject.of_adapter(str(self.path), self.label)


def train_into_run(run: Run, label: str, config: TrainConfig, base: LM) -> Trained:
    """Train one adapter into ``run/adapters/label`` (atomic, as ``train`` always is)."""
    note(f"training {label}: {config.method} on {config.dataset} ({config.data_size or 'all'} pairs, "
         f"{config.epochs} epochs)")
    started = time.perf_counter()
    result = train(config, run.file(f"adapters/{label}"), model=base, progress=False)
    seconds = time.perf_counter() - started
    note(f"trained {label} in {seconds:.0f} s")
    return Trained(label, result.out_dir, config, round(seconds, 1), dict(result.meta["final_metrics"]),
                   list(result.log_history), result.meta.get("precision", "fp32"))


def precision_sentence(trained: Iterable[Trained]) -> str:
    """How the adapters were computed, for a report (bf16 autocast changes the numbers slightly)."""
    kinds = sorted({t.precision for t in trained})
    words = {"bf16": "bfloat16 autocast (LoRA weights and optimizer state in float32)", "fp32": "float32"}
    return "Training arithmetic: " + " and ".join(words.get(k, k) for k in kinds) + "."


def measure_models(base: LM, subjects: Sequence[Subject], items: Sequence[tuple[Any, str]],
                   specs: Sequence[StrategySpec], samples: int, chat: bool,
                   judge: StanceJudge | None,
                   on_model: Callable[[LM, Subject, list[GenerationRecord]], None] | None = None
                   ) -> list[GenerationRecord]:
    """``alignment.evaluate.answer_models`` with the study's progress lines."""
    return answer_models(base, subjects, items, specs, samples, chat, judge, on_model, note)


def cells(records: Sequence[GenerationRecord], extra: Callable[[list[GenerationRecord]], dict] | None = None
          ) -> list[dict]:
    """One summary row per (model, decoding), in first-seen order."""
    keys = list(dict.fromkeys((r.model, r.decoding) for r in records))
    rows = []
    for model, decoding in keys:
        group = [r for r in records if r.model == model and r.decoding == decoding]
        row = {"model": model, "decoding": decoding, **summarise(group)}
        row["mean_chars"] = sum(len(r.text) for r in group) / len(group)
        for name, (low, high) in row["ci"].items():        # flat, for summary.csv
            row[f"{name}_low"], row[f"{name}_high"] = low, high
        if extra is not None:
            row.update(extra(group))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- files

def write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def write_csv(path: Path, rows: Sequence[dict]) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], (dict, list))))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _fmt(r.get(k)) for k in columns})
    return write_text_atomic(path, buffer.getvalue())


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 12, "axes.titlesize": 13})
    return plt


def save_figure(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


# Okabe–Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def with_ci(key: str, header: str) -> tuple[str, str, Callable[[dict], str]]:
    """A table column of a fraction with its 95 % interval over prompts: ``42% [30–55]``."""
    def cell(row: dict) -> str:
        return f"{100 * row[key]:.0f}% [{percent_interval(*row['ci'][key])}]"
    return key, header, cell


def md_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, Any]]) -> list[str]:
    """Markdown table lines: ``columns`` is (key, header, format) with format like ``{:.0%}``,
    or a function of the whole row (``with_ci``)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells_ = []
        for key, _, fmt in columns:
            value = r.get(key)
            if callable(fmt):
                cells_.append("–" if value is None else fmt(r))
            else:
                cells_.append("–" if value is None else (fmt.format(value) if fmt else str(value)))
        lines.append("| " + " | ".join(cells_) + " |")
    return lines
