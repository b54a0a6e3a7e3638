"""Speculative decoding between two models, as arithmetic over recorded distributions.

Drafting with q (the base) for a target p (the adapter), speculative sampling (Leviathan et al.
2023, Algorithm 1; Chen et al. 2023, Algorithm 2) accepts a drafted token x with probability
min(1, p(x)/q(x)); on a rejection it draws from norm(max(0, p - q)), so the output follows p
exactly. The chance that a step's draft is accepted is

    β = Σ_x min(p(x), q(x)) = 1 − TV(p, q)                         (Leviathan et al., Def. 3.1)

With a draft of γ tokens and i.i.d. acceptance rate α, one target forward yields on average

    E[tokens] = (1 − α^(γ+1)) / (1 − α)                             (Leviathan et al., eq. 1)

Here the acceptance rate differs per step, so ``expected_tokens`` uses the per-step
generalisation: starting at step t, the run accepts drafts while they pass and always gets one
more token from the target (the correction, or the bonus token after γ acceptances):

    E_t[tokens] = 1 + Σ_{j=1..γ} Π_{i=0..j-1} β_{t+i}

averaged over every starting step t of the answer (a block starting at t uses β_t, β_{t+1},
…; steps past the answer's end count as rejections; a real run visits only the block starts
its acceptances lead to, and its drafts condition on drafted, not recorded, tokens). With
every β equal to α this is eq. 1.

``answer_distributions`` gives p and q along an answer: one teacher-forced forward of prompt
and answer with the adapter on, one with it disabled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import DecodingLabError, check_integer

DRAFT_LENGTHS = tuple(range(1, 9))


def acceptance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``(steps,)`` β = Σ min(p, q) = 1 − TV(p, q) of each step's target ``p`` and draft ``q``,
    both ``(steps, vocab)`` probabilities (rows summing to 1)."""
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape; got {tuple(p.shape)} and {tuple(q.shape)}")
    return torch.minimum(p, q).sum(-1).clamp(0.0, 1.0)


def expected_tokens(beta: list[float], draft_length: int) -> float:
    """Expected tokens per target forward with drafts of ``draft_length`` tokens, averaged over
    the starting steps of the answer (module docstring); eq. 1 when every β is equal."""
    check_integer("draft_length", draft_length, 1)
    if not beta:
        return 1.0
    total = 0.0
    for t in range(len(beta)):
        run, gained = 1.0, 1.0
        for j in range(draft_length):
            run *= beta[t + j] if t + j < len(beta) else 0.0
            gained += run
        total += gained
    return total / len(beta)


def expected_tokens_iid(alpha: float, draft_length: int) -> float:
    """Leviathan et al. eq. 1: (1 − α^(γ+1)) / (1 − α), γ + 1 at α = 1."""
    check_integer("draft_length", draft_length, 1)
    if alpha >= 1.0:
        return float(draft_length + 1)
    return (1.0 - alpha ** (draft_length + 1)) / (1.0 - alpha)


def accept_trace(p: torch.Tensor, q: torch.Tensor, generator: torch.Generator) -> list[bool]:
    """A seeded accept/reject trace along an answer: at each step the draft model proposes
    x ~ q and the target accepts it with probability min(1, p(x)/q(x)) (Leviathan et al.,
    Algorithm 1: one draft and one uniform per step, both from ``generator``). Returns one
    accept flag per step."""
    flags = []
    for t in range(p.shape[0]):
        x = int(torch.multinomial(q[t], 1, generator=generator))
        ratio = float(p[t, x] / q[t, x]) if q[t, x] > 0 else 1.0
        coin = float(torch.rand(1, generator=generator))
        flags.append(coin < min(1.0, ratio))
    return flags


