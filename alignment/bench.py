"""How long preference training takes: a straightforward TRL setup against ours (``make bench``).

Both sides train the same LoRA adapter (r=8 on q/k/v/o) on the same pairs for the same epochs
with the same learning rate, on the embedded SmolLM2-135M-Instruct, in one process, one after the
other. What differs is only how the work is organised:

============================  ==========================  =====================================
                              straightforward             ours (``TrainConfig`` defaults)
============================  ==========================  =====================================
reference log-probs (DPO)     a reference forward every   computed once before training
                              step                        (``precompute_ref_log_probs``)
LM head (DPO, CPU)            every position              completion positions only
sequence cap                  ``max_length=128``          ``max_length=192`` (nothing truncated
                                                          either way: the longest pair has 116)
threads                       torch default               probe: 1 or all cores, the faster
arithmetic (CPU)              float32                     bfloat16 autocast where the CPU has
                                                          AVX-512 BF16 / AMX (``precision``)
============================  ==========================  =====================================

Where ours runs in bf16, ours is also run in fp32 (``precision="fp32"``, same seed), so the table
separates what bf16 buys from the rest, and what it costs in learning: the held-out preference
accuracy and mean margin (``alignment.evaluate.preference_accuracy`` on the stance test prompts,
towards the side trained for) and the final training reward margin, fp32 beside bf16.

Not used, and why: ``padding_free=True`` is "temporarily unavailable" in TRL 1.16's DPO (it warns
and falls back to padding, ``trl/trainer/dpo_config.py`` help text) and ORPO has no such option;
bfloat16 on a CPU *without* AVX-512 BF16 made a 1760x576x1536 matmul 6x slower than float32
(so ``precision="auto"`` detects it, ``alignment.train_cpu.cpu_has_bf16``);
length-grouped batches save about 6% of the padded tokens but freeze the batch composition of a
50-pair set (``TrainConfig.group_by_length``, off by default).

Goals on the 2-core machine (issue 14): DPO <= 60 s, ORPO <= 45 s for 50 pairs x 3 epochs;
``format_bench`` says whether ours meets them.

Timed: building the trainer (tokenisation, reference pass) plus ``trainer.train()``. Our total
wall time, with saving the adapter and drawing the curves, is reported beside it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from decoding.models import LM, load_model

from .data import load_dataset, load_stance_records, to_chat_rows
from .evaluate import Subject, preference_accuracy
from .train import TrainConfig, lora_config, resolve_precision, train

STRAIGHTFORWARD = {"batch_size": 8, "max_length": 128}
GOALS_S = {"dpo": 60.0, "orpo": 45.0}       # issue 14, 50 pairs x 3 epochs on 2 cores
# Speed options off by default, each measured on its own on top of ours (same seed), with what it
# costs in learning. SmolLM2-135M has 30 decoder layers.
VARIANTS: dict[str, dict[str, Any]] = {"shared prompt": {"share_prompt": True},
                                       "top 8 layers, lower cached": {"top_layers": 8},
                                       "eager attention": {"attention": "eager"}}
HELD_OUT = "stance-test"


def straightforward_run(method: str, lm: LM, config: TrainConfig, output_dir: Path) -> dict[str, Any]:
    """Plain TRL: chat rows, batch 8, ``max_length=128``, fp32 on CPU, a reference forward at every
    DPO step, torch's default threads, random batches. Returns seconds and the last losses."""
    from datasets import Dataset

    dataset = load_dataset(config.dataset, config.data_size, config.support_ratio)
    rows = to_chat_rows(dataset.pairs, lm.tokenizer)
    common = dict(output_dir=str(output_dir), num_train_epochs=config.epochs,
                  per_device_train_batch_size=STRAIGHTFORWARD["batch_size"],
                  max_length=STRAIGHTFORWARD["max_length"], learning_rate=config.learning_rate,
                  beta=config.beta, seed=config.seed, logging_steps=1, save_strategy="no",
                  report_to="none", disable_tqdm=True, use_cpu=lm.device.type == "cpu", bf16=False,
                  activation_checkpointing=False)
    kwargs = dict(model=copy.deepcopy(lm.model), train_dataset=Dataset.from_list(rows),
                  processing_class=lm.tokenizer, peft_config=lora_config(config))
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "dpo":
            from trl import DPOConfig, DPOTrainer

            trainer = DPOTrainer(args=DPOConfig(precompute_ref_log_probs=False, **common), **kwargs)
        elif method == "orpo":
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

            trainer = ORPOTrainer(args=ORPOConfig(**common), **kwargs)
        else:
            raise ValueError(f"method={method!r}: the benchmark covers dpo and orpo")
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.train()
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"seconds": round(seconds, 1), "steps": trainer.state.global_step,
            "threads": torch.get_num_threads(), "first_loss": losses[0], "last_loss": losses[-1]}


