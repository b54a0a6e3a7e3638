"""``TrainConfig``, every knob of one preference-training run, explained once and validated once;
``TrainResult``, what a finished run returns.

The ranges live in ``RANGES`` so that the study settings that expose a training knob on their
command line (``experiments.alignment_kit``) refuse exactly what ``TrainConfig`` refuses, before
any work starts (``check_training_knob``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import TRAINING_DATASETS, held_out
from decoding.config import knob
from decoding.errors import check_range, out_of_range
from decoding.models import LM

METHODS = ("dpo", "ipo", "orpo", "simpo")
REPORT_TO = ("none", "wandb", "tensorboard")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
ATTENTIONS = ("sdpa", "eager")

# name -> check_range bounds of the numeric knobs (integers: ``integer=True``)
RANGES: dict[str, dict[str, Any]] = {
    "data_size": dict(low=1, integer=True, optional=True),
    "support_ratio": dict(low=0, high=1, optional=True),
    "epochs": dict(low=1, integer=True),
    "batch_size": dict(low=1, integer=True),
    "grad_accum": dict(low=1, integer=True),
    "beta": dict(low=0, low_open=True),
    # an AdamW step of 1 on a LoRA weight is no longer a small step: refused, not clipped
    "learning_rate": dict(low=0, high=1, low_open=True, high_open=True),
    "max_length": dict(low=8, integer=True),
    "simpo_gamma": dict(low=0),
    "seed": dict(low=0, integer=True),
    "lora_r": dict(low=1, integer=True),
    "lora_alpha": dict(low=0, low_open=True),
    "lora_dropout": dict(low=0, high=1, high_open=True),
    "top_layers": dict(low=1, integer=True, optional=True),
}


def check_training_knob(name: str, value: Any) -> None:
    """Refuse ``value`` for the ``TrainConfig`` field ``name`` as ``TrainConfig`` would."""
    check_range(name, value, **RANGES[name])


@dataclass(frozen=True)
class TrainConfig:
    """One preference-training run: method, data, optimisation, LoRA and runtime knobs.

    Validated at construction; ``to_dict()`` is what ``adapter_meta.json`` records.
    """

    method: str = knob("dpo", "Preference method: dpo (Rafailov et al. 2023, sigmoid loss on the "
                       "implicit reward margin), ipo (Azar et al. 2023, squared loss towards the "
                       "margin 1/(2 beta), length-averaged in TRL), orpo (Hong et al. 2024, SFT + "
                       "lambda * odds-ratio loss, no reference model) or simpo (Meng et al. 2024, "
                       "length-normalised margin with target gamma, no reference model).",
                       choices=METHODS)
    dataset: str = knob("stance", "Preference data: a shipped name (stance, anti-repetition; the "
                        "held-out stance-test and stance-judge are refused) or a .json/.jsonl file in the course schema {id, prompt, support, oppose} or "
                        "TRL's {prompt, chosen, rejected} (plain or conversational).")
    data_size: int | None = knob(None, "Train on the first N records of the file (the course's "
                                 "data_size knob, 10-50 in the homework); default all.")
    support_ratio: float | None = knob(None, "Course schema only: the first int(N * ratio) records "
                                       "prefer the 'support' answer, the rest 'oppose' (0..1); "
                                       "default 1.0. Files that already say chosen/rejected refuse it.")
    epochs: int = knob(3, "Passes over the pairs (the course's num_epoch, 1-3).")
    beta: float = knob(0.1, "DPO: beta of the implicit reward beta*log(pi/pi_ref); larger keeps the "
                       "policy closer to the reference. IPO: the regulariser tau (target margin "
                       "1/(2 tau)). ORPO: lambda, the weight of the odds-ratio term beside the NLL. "
                       "SimPO: the reward scale (the paper uses 2.0-2.5). Must be > 0.")
    learning_rate: float = knob(1e-4, "AdamW learning rate of the LoRA weights. TRL's default 1e-6 "
                                "is meant for full fine-tuning and leaves a 135M-parameter LoRA "
                                "adapter almost where it started after 21 steps; 1e-4 moves the "
                                "reward margin within one short run on 50 pairs without the "
                                "repetition collapse seen at 5e-3 (measured on the embedded model).")
    batch_size: int = knob(8, "Preference pairs per optimizer micro-batch (TRL "
                           "per_device_train_batch_size); each pair is two sequences.")
    grad_accum: int = knob(1, "Micro-batches accumulated per optimizer step.")
    max_length: int = knob(192, "Cap on prompt + completion tokens per sequence; longer ones lose "
                           "their end (keep_start). The stance pairs need at most 116 with "
                           "SmolLM2's chat template, so 192 never truncates them; batches are "
                           "padded to their longest sequence, never to this cap.")
    lora_r: int = knob(8, "LoRA rank r of the low-rank update B*A (Hu et al. 2021).")
    lora_alpha: float = knob(16.0, "LoRA scale alpha: the update is (alpha / r) * B*A.")
    lora_dropout: float = knob(0.0, "Dropout on the LoRA input, 0 <= p < 1 (0: deterministic runs).")
    target_modules: tuple[str, ...] = knob(("q_proj", "k_proj", "v_proj", "o_proj"),
                                           "Linear layers that get a LoRA adapter (comma-separated "
                                           "on the command line): the attention projections by default.")
    top_layers: int | None = knob(None, "Adapt only the top N decoder layers (LoRA on their "
                                  "target_modules only, PEFT layers_to_transform) and compute the "
                                  "frozen layers below them once per sequence, reusing their output "
                                  "in later epochs (alignment/layer_cache.py). Same gradients as "
                                  "without the cache; fewer adapted layers can learn less. None: "
                                  "every layer.")
    share_prompt: bool = knob(False, "Run each pair's shared prompt once, not once for the chosen "
                              "and once for the rejected answer: the answers run on the prompt's "
                              "keys and values (alignment/prompt_sharing.py). Exact up to float "
                              "rounding; not combined with top_layers.")
    seed: int = knob(0, "Seed of the LoRA initialisation, the data order and dropout.")
    chat: bool = knob(True, "Render prompts with the model's chat template and close each answer "
                      "with its end-of-turn token (what the chat-mode generator sees). False: raw "
                      "text, TRL appends EOS to the answers.")
    simpo_gamma: float = knob(0.5, "SimPO target margin gamma >= 0 (TRL subtracts gamma/beta from the "
                              "length-normalised log-prob margin); simpo only.")
    precompute_ref: bool = knob(True, "DPO/IPO: compute the reference log-probs once before training "
                                "and cache them (TRL precompute_ref_log_probs) instead of a "
                                "reference forward pass at every step; same losses, fewer passes.")
    group_by_length: bool = knob(False, "Batch pairs of similar token length together (transformers' "
                                 "group_by_length sampler): about 6% fewer padded tokens on the stance "
                                 "pairs, but on a small set the batches are then the same, longest "
                                 "first, in every epoch (no shuffling).")
    report_to: str = knob("none", "Where the trainer also logs: none, wandb or tensorboard (each "
                          "needs its package).", choices=REPORT_TO)
    device: str = knob("auto", "auto (CUDA when available, else CPU), cpu or cuda.", choices=DEVICES)
    precision: str = knob("auto", "Arithmetic of the forward and backward passes: bf16 (bfloat16 "
                          "autocast; the LoRA weights, their gradients and AdamW's state stay "
                          "float32, so the adapter is an ordinary float32 one), fp32, or auto: bf16 "
                          "where the hardware has bfloat16 arithmetic (a CUDA GPU that supports it; a "
                          "CPU with AVX-512 BF16 or AMX, read from the CPU flags), else fp32.",
                          choices=PRECISIONS)
    attention: str = knob("sdpa", "Attention kernel while training (transformers' "
                          "attn_implementation): sdpa (torch's scaled_dot_product_attention, the "
                          "loaded model's own) or eager (plain matmuls and softmax; on a CPU its "
                          "backward avoids the flash-attention CPU backward kernel). Decoding "
                          "afterwards uses the model's own again.", choices=ATTENTIONS)
    load_in_4bit: bool = knob(False, "Load the base in 4-bit NF4 (QLoRA, bitsandbytes) to fit large "
                              "models; CUDA only, and only when the base is loaded by name.")
    threads: int | str | None = knob("auto", "CPU threads for torch: a number, 'auto' (a 0.2 s "
                                     "probe picks 1, half or all cores: on a shared machine a busy "
                                     "core makes every multi-threaded op wait) or 'default' / None "
                                     "(leave torch's setting).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if isinstance(self.dataset, os.PathLike):
            object.__setattr__(self, "dataset", os.fspath(self.dataset))
        if isinstance(self.threads, str) and self.threads.strip().isdigit():
            object.__setattr__(self, "threads", int(self.threads))
        if self.threads is None:
            object.__setattr__(self, "threads", "default")
        self._check_choices()
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise out_of_range("dataset", self.dataset, "a shipped dataset name or a file path")
        if held_out(self.dataset):
            raise out_of_range("dataset", self.dataset,
                               f"a training set ({', '.join(TRAINING_DATASETS)}) or a file; "
                               f"{held_out(self.dataset)} is held out for evaluation")
        for name, bounds in RANGES.items():
            check_range(name, getattr(self, name), **bounds)
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise out_of_range("target_modules", self.target_modules,
                               "one or more module names, e.g. q_proj,v_proj")
        self._check_runtime()

    def _check_choices(self) -> None:
        for name, allowed in (("method", METHODS), ("report_to", REPORT_TO), ("device", DEVICES),
                              ("precision", PRECISIONS), ("attention", ATTENTIONS)):
            if getattr(self, name) not in allowed:
                raise out_of_range(name, getattr(self, name), ", ".join(allowed))
        for name in ("chat", "precompute_ref", "group_by_length", "load_in_4bit", "share_prompt"):
            if not isinstance(getattr(self, name), bool):
                raise out_of_range(name, getattr(self, name), "true or false")

    def _check_runtime(self) -> None:
        if self.threads not in ("auto", "default"):
            check_range("threads", self.threads, 1, integer=True,
                        allowed="an integer >= 1, 'auto' or 'default'")
        if self.share_prompt and self.attention != "sdpa":
            raise out_of_range("attention", self.attention, "sdpa with share_prompt (the shared-prompt "
                               "forward passes the prompt's keys and values to sdpa)")
        if self.share_prompt and self.top_layers is not None:
            raise out_of_range("share_prompt", True, "false with top_layers set (the lower-layer cache "
                               "keys whole sequences)")
        if self.load_in_4bit and self.device == "cpu":
            raise out_of_range("load_in_4bit", True, "false on device='cpu' (4-bit NF4 needs a CUDA GPU "
                               "and bitsandbytes)")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


@dataclass
class TrainResult:
    """A finished run: where the adapter lies, its metadata and the trainer's log.

    ``lm`` is the trained model (the base with the adapter attached, in eval mode), ready to
    generate; ``None`` once dropped. It is not part of the written result. ``main_process``: False
    in the other processes of a multi-process launch, which wrote nothing.
    """

    out_dir: Path
    meta: dict[str, Any]
    log_history: list[dict[str, Any]]
    lm: LM | None = field(default=None, repr=False, compare=False)
    main_process: bool = True
