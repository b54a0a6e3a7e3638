"""The processor chain: an explicit, ordered list of stages built from a ``DecodingConfig``.

The stages, their switches and their slots in each order are the registry's (``stages.py``);
this module builds the chain for a config and runs it. A stage is in the chain only when its
knob is on, so an inactive knob costs nothing and changes no bits.

``"transformers"`` (default) — ``GenerationMixin._get_logits_processor`` (5.x), with the stages
transformers lacks slotted in:

    logit_bias → diversity_penalty → repetition_penalty → frequency_penalty → presence_penalty
    → dry → no_repeat_ngram → min_new_tokens → ignore_eos
    → temperature | dynatemp → top_h → top_k → top_p → min_p → typical_p → epsilon_cutoff
    → eta_cutoff → top_n_sigma → p_less → xtc → adaptive_p

``"llama.cpp"`` — ``common_sampler_init``'s default chain (temperature last):

    logit_bias → diversity_penalty → min_new_tokens → ignore_eos → repetition_penalty
    → frequency_penalty → presence_penalty → no_repeat_ngram → dry → top_n_sigma → top_k
    → typical_p → top_p → min_p → p_less → top_h → epsilon_cutoff → eta_cutoff → xtc
    → temperature | dynatemp → adaptive_p

(no_repeat_ngram, epsilon/eta, top-H and the diversity penalty are not in llama.cpp: they sit
with the penalties / truncations; the EOS bans sit with logit_bias, as llama.cpp implements
ignore_eos as a -inf bias. ``dynatemp`` is llama.cpp's temp-ext, in temperature's slot; it is
on when ``dynatemp_range > 0``.) A tuple of stage names is an explicit order; it must name
every active stage. adaptive-p always comes last: it replaces the final draw.

Which stages a strategy runs (``planned_stages``): sampling runs all; greedy, beam and
contrastive run the penalty stages only (sampling stages cannot change an argmax; transformers
does not build them outside sampling); mirostat runs the penalties, then temperature → mirostat
(llama.cpp's mirostat chain, which ignores top-k/top-p/…). Penalties — repetition, frequency,
presence, DRY, no-repeat-ngram, logit_bias — therefore apply to every strategy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .stages import (PENALTY_STAGES, PROCESSOR_ORDERS, SAMPLING_STAGES, STAGE_NAMES, Built,
                     Stage, StepContext, build_stage, planned_stages, resolve_order,
                     stage_switches)

if TYPE_CHECKING:
    from .config import DecodingConfig

__all__ = ["Chain", "PENALTY_STAGES", "PROCESSOR_ORDERS", "SAMPLING_STAGES", "STAGE_NAMES",
           "Stage", "StepContext", "apply_chain", "build_chain", "chain_names", "planned_stages",
           "resolve_order", "stage_switches"]


def build_chain(config: "DecodingConfig", eos_ids: list[int], tokenizer=None,
                vocab_size: int | None = None) -> list[Stage]:
    """The ordered stages for ``config`` (see the module docstring for the orders).

    ``tokenizer`` maps text knobs (``logit_bias`` keys, DRY breakers) to token ids;
    ``vocab_size`` checks ``logit_bias`` ids. The EOS stages are skipped without ``eos_ids``.
    """
    built = Built(list(eos_ids), tokenizer, vocab_size)
    stages = [build_stage(name, config, built) for name in planned_stages(config)]
    return [s for s in stages if s]


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


class Chain:
    """The built stages of one config, with the stateful ones (mirostat's μ, adaptive-p's
    average) and their per-row state."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages
        self.names = chain_names(stages)
        self.stateful = [s for s in stages if s.memory is not None]

    @classmethod
    def of(cls, config: "DecodingConfig", lm) -> "Chain":
        return cls(build_chain(config, lm.eos_token_ids, lm.tokenizer, lm.vocab_size))

    def start(self, rows: int) -> dict[str, torch.Tensor]:
        """The initial per-row state of every stateful stage."""
        return {s.name: s.memory.start(rows) for s in self.stateful}

    def run(self, ctx: StepContext, scores: torch.Tensor, record: bool = False
            ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, tuple]]:
        """``apply_chain``, plus the (input, output) of every stateful stage for ``observe``."""
        if not self.stateful:
            final, history = apply_chain(self.stages, ctx, scores, record)
            return final, history, {}
        history = [scores] if record else []
        seen = {}
        for stage in self.stages:
            before, scores = scores, stage.apply(ctx, scores)
            if stage.memory is not None:
                seen[stage.name] = (before, scores)
            if record:
                history.append(scores)
        return scores, history, seen

    def observe(self, ctx: StepContext, seen: dict[str, tuple], chosen: torch.Tensor
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """After the pick: the next state of every stateful stage (rows that no longer generate
        keep theirs) and the values to trace this step, ``name → (rows,)``."""
        if not self.stateful:
            return ctx.state, {}
        rows = chosen.shape[0]
        live = set(range(rows)) if ctx.live is None else set(ctx.live)
        alive = torch.tensor([r in live for r in range(rows)])
        state, traced = dict(ctx.state), {}
        for stage in self.stateful:
            old = ctx.state[stage.name]
            new, extra = stage.memory.update(old, *seen[stage.name], chosen)
            mask = alive.view(-1, *([1] * (old.dim() - 1)))
            state[stage.name] = torch.where(mask, new, old)
            traced.update(extra)
        return state, traced
