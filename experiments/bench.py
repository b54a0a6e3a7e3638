"""``make bench``: our loop against transformers' ``generate()`` in one process, as ratios.

This machine is shared and noisy, so absolute tokens/s move from run to run; the sides are run
alternately, several times, and we report the median of each and their ratio. Both sides
generate exactly the same number of tokens (``min_new_tokens = max_new_tokens``) and the bench
checks that they produced the same tokens.

Sections:

1. generation: ours (Llama fast path), ours through transformers' forward (fast path off) and
   ``generate()``, for greedy, top-p sampling and beam-4; tracing on vs off (greedy, and top-p,
   whose trace keeps the what-if's deep record at every step);
2. batch-1 greedy against the memory-bandwidth bound: every weight byte is read once per token
   (the tied embedding once, as ``lm_head``), so tokens/s cannot exceed read bandwidth ÷ weight
   bytes; the bandwidth is measured in the same run (a ``sum`` over a buffer far larger than
   the caches);
3. batched throughput of ``decode_batch`` at batch 8 and 16 against batch 1;
4. mixed batches: the degeneration study's greedy and sampling strategies on 4 openings, as
   one ``generate_mixed`` call against one ``generate_batch`` call per strategy (same tokens).

5. preference training (``alignment.bench``): a straightforward TRL DPO / ORPO run against our
   ``TrainConfig`` defaults, same pairs, epochs and LoRA; ``--skip-training`` leaves it out.

6. the loop detector (``experiments.bench_loops``): ``find_loops`` on 500 to 8,000 tokens, ms
   per 1,000 tokens (flat = linear).

7. decoding in bfloat16 (``experiments.bench_dtype``): batch-1 greedy tokens/s of the model
   loaded in float32 and in bfloat16, and their token agreement over the degeneration study's
   greedy rows; ``--skip-dtype`` leaves it out.

8. two distributions per step (``experiments.bench_guide``): the adapter's and the base's logits
   as two forwards (what ``decoding.guide.GuideStream`` does) against one batch with PEFT's
   per-row adapter switch.

OpenMP: unless ``OMP_WAIT_POLICY`` is already set, the bench picks it before torch loads, from the
load average. On a quiet machine libgomp's default (spin-waiting workers) is kept: it is what a
user's process runs with. When other processes keep the 2 cores busy (1-minute load above half
the cores) it sets ``PASSIVE``: spin-waiting then makes every parallel op wait for a worker that
another process has descheduled, a decode step takes 3-10x longer and the timings mostly measure
the neighbours. Both sides always run under the same policy, printed in the header.
"""

from __future__ import annotations

import os

if "OMP_WAIT_POLICY" not in os.environ and os.getloadavg()[0] > (os.cpu_count() or 1) / 2:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by libgomp when torch loads (above)

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from decoding import (DecodingConfig, fastpath, generate_batch, generate_ids,  # noqa: E402
                      generate_mixed, load_model)
from decoding.forward import decode_step, prefill  # noqa: E402
from decoding.io import write_json_atomic  # noqa: E402
from decoding.loop import decode_batch  # noqa: E402
from decoding.prompts import load_prompt_set  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
BANDWIDTH_BUFFER_BYTES = 512 * 2**20   # far beyond any CPU cache
BATCH_SIZES = (1, 8, 16)


@dataclass
class Case:
    name: str
    config: DecodingConfig
    trace: bool = False
    reference: bool = True          # compare with generate(); else tracing on vs off


@dataclass
class Result:
    """Tokens/s per side over the repeats; ``ours`` against ``other`` is the headline ratio."""

    name: str
    tps: dict[str, list[float]] = field(default_factory=dict)
    same_tokens: bool = True

    def median(self, side: str) -> float:
        return statistics.median(self.tps[side]) if self.tps.get(side) else float("nan")

    @property
    def ratio(self) -> float:
        return self.median("ours") / self.median("other")

    def to_dict(self) -> dict:
        return {"case": self.name, "same_tokens": self.same_tokens, "ratio": self.ratio,
                **{f"{side}_tok_s": self.median(side) for side in self.tps},
                "runs": self.tps}


def _reference_kwargs(c: DecodingConfig) -> dict:
    kw = dict(max_new_tokens=c.max_new_tokens, min_new_tokens=c.min_new_tokens)
    if c.strategy == "sample":
        kw.update(do_sample=True, top_k=c.top_k, top_p=c.top_p, temperature=c.temperature)
    elif c.strategy == "beam":
        kw.update(do_sample=False, num_beams=c.num_beams)
    else:
        kw.update(do_sample=False)
    return kw


