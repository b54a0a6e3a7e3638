"""``make bench``: our loop against transformers' ``generate()`` in one process, as ratios.

The machine is shared and noisy, so the two sides run alternately, several times, and we report
the median of each and their ratio. Both sides generate exactly ``--tokens`` tokens
(``min_new_tokens = max_new_tokens``) and the bench checks that they produced the same tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from decoding import DecodingConfig, generate_ids, load_model
from decoding.io import write_json_atomic

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def reference_kwargs(c: DecodingConfig) -> dict:
    kw = dict(max_new_tokens=c.max_new_tokens, min_new_tokens=c.min_new_tokens)
    if c.strategy == "sample":
        kw.update(do_sample=True, top_k=c.top_k, top_p=c.top_p, temperature=c.temperature)
    elif c.strategy == "beam":
        kw.update(do_sample=False, num_beams=c.num_beams)
    else:
        kw.update(do_sample=False)
    return kw


def time_ours(lm, ids, config, trace=False):
    start = time.perf_counter()
    gen = generate_ids(lm, ids, config, trace=trace)
    return len(gen.token_ids) / (time.perf_counter() - start), gen.token_ids


def time_reference(lm, ids, config):
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(torch.tensor([ids], device=lm.device), **reference_kwargs(config))
    tokens = out[0, len(ids):].tolist()
    return len(tokens) / (time.perf_counter() - start), tokens


def run_generation_bench(lm, tokens: int, repeats: int) -> list[dict]:
    ids = lm.encode(PROMPT, chat=True)
    fixed = dict(max_new_tokens=tokens, min_new_tokens=tokens)
    cases = [("greedy", DecodingConfig(**fixed), False),
             ("top-p 0.9 sampling", DecodingConfig(strategy="sample", top_p=0.9, **fixed), False),
             ("beam-4", DecodingConfig(strategy="beam", num_beams=4, **fixed), False),
             ("greedy, tracing on vs off", DecodingConfig(**fixed), True)]
    generate_ids(lm, ids, DecodingConfig(max_new_tokens=4), trace=False)  # warm-up
    rows = []
    for name, config, tracing in cases:
        ours, other, same = [], [], True
        for _ in range(repeats):
            tps, a = time_ours(lm, ids, config, trace=tracing)
            ours.append(tps)
            tps, b = time_ours(lm, ids, config) if tracing else time_reference(lm, ids, config)
            other.append(tps)
            same &= a == b
        row = {"case": name, "ours_tok_s": statistics.median(ours),
               "other_tok_s": statistics.median(other), "same_tokens": same,
               "ours_runs": ours, "other_runs": other}
        row["ratio"] = row["ours_tok_s"] / row["other_tok_s"]
        rows.append(row)
        print(f"  {name:<28} ours {row['ours_tok_s']:6.2f} tok/s   other {row['other_tok_s']:6.2f} "
              f"tok/s   ratio {row['ratio']:5.2f}   same tokens: {same}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per case")
    parser.add_argument("--out", default="runs/bench", help="directory for the JSON report")
    args = parser.parse_args(argv)
    lm = load_model()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {lm.name}; "
          f"{args.tokens} tokens per run, {args.repeats} repeats")
    print("Generation: ours vs transformers generate() (last line: tracing on vs off)")
    rows = run_generation_bench(lm, args.tokens, args.repeats)
    report = {"created": datetime.now(timezone.utc).isoformat(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "generation": rows}
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    print(f"report: {write_json_atomic(Path(args.out) / f'bench-{stamp}.json', report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
