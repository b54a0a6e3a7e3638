"""Two distributions per step: two forwards, or one batch with PEFT's per-row adapter switch?
(``python -m experiments.bench_guide``; a section of ``make bench``.)

A two-model stage (``decoding.guide``: ``realign``, contrastive decoding with the base as
amateur) needs, at every step, the adapter's logits and the base's logits for the same prefix.
``decoding.guide.GuideStream`` runs them as two forwards, the second under PEFT's
``disable_adapter()``. PEFT can also mix adapters inside one batch: a LoRA layer called with
``adapter_names=["default", "__base__"]`` applies the adapter to the first row only (PEFT's
"mixed adapter batches", ``peft/tuners/lora/layer.py`` ``_mixed_batch_forward``). The two rows
then share every weight read, which is what a batch-1 decode step is bound by on a CPU.

This bench decodes the same greedy continuation both ways, alternately, and reports the time per
step of each, their ratio, and how far their logits differ (batch-2 matrix products do not
round like batch-1 ones, so equality is not expected; greedy tokens are compared too). The LoRA
is randomly initialised (``init_lora_weights=False``): the cost of a forward does not depend on
the values of the adapter's weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from decoding import load_model
from decoding.models import LM

PROMPT = "The lighthouse keeper opened the bottle and"


def with_random_lora(lm: LM, rank: int = 8, seed: int = 0):
    """The model wrapped in a PEFT LoRA (q/k/v/o, rank ``rank``) with non-zero random weights."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        init_lora_weights=False)
    return get_peft_model(lm.model, config).eval()


@torch.inference_mode()
def two_forwards(model, ids: torch.Tensor, steps: int) -> tuple[list[int], list[torch.Tensor], float]:
    """Greedy on the adapter, the base beside it: one forward per model per step."""
    out = model(input_ids=ids, use_cache=True)
    with model.disable_adapter():
        base = model(input_ids=ids, use_cache=True)
    cache_a, cache_b = out.past_key_values, base.past_key_values
    logits = [torch.stack([out.logits[0, -1], base.logits[0, -1]])]
    tokens = []
    started = time.perf_counter()
    for _ in range(steps):
        token = int(logits[-1][0].argmax())
        tokens.append(token)
        step = torch.tensor([[token]])
        out = model(input_ids=step, past_key_values=cache_a, use_cache=True)
        with model.disable_adapter():
            base = model(input_ids=step, past_key_values=cache_b, use_cache=True)
        cache_a, cache_b = out.past_key_values, base.past_key_values
        logits.append(torch.stack([out.logits[0, -1], base.logits[0, -1]]))
    return tokens, logits, time.perf_counter() - started


@torch.inference_mode()
def mixed_batch(model, ids: torch.Tensor, steps: int) -> tuple[list[int], list[torch.Tensor], float]:
    """The same, as one batch of two rows: row 0 with the adapter, row 1 without."""
    names = ["default", "__base__"]
    out = model(input_ids=ids.repeat(2, 1), use_cache=True, adapter_names=names)
    cache = out.past_key_values
    logits = [out.logits[:, -1]]
    tokens = []
    started = time.perf_counter()
    for _ in range(steps):
        token = int(logits[-1][0].argmax())
        tokens.append(token)
        out = model(input_ids=torch.tensor([[token], [token]]), past_key_values=cache, use_cache=True,
                    adapter_names=names)
        cache = out.past_key_values
        logits.append(out.logits[:, -1])
    return tokens, logits, time.perf_counter() - started


def run_guide_bench(lm: LM, steps: int = 64, repeats: int = 3) -> dict:
    model = with_random_lora(lm)
    ids = torch.tensor([lm.encode(PROMPT, chat=False)])
    times = {"two_forwards": [], "mixed_batch": []}
    found = {}
    for _ in range(repeats):
        for name, run in (("two_forwards", two_forwards), ("mixed_batch", mixed_batch)):
            tokens, logits, seconds = run(model, ids, steps)
            times[name].append(seconds / steps)
            found[name] = (tokens, logits)
    (ta, la), (tb, lb) = found["two_forwards"], found["mixed_batch"]
    same = next((i for i, (a, b) in enumerate(zip(ta, tb)) if a != b), None)
    compared = len(la) if same is None else same + 1
    gap = max(float((a - b).abs().max()) for a, b in zip(la[:compared], lb[:compared]))
    result = {"steps": steps, "repeats": repeats, "threads": torch.get_num_threads(),
              "two_forwards_ms": 1000 * statistics.median(times["two_forwards"]),
              "mixed_batch_ms": 1000 * statistics.median(times["mixed_batch"]),
              "same_greedy_tokens": same is None, "first_token_difference": same,
              "max_logit_difference": gap,
              # how far the adapter moves the logits: the gap above is small only against this
              "adapter_effect": max(float((row[0] - row[1]).abs().max()) for row in la),
              "runs_ms": {k: [1000 * t for t in v] for k, v in times.items()}}
    result["speedup"] = result["two_forwards_ms"] / result["mixed_batch_ms"]
    model.unload()
    return result


def format_guide_bench(r: dict) -> str:
    same = "yes" if r["same_greedy_tokens"] else f"no (first at step {r['first_token_difference']})"
    return (f"  two forwards per step        {r['two_forwards_ms']:7.1f} ms/step\n"
            f"  one mixed-adapter batch       {r['mixed_batch_ms']:7.1f} ms/step   "
            f"speed-up {r['speedup']:.2f}x\n"
            f"  same greedy tokens: {same}; largest logit difference {r['max_logit_difference']:.2e} "
            f"({r['steps']} steps, median of {r['repeats']}, {r['threads']} threads)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64, help="decode steps per run (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each side (default 3)")
    args = parser.parse_args(argv)
    print("Two distributions per step (adapter + base): two forwards vs one mixed-adapter batch")
    print(format_guide_bench(run_guide_bench(load_model(), args.steps, args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
