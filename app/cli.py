"""``declab``: the Decoding Lab command line.

Each command lives in its own ``app/cli_<topic>.py`` module with a ``register(subparsers)``
function. User errors (``DecodingLabError``) print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from app.interrupts import accept_interrupts
from decoding.errors import DecodingLabError

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
    accept_interrupts()        # a background launch may have inherited SIGINT ignored
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DecodingLabError as exc:
        print(f"declab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("declab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
