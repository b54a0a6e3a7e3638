"""Decoding in bfloat16 against float32: ``python -m experiments.bench_dtype`` (also a section of
``make bench``).

Batch-1 decoding reads every weight once per token, so it is bound by memory bandwidth, and
bfloat16 weights are half the bytes: up to twice the tokens/s. Two numbers decide whether a
study may decode in bf16:

- **speed**: batch-1 greedy tokens/s of the same model loaded in float32 and in bfloat16,
  alternately, several times (median of each, and their ratio);
- **agreement**: the degeneration study's greedy rows (its prompts, raw and chat, its token
  budget) generated from both, compared token by token: the share of rows that are identical,
  and how far into a row the two agree (the first differing position; a row that never differs
  counts its full length).

Each side is token-identical to transformers' ``generate()`` on a model of its own dtype
(``tests/test_parity_embedded.py``); what differs here is the model's arithmetic, not our loop.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Sequence

from decoding import DecodingConfig, generate_batch, generate_ids, load_model
from decoding.models import LM
from decoding.prompts import Prompt, load_prompt_set

STUDY_PER_CATEGORY = 8        # experiments.degeneration.DegenerationSettings.per_category
STUDY_TOKENS = 200            # experiments.degeneration.DegenerationSettings.max_new_tokens
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first position where two token rows differ (a longer row differs where the shorter
    one ends), or None when they are identical."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def token_agreement(reference: Sequence[Sequence[int]], other: Sequence[Sequence[int]]) -> dict:
    """Row-paired agreement: ``identical`` (share of rows equal token for token),
    ``agreed_prefix`` (mean share of a reference row generated before the first difference; 1
    for identical rows, macro-averaged over rows) and ``first_difference`` (per row, None when
    identical)."""
    if len(reference) != len(other) or not reference:
        raise ValueError("token_agreement needs two non-empty lists of rows of the same length")
    firsts = [first_difference(a, b) for a, b in zip(reference, other)]
    shares = [1.0 if f is None else f / max(1, len(a)) for f, a in zip(firsts, reference)]
    return {"rows": len(reference), "identical": sum(f is None for f in firsts) / len(firsts),
            "agreed_prefix": sum(shares) / len(shares), "first_difference": firsts}


def study_prompts(per_category: int | None = STUDY_PER_CATEGORY) -> list[Prompt]:
    """The degeneration study's prompts: the first ``per_category`` of each category of the
    ``open_ended`` set (None: all)."""
    prompts = load_prompt_set("open_ended")
    if per_category is not None:
        prompts = prompts.subset(per_category=per_category)
    return list(prompts.prompts)


def greedy_rows(lm: LM, prompts: Sequence[Prompt], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations, raw prompts raw and chat prompts through the chat template, batched
    by mode (each row token-identical to its own ``generate``, ``decoding.batch``)."""
    config = DecodingConfig(max_new_tokens=max_new_tokens)
    rows: dict[str, list[int]] = {}
    for chat in (False, True):
        group = [p for p in prompts if p.chat == chat]
        if group:
            gens = generate_batch(lm, [p.text for p in group], config, chat=chat)
            rows.update({p.id: list(g.sequences[0].token_ids) for p, g in zip(group, gens)})
    return [rows[p.id] for p in prompts]


def decode_speed(lms: dict[str, LM], tokens: int, repeats: int) -> dict[str, list[float]]:
    """Batch-1 greedy tokens/s of each model, the models alternating in every repeat."""
    config = DecodingConfig(max_new_tokens=tokens, min_new_tokens=tokens)
    rates: dict[str, list[float]] = {name: [] for name in lms}
    for lm in lms.values():      # warm-up: the fast path's self-check, first allocations
        generate_ids(lm, lm.encode(PROMPT, chat=True), DecodingConfig(max_new_tokens=2), trace=False)
    for _ in range(repeats):
        for name, lm in lms.items():
            ids = lm.encode(PROMPT, chat=True)
            start = time.perf_counter()
            gen = generate_ids(lm, ids, config, trace=False)
            rates[name].append(len(gen.token_ids) / (time.perf_counter() - start))
    return rates


def run_dtype_bench(lm: LM, lm_bf16: LM, tokens: int = 64, repeats: int = 3,
                    prompts: Sequence[Prompt] | None = None,
                    max_new_tokens: int = STUDY_TOKENS) -> dict:
    """Speed and greedy agreement of ``lm_bf16`` against ``lm`` (float32); prints a few lines."""
    rates = decode_speed({"fp32": lm, "bf16": lm_bf16}, tokens, repeats)
    fp32, bf16 = statistics.median(rates["fp32"]), statistics.median(rates["bf16"])
    print(f"  batch-1 greedy: fp32 {fp32:6.2f} tok/s, bf16 {bf16:6.2f} tok/s   x{bf16 / fp32:4.2f}",
          flush=True)
    prompts = list(prompts) if prompts is not None else study_prompts()
    agreement = token_agreement(greedy_rows(lm, prompts, max_new_tokens),
                                greedy_rows(lm_bf16, prompts, max_new_tokens))
    print(f"  degeneration study's greedy rows ({agreement['rows']} prompts, {max_new_tokens} tokens): "
          f"identical {agreement['identical']:.0%}, agreed prefix {agreement['agreed_prefix']:.0%} "
          "of a row on average", flush=True)
    return {"fp32_tok_s": fp32, "bf16_tok_s": bf16, "speedup": bf16 / fp32, "runs": rates,
            "max_new_tokens": max_new_tokens, "prompt_ids": [p.id for p in prompts], **agreement}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per speed run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating speed runs")
    parser.add_argument("--per-category", type=int, default=STUDY_PER_CATEGORY,
                        help="agreement: the study's first N prompts per category (0: all)")
    parser.add_argument("--max-new-tokens", type=int, default=STUDY_TOKENS,
                        help="agreement: tokens per greedy row (the study's 200)")
    args = parser.parse_args(argv)
    lm, lm_bf16 = load_model(device="cpu"), load_model(dtype="bfloat16", device="cpu")
    print("Decoding in bfloat16 vs float32 (the embedded model)")
    run_dtype_bench(lm, lm_bf16, args.tokens, args.repeats, study_prompts(args.per_category or None),
                    args.max_new_tokens)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
