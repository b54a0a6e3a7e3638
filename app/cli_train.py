"""``declab train``: align a model to preference pairs (DPO, IPO, ORPO, SimPO) with a LoRA adapter.

Presentation only: every knob is a ``TrainConfig`` field (its help text is the ``--help`` line)
and the work is ``alignment.train.train``. The same command runs under ``accelerate launch``
(``configs/accelerate/``); only the main process writes and prints the summary. Bad input is a ``DecodingLabError``: one line, exit 2.
"""

from __future__ import annotations

import argparse
import json

from alignment.train import TrainConfig, TrainResult, batch_line, train

from .cli_common import add_dataclass_arguments, dataclass_from_args

SUMMARY_KEYS = ("loss", "nll_loss", "rewards/margins", "rewards/accuracies")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="Align a model to preference pairs with DPO, IPO, ORPO or SimPO (a LoRA adapter).",
        description="Train a LoRA adapter on preference pairs with TRL and write it, with its metadata, "
                    "log and training curves, to --out. Example: declab train --method dpo --dataset "
                    "stance --support-ratio 1 --data-size 50 --epochs 3 --out adapters/support. Several GPUs: "
                    "accelerate launch --config_file configs/accelerate/multi_gpu_ddp.yaml -m app.cli train ...")
    p.add_argument("--out", required=True, help="Directory for the adapter; refused if it exists "
                   "(unless --overwrite). It appears only once training has finished.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing --out directory.")
    p.add_argument("--model", default=None, help="Base model: a local transformers directory, a .gguf "
                   "file or a hub id (default: the embedded SmolLM2-135M-Instruct).")
    p.add_argument("--quiet", action="store_true", help="No progress bar or per-step logs.")
    p.add_argument("--json", action="store_true", help="Print the adapter metadata as JSON.")
    p.add_argument("--progress-log", default=None, metavar="FILE",
                   help="Append every training log entry to this JSON-lines file as it is logged "
                        "(for a live view from another process, as the lab's training page does).")
    add_dataclass_arguments(p, TrainConfig)
    p.add_argument("--lr", dest="learning_rate", type=float, default=argparse.SUPPRESS,
                   metavar="LEARNING_RATE", help="Alias of --learning-rate.")
    p.set_defaults(func=run_train)


def summary_lines(result: TrainResult) -> list[str]:
    """What a run did, in a few lines: where, how long, the final numbers, how to use it."""
    meta = result.meta
    dataset = meta["dataset"]
    threads = f", {meta['threads']} thread(s)" if meta.get("threads") else ""
    metrics = meta["final_metrics"]
    numbers = "  ".join(f"{key} {metrics[key]:.4g}" for key in SUMMARY_KEYS if key in metrics)
    return [
        f"adapter written to {result.out_dir}",
        f"{meta['method'].upper()} on {meta['base_model']}: {dataset['pairs']} pairs of {dataset['name']}, "
        f"{meta['steps']} steps, {meta['wall_time_s']:.1f} s on {meta['device']}{threads}",
        batch_line(meta["config"]["batch_size"], meta.get("processes", 1), meta["config"]["grad_accum"]),
        f"final step: {numbers}",
        f"rewards are the {meta['reward_semantics']}",
        f"curves: {result.out_dir / 'training_curves.png'}",
        f"try it: declab generate \"...\" --adapter {result.out_dir}",
    ]


def run_train(args) -> int:
    config = dataclass_from_args(TrainConfig, args)
    result = train(config, args.out, model=args.model, overwrite=args.overwrite, progress=not args.quiet,
                   progress_log=args.progress_log)
    if not result.main_process:
        return 0  # another process of an `accelerate launch` run: the main one reports
    if args.json:
        print(json.dumps(result.meta, indent=1))
    else:
        print("\n".join(summary_lines(result)))
    return 0
