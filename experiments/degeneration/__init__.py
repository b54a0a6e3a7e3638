"""The degeneration study (``declab experiment degeneration [--quick]``): Holtzman et al.'s
Table 1, reproduced in shape on the embedded model, offline.

- ``strategies``: the compared decoding settings as strategy specs, and the reference numbers.
- ``study``: generation (batched), per-generation metrics, the run directory.
- ``report``: per-strategy aggregation, ``summary.csv``, figures, ``report.md``.
"""

from __future__ import annotations

import argparse
import os

from ..settings_flags import add_setting_flag
from .strategies import HOLTZMAN_REPETITION, QUICK_STRATEGIES, STUDY_STRATEGIES, resolve_strategies
from .study import DegenerationSettings, load_results, run_degeneration

__all__ = ["HOLTZMAN_REPETITION", "QUICK_STRATEGIES", "STUDY_STRATEGIES", "DegenerationSettings",
           "load_results", "main", "resolve_strategies", "run_degeneration"]


def build_parser(prog: str = "declab experiment degeneration") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=(
        "Continue the shipped open-ended openings (raw mode) and answer the chat questions with "
        "every study strategy, measure repetition, diversity and perplexity, probe "
        "self-reinforcement, and write runs/degeneration/<timestamp>/ (results.jsonl, "
        "summary.csv, figures, report.md beside Holtzman et al. 2020's Table 1). The run stays "
        "marked incomplete in status.json until everything is written."))
    p.add_argument("--quick", action="store_true", help=(
        "One prompt per category, 64 new tokens, strategies: " + ", ".join(QUICK_STRATEGIES)
        + " (about two minutes on 2 cores)."))
    add_setting_flag(p, DegenerationSettings, "max_new_tokens", "--max-new-tokens", int, "; quick: 64")
    add_setting_flag(p, DegenerationSettings, "per_category", "--per-category", int,
                     "; quick: 1; on the command line 0 means None")
    p.add_argument("--strategies", default=None, help=(
        "Study strategy labels separated by ';' (default: all): "
        + "; ".join(label for label, _ in STUDY_STRATEGIES)))
    add_setting_flag(p, DegenerationSettings, "seed", "--seed", int)
    add_setting_flag(p, DegenerationSettings, "batch_rows", "--batch-rows", int)
    p.add_argument("--threads", default="auto", help=(
        "torch CPU threads (default auto: torch's own choice, or 1 when the machine is already "
        "busy, i.e. the 1-minute load average >= the CPU count; OpenMP threads spin-wait, and on "
        "a shared 2-core machine 2 threads measured 4-6x slower than 1)."))
    p.add_argument("--engine", choices=("ours", "vllm"), default=None,
                   help=DegenerationSettings.__dataclass_fields__["engine"].metadata["help"])
    p.add_argument("--root", default="runs", help="Where run directories go (default: runs).")
    p.add_argument("--model", default=None, help="Model (default: the embedded SmolLM2-135M).")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def choose_threads(value: str) -> int | None:
    """The torch thread count for ``--threads`` (None: leave torch's default)."""
    if value != "auto":
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            from decoding.errors import DecodingLabError

            raise DecodingLabError(f"--threads={value!r}; allowed: auto or an integer >= 1")
        return threads
    cores = os.cpu_count() or 1
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores
    return 1 if busy else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    threads = choose_threads(args.threads)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    changes = {k: getattr(args, k) for k in ("max_new_tokens", "per_category", "seed", "batch_rows",
                                             "engine")
               if getattr(args, k) is not None}
    if changes.get("per_category") == 0:
        changes["per_category"] = None  # every prompt
    if args.strategies:
        changes["strategies"] = tuple(s.strip() for s in args.strategies.split(";") if s.strip())
    settings = (DegenerationSettings.quick_settings(**changes) if args.quick
                else DegenerationSettings(**changes))
    lm = None
    if args.model:
        from decoding import load_model

        lm = load_model(args.model)
    run_degeneration(lm, settings=settings, root=args.root, progress=args.progress)
    return 0
