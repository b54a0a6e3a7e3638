"""``declab``: the Decoding Lab command line.

Each command lives in its own ``app/cli_<topic>.py`` module with a ``register(subparsers)``
function. User errors (``DecodingLabError``) print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from app.interrupts import accept_interrupts

COMMAND_MODULES = [
    "app.cli_generate",
    "app.cli_prefmath",
    "app.cli_demo",
    "app.cli_diagnose",
    "app.cli_experiment",
    "app.cli_train",
    "app.cli_data",
    "app.cli_evaluate",
    "app.cli_stance",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="declab",
        description="Decoding Lab: watch a language model pick its next token.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # First, before the imports: loading torch and transformers takes seconds, and a Stop or a
    # Ctrl-C then must end the run as an interrupt (exit 130, one line), not as a traceback,
    # and must not be lost on a launch that inherited SIGINT ignored.
    accept_interrupts()
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("declab: interrupted", file=sys.stderr)
        return 130


def run(argv: list[str] | None) -> int:
    """Parse and run one command; a user error (``DecodingLabError``) is one line and exit 2."""
    from decoding.errors import DecodingLabError   # the decoding package imports torch

    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except DecodingLabError as exc:
        print(f"declab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
