"""``declab data``: build preference data from the model's own behaviour.

``declab data anti-repetition --out FILE``: prompts whose greedy continuation loops become pairs
(chosen = the answer cut at its first natural end + EOS, rejected = the loop); the work is
``alignment.anti_repetition``. Bad input is a ``DecodingLabError``: one line, exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from alignment.anti_repetition import AntiRepetitionConfig, write_anti_repetition
from decoding.errors import DecodingLabError

from .cli_common import add_dataclass_arguments, dataclass_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="build preference data from the model's own failures",
                                   description="Build preference datasets from the model's behaviour.")
    commands = parser.add_subparsers(dest="data_command", metavar="KIND")
    commands.required = True
    p = commands.add_parser(
        "anti-repetition", help="pairs from greedy continuations that loop (TRL standard format)",
        description="Decode raw prompts greedily with end-of-sequence suppressed, keep those that "
                    "end in a loop, and write pairs: chosen = the answer up to its first natural "
                    "end + EOS, rejected = the looping continuation. Train on it with "
                    "declab train --dataset FILE --chat false.")
    p.add_argument("--out", required=True, help="JSON file to write (refused if it exists, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_dataclass_arguments(p, AntiRepetitionConfig)
    p.set_defaults(func=run_anti_repetition)


def run_anti_repetition(args) -> int:
    from decoding import load_model

    config = dataclass_from_args(AntiRepetitionConfig, args)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise DecodingLabError(f"--out={str(out)!r} already exists; pass --overwrite to replace it")
    if out.is_dir():
        raise DecodingLabError(f"--out={str(out)!r} is a directory; expected a .json file path")
    lm = load_model(args.model)

    def progress(done: int, total: int) -> None:
        print(f"\r  generated {done}/{total} prompts", end="" if done < total else "\n",
              file=sys.stderr, flush=True)

    summary = write_anti_repetition(lm, out, config, progress=progress)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(summary["skipped"].items())) or "none"
    print(f"{summary['pairs']} pairs from {summary['tried']} prompts written to {summary['path']} "
          f"({summary['seconds']} s on {summary['model']}); skipped: {skipped}")
    print(f"train on it: declab train --method dpo --dataset {summary['path']} --chat false --out adapters/NAME")
    return 0
