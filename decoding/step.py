"""The step, as on the slide. Every strategy takes its steps through ``step``:

    scores = chain(logits)            # penalties → temperature → truncation (→ adaptive-p)
    token  = pick(scores)             # argmax, or a seeded multinomial draw (or a beam's top-2k,
                                      # or contrastive search's re-ranked candidates)
    record(scores after every stage, token)

Greedy, sampling and mirostat (``loop.decode_mixed``) pick with ``argmax`` or ``multinomial``;
beam search picks the best continuations over its beams, contrastive search re-ranks the top-k
candidates by the degeneration penalty. Stateful stages (mirostat's μ, adaptive-p's moving
average) learn what was picked after the pick, and their per-row state is traced.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .chain import Chain, StepContext
from .errors import GenerationError


def step(chain: Chain, ctx: StepContext, logits: torch.Tensor, pick: Callable[[torch.Tensor], Any],
         record: Callable[[list[torch.Tensor], Any], list] | None = None):
    """One step of one chain over ``logits`` ``(rows, vocab)``.

    Returns (what ``pick`` returned, the traces ``record`` made, the next state of the chain's
    stateful stages). A stateful stage's traced values are added to each trace's ``extra``.
    """
    scores, history, seen = chain.run(ctx, logits, record=record is not None)   # 1. the chain
    check_kept(scores, ctx)
    chosen = pick(scores)                                                         # 2. the pick
    traces = record(history, chosen) if record else []                           # 3. the record
    state, traced = chain.observe(ctx, seen, chosen)                            # μ, averages
    if traced:
        for row, trace in zip(ctx.live if ctx.live is not None else range(len(traces)), traces):
            trace.extra.update({name: float(values[row]) for name, values in traced.items()})
    return chosen, traces, state


def argmax(scores: torch.Tensor) -> torch.Tensor:
    """Greedy: the highest score of every row (the first on ties, as ``generate``)."""
    return torch.argmax(scores, dim=-1)


def multinomial(groups: list[tuple[slice, torch.Generator]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Sampling: one draw per row from softmax(scores). A prompt's rows (its
    ``num_return_sequences`` samples) share a generator and one ``multinomial`` call, as
    ``generate`` does, so the same seed gives the same tokens."""
    def pick(scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(scores, dim=-1)
        chosen = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        for rows, generator in groups:
            chosen[rows] = torch.multinomial(probs[rows], num_samples=1,
                                             generator=generator).squeeze(1)
        return chosen
    return pick


def check_logits(logits: torch.Tensor, live: list[int], step_index: int) -> None:
    if not torch.isfinite(logits[live]).all():
        raise GenerationError(
            f"non-finite logits (nan or inf) from the model at step {step_index}; generation stopped")


def check_kept(scores: torch.Tensor, ctx: StepContext) -> None:
    """Every row still generating (``ctx.live``; beam search, which sets none, is not checked)
    must keep at least one token."""
    if ctx.live is not None and not torch.isfinite(scores[ctx.live]).any(-1).all():
        raise GenerationError(
            f"every token was removed by the processor chain at step {ctx.generated}")
