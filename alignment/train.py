"""Preference training with TRL + PEFT: DPO, IPO, ORPO and SimPO on a LoRA adapter.

``train(config, out_dir)`` loads the preference pairs, trains a LoRA adapter with the TRL trainer
of the method, and writes the adapter, its ``adapter_meta.json`` (base fingerprint, every
hyperparameter, dataset hash, final metrics, versions), ``log_history.json`` and
``training_curves.png``. The directory appears complete or not at all: the run writes into a
hidden ``.NAME.*.partial`` directory beside ``out_dir`` and renames it into place at the end.

TRL 1.16 facts this module relies on (paths under ``site-packages/trl``):

- DPO and IPO are ``trl.DPOTrainer`` with ``loss_type=["sigmoid"]`` / ``["ipo"]``; the config turns
  a string into a one-element list (``trainer/dpo_config.py:358``). With ``peft_config`` the
  reference model is the policy with its adapter disabled (``trainer/dpo_trainer.py:909``).
- ORPO is ``trl.experimental.orpo``; SimPO is ``trl.experimental.cpo`` with ``loss_type="simpo"``
  and ``cpo_alpha=0`` (no behaviour-cloning term; ``experimental/cpo/cpo_trainer.py:715``).
- The TRL configs default to ``bf16=True`` and gradient checkpointing (``trainer/base_config.py``);
  on CPU we pass ``use_cpu=True, bf16=False`` (fp32) and ``activation_checkpointing=False``,
  which also silences the ``gradient_checkpointing`` deprecation warning.

Speed on a CPU (measured, see ``alignment/bench.py``): cached reference log-probabilities, LM-head
scoring of the needed tokens only (DPO's fused head on CPU; the same head in place of ORPO/SimPO's
full logits), and a thread count chosen by a short probe (a contended core makes every
multi-threaded op wait for a descheduled thread).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.metadata
import importlib.util
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch

from decoding.config import knob
from decoding.errors import DecodingLabError
from decoding.io import write_json_atomic
from decoding.models import ADAPTER_META, LM, load_model

from .curves import plot_training_curves, reward_semantics
from .data import PreferenceDataset, load_dataset, to_chat_rows, to_trl_rows

METHODS = ("dpo", "ipo", "orpo", "simpo")
REPORT_TO = ("none", "wandb", "tensorboard")
DEVICES = ("auto", "cpu", "cuda")
LOG_HISTORY = "log_history.json"
CURVES_PNG = "training_curves.png"
META_FORMAT = "decoding-lab-adapter/1"


def _bad(name: str, value: Any, allowed: str) -> DecodingLabError:
    return DecodingLabError(f"{name}={value!r} is out of range; allowed: {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
    dataset: str = knob("stance", "Preference data: a shipped name (stance, stance-test) or a "
                        ".json/.jsonl file in the course schema {id, prompt, support, oppose} or "
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
    device: str = knob("auto", "auto (CUDA when available, else CPU), cpu or cuda. CUDA trains in "
                       "bfloat16 where supported; CPU in float32.", choices=DEVICES)
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
        for check in (self._check_choices, self._check_data, self._check_optimisation,
                      self._check_lora, self._check_runtime):
            check()

    def _check_choices(self) -> None:
        for name, allowed in (("method", METHODS), ("report_to", REPORT_TO), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise _bad(name, getattr(self, name), ", ".join(allowed))
        for name in ("chat", "precompute_ref", "group_by_length", "load_in_4bit"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, getattr(self, name), "true or false")

    def _check_data(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise _bad("dataset", self.dataset, "a shipped dataset name or a file path")
        if self.data_size is not None and not (_is_int(self.data_size) and self.data_size >= 1):
            raise _bad("data_size", self.data_size, "an integer >= 1, or None for all records")
        ratio = self.support_ratio
        if ratio is not None and not (_is_number(ratio) and 0 <= ratio <= 1):
            raise _bad("support_ratio", ratio, "0 <= support_ratio <= 1, or None")

    def _check_optimisation(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum"):
            if not (_is_int(getattr(self, name)) and getattr(self, name) >= 1):
                raise _bad(name, getattr(self, name), f"an integer {name} >= 1")
        if not (_is_number(self.beta) and self.beta > 0):
            raise _bad("beta", self.beta, "beta > 0")
        if not (_is_number(self.learning_rate) and 0 < self.learning_rate < 1):
            raise _bad("learning_rate", self.learning_rate, "0 < learning_rate < 1")
        if not (_is_int(self.max_length) and self.max_length >= 8):
            raise _bad("max_length", self.max_length, "an integer max_length >= 8")
        if not (_is_number(self.simpo_gamma) and self.simpo_gamma >= 0):
            raise _bad("simpo_gamma", self.simpo_gamma, "simpo_gamma >= 0")
        if not (_is_int(self.seed) and self.seed >= 0):
            raise _bad("seed", self.seed, "an integer seed >= 0")

    def _check_lora(self) -> None:
        if not (_is_int(self.lora_r) and self.lora_r >= 1):
            raise _bad("lora_r", self.lora_r, "an integer lora_r >= 1")
        if not (_is_number(self.lora_alpha) and self.lora_alpha > 0):
            raise _bad("lora_alpha", self.lora_alpha, "lora_alpha > 0")
        if not (_is_number(self.lora_dropout) and 0 <= self.lora_dropout < 1):
            raise _bad("lora_dropout", self.lora_dropout, "0 <= lora_dropout < 1")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise _bad("target_modules", self.target_modules, "one or more module names, e.g. q_proj,v_proj")

    def _check_runtime(self) -> None:
        if not (self.threads in ("auto", "default") or (_is_int(self.threads) and self.threads >= 1)):
            raise _bad("threads", self.threads, "an integer >= 1, 'auto' or 'default'")
        if self.load_in_4bit and self.device == "cpu":
            raise _bad("load_in_4bit", True, "false on device='cpu' (4-bit NF4 needs a CUDA GPU and "
                       "bitsandbytes)")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


@dataclass
class TrainResult:
    """A finished run: where the adapter lies, its metadata and the trainer's log.

    ``lm`` is the trained model (the base with the adapter attached, in eval mode), ready to
    generate; ``None`` once dropped. It is not part of the written result.
    """

    out_dir: Path
    meta: dict[str, Any]
    log_history: list[dict[str, Any]]
    lm: LM | None = field(default=None, repr=False, compare=False)


# --------------------------------------------------------------------------- data

def preference_rows(dataset: PreferenceDataset, tokenizer: Any, chat: bool) -> list[dict[str, Any]]:
    """TRL rows for the pairs: chat-template strings (``to_chat_rows``) or raw text / messages.

    In raw mode a plain-text prompt and completion are joined by one space when neither has
    whitespace at the join, so the completion starts on a token boundary (TRL warns otherwise,
    ``trainer/dpo_trainer.py:1111``) and "…manga?Yes" does not become one run-on word.
    """
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise DecodingLabError("chat=True but the model's tokenizer has no chat template; "
                                   "allowed here: chat=False (CLI: --chat false)")
        return to_chat_rows(dataset.pairs, tokenizer)
    rows = to_trl_rows(dataset.pairs)
    for row in rows:
        if isinstance(row["prompt"], str) and not row["prompt"][-1:].isspace():
            for key in ("chosen", "rejected"):
                if not row[key][:1].isspace():
                    row[key] = " " + row[key]
    return rows


def _token_count(tokenizer: Any, prompt: Any, completion: Any = None) -> int:
    if isinstance(prompt, str):
        text = prompt + (completion or "")
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    messages = list(prompt) + list(completion or [])
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=completion is None)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def sequence_lengths(rows: Sequence[dict[str, Any]], tokenizer: Any) -> list[tuple[int, int, int]]:
    """``(prompt, prompt + chosen, prompt + rejected)`` token counts per row, as the trainer sees them."""
    return [(_token_count(tokenizer, r["prompt"]), _token_count(tokenizer, r["prompt"], r["chosen"]),
             _token_count(tokenizer, r["prompt"], r["rejected"])) for r in rows]


def check_lengths(lengths: Sequence[tuple[int, int, int]], max_length: int) -> dict[str, int]:
    """Refuse prompts that fill ``max_length`` (TRL's DPO drops such rows silently,
    ``trainer/dpo_trainer.py:1140``); count the sequences that lose their end."""
    longest_prompt = max(p for p, _, _ in lengths)
    if longest_prompt >= max_length:
        raise _bad("max_length", max_length, f"max_length > {longest_prompt} (the longest prompt has "
                   f"{longest_prompt} tokens; a prompt must leave room for its answer)")
    longest = max(max(c, r) for _, c, r in lengths)
    truncated = sum((c > max_length) + (r > max_length) for _, c, r in lengths)
    return {"longest_prompt": longest_prompt, "longest_sequence": longest,
            "truncated_sequences": truncated, "max_length": max_length}


# --------------------------------------------------------------------------- runtime

def fastest_thread_count(candidates: Sequence[int] | None = None) -> int:
    """The thread count that runs a small stand-in for one transformer layer fastest.

    Why a probe: on a CPU shared with other busy processes every multi-threaded op waits for its
    slowest thread, and a thread whose core is taken waits a scheduler slice. Measured on the
    2-core development box with another process holding one core: a 1760x576 elementwise product
    took 8 ms with 2 threads and 0.23 ms with 1; a SmolLM2 forward over 16 x 110 tokens took
    15.5 s vs 6.4 s. Without such contention more threads should win (the matmuls split across
    cores); the probe decides rather than assumes. Median of 5 rounds per candidate (a lucky
    round under intermittent load does not decide), about 0.2 s in all.
    """
    default = torch.get_num_threads()
    candidates = sorted(set(candidates or (1, max(1, default // 2), default)))
    if len(candidates) == 1:
        return candidates[0]
    x, w = torch.randn(256, 576), torch.randn(1536, 576)
    timings = {}
    try:
        for n in candidates:
            torch.set_num_threads(n)
            rounds = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(2):
                    h = torch.nn.functional.linear(x, w)
                    h = torch.nn.functional.silu(h) * h + 1.0
                rounds.append(time.perf_counter() - start)
            timings[n] = sorted(rounds)[len(rounds) // 2]
    finally:
        torch.set_num_threads(default)
    return min(timings, key=timings.get)


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int | str):
    """Set torch's intra-op thread count for the run (CPU only) and restore it afterwards."""
    previous = torch.get_num_threads()
    if device.type != "cpu" or threads == "default":
        yield previous
        return
    chosen = fastest_thread_count() if threads == "auto" else int(threads)
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def completion_only_lm_head(device: torch.device):
    """Let TRL's fused LM head score only the completion tokens on CPU.

    ``add_fused_lm_head`` (``trainer/utils.py:1642``) projects only the positions that have a
    label when ``_use_triton(device)`` is true and every position otherwise, to keep tile shapes
    fixed for compiled devices (Neuron). On CPU nothing is compiled, so the compact path gives the
    same log-probs while skipping the prompt and padding positions: about half the LM-head work
    (49152 x 576 per position, forward and backward) for the stance pairs. The kernel's own
    ``_use_triton`` (``kernels/chunked_logprob.py:48``) is untouched: the tiles still run in torch.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if device.type != "cpu" or original is None:
        yield
        return
    trl_utils._use_triton = lambda dev: dev.type == "cpu" or original(dev)
    try:
        yield
    finally:
        trl_utils._use_triton = original


@contextlib.contextmanager
def quiet_progress(progress: bool):
    """Without ``progress``, silence the datasets ``map`` bars and TRL's precompute bar (which reads
    ``TQDM_DISABLE``, ``trainer/dpo_trainer.py:1210``); restore both afterwards."""
    if progress:
        yield
        return
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    previous = os.environ.get("TQDM_DISABLE")
    datasets.disable_progress_bars()
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


def _check_report_to(report_to: str) -> None:
    packages = {"wandb": ("wandb",), "tensorboard": ("tensorboard", "tensorboardX")}.get(report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise _bad("report_to", report_to, f"none, or install {packages[0]} (pip install {packages[0]})")


# --------------------------------------------------------------------------- base model

def _load_base(name: str | None, config: TrainConfig) -> LM:
    if not config.load_in_4bit:
        return load_model(name, device=config.device)
    if not torch.cuda.is_available():
        raise _bad("load_in_4bit", True, "false here: 4-bit NF4 needs a CUDA GPU and none is available")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise _bad("load_in_4bit", True, "false, or install bitsandbytes (pip install -e '.[gpu]')")
    return _load_4bit(name)


def _load_4bit(name: str | None) -> LM:
    """QLoRA base: NF4 weights with bfloat16 compute (Dettmers et al. 2023). Its fingerprint is left
    empty: packed 4-bit weights do not fingerprint like the full-precision base the adapter is
    later loaded on, so ``attach_adapter`` skips the check for such adapters."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from decoding.models import EMBEDDED_NAME, _eos_ids, ensure_embedded_cache

    if name is not None and name.endswith(".gguf"):
        raise _bad("load_in_4bit", True, "false for a .gguf base; 4-bit loading needs a transformers "
                   "directory or a hub id")
    embedded = name is None or name in ("embedded", EMBEDDED_NAME)
    source = str(ensure_embedded_cache()) if embedded else name
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quantization,
                                                 device_map={"": 0}, dtype=torch.bfloat16)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LM(model=model, tokenizer=tokenizer, name=EMBEDDED_NAME if embedded else name,
              device=torch.device("cuda"), fingerprint="", eos_token_ids=_eos_ids(model, tokenizer))


