"""Two distributions per step: the combinations, and the second forward that feeds them.

A two-model stage reads, beside the step's logits, a second set of logits for the same step
(``StepContext.guide``):

* ``realign`` (DeRa, Liu et al. ICML 2024, eq. 9): ``h = h_base + λ (h_adapter − h_base)`` over
  logits, the second distribution being the base with the adapter disabled. λ = 0 is the base,
  λ = 1 the adapter, λ > 1 extrapolates (≈ the policy retrained with KL strength β/λ). The same
  arithmetic is emulated fine-tuning (Mitchell et al. 2023) up- or down-scaled.
* ``contrastive_decoding`` (Li et al. 2023, eq. 2–4): over the plausible tokens
  ``V_head = {x : p_expert(x) >= α max p_expert}``, score ``log p_expert − log p_amateur``; the
  rest get −inf. Expert and amateur are the adapter and the base (``amateur`` says which is which).
* ``guidance`` (classifier-free guidance for LMs, Sanchez et al. 2023): transformers'
  ``UnbatchedClassifierFreeGuidanceLogitsProcessor``, reproduced op for op (see ``guidance``).

``GuideStream`` computes the second logits: a second forward, only when a lane turns a
two-model knob on (no knob on: no second forward, no bit changes). PEFT's per-row adapter
switch (``adapter_names=[..., "__base__"]``) could put both in one batched forward; that was not
tried (nor measured): two forwards leave the main stream's path, and its bits, untouched.
"""

from __future__ import annotations

import contextlib
import math

import torch

from .errors import ConfigError, check_number
from .forward import KVState, decode_step, prefill

# The second distribution a two-model stage reads.
BASE, UNCONDITIONAL = "base", "unconditional"
AMATEURS = ("base", "adapter")


def realign(scores: torch.Tensor, base: torch.Tensor, lam: float) -> torch.Tensor:
    """DeRa: ``base + λ (scores − base)`` over logits ``(rows, vocab)`` (new tensor).

    ``torch.lerp`` computes it (extrapolating for λ > 1) and returns ``base`` exactly at λ = 0
    and ``scores`` exactly at λ = 1, so realign=0 decodes the base and realign=1 the adapter
    token for token."""
    check_number("realign", lam, lambda v: v >= 0, "realign >= 0 (0 = the base, 1 = the adapter)")
    return torch.lerp(base.to(scores.dtype), scores, float(lam))


def contrastive(scores: torch.Tensor, other: torch.Tensor, alpha: float,
                amateur: str = "base") -> torch.Tensor:
    """Contrastive decoding (Li et al. 2023): ``log p_exp − log p_ama`` on the tokens with
    ``p_exp >= α max p_exp`` (eq. 3's adaptive plausibility), −inf elsewhere.

    ``scores`` are the loaded model's logits (the adapter's), ``other`` the base's;
    ``amateur="base"`` makes the adapter the expert, ``"adapter"`` the base. With α = 1 only
    the expert's most likely token(s) stay: greedy on the expert."""
    check_number("contrastive_alpha", alpha, lambda v: 0 < v <= 1, "0 < contrastive_alpha <= 1")
    if amateur not in AMATEURS:
        raise ConfigError(f"amateur={amateur!r} is out of range; allowed: {' | '.join(AMATEURS)}")
    expert, weak = (scores, other) if amateur == "base" else (other, scores)
    log_expert = torch.log_softmax(expert.float(), dim=-1)
    log_amateur = torch.log_softmax(weak.float(), dim=-1)
    head = log_expert >= log_expert.max(dim=-1, keepdim=True).values + math.log(alpha)
    return torch.where(head, log_expert - log_amateur, torch.full_like(log_expert, -math.inf))


