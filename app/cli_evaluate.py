"""``declab evaluate``: base vs adapters on held-out stance prompts, under several decodings.

Presentation only: the work is ``alignment.evaluate.evaluate``; every knob is an ``EvalConfig``
field (its help text is the ``--help`` line). Bad input is a ``DecodingLabError``: one line,
exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from alignment.evaluate import EvalConfig, before_after, evaluate, format_table
from decoding.errors import DecodingLabError
from decoding.io import write_json_atomic

from .cli_common import add_dataclass_arguments, dataclass_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate", help="stance, side effects and preference accuracy of adapters vs the base model",
        description="Generate answers to held-out stance prompts with the base model and each adapter "
                    "under several decodings; report stance (classifier and likelihood margin), EOS "
                    "rate, length, loop rate, rep-n, KL to the base, pairwise wins and held-out "
                    "preference accuracy. Example: declab evaluate --adapter adapters/support "
                    "--decodings 'greedy;sample:top_p=0.9' --samples 3")
    p.add_argument("--adapter", action="append", default=[], metavar="DIR",
                   help="an adapter directory written by declab train (repeat for several)")
    p.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--out", default=None, help="also write the JSON report to this file (atomically)")
    p.add_argument("--no-before-after", action="store_true", help="leave out the per-prompt answers")
    add_dataclass_arguments(p, EvalConfig)
    p.set_defaults(func=run_evaluate)


def run_evaluate(args) -> int:
    config = dataclass_from_args(EvalConfig, args)
    config.specs()                                   # bad specs: exit 2 before any loading
    config.check_engine()                            # ... and decodings the engine cannot run
    for adapter in args.adapter:
        if not Path(adapter).is_dir():
            raise DecodingLabError(f"--adapter={adapter!r} is not a directory; expected an adapter "
                                   "written by declab train")

    def note(text: str) -> None:
        print(f"[evaluate] {text}", file=sys.stderr, flush=True)

    report = evaluate(args.adapter, config, model_name=args.model, progress=note)
    if args.out:
        write_json_atomic(args.out, report.to_dict())
    if args.json:
        print(json.dumps(report.to_dict(), indent=1, default=str))
        return 0
    print(format_table(report))
    if not args.no_before_after:
        print(f"\nbefore / after ({report.config['decodings'][0]}, first sample):")
        print(before_after(report))
    print(f"\n({report.seconds} s)")
    return 0