def _training_copy(model: LM | str | None, config: TrainConfig) -> tuple[LM, torch.device]:
    """The LM to train and its device. A caller's ``LM`` is deep-copied, so it stays the untouched
    base (TRL wraps the model it gets with PEFT layers and patches its ``forward``)."""
    if isinstance(model, LM):
        if config.load_in_4bit:
            raise _bad("load_in_4bit", True, "false when a loaded model is passed; 4-bit loading "
                       "happens when train() loads the base by name")
        if config.device != "auto" and config.device != model.device.type:
            raise _bad("device", config.device, f"auto or {model.device.type} (the passed model's device)")
        lm = dataclasses.replace(model, model=copy.deepcopy(model.model))
    else:
        lm = _load_base(model, config)
    return lm, torch.device(lm.device.type)


# --------------------------------------------------------------------------- reference-free forward

def fused_concatenated_forward(trainer, model, batch: dict[str, Any]) -> tuple:
    """ORPO/CPO's ``concatenated_forward`` without the (2B, L, vocab) logits tensor.

    TRL's version (``experimental/orpo/orpo_trainer.py:745``, ``experimental/cpo/cpo_trainer.py:792``)
    materialises every logit (16 x 116 x 49152 floats, 365 MB, for a batch of 8 stance pairs),
    takes a cross-entropy and a log-softmax over it, and back-propagates through slices and
    gathers that allocate zero-filled copies. Here TRL's fused LM head (``add_fused_lm_head``, the
    one its DPO trainer uses) returns the log-probability of each labelled token, scoring only
    the positions each term needs. Same quantities as TRL's:

    - ORPO: NLL over prompt + chosen tokens (by design, ``orpo_trainer.py:799``); CPO: NLL over the
      chosen answer, skipped when ``cpo_alpha == 0`` (SimPO).
    - per-row answer log-prob, averaged over answer tokens (ORPO; CPO's ipo/simpo) or summed.

    The ``logits/*`` metrics become the mean logit of the scored positions (TRL: of every
    position, padding included). Shapes: ``logp`` is (2B, L-1), zero where the label is -100.
    """
    orpo = not hasattr(trainer, "cpo_alpha")
    padding = trainer.padding_value if orpo else trainer.pad_token_id
    concatenated = trainer.concatenated_inputs(batch, padding_value=padding, device=trainer.accelerator.device)
    n = batch["chosen_labels"].shape[0]
    ids, attention = concatenated["concatenated_input_ids"], concatenated["concatenated_attention_mask"]
    answer = concatenated["concatenated_labels"]  # -100 on prompt and padding
    with_nll = orpo or trainer.cpo_alpha != 0
    chosen_targets = ids[:n].masked_fill(attention[:n] == 0, -100) if orpo else answer[:n]
    labels = torch.cat([chosen_targets, answer[n:]])
    out = model(input_ids=ids, attention_mask=attention, labels=labels, fused_lm_head=True, use_cache=False)
    logp = out.log_probs
    answer_mask = answer[:, 1:] != -100
    logps = (logp * answer_mask).sum(-1)
    if orpo or trainer.loss_type in ("ipo", "simpo"):
        logps = logps / answer_mask.sum(-1)
    nll = torch.zeros((), device=logp.device)
    if with_nll:
        nll_mask = labels[:n, 1:] != -100
        nll = -(logp[:n] * nll_mask).sum() / nll_mask.sum()
    scored = labels[:, 1:] != -100
    mean_logits = out.mean_logits.detach()
    return logps[:n], logps[n:], mean_logits[:n][scored[:n]], mean_logits[n:][scored[n:]], nll


