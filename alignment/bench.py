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
============================  ==========================  =====================================

Not used, and why: ``padding_free=True`` is "temporarily unavailable" in TRL 1.16's DPO (it warns
and falls back to padding, ``trl/trainer/dpo_config.py`` help text) and ORPO has no such option;
bfloat16 on a CPU without AVX-512 BF16 made a 1760x576x1536 matmul 6x slower than float32;
length-grouped batches save about 6% of the padded tokens but freeze the batch composition of a
50-pair set (``TrainConfig.group_by_length``, off by default).

Timed: building the trainer (tokenisation, reference pass) plus ``trainer.train()``. Our total
wall time, with saving the adapter and drawing the curves, is reported beside it.
"""

from __future__ import annotations

import copy
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

from .data import load_dataset, to_chat_rows
from .train import TrainConfig, lora_config, train

STRAIGHTFORWARD = {"batch_size": 8, "max_length": 128}


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
    """``train()`` with ``config`` (our defaults): trainer build + training seconds, and wall time."""
    result = train(config, output_dir, model=lm, progress=False)
    losses = [entry["loss"] for entry in result.log_history if "loss" in entry]
    meta = result.meta
    return {"seconds": meta["train_s"], "wall_s": meta["wall_time_s"], "steps": meta["steps"],
            "threads": meta["threads"], "first_loss": losses[0], "last_loss": losses[-1],
            "final_metrics": {k: meta["final_metrics"][k] for k in
                              ("rewards/margins", "rewards/accuracies") if k in meta["final_metrics"]}}


def bench_training(data_size: int = 50, epochs: int = 3, methods: Sequence[str] = ("dpo", "orpo"),
                   model: LM | None = None, dataset: str = "stance") -> dict[str, Any]:
    """Time a straightforward TRL run and ours for each method, side by side in this process.

    Returns ``{method: {"straightforward": {...}, "ours": {...}, "speedup": x}, "load": ...}``
    with seconds per run. Takes minutes (about 10 optimizer steps' worth of forward passes per
    pair); not a test.
    """
    lm = model or load_model(device="cpu")
    results: dict[str, Any] = {"model": lm.name, "pairs": data_size, "epochs": epochs,
                               "cpu_count": os.cpu_count(), "load_before": _load()}
    scratch = Path(tempfile.mkdtemp(prefix="declab-bench-"))
    try:
        for method in methods:
            config = TrainConfig(method=method, dataset=dataset, data_size=data_size, epochs=epochs)
            _note(f"{method}: straightforward run ...")
            plain = straightforward_run(method, lm, config, scratch / f"{method}-plain")
            _note(f"{method}: straightforward {plain['seconds']} s; our run ...")
            ours = our_run(method, lm, config, scratch / f"{method}-ours")
            _note(f"{method}: ours {ours['seconds']} s")
            results[method] = {"straightforward": plain, "ours": ours,
                               "speedup": round(plain["seconds"] / ours["seconds"], 2)}
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
    """A few lines for the terminal."""
    lines = [f"preference training on {results['model']}: {results['pairs']} pairs x {results['epochs']} "
             f"epochs, {results['cpu_count']} CPUs, load {results['load_before']} -> {results['load_after']}"]
    for method in ("dpo", "ipo", "orpo", "simpo"):
        if method in results:
            row = results[method]
            plain, ours = row["straightforward"], row["ours"]
            lines.append(f"  {method:5s} straightforward {plain['seconds']:7.1f} s ({plain['threads']} threads)"
                         f"   ours {ours['seconds']:7.1f} s ({ours['threads']} threads; {ours['wall_s']:.1f} s "
                         f"with saving)   speed-up x{row['speedup']}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_bench(bench_training()))