def guidance(scores: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance, as transformers' ``UnbatchedClassifierFreeGuidanceLogitsProcessor``:
    both sides log-softmaxed, then ``scale (cond − uncond) + uncond``; scale 1 returns the
    log-softmax (transformers then does not build the processor at all; neither do we)."""
    check_number("guidance_scale", scale, lambda v: True, "a finite number")
    scores = torch.nn.functional.log_softmax(scores, dim=-1)
    if scale == 1:
        return scores
    unconditional = torch.nn.functional.log_softmax(unconditional, dim=-1)
    return scale * (scores - unconditional) + unconditional


# ---------------------------------------------------------------------- the second forward

def guide_kind(config) -> str | None:
    """Which second distribution ``config`` needs: BASE, UNCONDITIONAL or None (one forward)."""
    if config.realign is not None or config.contrastive_alpha is not None:
        return BASE
    if config.guidance_scale is not None and config.guidance_scale != 1:
        return UNCONDITIONAL
    return None


def guide_key(config) -> tuple | None:
    kind = guide_kind(config)
    return None if kind is None else (kind, config.negative_prompt if kind == UNCONDITIONAL else None)


def has_adapter(lm) -> bool:
    return lm.adapter is not None and hasattr(lm.model, "disable_adapter")


def check_guides(lm, configs) -> tuple | None:
    """The one second distribution a batch needs (None: none). Refuses a knob that needs an
    adapter on a model without one, and a batch whose configs need different second streams."""
    keys = {guide_key(c) for c in configs} - {None}
    for c in configs:
        if guide_kind(c) == BASE and not has_adapter(lm):
            knob = ("realign", c.realign) if c.realign is not None else (
                "contrastive_alpha", c.contrastive_alpha)
            raise ConfigError(f"{knob[0]}={knob[1]!r} needs an adapter (the base is the model "
                              f"with it disabled); model {lm.name!r} has none that can be "
                              "switched off (none loaded, or merged into the weights): load one "
                              "(CLI: --adapter DIR), or set it to None")
    if len(keys) > 1:
        raise ConfigError("one batch may use one second distribution; these configs need "
                          f"{sorted(map(str, keys))}: decode them in separate batches")
    return next(iter(keys), None)


class GuideStream:
    """The second logits of every step, for every row of a batch, with their own KV cache.

    BASE: the same rows through the model with its adapter disabled (PEFT's
    ``disable_adapter``).

    UNCONDITIONAL: transformers' CFG processor. Its first call runs the negative prompt (or,
    without one, each row's last prompt token) from position 0 with an all-ones mask; each
    later call feeds the newest token through that cache.
    """

    def __init__(self, lm, kind: str, rows: torch.Tensor, mask: torch.Tensor | None,
                 negative_ids: list[int] | None = None) -> None:
        self.lm, self.kind = lm, kind
        self.state: KVState | None = None
        if kind == UNCONDITIONAL:
            rows = (torch.tensor([negative_ids] * rows.shape[0], dtype=torch.long)
                    if negative_ids else rows[:, -1:])
            mask = None
        self.rows, self.mask = rows, mask

    def first(self) -> torch.Tensor:
        with self._model() as model:
            logits, self.state, _ = prefill(model, self.rows, self.mask)
        return logits

    def next(self, chosen: torch.Tensor) -> torch.Tensor:
        with self._model() as model:
            logits, _ = decode_step(model, chosen, self.state)
        return logits

    def select_rows(self, index: torch.Tensor) -> None:
        self.state.select_rows(index)

    @contextlib.contextmanager
    def _model(self):
        if self.kind == BASE:
            with self.lm.model.disable_adapter():
                yield self.lm.model
        else:
            yield self.lm.model


def start_guide(lm, key: tuple | None, input_ids: torch.Tensor, mask: torch.Tensor | None
                ) -> tuple[GuideStream | None, torch.Tensor | None]:
    """The stream for ``key`` (from ``check_guides``) over the batch's left-padded prompts, and
    its first logits; (None, None) when no config needs a second distribution."""
    if key is None:
        return None, None
    kind, negative = key
    negative_ids = lm.encode(negative, chat=False) if negative else None
    stream = GuideStream(lm, kind, input_ids, mask, negative_ids)
    return stream, stream.first()