def our_run(method: str, lm: LM, config: TrainConfig, output_dir: Path) -> dict[str, Any]:
    """``train()`` with ``config`` (our defaults): trainer build + training seconds, wall time,
    and the adapter's held-out preference accuracy and margin (``held_out``)."""
    result = train(config, output_dir, model=lm, progress=False)
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    meta = result.meta
    return {"seconds": meta["train_s"], "wall_s": meta["wall_time_s"], "steps": meta["steps"],
            "threads": meta["threads"], "precision": meta["precision"], "first_loss": losses[0],
            "last_loss": losses[-1],
            "final_metrics": {k: meta["final_metrics"][k] for k in
                              ("rewards/margins", "rewards/accuracies") if k in meta["final_metrics"]},
            "held_out": held_out(result.lm, lm, config, result.out_dir)}


def held_out(policy: LM, base: LM, config: TrainConfig, adapter: Path) -> dict[str, Any] | None:
    """Preference accuracy and mean margin on the held-out stance test pairs, towards the side
    the adapter was trained for (None for data that is not the stance set)."""
    if config.dataset != "stance":
        return None
    target = "support" if (config.support_ratio is None or config.support_ratio >= 0.5) else "oppose"
    subject = Subject(f"{config.method}-{config.precision}", str(adapter), method=config.method,
                      beta=config.beta, target=target)
    found = preference_accuracy(policy, base, subject, load_stance_records(HELD_OUT), chat=config.chat)
    return {k: found[k] for k in ("accuracy", "mean_margin", "pairs")}