def fused_head_trainer(base: type) -> type:
    """TRL's ``ORPOTrainer`` or ``CPOTrainer`` with ``fused_concatenated_forward``. The model must
    carry the fused head (``add_fused_lm_head``, added before PEFT wraps it)."""

    class FusedHead(base):
        def concatenated_forward(self, model, batch):
            if self.is_encoder_decoder or self.aux_loss_enabled:
                return super().concatenated_forward(model, batch)
            return fused_concatenated_forward(self, model, batch)

    FusedHead.__name__ = FusedHead.__qualname__ = f"FusedHead{base.__name__}"
    return FusedHead


# --------------------------------------------------------------------------- trainer

def lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")


def trl_arguments(config: TrainConfig, output_dir: Path, device: torch.device, progress: bool) -> dict[str, Any]:
    """Keyword arguments shared by the TRL configs of all four methods."""
    args = dict(
        output_dir=str(output_dir), num_train_epochs=config.epochs, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        beta=config.beta, max_length=config.max_length, seed=config.seed, data_seed=config.seed,
        logging_steps=1, save_strategy="no", report_to=config.report_to, disable_tqdm=not progress,
        activation_checkpointing=False, dataloader_num_workers=0, use_cpu=device.type == "cpu",
        bf16=device.type == "cuda" and torch.cuda.is_bf16_supported())
    if config.group_by_length:
        # The sampler reads the "length" column; keeping unused columns stops the Trainer from
        # dropping it before the sampler is built (the collators ignore extra keys).
        args.update(train_sampling_strategy="group_by_length", length_column_name="length",
                    remove_unused_columns=False)
    return args


