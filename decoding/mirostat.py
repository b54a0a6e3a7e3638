"""Mirostat v2 (Basu et al. 2021, Algorithm 2), as llama.cpp defines it.

A feedback loop that aims at a target surprise τ (bits per token):

    μ₀ = 2τ
    each step:  drop the tokens whose surprise −log₂ p exceeds μ      (the "mirostat" stage)
                renormalise, sample x
                μ ← μ − η·(−log₂ p̂(x) − τ)

where p̂ is the renormalised (truncated) distribution, as in llama.cpp's
``llama_sampler_mirostat_v2_apply``. The chain before it is llama.cpp's mirostat chain:
temperature → mirostat (llama.cpp also drops its penalties there; we keep our penalty stages,
which apply to every strategy). The loop (``loop.decode_batch``) holds μ per sequence and
records it in ``StepTrace.extra``.
"""

from __future__ import annotations

import torch

from .errors import check_number
from .processors import NEG_INF, check_keep, keep_top


def initial_mu(tau: float, rows: int) -> torch.Tensor:
    """μ₀ = 2τ for every row, ``(rows,)`` float32 (llama.cpp keeps μ as a float)."""
    return torch.full((rows,), 2.0 * tau, dtype=torch.float32)


def surprise(scores: torch.Tensor) -> torch.Tensor:
    """−log₂ p of every token under softmax(scores), ``(batch, vocab)``."""
    return -torch.log2(torch.softmax(scores, dim=-1))


def mirostat_v2_filter(scores: torch.Tensor, mu: torch.Tensor, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Remove the tokens whose surprise exceeds μ (``mu`` ``(batch,)``, one per row); the most
    likely ``min_tokens_to_keep`` tokens always stay (llama.cpp keeps at least one)."""
    check_keep(min_tokens_to_keep)
    remove = surprise(scores) > mu.to(scores.device)[:, None]
    return scores.masked_fill(keep_top(scores, remove, min_tokens_to_keep), NEG_INF)


def update_mu(mu: torch.Tensor, observed: torch.Tensor, tau: float, eta: float) -> torch.Tensor:
    """μ ← μ − η·(observed surprise − τ)."""
    check_number("mirostat_tau", tau, lambda v: v > 0, "mirostat_tau > 0 (bits)")
    check_number("mirostat_eta", eta, lambda v: 0 <= v <= 1, "0 <= mirostat_eta <= 1")
    return mu - eta * (observed.to(mu.device, mu.dtype) - tau)