def bench_training(data_size: int = 50, epochs: int = 3, methods: Sequence[str] = ("dpo", "orpo"),
                   model: LM | None = None, dataset: str = "stance",
                   variants: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Time a straightforward TRL run and ours for each method, side by side in this process;
    where ours runs in bf16, ours in fp32 too (same seed); then each of ``variants`` (default
    ``VARIANTS``: label -> ``TrainConfig`` changes on top of ours).

    Returns ``{method: {"straightforward": {...}, "ours": {...}, "ours_fp32": {...} or None,
    "speedup": x, "bf16_speedup": x or None, "goal_s": s, "variants": {label: {..., "vs_ours":
    x}}}, "load_before": ...}`` with seconds per run. Takes minutes (about 10 optimizer steps'
    worth of forward passes per pair); not a test.
    """
    variants = VARIANTS if variants is None else variants
    lm = model or load_model(device="cpu")
    precision = resolve_precision("auto", torch.device(lm.device.type))
    results: dict[str, Any] = {"model": lm.name, "pairs": data_size, "epochs": epochs,
                               "cpu_count": os.cpu_count(), "precision": precision, "load_before": _load()}
    scratch = Path(tempfile.mkdtemp(prefix="declab-bench-"))
    try:
        for method in methods:
            config = TrainConfig(method=method, dataset=dataset, data_size=data_size, epochs=epochs)
            _note(f"{method}: straightforward run ...")
            plain = straightforward_run(method, lm, config, scratch / f"{method}-plain")
            _note(f"{method}: straightforward {plain['seconds']} s; our run ({precision}) ...")
            ours = our_run(method, lm, config, scratch / f"{method}-ours")
            _note(f"{method}: ours {ours['seconds']} s")
            fp32 = None
            if ours["precision"] != "fp32":
                _note(f"{method}: our run in fp32 ...")
                fp32 = our_run(method, lm, dataclasses.replace(config, precision="fp32"),
                               scratch / f"{method}-ours-fp32")
                _note(f"{method}: ours in fp32 {fp32['seconds']} s")
            measured = {}
            for label, changes in variants.items():
                _note(f"{method}: ours + {label} ...")
                run = our_run(method, lm, dataclasses.replace(config, **changes),
                              scratch / f"{method}-{len(measured)}")
                measured[label] = {**run, "changes": changes,
                                   "vs_ours": round(ours["seconds"] / run["seconds"], 2)}
                _note(f"{method}: ours + {label} {run['seconds']} s")
            results[method] = {"straightforward": plain, "ours": ours, "ours_fp32": fp32,
                               "speedup": round(plain["seconds"] / ours["seconds"], 2),
                               "bf16_speedup": round(fp32["seconds"] / ours["seconds"], 2) if fp32 else None,
                               "goal_s": GOALS_S.get(method), "variants": measured}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["load_after"] = _load()
    return results


def _note(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _load() -> float | None:
    """The 1-minute load average: how busy the shared machine was (timings depend on it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def format_bench(results: dict[str, Any]) -> str:
    """The side-by-side table for the terminal: seconds per side, the ratios, the goal, and the
    learning-quality numbers of our fp32 and bf16 runs."""
    lines = [f"preference training on {results['model']}: {results['pairs']} pairs x {results['epochs']} "
             f"epochs, {results['cpu_count']} CPUs, ours in {results['precision']}, load "
             f"{results['load_before']} -> {results['load_after']}",
             f"  {'method':6s} {'TRL plain':>10s} {'ours fp32':>10s} {'ours':>8s} {'plain/ours':>10s} "
             f"{'fp32/ours':>9s} {'goal':>6s}  held-out acc / margin (fp32 | ours); train margin"]
    for method in ("dpo", "ipo", "orpo", "simpo"):
        if method not in results:
            continue
        row = results[method]
        plain, ours, fp32 = row["straightforward"], row["ours"], row["ours_fp32"]
        goal = row.get("goal_s")
        met = "–" if goal is None else ("met" if ours["seconds"] <= goal else "missed")
        quality = " | ".join(_quality(run) for run in (fp32, ours) if run is not None)
        lines.append(f"  {method:6s} {plain['seconds']:9.1f}s {_seconds(fp32):>10s} {ours['seconds']:7.1f}s "
                     f"{row['speedup']:9.2f}x {_ratio(row.get('bf16_speedup')):>9s} "
                     f"{met:>6s}  {quality}")
        for label, run in row.get("variants", {}).items():
            lines.append(f"    + {label:<28s} {run['seconds']:7.1f}s  ours/this {run['vs_ours']:.2f}x  "
                         f"plain/this {plain['seconds'] / run['seconds']:.2f}x  {_quality(run)}")
    return "\n".join(lines)


def _seconds(run: dict[str, Any] | None) -> str:
    return "–" if run is None else f"{run['seconds']:.1f}s"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _quality(run: dict[str, Any]) -> str:
    held = run.get("held_out")
    held_text = "–" if held is None else f"{held['accuracy']:.0%} / {held['mean_margin']:+.2f}"
    margin = run["final_metrics"].get("rewards/margins")
    return held_text + ("" if margin is None else f"; {margin:+.2f}")


def profile_training(config: TrainConfig, model: LM, rows: int = 25) -> str:
    """Where the time of one of our runs goes: ``train(config)`` under ``torch.profiler`` (CPU
    ops), the ``rows`` ops with the most self time. The profiler adds overhead, so read the
    shares, not the seconds; fewer pairs (``data_size``) keep the trace small."""
    from torch.profiler import ProfilerActivity, profile

    scratch = Path(tempfile.mkdtemp(prefix="declab-profile-"))
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train(config, scratch / "adapter", model=model, progress=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m alignment.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dpo,orpo", help="comma-separated (default dpo,orpo)")
    parser.add_argument("--pairs", type=int, default=50, help="stance pairs (default 50)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    parser.add_argument("--no-variants", action="store_true", help="skip the shared-prompt and top-layers runs")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the comparison: profile one of our runs per method (CPU ops by self time)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    lm = load_model(device="cpu")
    if args.profile:
        for method in methods:
            config = TrainConfig(method=method, dataset="stance", data_size=args.pairs, epochs=args.epochs)
            print(f"{method}: {args.pairs} pairs x {args.epochs} epochs, ours\n"
                  + profile_training(config, lm))
        return 0
    results = bench_training(args.pairs, args.epochs, methods, lm, variants={} if args.no_variants else None)
    print(format_bench(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
