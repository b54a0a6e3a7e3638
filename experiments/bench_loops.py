"""Loop detector cost against text length: ``python -m experiments.bench_loops`` (also the last
section of ``make bench``).

``find_loops`` claims linear cost for fixed settings (``decoding/diagnostics/loop_kinds/``'s
docstring); this measures it on model-like texts of 500 to 8,000 tokens — half ordinary prose
of varied sentences, then a template loop, so both passes have work — and reports milliseconds
per 1,000 tokens at each length. Linear cost shows as a flat ms / 1k tokens column; the exact
tail rule ``detect_loop`` (all periods up to n / 2, quadratic) is timed beside it for contrast.
No model is needed: the tokens are whitespace tokens with their exact pieces.
"""

from __future__ import annotations

import argparse
import statistics
import time

from decoding.diagnostics import detect_loop, find_loops, text_pieces

LENGTHS = (500, 1000, 2000, 4000, 8000)
SUBJECTS = ("the river", "a small boat", "the old miller", "my aunt", "the night train",
            "a grey heron", "the baker", "our neighbour")
VERBS = ("crossed", "watched", "painted", "followed", "remembered", "carried", "found")
PLACES = ("near the bridge", "before dawn", "in the square", "under the rain", "at the market")
SLOTS = ("horror", "terror", "fear", "awe", "wonder", "silence", "shock", "tears")


def bench_text(n_tokens: int) -> str:
    """Varied sentences for the first half, a template loop for the second (about n tokens)."""
    words: list[str] = []
    k = 0
    while len(words) < n_tokens // 2:
        words += (f"{SUBJECTS[k % 8].capitalize()} {VERBS[k % 7]} "
                  f"{SUBJECTS[(k // 8 + k) % 8]} {PLACES[k % 5]}, number {k}.").split()
        k += 1
    while len(words) < n_tokens:
        words += f"The animals are all in {SLOTS[k % 8]} {k}.".split()
        k += 1
    return " ".join(words[:n_tokens])


def _time(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def run_loop_bench(lengths=LENGTHS, repeats: int = 3) -> list[dict]:
    rows = []
    for n in lengths:
        pieces = text_pieces(bench_text(n))
        tokens = [p.strip() for p in pieces]
        kinds_s = _time(lambda: find_loops(tokens, pieces), repeats)
        exact_s = _time(lambda: detect_loop(tokens), repeats)
        found = find_loops(tokens, pieces)
        rows.append({"tokens": len(tokens), "find_loops_ms": 1000 * kinds_s,
                     "find_loops_ms_per_1k": 1e6 * kinds_s / len(tokens),
                     "detect_loop_ms": 1000 * exact_s,
                     "found": [f.kind for f in found]})
        r = rows[-1]
        print(f"{r['tokens']:>6} tokens  find_loops {r['find_loops_ms']:8.1f} ms "
              f"({r['find_loops_ms_per_1k']:6.1f} ms / 1k tokens)  detect_loop "
              f"{r['detect_loop_ms']:8.1f} ms  found: {', '.join(r['found']) or 'none'}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per length (median)")
    args = parser.parse_args(argv)
    run_loop_bench(repeats=args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