def build_trainer(config: TrainConfig, lm: LM, rows: list[dict[str, Any]], lengths: Sequence[tuple[int, int, int]],
                  output_dir: Path, device: torch.device, progress: bool):
    """The TRL trainer of ``config.method`` over ``rows``, with a fresh LoRA adapter on ``lm.model``."""
    from datasets import Dataset
    from transformers import PrinterCallback, set_seed

    set_seed(config.seed)  # DPOTrainer creates the LoRA weights before Trainer seeds anything
    if config.group_by_length:
        rows = [dict(row, length=c + r) for row, (_, c, r) in zip(rows, lengths)]
    common = trl_arguments(config, output_dir, device, progress)
    kwargs = dict(model=lm.model, train_dataset=Dataset.from_list(rows), processing_class=lm.tokenizer,
                  peft_config=lora_config(config))
    try:
        if config.method in ("dpo", "ipo"):
            from trl import DPOConfig, DPOTrainer

            args = DPOConfig(loss_type=["sigmoid" if config.method == "dpo" else "ipo"],
                             precompute_ref_log_probs=config.precompute_ref, **common)
            trainer = DPOTrainer(args=args, **kwargs)
        else:
            trainer = _reference_free_trainer(config, lm, common, kwargs)
    except ValueError as exc:
        if "Target modules" in str(exc) or "target_modules" in str(exc):
            raise _bad("target_modules", ",".join(config.target_modules),
                       f"linear layers of this model ({str(exc).splitlines()[0]})") from None
        raise
    if not progress:
        trainer.remove_callback(PrinterCallback)  # with tqdm off, the Trainer prints every log dict
    return trainer