def _time_ours(lm, ids, config: DecodingConfig, trace: bool = False, fast: bool = True
               ) -> tuple[float, list[int]]:
    previous = fastpath.set_enabled(fast)
    try:
        start = time.perf_counter()
        gen = generate_ids(lm, ids, config, trace=trace)
        elapsed = time.perf_counter() - start
    finally:
        fastpath.set_enabled(previous)
    return len(gen.token_ids) / elapsed, gen.token_ids


def _time_reference(lm, ids, config: DecodingConfig) -> tuple[float, list[int]]:
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(torch.tensor([ids], device=lm.device), **_reference_kwargs(config))
    elapsed = time.perf_counter() - start
    tokens = out[0, len(ids):].tolist()
    return len(tokens) / elapsed, tokens


def run_generation_bench(lm, tokens: int = 64, repeats: int = 3) -> list[Result]:
    ids = lm.encode(PROMPT, chat=True)
    fixed = dict(max_new_tokens=tokens, min_new_tokens=tokens)
    cases = [
        Case("greedy", DecodingConfig(**fixed)),
        Case("top-p 0.9 sampling", DecodingConfig(strategy="sample", top_p=0.9, seed=0, **fixed)),
        Case("beam-4", DecodingConfig(strategy="beam", num_beams=4, **fixed)),
        Case("greedy, tracing on vs off", DecodingConfig(**fixed), trace=True, reference=False),
        # the what-if's deep record (decoding.recorder.prefix_depth) runs only where a stage cut:
        # every step of a top-p run, no step of a greedy one
        Case("top-p 0.9, tracing on vs off", DecodingConfig(strategy="sample", top_p=0.9, seed=0, **fixed),
             trace=True, reference=False),
    ]
    # warm-up: first calls pay one-off allocation costs (and the fast path's self-check)
    generate_ids(lm, ids, DecodingConfig(max_new_tokens=4), trace=False)
    print(f"  {'case':<26} {'ours':>8} {'other':>8} {'ratio':>6}  {'fast path off':>13}  "
          "same tokens")
    results = []
    for case in cases:
        sides = ["ours", "other"] + (["ours_fastpath_off"] if case.reference else [])
        res = Result(case.name, {side: [] for side in sides})
        for _ in range(repeats):
            tps, ours = _time_ours(lm, ids, case.config, trace=case.trace)
            res.tps["ours"].append(tps)
            if case.reference:
                tps, ref = _time_reference(lm, ids, case.config)
                res.tps["other"].append(tps)
                res.same_tokens &= ours == ref
                tps, plain = _time_ours(lm, ids, case.config, fast=False)
                res.tps["ours_fastpath_off"].append(tps)
                res.same_tokens &= plain == ref
            else:  # tracing overhead: the same loop without tracing
                tps, ref = _time_ours(lm, ids, case.config, trace=False)
                res.tps["other"].append(tps)
                res.same_tokens &= ours == ref
        results.append(res)
        off = f"{res.median('ours_fastpath_off'):6.2f} tok/s" if case.reference else " " * 12
        print(f"  {res.name:<26} {res.median('ours'):8.2f} {res.median('other'):8.2f} "
              f"{res.ratio:6.2f}  {off}  {res.same_tokens}", flush=True)
    return results


# --------------------------------------------------------------------------- bandwidth bound

