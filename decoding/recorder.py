"""Turn one step's tensors into ``StepTrace`` records.

Everything is computed batched on ``(rows, vocab)`` tensors and moved to Python once per step,
so tracing stays cheap (the benchmark measures its overhead). Only the top-N tokens are kept
per stage: a full 49k-token distribution per stage per step would be megabytes per generation.
"""

from __future__ import annotations

import torch

from .trace import Candidate, StepTrace


class TokenTexts:
    """Memoised single-token decoding (special tokens written out)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._cache[token_id] = text
        return text


def record_steps(step: int, history: list[torch.Tensor], stage_names: list[str],
                 chosen: torch.Tensor, rows: list[int], top_n: int,
                 token_text: TokenTexts) -> list[StepTrace]:
    """Step traces for ``rows`` of a batch.

    history: scores after each stage, raw first, each ``(batch, vocab)`` float32.
    chosen: ``(batch,)`` the token picked for each row.
    Candidates are the union of the raw top-N, the final top-N and the chosen token, ordered by
    raw probability.
    """
    if not rows:
        return []
    index = torch.tensor(rows, dtype=torch.long)
    raw = history[0][index]
    final = history[-1][index]
    picked = chosen[index]
    n = min(top_n, raw.shape[-1])

    raw_top = torch.topk(raw, n, dim=-1).indices
    final_top = torch.topk(final, n, dim=-1).indices
    logprobs = [torch.log_softmax(h[index], dim=-1) for h in history]
    lse = torch.logsumexp(raw, dim=-1)
    raw_chosen = raw.gather(1, picked[:, None])
    final_chosen = final.gather(1, picked[:, None])
    rank_raw = (raw > raw_chosen).sum(-1) + 1
    rank_final = (final > final_chosen).sum(-1) + 1
    entropy_raw = _entropy(logprobs[0])
    entropy_final = _entropy(logprobs[-1])
    kept_count = torch.isfinite(final).sum(-1)

    traces = []
    for i, row in enumerate(rows):
        ids = _candidate_ids(raw_top[i].tolist(), final_top[i].tolist(), int(picked[i]), raw[i])
        ids_t = torch.tensor(ids, dtype=torch.long)
        probs = torch.stack([lp[i, ids_t].exp() for lp in logprobs], dim=1)           # (cands, stages)
        kept = torch.stack([torch.isfinite(h[row, ids_t]) for h in history], dim=1)
        raw_logits = raw[i, ids_t].tolist()
        probs_l, kept_l = probs.tolist(), kept.tolist()
        candidates = [Candidate(token_id=t, text=token_text(t), raw_logit=raw_logits[j],
                                probs=probs_l[j], kept=kept_l[j]) for j, t in enumerate(ids)]
        token = int(picked[i])
        traces.append(StepTrace(
            step=step, token_id=token, token_text=token_text(token),
            prob_raw=float(logprobs[0][i, token].exp()), prob_final=float(logprobs[-1][i, token].exp()),
            logprob_raw=float(logprobs[0][i, token]),
            rank_raw=int(rank_raw[i]), rank_final=int(rank_final[i]),
            entropy_raw=float(entropy_raw[i]), entropy_final=float(entropy_final[i]),
            kept_count=int(kept_count[i]), stages=list(stage_names), candidates=candidates,
            raw_logsumexp=float(lse[i])))
    return traces


def _candidate_ids(raw_top: list[int], final_top: list[int], chosen: int,
                   raw_row: torch.Tensor) -> list[int]:
    ids = list(dict.fromkeys(raw_top + final_top + [chosen]))
    logits = raw_row[torch.tensor(ids)].tolist()
    order = sorted(range(len(ids)), key=lambda j: -logits[j])
    return [ids[j] for j in order]


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).nan_to_num(0.0).sum(-1)