def answer_logits(lm, prompt_ids: list[int], answer_ids: list[int]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(adapter, base)`` logits, each ``(len(answer_ids), vocab)`` float32: the scores before
    each answer token with the adapter on (teacher-forced), and with it disabled."""
    if not answer_ids:
        raise DecodingLabError("the answer has no tokens; allowed: an answer of at least 1 token")
    if lm.adapter is None or not hasattr(lm.model, "disable_adapter"):
        raise DecodingLabError(f"model {lm.name!r} has no adapter: the speculative view "
                               "compares an adapter with its base (CLI: --adapter DIR)")
    ids = torch.tensor([list(prompt_ids) + list(answer_ids)], device=lm.device)
    span = slice(len(prompt_ids) - 1, ids.shape[1] - 1)
    with torch.inference_mode():
        adapter = lm.model(ids).logits[0, span].float()
        with lm.model.disable_adapter():
            base = lm.model(ids).logits[0, span].float()
    return adapter.cpu(), base.cpu()


def answer_distributions(lm, prompt_ids: list[int], answer_ids: list[int]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p, q)``, each ``(len(answer_ids), vocab)``: the next-token probabilities before each
    answer token under the loaded model (the adapter, the target) and under its base (the
    adapter disabled, the draft)."""
    adapter, base = answer_logits(lm, prompt_ids, answer_ids)
    return torch.softmax(adapter, dim=-1), torch.softmax(base, dim=-1)


@dataclass
class SpeculativeView:
    """Speculative decoding of an answer of the target (adapter) drafted by the base."""

    acceptance: list[float]                 # β per step = 1 − TV(p, q)
    accepted: list[bool]                    # the seeded accept/reject trace
    seed: int
    expected_tokens: dict[int, float]       # draft length → tokens per target forward (per-step)
    expected_tokens_mean_rate: dict[int, float]   # eq. 1 at the mean β, for comparison

    @property
    def mean_acceptance(self) -> float:
        return sum(self.acceptance) / len(self.acceptance) if self.acceptance else 1.0

    def to_dict(self) -> dict:
        return {"acceptance": self.acceptance, "accepted": self.accepted, "seed": self.seed,
                "mean_acceptance": self.mean_acceptance,
                "expected_tokens": {str(k): v for k, v in self.expected_tokens.items()},
                "expected_tokens_mean_rate": {str(k): v for k, v in
                                              self.expected_tokens_mean_rate.items()},
                "expected_tokens_rule": "per-step: mean over start steps of 1 + sum_j prod_i<j "
                                        "beta_(t+i); mean_rate: (1 - a^(k+1)) / (1 - a)"}


def view_lines(view: SpeculativeView) -> list[str]:
    """The view as text: acceptance per step, the seeded trace, tokens per target forward."""
    marks = "".join("✓" if a else "✗" for a in view.accepted)
    return [f"speculative decoding, the base drafting for the adapter: mean acceptance "
            f"{view.mean_acceptance:.3f} (1 - TV per step), seed {view.seed}",
            "acceptance per step: " + " ".join(f"{b:.2f}" for b in view.acceptance),
            f"seeded accept/reject: {marks}",
            "tokens per target forward by draft length: " + "  ".join(
                f"{k}: {v:.2f}" for k, v in view.expected_tokens.items())
            + "  (eq. 1 at the mean rate: " + "  ".join(
                f"{k}: {v:.2f}" for k, v in view.expected_tokens_mean_rate.items()) + ")"]


def speculative_view(p: torch.Tensor, q: torch.Tensor, seed: int = 0,
                     draft_lengths: tuple[int, ...] = DRAFT_LENGTHS) -> SpeculativeView:
    """Everything the view shows, from the target's ``p`` and the draft's ``q`` at each step of
    an answer (``(steps, vocab)`` probabilities)."""
    beta = acceptance(p, q).tolist()
    generator = torch.Generator().manual_seed(seed)
    mean = sum(beta) / len(beta) if beta else 1.0
    return SpeculativeView(
        acceptance=beta, accepted=accept_trace(p, q, generator), seed=seed,
        expected_tokens={k: expected_tokens(beta, k) for k in draft_lengths},
        expected_tokens_mean_rate={k: expected_tokens_iid(mean, k) for k in draft_lengths})
