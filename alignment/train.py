"""Preference training with TRL + PEFT: DPO, IPO, ORPO and SimPO on a LoRA adapter.

``train(config, out_dir)`` loads the preference pairs, trains a LoRA adapter with the TRL trainer
of the method, and writes the adapter, its ``adapter_meta.json`` (base fingerprint, every
hyperparameter, dataset hash, final metrics, versions), ``log_history.json`` and
``training_curves.png``. The directory appears complete or not at all: the run writes into a
hidden ``.NAME.*.partial`` directory beside ``out_dir`` and renames it into place at the end.

The work is split by job; this module is the entry point and re-exports the names callers use:

- ``train_config``: ``TrainConfig`` (every knob, with help text and ranges) and ``TrainResult``;
- ``train_rows``: TRL rows from the pairs and their token counts;
- ``train_cpu``: the CPU speed settings (threads, bf16 detection, LM-head scope, quiet bars);
- ``trainers``: the TRL trainers and the fused-head subclass for ORPO / SimPO;
- ``train_output``: the published directory, ``adapter_meta.json`` and the progress log;
- ``train_launch``: runs under ``accelerate launch`` / ``torchrun`` (DDP, DeepSpeed, FSDP): the
  process's rank, the effective batch size, the directory all processes share; only the main
  process writes.

TRL 1.16 facts this package relies on (paths under ``site-packages/trl``):

- DPO and IPO are ``trl.DPOTrainer`` with ``loss_type=["sigmoid"]`` / ``["ipo"]``; the config turns
  a string into a one-element list (``trainer/dpo_config.py:358``). With ``peft_config`` the
  reference model is the policy with its adapter disabled (``trainer/dpo_trainer.py:909``).
- ORPO is ``trl.experimental.orpo``; SimPO is ``trl.experimental.cpo`` with ``loss_type="simpo"``
  and ``cpo_alpha=0`` (no behaviour-cloning term; ``experimental/cpo/cpo_trainer.py:715``).
- The TRL configs default to ``bf16=True`` and gradient checkpointing (``trainer/base_config.py``);
  we pass ``use_cpu=True`` on CPU, ``bf16`` from ``TrainConfig.precision`` and
  ``activation_checkpointing=False``, which also silences the ``gradient_checkpointing``
  deprecation warning.

Speed on a CPU (see ``alignment/bench.py``): cached reference log-probabilities, LM-head scoring of
the needed tokens only (DPO's fused head on CPU; the same head in place of ORPO/SimPO's full
logits), bfloat16 autocast where the CPU has bfloat16 arithmetic, and a thread count chosen by a
short probe (a contended core makes every multi-threaded op wait for a descheduled thread).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import os
import shutil
import time
import warnings
from pathlib import Path

import torch

from decoding.errors import out_of_range
from decoding.io import write_json_atomic
from decoding.models import ADAPTER_META, LM, load_model, load_model_4bit

from .curves import plot_training_curves
from .data import PreferenceDataset, load_dataset
from .layer_cache import LowerLayerCache, check_top_layers, decoder_stack
from .prompt_sharing import SharedPrefixForward
from .train_config import (DEVICES, METHODS, PRECISIONS, RANGES, REPORT_TO, TrainConfig, TrainResult,
                           check_training_knob)
from .train_cpu import (completion_only_lm_head, cpu_has_bf16, cpu_threads, fastest_thread_count,
                        quiet_progress, resolve_precision)
from .train_output import (CURVES_PNG, LOG_HISTORY, META_FORMAT, build_meta, check_out_dir,
                           final_metrics, library_versions, partial_dir, progress_log_callback, publish)
from .train_launch import (Launch, batch_line, check_launch, drop_shared_rows, effective_batch_size,
                           launch_from_env, shared_partial_dir, use_local_device, wait_for_everyone)
from .train_rows import check_lengths, preference_rows, sequence_lengths
from .trainers import (build_trainer, fused_concatenated_forward, fused_head_trainer, lora_config,
                       trl_arguments)

__all__ = ["CURVES_PNG", "DEVICES", "LOG_HISTORY", "META_FORMAT", "METHODS", "PRECISIONS",
           "RANGES", "REPORT_TO", "Launch", "TrainConfig", "TrainResult", "batch_line",
           "build_meta", "build_trainer", "check_lengths", "check_out_dir", "check_training_knob",
           "completion_only_lm_head", "cpu_has_bf16", "cpu_threads", "effective_batch_size",
           "fastest_thread_count", "final_metrics", "fused_concatenated_forward",
           "fused_head_trainer", "launch_from_env", "library_versions", "lora_config",
           "partial_dir", "preference_rows", "progress_log_callback", "publish", "quiet_progress",
           "resolve_precision", "sequence_lengths", "train", "trl_arguments"]


def _check_report_to(report_to: str) -> None:
    packages = {"wandb": ("wandb",), "tensorboard": ("tensorboard", "tensorboardX")}.get(report_to, ())
    if packages and not any(importlib.util.find_spec(p) for p in packages):
        raise out_of_range("report_to", report_to, f"none, or install {packages[0]} (pip install {packages[0]})")


def _load_base(name: str | None, config: TrainConfig) -> LM:
    return load_model_4bit(name) if config.load_in_4bit else load_model(name, device=config.device)


def _training_copy(model: LM | str | None, config: TrainConfig) -> tuple[LM, torch.device]:
    """The LM to train and its device. A caller's ``LM`` is deep-copied, so it stays the untouched
    base (TRL wraps the model it gets with PEFT layers and patches its ``forward``)."""
    if isinstance(model, LM):
        if config.load_in_4bit:
            raise out_of_range("load_in_4bit", True, "false when a loaded model is passed; 4-bit "
                               "loading happens when train() loads the base by name")
        if config.device != "auto" and config.device != model.device.type:
            raise out_of_range("device", config.device,
                               f"auto or {model.device.type} (the passed model's device)")
        lm = dataclasses.replace(model, model=copy.deepcopy(model.model))
    else:
        lm = _load_base(model, config)
    return lm, torch.device(lm.device.type)


def use_attention(model: torch.nn.Module, kind: str) -> str:
    """Switch the model's attention kernel (transformers' ``set_attn_implementation``) to
    ``kind``; returns the one it had."""
    before = model.config._attn_implementation
    if kind != before:
        model.set_attn_implementation(kind)
    return before


def _lower_layer_cache(model: torch.nn.Module, config: TrainConfig) -> LowerLayerCache | None:
    """With ``top_layers`` below the model's depth, the frozen lower layers' cache, installed on
    the model to train (``alignment.layer_cache``); PEFT then finds LoRA targets in the top
    layers only, as ``layers_to_transform`` asks."""
    if config.top_layers is None:
        return None
    if config.top_layers >= len(decoder_stack(model).layers):
        return None
    return LowerLayerCache(model, config.top_layers).install()


def _trained_lm(trainer, lm: LM, out_dir: Path) -> LM:
    """The trainer's PEFT model as an inference ``LM``: eval mode, frozen, accelerate's autocast
    wrapper (bf16 runs) and TRL's fused-head ``forward`` patch (``trainer/utils.py``
    ``add_fused_lm_head``) removed, so it generates in its own dtype like any loaded model."""
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    model.eval()
    model.requires_grad_(False)
    model.get_base_model().__dict__.pop("forward", None)
    return dataclasses.replace(lm, model=model, adapter=str(out_dir))


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

    Under ``accelerate launch`` / ``torchrun`` every process calls this; the Trainer splits each
    batch across them (DDP, or DeepSpeed / FSDP from the accelerate config) and only the main
    process writes ``out_dir`` and ``progress_log`` (``alignment.train_launch``). Every process
    returns once the adapter is in place; ``TrainResult.main_process`` says which one wrote it.
    """
    started = time.perf_counter()
    launch = launch_from_env()
    out = Path(os.path.expanduser(str(out_dir)))
    check_out_dir(out, overwrite)
    _check_report_to(config.report_to)
    check_launch(config, launch)
    dataset = load_dataset(config.dataset, config.data_size, config.support_ratio)
    use_local_device(launch)
    lm, device = _training_copy(model, config)
    check_top_layers(config.top_layers, lm.model)
    own_attention = use_attention(lm.model, config.attention)
    rows = preference_rows(dataset, lm.tokenizer, config.chat)
    lengths = sequence_lengths(rows, lm.tokenizer)
    token_info = check_lengths(lengths, config.max_length)
    precision = resolve_precision(config.precision, device)
    if progress and launch.main:
        print(batch_line(config.batch_size, launch.world_size, config.grad_accum), flush=True)
    partial = shared_partial_dir(out, launch, device)
    try:
        with cpu_threads(device, config.threads) as threads, completion_only_lm_head(device), \
                quiet_progress(progress), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # TRL/transformers deprecations
            warnings.filterwarnings("ignore", message="You are importing from 'trl.experimental'")
            train_started = time.perf_counter()
            # installed before the trainer is built, so that DPO's reference pass (run when the
            # trainer is built) already shares prompts and fills the lower-layer cache
            cache = _lower_layer_cache(lm.model, config)
            sharing = SharedPrefixForward(lm.model) if config.share_prompt else None
            try:
                with sharing or contextlib.nullcontext():
                    trainer = build_trainer(config, lm, rows, lengths, partial, device, progress,
                                            precision, launch)
                    if progress_log is not None and launch.main:
                        trainer.add_callback(progress_log_callback(progress_log))
                    trainer.train()
            finally:
                if cache is not None:
                    cache.remove()  # the full stack again, before saving and generating
                use_attention(lm.model, own_attention)   # decoding runs on the model's own kernel
            train_s = time.perf_counter() - train_started
            wait_for_everyone(launch)             # every process is done with the shared rows
            trainer.save_model(str(partial))      # collective under ZeRO-3 / FSDP; writes on main only
        log_history = [dict(entry) for entry in trainer.state.log_history]
        runtime = {"device": device.type, "precision": precision,
                   "threads": threads if device.type == "cpu" else None,
                   "steps": trainer.state.global_step, "train_s": round(train_s, 2),
                   "processes": launch.world_size,
                   "effective_batch_size": effective_batch_size(config.batch_size, launch.world_size,
                                                                config.grad_accum),
                   "lower_layer_cache": None if cache is None else {
                       "cached_layers": cache.split, "sequences": len(cache.store),
                       "hits": cache.hits, "misses": cache.misses},
                   "prompt_sharing": None if sharing is None else {
                       "forwards": sharing.calls, "shared_tokens": sharing.shared_tokens},
                   "wall_time_s": round(time.perf_counter() - started, 2)}
        meta = build_meta(config, lm, dataset, token_info, log_history, runtime)
        if launch.main:
            drop_shared_rows(partial)
            write_json_atomic(partial / LOG_HISTORY, log_history)
            plot_training_curves(log_history, partial / CURVES_PNG, _curves_title(config, lm, dataset),
                                 method=config.method)
            write_json_atomic(partial / ADAPTER_META, meta)
            publish(partial, out, overwrite)
        wait_for_everyone(launch)                 # the adapter is in place when any process returns
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return TrainResult(out_dir=out, meta=meta, log_history=log_history, lm=_trained_lm(trainer, lm, out),
                       main_process=launch.main)


def _curves_title(config: TrainConfig, lm: LM, dataset: PreferenceDataset) -> str:
    knobs = f"β={config.beta:g}" if config.method != "orpo" else f"λ={config.beta:g}"
    return (f"{config.method.upper()} on {lm.name}: {len(dataset)} pairs of {Path(config.dataset).name}, "
            f"{config.epochs} epoch(s), lr={config.learning_rate:g}, {knobs}")
