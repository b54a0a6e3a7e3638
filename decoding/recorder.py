"""Turn one step's tensors into ``StepTrace`` records.

Everything is computed batched on ``(rows, vocab)`` tensors and moved to Python once per step,
so tracing stays cheap (the benchmark measures its overhead). Only the top-N tokens are kept
per stage: a full 49k-token distribution per stage per step would be megabytes per generation.

Enough is kept for the what-if panel (``decoding.whatif``) to be exact with the run's own
settings: beside the top-N, the distribution the sampling stages received (raw, or after the
last penalty) is recorded as a prefix of its ranking deep enough to hold every token the run
kept (up to ``EXACT_TOP_MAX`` tokens), with each stage's full-vocabulary kept count. The tail
outside the prefix is then known by its mass (1 - the prefix's), its size and a bound (no tail
token is more likely than the prefix's last one).
"""

from __future__ import annotations

import torch

from .stages import FIRST_STAGES, PENALTY_STAGES
from .trace import Candidate, StepTrace

# The deepest prefix recorded to cover a run's kept set. A kept set wider than this (a flat
# step under top-p 0.99) is recorded as its top-N only, and the what-if says "approximate".
EXACT_TOP_MAX = 1000


def input_stage_index(stage_names: list[str]) -> int:
    """Index of the stage whose output the sampling stages receive: the last of the leading
    penalty stages, a two-model stage among them (0, ``raw``, when there are none)."""
    index = 0
    for j, name in enumerate(stage_names[1:], start=1):
        if name not in PENALTY_STAGES and name not in FIRST_STAGES:
            break
        index = j
    return index


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
                 token_text: TokenTexts, second: torch.Tensor | None = None,
                 second_name: str = "") -> list[StepTrace]:
    """Step traces for ``rows`` of a batch.

    history: scores after each stage, raw first, each ``(batch, vocab)`` float32.
    chosen: ``(batch,)`` the token picked for each row.
    Candidates are the union of the raw top-N, the final top-N, the chosen token and the
    sampling stages' input ranked down to ``prefix_depth`` (which covers the kept set), ordered
    by raw probability.
    second: ``(batch, vocab)`` a two-model stage's second logits (``second_name``: ``base`` or
    ``unconditional``); its top-N join the candidates, each with its probability under it
    (``Candidate.second_prob``). The raw distribution is the loaded model's, the combined one
    the two-model stage's output (``probs[1]``).
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
    stage_kept = torch.stack([torch.isfinite(h[index]).sum(-1) for h in history], dim=1).tolist()
    base = input_stage_index(stage_names)
    source = history[base][index]
    if any(kept[j] < kept[base] for kept in stage_kept for j in range(base + 1, len(kept))):
        depth = prefix_depth(source, widest_cut([h[index] for h in history[base + 1:]], source), top_n)
    else:
        # Nothing was cut after the sampling stages' input (greedy, plain sampling, a step
        # where the truncation kept everything): the what-if is exact from the top-N alone,
        # so the deep ranking (a top-1001 per row) is skipped; prefix_depth would give top_n.
        depth = torch.full((len(rows),), n, dtype=torch.long)
    prefix = raw_top if base == 0 and int(depth.max()) == n else torch.topk(source, int(depth.max()), dim=-1).indices
    if second is not None:
        second_logp = torch.log_softmax(second[index], dim=-1)
        second_top = torch.topk(second_logp, n, dim=-1).indices

    traces = []
    for i, row in enumerate(rows):
        extra_top = second_top[i].tolist() if second is not None else []
        ids = _candidate_ids(raw_top[i].tolist() + prefix[i, :int(depth[i])].tolist() + extra_top,
                             final_top[i].tolist(), int(picked[i]), raw[i])
        ids_t = torch.tensor(ids, dtype=torch.long)
        second_probs = (second_logp[i, ids_t].exp().tolist() if second is not None
                        else [None] * len(ids))
        probs = torch.stack([lp[i, ids_t].exp() for lp in logprobs], dim=1)           # (cands, stages)
        kept = torch.stack([torch.isfinite(h[row, ids_t]) for h in history], dim=1)
        raw_logits = raw[i, ids_t].tolist()
        probs_l, kept_l = probs.tolist(), kept.tolist()
        candidates = [Candidate(token_id=t, text=token_text(t), raw_logit=raw_logits[j],
                                probs=probs_l[j], kept=kept_l[j], second_prob=second_probs[j])
                      for j, t in enumerate(ids)]
        token = int(picked[i])
        traces.append(StepTrace(
            step=step, token_id=token, token_text=token_text(token),
            prob_raw=float(logprobs[0][i, token].exp()), prob_final=float(logprobs[-1][i, token].exp()),
            logprob_raw=float(logprobs[0][i, token]),
            rank_raw=int(rank_raw[i]), rank_final=int(rank_final[i]),
            entropy_raw=float(entropy_raw[i]), entropy_final=float(entropy_final[i]),
            kept_count=int(kept_count[i]), stages=list(stage_names), candidates=candidates,
            raw_logsumexp=float(lse[i]), stage_kept=stage_kept[i], prefix=int(depth[i]),
            vocab_size=int(raw.shape[-1]), second=second_name if second is not None else ""))
    return traces


def widest_cut(stages: list[torch.Tensor], source: torch.Tensor) -> torch.Tensor:
    """``(rows, vocab)`` the widest kept set that a sampling stage cut below ``source``'s (the
    stages only remove tokens, so it holds every later kept set); ``source``'s own where no
    stage cut anything. Every stage's decision (a top-p after a top-k renormalises over the
    top-k) is then made over recorded tokens."""
    allowed = torch.isfinite(source)
    total = allowed.sum(-1)
    cut, best = allowed, torch.full_like(total, -1)
    for scores in stages:
        kept = torch.isfinite(scores)
        count = kept.sum(-1)
        wider = (count < total) & (count > best)
        cut = torch.where(wider[:, None], kept, cut)
        best = torch.where(wider, count, best)
    return cut.float().log()                 # 0 where kept, -inf where cut


def prefix_depth(source: torch.Tensor, final: torch.Tensor, top_n: int) -> torch.Tensor:
    """``(rows,)`` how deep to record the ranking of ``source`` (the sampling stages' input):
    one token past the least likely token of ``final`` (finite where kept), when that kept set
    is narrower than ``source``'s and lies within its top ``EXACT_TOP_MAX``; else ``top_n``."""
    vocab = source.shape[-1]
    n = min(top_n, vocab)
    deep = min(EXACT_TOP_MAX + 1, vocab)
    order = torch.topk(source, deep, dim=-1).indices
    kept_in_top = torch.isfinite(final.gather(1, order))                 # (rows, deep)
    covered = kept_in_top.sum(-1) == torch.isfinite(final).sum(-1)
    truncated = torch.isfinite(final).sum(-1) < torch.isfinite(source).sum(-1)
    positions = torch.arange(1, deep + 1).expand_as(kept_in_top)
    last = (positions * kept_in_top).max(-1).values                     # rank of the last kept
    depth = torch.clamp(last + 1, max=deep)
    return torch.where(covered & truncated, torch.clamp(depth, min=n), torch.full_like(depth, n))


def _candidate_ids(raw_top: list[int], final_top: list[int], chosen: int,
                   raw_row: torch.Tensor) -> list[int]:
    ids = list(dict.fromkeys(raw_top + final_top + [chosen]))
    logits = raw_row[torch.tensor(ids)].tolist()
    order = sorted(range(len(ids)), key=lambda j: -logits[j])
    return [ids[j] for j in order]


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).nan_to_num(0.0).sum(-1)
