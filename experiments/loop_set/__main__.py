"""``python -m experiments.loop_set``: the loop detectors scored on the labelled loop set.

Prints, for the chosen split (default: the held-out test split), the table of
``decoding.diagnostics.loop_set.evaluate`` for the detector with kinds (``find_loops``) and for
the old exact rule (``detect_loop``), on whitespace tokens or the embedded model's tokens.
"""

from __future__ import annotations

import argparse
import json

from decoding.diagnostics.loop_set import (exact_detector, evaluate, format_table, kinds_detector,
                                           load_loop_set)


def _model_tokenize():
    from decoding import load_model
    from decoding.diagnostics.summary import model_pieces

    tokenizer = load_model().tokenizer
    return lambda text: model_pieces(tokenizer, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "test", "all"), default="test",
                        help="Which split to score (default: test, the held-out prompts).")
    parser.add_argument("--tokenizer", choices=("whitespace", "model"), default="whitespace",
                        help="Tokens the detectors run on (model: the embedded model's).")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args(argv)
    items = load_loop_set(split=None if args.split == "all" else args.split)
    tokenize = {} if args.tokenizer == "whitespace" else {"tokenize": _model_tokenize()}
    results = {"find_loops": evaluate(items, kinds_detector(**tokenize)),
               "detect_loop (exact, old)": evaluate(items, exact_detector(**tokenize))}
    if args.json:
        print(json.dumps(results))
        return 0
    for name, result in results.items():
        print(f"## {name} — split {args.split}, {args.tokenizer} tokens, {len(items)} texts\n")
        print("\n".join(format_table(result)))
        print(f"missed: {', '.join(result['misses']) or 'none'}")
        print(f"false alarms: {', '.join(result['false_alarms']) or 'none'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