def _reference_free_trainer(config: TrainConfig, lm: LM, common: dict[str, Any], kwargs: dict[str, Any]):
    """ORPO (``trl.experimental.orpo``) or SimPO (``trl.experimental.cpo``), with the fused forward."""
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(lm.model, outputs=("log_probs", "mean_logits"))
    common = {**common, "remove_unused_columns": False}  # their collators need the raw columns
    if config.method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return fused_head_trainer(ORPOTrainer)(args=ORPOConfig(**common), **kwargs)
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = CPOConfig(loss_type="simpo", cpo_alpha=0.0, simpo_gamma=config.simpo_gamma, **common)
    return fused_head_trainer(CPOTrainer)(args=args, **kwargs)


# --------------------------------------------------------------------------- output

def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise DecodingLabError(f"out_dir={str(out_dir)!r} already exists; allowed: a new directory, or "
                               "overwrite=True (CLI: --overwrite) to replace it")


def _partial_dir(out_dir: Path) -> Path:
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
        partial.chmod(0o755)  # mkdtemp makes it private; the published adapter is an ordinary directory
        return partial
    except OSError as exc:
        raise DecodingLabError(f"out_dir={str(out_dir)!r}: cannot create a directory beside it "
                               f"({exc.__class__.__name__}: {exc})") from None


