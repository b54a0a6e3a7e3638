"""``declab experiment NAME [options]``: run a study from ``experiments/``.

A study is one line in ``STUDIES``: its name and ``"module:function"``, a function taking the
remaining command-line arguments and returning an exit code (it parses its own options, so
``declab experiment NAME --help`` shows them). Modules are imported only when run.
"""

from __future__ import annotations

import argparse
import importlib

from decoding.errors import DecodingLabError

STUDIES: dict[str, str] = {
    "degeneration": "experiments.degeneration:main",
    "hw6": "experiments.hw6:main",
    "dpo-vs-orpo": "experiments.dpo_vs_orpo:main",
    "decoding-vs-alignment": "experiments.decoding_vs_alignment:main",
    "prefmath": "experiments.prefmath_study:main",
    "stance-judge": "experiments.stance_judge_eval:main",
    "realign": "experiments.realign:main",
    "stance-judge-tuned": "experiments.stance_judge_tuned:main",
}


def run_experiment(args) -> int:
    if args.name not in STUDIES:
        raise DecodingLabError(f"unknown study {args.name!r}; available: {', '.join(sorted(STUDIES))}")
    module_name, _, function = STUDIES[args.name].partition(":")
    runner = getattr(importlib.import_module(module_name), function)
    return int(runner(list(args.options)) or 0)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment", help="Run a study and write its report under runs/.",
        description="Studies: " + ", ".join(sorted(STUDIES)) + ". Options after the name belong "
        "to the study: declab experiment NAME --help.", add_help=True)
    p.add_argument("name", metavar="NAME", help="One of: " + ", ".join(sorted(STUDIES)) + ".")
    p.add_argument("options", nargs=argparse.REMAINDER, help="The study's own options.")
    p.set_defaults(func=run_experiment)
