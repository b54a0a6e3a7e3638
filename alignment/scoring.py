"""Teacher-forced scoring: log-probabilities of given completions, and how two models' next-token
distributions differ along a sequence. The measurements under ``alignment.evaluate``.

Conventions: a completion is scored token by token given the prompt ids (``LM.encode``: the
chat template with a generation prompt, or the raw text) and the completion's own tokens
(no special tokens added); sums are in nats. Batches are right-padded with an attention mask,
so padding never changes a score beyond float rounding (about 1e-5 nats here).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from decoding.models import LM

SCORE_BATCH = 8


def completion_ids(lm: LM, completion: str) -> list[int]:
    """The completion's tokens as the model would write them after a prompt (no BOS/EOS)."""
    return [int(i) for i in lm.tokenizer(completion, add_special_tokens=False)["input_ids"]]


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows right-padded to the longest: ``(ids, attention_mask)``, both ``(batch, width)``
    (the TRL collators' layout; ``decoding.forward.left_pad`` is the generation layout)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask


@contextmanager
def base_of(lm: LM) -> Iterator[torch.nn.Module]:
    """The model with its PEFT adapter switched off (``PeftModel.disable_adapter``): the
    reference policy of DPO with a LoRA adapter. A plain model is its own base."""
    model = lm.model
    disable = getattr(model, "disable_adapter", None)
    with (disable() if disable is not None and getattr(lm, "adapter", None) else nullcontext()):
        yield model


@torch.inference_mode()
def token_logprobs(model: torch.nn.Module, prompts: Sequence[Sequence[int]],
                   completions: Sequence[Sequence[int]], pad_id: int = 0,
                   batch_size: int = SCORE_BATCH) -> list[torch.Tensor]:
    """log π(y_t | x, y_<t) for every completion token: one float32 tensor per pair.

    ``prompts[i]`` and ``completions[i]`` are token ids; each prompt needs at least one token.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    for start in range(0, len(prompts), batch_size):
        rows = [list(p) + list(c) for p, c in zip(prompts[start:start + batch_size],
                                                   completions[start:start + batch_size])]
        ids, mask = right_pad(rows, pad_id)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for i, (p, c) in enumerate(zip(prompts[start:start + batch_size],
                                       completions[start:start + batch_size])):
            if not c:
                out.append(torch.zeros(0))
                continue
            # position t predicts token t + 1: the completion's tokens sit at len(p) .. len(p)+len(c)-1
            steps = logits[i, len(p) - 1:len(p) + len(c) - 1].float().log_softmax(-1)
            target = torch.tensor(list(c), device=steps.device)[:, None]
            out.append(steps.gather(-1, target)[:, 0].cpu())
    return out


def sequence_logprobs(lm: LM, prompts: Sequence[str], completions: Sequence[str], chat: bool = True,
                      base: bool = False) -> list[torch.Tensor]:
    """Per-token log-probabilities of text completions after text prompts; ``base=True``
    scores with the adapter switched off."""
    prompt_ids = [lm.encode(p, chat=chat) for p in prompts]
    comp_ids = [completion_ids(lm, c) for c in completions]
    pad = lm.tokenizer.pad_token_id or 0
    with base_of(lm) if base else nullcontext(lm.model) as model:
        return token_logprobs(model, prompt_ids, comp_ids, pad_id=pad)


@dataclass(frozen=True)
class StepShift:
    """How far the policy's next-token distribution is from the base's at one step."""

    step: int
    token_id: int
    token: str
    kl: float          # KL(policy ‖ base) in nats
    tv: float          # total variation distance, 0.5 Σ|p − q|
    policy_logprob: float
    base_logprob: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@torch.inference_mode()
def stepwise_shift(policy: LM, base: LM | None, prompt_ids: Sequence[int],
                   token_ids: Sequence[int]) -> list[StepShift]:
    """Per-step KL(π_policy ‖ π_base) and total variation along ``token_ids`` (teacher-forced):
    where along its own answer does alignment change the model's mind?

    ``base=None`` uses ``policy`` with its adapter disabled.
    """
    if not token_ids:
        return []
    ids = torch.tensor([list(prompt_ids) + list(token_ids)], device=policy.device)
    start = len(prompt_ids) - 1
    end = start + len(token_ids)

    def dist(model) -> torch.Tensor:
        return model(input_ids=ids).logits[0, start:end].float().log_softmax(-1)

    log_p = dist(policy.model)
    if base is None:
        with base_of(policy) as model:
            log_q = dist(model)
    else:
        log_q = dist(base.model.to(policy.device))
    p = log_p.exp()
    kl = (p * (log_p - log_q)).sum(-1)
    tv = 0.5 * (p - log_q.exp()).abs().sum(-1)
    target = torch.tensor(list(token_ids), device=log_p.device)[:, None]
    lp, lq = log_p.gather(-1, target)[:, 0], log_q.gather(-1, target)[:, 0]
    return [StepShift(step=i, token_id=int(t), token=policy.token_text(int(t)), kl=float(kl[i]),
                      tv=float(tv[i]), policy_logprob=float(lp[i]), base_logprob=float(lq[i]))
            for i, t in enumerate(token_ids)]


def sample_kl(policy_logprobs: Sequence[torch.Tensor], base_logprobs: Sequence[torch.Tensor]) -> float:
    """Sample-based KL estimate mean_t[log π(y_t) − log π_base(y_t)] over the tokens of the
    policy's own samples (the DPO paper's §6.1 x-axis), pooled over all samples."""
    diffs = [p - b for p, b in zip(policy_logprobs, base_logprobs) if len(p)]
    if not diffs:
        return float("nan")
    return float(torch.cat(diffs).mean())


@dataclass(frozen=True)
class StepDistributions:
    """Both models' next-token probabilities at one step, for the tokens either ranks top-k."""

    step: int
    chosen_id: int                          # the token the policy's answer has at this step
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    policy: tuple[float, ...]
    base: tuple[float, ...]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@torch.inference_mode()
def step_distributions(policy: LM, base: LM | None, prompt_ids: Sequence[int],
                       token_ids: Sequence[int], top_k: int = 8) -> list[StepDistributions]:
    """At every step of ``token_ids`` (teacher-forced), the union of the policy's and the base's
    top-``top_k`` next tokens with both probabilities, ordered by the policy's probability:
    what the lab overlays for a chosen step. ``base=None``: the policy with its adapter off."""
    if not token_ids:
        return []
    ids = torch.tensor([list(prompt_ids) + list(token_ids)], device=policy.device)
    start = len(prompt_ids) - 1
    end = start + len(token_ids)
    p = policy.model(input_ids=ids).logits[0, start:end].float().softmax(-1)
    if base is None:
        with base_of(policy) as model:
            q = model(input_ids=ids).logits[0, start:end].float().softmax(-1)
    else:
        q = base.model(input_ids=ids.to(base.device)).logits[0, start:end].float().softmax(-1).to(p.device)
    out = []
    for i, chosen in enumerate(token_ids):
        top = torch.cat([p[i].topk(top_k).indices, q[i].topk(top_k).indices]).unique()
        top = top[p[i][top].argsort(descending=True)]
        out.append(StepDistributions(
            step=i, chosen_id=int(chosen), token_ids=tuple(int(t) for t in top),
            tokens=tuple(policy.token_text(int(t)) for t in top),
            policy=tuple(float(x) for x in p[i][top]), base=tuple(float(x) for x in q[i][top])))
    return out
