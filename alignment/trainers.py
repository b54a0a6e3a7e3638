"""The TRL trainers of the four methods, built for a LoRA adapter, and the trainer subclass that
scores ORPO / SimPO through TRL's fused LM head instead of full logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from decoding.errors import out_of_range
from decoding.models import LM

from .train_config import TrainConfig
from .train_launch import Launch, shared_rows


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


def lora_config(config: TrainConfig, num_layers: int | None = None):
    """PEFT's LoRA config; with ``config.top_layers``, on the top layers of ``num_layers`` only."""
    from peft import LoraConfig

    layers = None
    if config.top_layers is not None and num_layers is not None:
        layers = list(range(max(0, num_layers - config.top_layers), num_layers))
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM",
                      layers_to_transform=layers)


def trl_arguments(config: TrainConfig, output_dir: Path, device: torch.device, progress: bool,
                  precision: str = "fp32") -> dict[str, Any]:
    """Keyword arguments shared by the TRL configs of all four methods. ``precision`` "bf16":
    transformers' ``bf16=True``, which accelerate turns into ``torch.autocast(device.type,
    torch.bfloat16)`` around the model's forward, on CPU too (``accelerate/accelerator.py``,
    ``native_amp = True`` for cpu; ``utils/modeling.py`` ``get_mixed_precision_context_manager``);
    the parameters, their gradients and AdamW's state keep their float32 dtype."""
    args = dict(
        output_dir=str(output_dir), num_train_epochs=config.epochs, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        beta=config.beta, max_length=config.max_length, seed=config.seed, data_seed=config.seed,
        logging_steps=1, save_strategy="no", report_to=config.report_to, disable_tqdm=not progress,
        activation_checkpointing=False, dataloader_num_workers=0, use_cpu=device.type == "cpu",
        bf16=precision == "bf16",
        # under DDP every LoRA weight gets a gradient at every step: no search for unused ones
        # (the Trainer's default without gradient checkpointing is an extra graph walk per step)
        ddp_find_unused_parameters=False)
    if config.group_by_length:
        # The sampler reads the "length" column; keeping unused columns stops the Trainer from
        # dropping it before the sampler is built (the collators ignore extra keys).
        args.update(train_sampling_strategy="group_by_length", length_column_name="length",
                    remove_unused_columns=False)
    return args


def build_trainer(config: TrainConfig, lm: LM, rows: list[dict[str, Any]], lengths: Sequence[tuple[int, int, int]],
                  output_dir: Path, device: torch.device, progress: bool, precision: str = "fp32",
                  launch: Launch | None = None):
    """The TRL trainer of ``config.method`` over ``rows``, with a fresh LoRA adapter on ``lm.model``.
    ``launch``: this process's place in a multi-process run (``alignment.train_launch``); the rows
    then go through one file-backed dataset under ``output_dir`` that all processes share."""
    from transformers import PrinterCallback, set_seed

    set_seed(config.seed)  # DPOTrainer creates the LoRA weights before Trainer seeds anything
    if config.group_by_length:
        rows = [dict(row, length=c + r) for row, (_, c, r) in zip(rows, lengths)]
    common = trl_arguments(config, output_dir, device, progress, precision)
    launch = launch or Launch()
    kwargs = dict(model=lm.model, train_dataset=shared_rows(rows, output_dir, launch),
                  processing_class=lm.tokenizer,
                  peft_config=lora_config(config, getattr(lm.model.config, "num_hidden_layers", None)))
    try:
        if config.method in ("dpo", "ipo"):
            from trl import DPOConfig, DPOTrainer

            args = DPOConfig(loss_type=["sigmoid" if config.method == "dpo" else "ipo"],
                             precompute_ref_log_probs=config.precompute_ref, **common)
            trainer = DPOTrainer(args=args, **kwargs)
        else:
            trainer = _reference_free_trainer(config, lm, common, kwargs, fused=launch.sharding is None)
    except ValueError as exc:
        if "Target modules" in str(exc) or "target_modules" in str(exc):
            raise out_of_range("target_modules", ",".join(config.target_modules),
                       f"linear layers of this model ({str(exc).splitlines()[0]})") from None
        raise
    if not progress:
        trainer.remove_callback(PrinterCallback)  # with tqdm off, the Trainer prints every log dict
    return trainer


def _reference_free_trainer(config: TrainConfig, lm: LM, common: dict[str, Any], kwargs: dict[str, Any],
                            fused: bool = True):
    """ORPO (``trl.experimental.orpo``) or SimPO (``trl.experimental.cpo``), with the fused forward;
    ``fused=False`` (ZeRO-3 / FSDP, where each process holds a slice of the LM head) keeps TRL's
    own full-logits forward."""
    from trl.trainer.utils import add_fused_lm_head

    if fused:
        add_fused_lm_head(lm.model, outputs=("log_probs", "mean_logits"))
    wrap = fused_head_trainer if fused else (lambda base: base)
    common = {**common, "remove_unused_columns": False}  # their collators need the raw columns
    if config.method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return wrap(ORPOTrainer)(args=ORPOConfig(**common), **kwargs)
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = CPOConfig(loss_type="simpo", cpo_alpha=0.0, simpo_gamma=config.simpo_gamma, **common)
    return wrap(CPOTrainer)(args=args, **kwargs)
