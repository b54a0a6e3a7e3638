"""The processor chain: an explicit, ordered list of stages built from a ``DecodingConfig``.

The order is data. The default is transformers' order (``GenerationMixin._get_logits_processor``,
5.x): repetition penalty → no-repeat-ngram → min-new-tokens, then — only when sampling —
temperature → top-k → top-p → min-p → typical → epsilon → eta. Greedy and beam search skip the
sampling stages exactly as ``generate`` does (they cannot change an argmax; beam search in
transformers does not build them either). A stage is in the chain only when it is active, so an
inactive knob costs nothing and changes no bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import processors as P
from .config import DecodingConfig


@dataclass
class StepContext:
    """What a stage may look at besides the scores.

    input_ids: ``(batch, length)`` every token so far, prompt included; ``-1`` marks left padding.
    prompt_length: number of positions before the first generated token (padding included).
    """

    input_ids: torch.Tensor
    prompt_length: int
    generator: torch.Generator | None = None

    @property
    def generated(self) -> int:
        return self.input_ids.shape[-1] - self.prompt_length


@dataclass(frozen=True)
class Stage:
    name: str
    apply: Callable[[StepContext, torch.Tensor], torch.Tensor]
    samples_only: bool = False   # a truncation/temperature stage, built only when sampling


def _penalty_stages(c: DecodingConfig, eos_ids: list[int]) -> list[Stage]:
    stages: list[Stage] = []
    if c.repetition_penalty != 1.0:
        stages.append(Stage("repetition_penalty", lambda ctx, s: P.repetition_penalty(
            s, ctx.input_ids, c.repetition_penalty)))
    if c.no_repeat_ngram_size > 0:
        stages.append(Stage("no_repeat_ngram", lambda ctx, s: P.no_repeat_ngram(
            s, ctx.input_ids, c.no_repeat_ngram_size)))
    if eos_ids and c.min_new_tokens > 0:
        stages.append(Stage("min_new_tokens", lambda ctx, s: (
            P.forbid_tokens(s, eos_ids) if ctx.generated < c.min_new_tokens else s.clone())))
    if eos_ids and c.ignore_eos:
        stages.append(Stage("ignore_eos", lambda ctx, s: P.forbid_tokens(s, eos_ids)))
    return stages


def _sampling_stages(c: DecodingConfig) -> list[Stage]:
    stages: list[Stage] = []
    if c.temperature != 1.0:
        stages.append(Stage("temperature", lambda ctx, s: P.temperature(s, c.temperature), True))
    if c.top_k != 0:
        stages.append(Stage("top_k", lambda ctx, s: P.top_k_filter(s, c.top_k), True))
    if c.top_p < 1.0:
        stages.append(Stage("top_p", lambda ctx, s: P.top_p_filter(s, c.top_p), True))
    if c.min_p is not None:
        stages.append(Stage("min_p", lambda ctx, s: P.min_p_filter(s, c.min_p), True))
    if c.typical_p < 1.0:
        stages.append(Stage("typical_p", lambda ctx, s: P.typical_filter(s, c.typical_p), True))
    if c.epsilon_cutoff > 0.0:
        stages.append(Stage("epsilon_cutoff", lambda ctx, s: P.epsilon_filter(s, c.epsilon_cutoff), True))
    if c.eta_cutoff > 0.0:
        stages.append(Stage("eta_cutoff", lambda ctx, s: P.eta_filter(s, c.eta_cutoff), True))
    return stages


def build_chain(config: DecodingConfig, eos_ids: list[int]) -> list[Stage]:
    """The ordered stages for ``config`` (see the module docstring for the order)."""
    stages = _penalty_stages(config, eos_ids)
    if config.do_sample:
        stages += _sampling_stages(config)
    return stages


def apply_chain(stages: list[Stage], ctx: StepContext, scores: torch.Tensor,
                record: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``scores`` ``(batch, vocab)`` through the stages.

    Returns the final scores and, when ``record``, the scores after every stage (raw first).
    """
    history = [scores] if record else []
    for stage in stages:
        scores = stage.apply(ctx, scores)
        if record:
            history.append(scores)
    return scores, history


def chain_names(stages: list[Stage]) -> list[str]:
    return ["raw"] + [s.name for s in stages]