def weight_bytes_per_token(model) -> int:
    """Bytes of weights a batch-1 decode step reads: every parameter once (tied tensors once);
    an untied input embedding only contributes one row, so it is left out."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or embed.weight.data_ptr() != head.weight.data_ptr():
        total -= embed.weight.numel() * embed.weight.element_size()
    return total


def read_bandwidth(repeats: int = 7) -> float:
    """Memory read bandwidth in bytes/s: the median of full ``sum`` passes over a 512 MiB buffer."""
    buffer = torch.ones(BANDWIDTH_BUFFER_BYTES // 4, dtype=torch.float32)
    buffer.sum()                                         # pages touched, threads awake
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        buffer.sum()
        times.append(time.perf_counter() - start)
    return BANDWIDTH_BUFFER_BYTES / statistics.median(times)


def decode_rate(lm, ids: list[int], steps: int) -> float:
    """Batch-1 greedy decode steps per second through ``forward.py`` (prefill excluded)."""
    with torch.inference_mode():
        logits, state, _ = prefill(lm.model, torch.tensor([ids]), None)
        start = time.perf_counter()
        for _ in range(steps):
            logits, _ = decode_step(lm.model, logits.argmax(-1), state)
        return steps / (time.perf_counter() - start)


def run_bandwidth_bench(lm, loop_tps: float, tokens: int = 64, repeats: int = 3) -> dict:
    ids = lm.encode(PROMPT, chat=True)
    weights = weight_bytes_per_token(lm.model)
    bandwidths, rates = [], []
    for _ in range(repeats):  # alternate, so both see the same neighbours
        bandwidths.append(read_bandwidth())
        rates.append(decode_rate(lm, ids, tokens))
    bandwidth = statistics.median(bandwidths)
    bound = bandwidth / weights
    step = statistics.median(rates)
    report = {"weight_bytes_per_token": weights, "read_bandwidth_gb_s": bandwidth / 1e9,
              "bound_tok_s": bound, "decode_step_tok_s": step, "decode_step_fraction": step / bound,
              "loop_greedy_tok_s": loop_tps, "loop_fraction": loop_tps / bound,
              "bandwidth_runs_gb_s": [b / 1e9 for b in bandwidths], "decode_runs_tok_s": rates}
    print(f"  weights read per token {weights / 1e6:.0f} MB; read bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s -> bound {bound:.1f} tok/s")
    print(f"  decode steps alone   {step:6.2f} tok/s = {100 * step / bound:4.0f} % of the bound")
    print(f"  whole greedy loop    {loop_tps:6.2f} tok/s = {100 * loop_tps / bound:4.0f} % of the "
          "bound (prefill, chain and bookkeeping included)", flush=True)
    return report


# --------------------------------------------------------------------------- batched throughput

def batch_prompts(lm, count: int) -> list[list[int]]:
    """The first ``count`` raw-mode openings of the ``open_ended`` set (different lengths, so
    the batch is left-padded as in real use)."""
    raw = [p.text for p in load_prompt_set("open_ended").prompts if p.mode == "raw"]
    return [lm.encode(text, chat=False) for text in raw[:count]]


def run_batch_bench(lm, tokens: int = 64, repeats: int = 3) -> dict:
    prompts = batch_prompts(lm, max(BATCH_SIZES))
    config = DecodingConfig(max_new_tokens=tokens, min_new_tokens=tokens)
    tps: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    first_rows: dict[int, list[int]] = {}
    decode_batch(lm, prompts[:2], DecodingConfig(max_new_tokens=2), trace=False)   # warm-up
    for _ in range(repeats):
        for b in BATCH_SIZES:
            start = time.perf_counter()
            results, _ = decode_batch(lm, prompts[:b], config, trace=False)
            elapsed = time.perf_counter() - start
            tps[b].append(sum(len(r[0].token_ids) for r in results) / elapsed)
            first_rows[b] = results[0][0].token_ids
    single = statistics.median(tps[1])
    report = {"tokens_per_row": tokens, "sizes": {}}
    for b in BATCH_SIZES:
        rate = statistics.median(tps[b])
        report["sizes"][str(b)] = {"tok_s": rate, "speedup_vs_batch_1": rate / single,
                                   "first_row_same_as_alone": first_rows[b] == first_rows[1],
                                   "runs": tps[b]}
        print(f"  batch {b:>2}: {rate:7.2f} tok/s   x{rate / single:5.2f} batch 1   "
              f"first row same as alone: {first_rows[b] == first_rows[1]}", flush=True)
    return report


# --------------------------------------------------------------------------- mixed batches

def run_mixed_bench(lm, tokens: int = 64, prompts: int = 4, repeats: int = 2) -> dict:
    """The degeneration study's single-row strategies on ``prompts`` openings: one mixed batch
    (every strategy of a prompt side by side, the prompt prefilled once) against a batch per
    strategy. Both sides generate the same tokens (checked)."""
    from experiments.degeneration.strategies import resolve_strategies
    from experiments.degeneration.study import mixable

    strategies = [s for s in resolve_strategies(
        DecodingConfig(max_new_tokens=tokens, min_new_tokens=tokens))[0] if mixable(s)]
    raw = [p.text for p in load_prompt_set("open_ended").prompts if p.mode == "raw"][:prompts]
    requests = [(text, s.config) for text in raw for s in strategies]
    times: dict[str, list[float]] = {"mixed": [], "per strategy": []}
    same = True
    for _ in range(repeats):
        start = time.perf_counter()
        mixed = generate_mixed(lm, requests, chat=False)
        times["mixed"].append(time.perf_counter() - start)
        start = time.perf_counter()
        alone = {s.label: generate_batch(lm, raw, s.config, chat=False) for s in strategies}
        times["per strategy"].append(time.perf_counter() - start)
        for k, (text, config) in enumerate(requests):
            strategy = strategies[k % len(strategies)]
            same &= (mixed[k].token_ids == alone[strategy.label][raw.index(text)].token_ids)
    rows = len(requests)
    mixed_s, split_s = statistics.median(times["mixed"]), statistics.median(times["per strategy"])
    print(f"  {len(strategies)} strategies x {prompts} prompts = {rows} rows, {tokens} tokens: "
          f"mixed {rows * tokens / mixed_s:6.1f} tok/s, a batch per strategy "
          f"{rows * tokens / split_s:6.1f} tok/s   x{split_s / mixed_s:4.2f}   same tokens: {same}",
          flush=True)
    return {"strategies": [s.label for s in strategies], "prompts": prompts, "rows": rows,
            "tokens_per_row": tokens, "mixed_s": mixed_s, "per_strategy_s": split_s,
            "speedup": split_s / mixed_s, "same_tokens": same, "runs": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per case")
    parser.add_argument("--out", default="runs/bench", help="directory for the JSON report")
    parser.add_argument("--skip-training", action="store_true",
                        help="leave out the preference-training entry (straightforward, ours, ours in fp32, shared prompt, top-8 layers; DPO and ORPO: about 30-40 minutes on 2 cores)")
    parser.add_argument("--skip-dtype", action="store_true",
                        help="leave out decoding in bfloat16 vs float32 (speed, and agreement over the "
                             "degeneration study's 32 greedy rows of 200 tokens)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}, load {load[0]:.1f}")
    lm = load_model()
    reason = fastpath.unsupported_reason(lm.model)
    fast = "on" if reason is None else f"off ({reason})"
    print(f"model {lm.name} on {lm.device}; fast path: {fast}; {args.tokens} tokens per run, "
          f"{args.repeats} repeats\n")
    print("Generation: ours vs transformers generate() (tracing: on vs off), tok/s")
    results = run_generation_bench(lm, args.tokens, args.repeats)
    print("\nBatch-1 greedy vs the memory-bandwidth bound")
    bandwidth = run_bandwidth_bench(lm, results[0].median("ours"), args.tokens, args.repeats)
    print("\nBatched greedy throughput (decode_batch, left-padded prompts)")
    batched = run_batch_bench(lm, args.tokens, args.repeats)
    print("\nMixed batches: the degeneration study's greedy and sampling strategies")
    mixed = run_mixed_bench(lm, args.tokens)
    training = None
    if not args.skip_training:
        from alignment.bench import bench_training, format_bench

        print("\nPreference training: straightforward TRL vs ours (50 pairs, 3 epochs, LoRA r=8 q/k/v/o)")
        training = bench_training(model=lm)
        print(format_bench(training))
    from .bench_loops import run_loop_bench

    print("\nLoop detector: find_loops against text length (ms per 1,000 tokens flat = linear)")
    loops = run_loop_bench()
    dtype = None
    if not args.skip_dtype:
        from .bench_dtype import run_dtype_bench

        print("\nDecoding in bfloat16 vs float32: speed, and agreement over the degeneration study's greedy rows")
        dtype = run_dtype_bench(lm, load_model(dtype="bfloat16", device=lm.device), args.tokens, args.repeats)
    from .bench_guide import format_guide_bench, run_guide_bench

    print("\nTwo distributions per step (adapter + base): two forwards vs one mixed-adapter batch")
    guide = run_guide_bench(lm, args.tokens, args.repeats)
    print(format_guide_bench(guide))
    elapsed = time.perf_counter() - started
    report = {
        "created": datetime.now(timezone.utc).isoformat(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_average": list(load),
        "fast_path": reason is None, "elapsed_s": elapsed,
        "generation": [r.to_dict() for r in results],
        "bandwidth_bound": bandwidth, "batched": batched, "mixed": mixed, "training": training,
        "loops": loops, "decoding_dtype": dtype, "guide": guide,
    }
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = write_json_atomic(Path(args.out) / f"bench-{stamp}.json", report)
    print(f"\nreport: {path} ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