def publish(partial: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished ``partial`` directory to ``out_dir``; an old ``out_dir`` is moved aside
    first and deleted only once the new one is in place."""
    check_out_dir(out_dir, overwrite)  # again: another run may have finished meanwhile
    if not out_dir.exists() and not out_dir.is_symlink():
        os.replace(partial, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    aside = old / "previous"
    os.replace(out_dir, aside)
    os.replace(partial, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def final_metrics(log_history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The last logged training step's numbers, plus TRL's run summary (``train_loss``, runtime)."""
    steps = [entry for entry in log_history if "loss" in entry and "train_runtime" not in entry]
    summary = next((entry for entry in reversed(log_history) if "train_runtime" in entry), {})
    metrics = {k: v for k, v in (steps[-1] if steps else {}).items() if _is_number(v)}
    metrics.update({k: summary[k] for k in ("train_loss", "train_runtime") if _is_number(summary.get(k))})
    return metrics


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def build_meta(config: TrainConfig, lm: LM, dataset: PreferenceDataset, lengths: dict[str, int],
               log_history: list[dict[str, Any]], runtime: dict[str, Any]) -> dict[str, Any]:
    meta = {
        "format": META_FORMAT,
        "base_model": lm.name,
        "base_fingerprint": lm.fingerprint or None,
        "method": config.method,
        "config": config.to_dict(),
        "dataset": {"name": str(config.dataset), "source": dataset.source, "format": dataset.format,
                    "sha256": dataset.sha256, "data_size": dataset.data_size,
                    "support_ratio": dataset.support_ratio, "support_count": dataset.support_count,
                    "pairs": len(dataset), "records_in_file": dataset.records_in_file},
        "tokens": lengths,
        "seed": config.seed,
        "reward_semantics": reward_semantics(log_history, config.method),
        "final_metrics": final_metrics(log_history),
        **runtime,
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if not lm.fingerprint:
        meta["base_fingerprint_note"] = ("not recorded: the base was loaded in 4 bits, whose packed "
                                         "weights do not fingerprint like the full-precision base")
    return meta


def _trained_lm(trainer, lm: LM, out_dir: Path) -> LM:
    """The trainer's PEFT model as an inference ``LM``: eval mode, frozen, TRL's fused-head
    ``forward`` patch removed from the base (``trainer/utils.py`` ``add_fused_lm_head``)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.eval()
    model.requires_grad_(False)
    model.get_base_model().__dict__.pop("forward", None)
    return dataclasses.replace(lm, model=model, adapter=str(out_dir))


def progress_log_callback(path: str | os.PathLike):
    """A ``TrainerCallback`` appending to the JSON-lines file ``path``, one object per line, flushed
    at once: ``{"event": "begin", "max_steps", "epochs"}`` when training starts, then every
    ``log_history`` entry as the trainer logs it (``step`` and ``epoch`` included), then
    ``{"event": "end", "step"}``. The Trainer keeps ``log_history`` in memory until the end; this
    file lets another process (the lab's training page) draw the curves while the run goes on."""
    import json

    from transformers import TrainerCallback

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def append(record: dict[str, Any]) -> None:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    class ProgressLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            append({"event": "begin", "max_steps": state.max_steps, "epochs": args.num_train_epochs})

        def on_log(self, args, state, control, logs=None, **kwargs):
            append({**(logs or {}), "step": state.global_step, "epoch": state.epoch})

        def on_train_end(self, args, state, control, **kwargs):
            append({"event": "end", "step": state.global_step})

    return ProgressLog()


# --------------------------------------------------------------------------- entry point

def train(config: TrainConfig, out_dir: str | os.PathLike, model: LM | str | None = None,
          overwrite: bool = False, progress: bool = True,
          progress_log: str | os.PathLike | None = None) -> TrainResult:
    """Train a LoRA adapter on preference pairs and write it to ``out_dir``.

    ``model``: an ``LM`` (deep-copied, the caller's stays untouched), a model name for
    ``load_model`` (a directory, a ``.gguf`` file or a hub id), or ``None`` for the embedded
    SmolLM2-135M-Instruct. ``out_dir`` must not exist unless ``overwrite``; it appears only when
    the run has finished. ``progress`` shows the trainer's progress bar and per-step logs.
    ``progress_log``: a JSON-lines file that gets each log entry as it is logged
    (``progress_log_callback``), for a live view of a run in another process.
    """
    started = time.perf_counter()
    out = Path(os.path.expanduser(str(out_dir)))
    check_out_dir(out, overwrite)
    _check_report_to(config.report_to)
    dataset = load_dataset(config.dataset, config.data_size, config.support_ratio)
    lm, device = _training_copy(model, config)
    rows = preference_rows(dataset, lm.tokenizer, config.chat)
    lengths = sequence_lengths(rows, lm.tokenizer)
    token_info = check_lengths(lengths, config.max_length)
    partial = _partial_dir(out)
    try:
        with cpu_threads(device, config.threads) as threads, completion_only_lm_head(device), \
                quiet_progress(progress), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # TRL/transformers deprecations
            warnings.filterwarnings("ignore", message="You are importing from 'trl.experimental'")
            train_started = time.perf_counter()
            trainer = build_trainer(config, lm, rows, lengths, partial, device, progress)
            if progress_log is not None:
                trainer.add_callback(progress_log_callback(progress_log))
            trainer.train()
            train_s = time.perf_counter() - train_started
            trainer.save_model(str(partial))
        log_history = [dict(entry) for entry in trainer.state.log_history]
        runtime = {"device": device.type, "threads": threads if device.type == "cpu" else None,
                   "steps": trainer.state.global_step, "train_s": round(train_s, 2),
                   "wall_time_s": round(time.perf_counter() - started, 2)}
        meta = build_meta(config, lm, dataset, token_info, log_history, runtime)
        write_json_atomic(partial / LOG_HISTORY, log_history)
        plot_training_curves(log_history, partial / CURVES_PNG, _curves_title(config, lm, dataset),
                             method=config.method)
        write_json_atomic(partial / ADAPTER_META, meta)
        publish(partial, out, overwrite)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return TrainResult(out_dir=out, meta=meta, log_history=log_history, lm=_trained_lm(trainer, lm, out))


def _curves_title(config: TrainConfig, lm: LM, dataset: PreferenceDataset) -> str:
    knobs = f"β={config.beta:g}" if config.method != "orpo" else f"λ={config.beta:g}"
    return (f"{config.method.upper()} on {lm.name}: {len(dataset)} pairs of {Path(config.dataset).name}, "
            f"{config.epochs} epoch(s), lr={config.learning_rate:g}, {knobs}")
