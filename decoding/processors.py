"""Logit processors: one small pure function per transform.

Every function takes ``scores`` of shape ``(batch, vocab)`` (logits, or log-probabilities in beam
search) and returns a **new** tensor; inputs are never modified in place. Removed tokens get
``-inf``. Where transformers has the same transform, the tensor operations are the ones of
``transformers/generation/logits_process.py`` (5.x), so results are bit-identical and sampling
with the same seed draws the same tokens.
"""

from __future__ import annotations

import torch

from .errors import check_integer, check_number

NEG_INF = -float("inf")


def check_keep(min_tokens_to_keep: int) -> None:
    check_integer("min_tokens_to_keep", min_tokens_to_keep, 1)


def keep_top(scores: torch.Tensor, remove: torch.Tensor, min_tokens_to_keep: int) -> torch.Tensor:
    """``remove`` without the ``min_tokens_to_keep`` highest scores (they always stay)."""
    k = min(min_tokens_to_keep, scores.size(-1))
    return remove & (scores < torch.topk(scores, k)[0][..., -1, None])


# ----------------------------------------------------------------------------- penalties

def repetition_penalty(scores: torch.Tensor, context_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL repetition penalty (Keskar et al. 2019, §4.1): for every distinct token of
    ``context_ids`` ``(batch, length)``, divide a positive logit by ``penalty``, multiply a
    negative one. Applied once per token, however often it occurred (transformers'
    ``RepetitionPenaltyLogitsProcessor``). Ids < 0 (left padding) are ignored."""
    check_number("repetition_penalty", penalty, lambda v: v > 0, "repetition_penalty > 0 (1.0 = off)")
    vocab_size = scores.shape[-1]
    ids = torch.where(context_ids < 0, vocab_size, context_ids)
    # A spare column past the vocabulary absorbs the ignored ids.
    padded = torch.nn.functional.pad(scores, (0, 1))
    score = torch.gather(padded, 1, ids)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return padded.scatter(1, ids, score)[..., :vocab_size]


def no_repeat_ngram(scores: torch.Tensor, input_ids: torch.Tensor, ngram_size: int) -> torch.Tensor:
    """Forbid every token that would complete an n-gram already present in ``input_ids``
    ``(batch, length)`` (transformers' ``NoRepeatNGramLogitsProcessor``, prompt included)."""
    check_integer("no_repeat_ngram_size", ngram_size, 1, " (0 = off: leave the stage out)")
    cur_len = input_ids.shape[-1]
    if cur_len < ngram_size:
        return scores.clone()
    prefix = input_ids[:, cur_len + 1 - ngram_size:]
    windows = input_ids.unfold(dimension=1, size=ngram_size, step=1)
    matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)
    vocab_size = scores.shape[-1]
    banned = scores.new_zeros((scores.shape[0], vocab_size + 1), dtype=torch.bool)
    # Non-matching windows write into a spare column past the vocabulary.
    last = windows[..., -1].clamp(max=vocab_size)
    last = torch.where(last < 0, vocab_size, last)
    banned.scatter_(1, torch.where(matches, last, vocab_size), True)
    return scores.masked_fill(banned[:, :vocab_size], NEG_INF)


def forbid_tokens(scores: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """Set the given tokens to -inf (end-of-sequence before ``min_new_tokens``, ``ignore_eos``)."""
    mask = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
    mask[torch.tensor(token_ids, dtype=torch.long, device=scores.device)] = True
    return torch.where(mask, NEG_INF, scores)


def min_new_tokens_filter(scores: torch.Tensor, generated: int, min_new_tokens: int,
                          eos_ids: list[int]) -> torch.Tensor:
    """End-of-sequence forbidden while fewer than ``min_new_tokens`` tokens were generated
    (transformers' ``MinNewTokensLengthLogitsProcessor``)."""
    check_integer("min_new_tokens", min_new_tokens, 0)
    return forbid_tokens(scores, eos_ids) if generated < min_new_tokens else scores.clone()


# ----------------------------------------------------------------------------- temperature

def temperature(scores: torch.Tensor, t: float) -> torch.Tensor:
    """Softmax temperature (Ackley et al. 1985): logits / T."""
    check_number("temperature", t, lambda v: v > 0,
                 "temperature > 0 (use greedy decoding for T -> 0)")
    return scores / t


# ----------------------------------------------------------------------------- truncation

def top_h_filter(scores: torch.Tensor, top_h: float, top_n: int = 100) -> torch.Tensor:
    """Top-H ("Top-H Decoding: Adapting the Creativity and Coherence with Bounded Entropy in Text
    Generation", NeurIPS 2025, arXiv 2509.02510): among the ``top_n``
    most likely tokens (their own softmax, q), keep the longest prefix whose cumulative entropy
    Σ −q log q stays ≤ ``top_h`` · H(q); the top token always stays. The ops of transformers'
    ``TopHLogitsWarper`` (5.x), so the kept set is bit-identical to ``generate(top_h=…)``."""
    check_number("top_h", top_h, lambda v: 0 < v <= 1, "0 < top_h <= 1")
    check_integer("top_n", top_n, 1)
    top_logits, top_idx = torch.topk(scores, min(top_n, scores.shape[-1]), dim=-1)
    dist = torch.distributions.Categorical(logits=top_logits)
    probs = dist.probs
    tau = (dist.entropy() * top_h).unsqueeze(-1)
    cumulative_entropy = torch.cumsum(-probs * torch.log(probs), dim=-1)
    selected = cumulative_entropy <= tau
    selected[:, 0] = True
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter(1, top_idx, selected)
    return scores.masked_fill(~keep, NEG_INF)


def top_k_filter(scores: torch.Tensor, k: int, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Top-k (Fan et al. 2018): keep the k largest scores. Ties with the k-th score survive
    (``scores < kth`` is removed), so more than k tokens can remain."""
    check_integer("top_k", k, 1, " (0 = off: leave the stage out)")
    check_keep(min_tokens_to_keep)
    k = min(max(k, min_tokens_to_keep), scores.size(-1))
    kth = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < kth, NEG_INF)


def top_p_filter(scores: torch.Tensor, p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus / top-p (Holtzman et al. 2020, Eq. 2): keep the smallest prefix of the sorted
    distribution whose mass reaches p. Implemented as transformers does: sort ascending and
    drop tokens whose cumulative mass is <= 1 - p."""
    check_number("top_p", p, lambda v: 0 < v <= 1, "0 < top_p <= 1")
    check_keep(min_tokens_to_keep)
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative <= (1 - p)
    sorted_remove[..., -min_tokens_to_keep:] = 0
    remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
    return scores.masked_fill(remove, NEG_INF)


def min_p_filter(scores: torch.Tensor, min_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Min-p (Nguyen et al. 2024): drop tokens with p < min_p · p_max."""
    check_number("min_p", min_p, lambda v: 0 <= v <= 1, "0 <= min_p <= 1")
    check_keep(min_tokens_to_keep)
    probs = torch.softmax(scores, dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    remove = probs < threshold
    k = min(min_tokens_to_keep, probs.shape[-1])
    remove = remove.scatter(-1, torch.topk(probs, k, dim=-1).indices, False)
    return scores.masked_fill(remove, NEG_INF)


def typical_filter(scores: torch.Tensor, mass: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Locally typical sampling (Meister et al. 2023, Eq. 5): sort by |−log p − H| and keep
    tokens until their mass reaches ``mass`` (the crossing token is kept)."""
    check_number("typical_p", mass, lambda v: 0 < v <= 1, "0 < typical_p <= 1")
    check_keep(min_tokens_to_keep)
    normalized = torch.nn.functional.log_softmax(scores, dim=-1)
    p = torch.exp(normalized)
    ent = -(normalized * p).nansum(-1, keepdim=True)
    shifted = torch.abs((-normalized) - ent)
    sorted_scores, sorted_indices = torch.sort(shifted, descending=False)
    sorted_logits = scores.gather(-1, sorted_indices)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    last_ind = (cumulative < mass).sum(dim=1).clamp(max=sorted_scores.shape[-1] - 1)
    sorted_remove = sorted_scores > sorted_scores.gather(1, last_ind.view(-1, 1))
    sorted_remove[..., :min_tokens_to_keep] = 0
    remove = sorted_remove.scatter(1, sorted_indices, sorted_remove)
    return scores.masked_fill(remove, NEG_INF)


def epsilon_filter(scores: torch.Tensor, epsilon: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Epsilon sampling (Hewitt et al. 2022, §4): drop tokens with p < ε."""
    check_number("epsilon_cutoff", epsilon, lambda v: 0 <= v < 1, "0 <= epsilon_cutoff < 1")
    check_keep(min_tokens_to_keep)
    remove = keep_top(scores, scores.softmax(dim=-1) < epsilon, min_tokens_to_keep)
    return scores.masked_fill(remove, NEG_INF)


def eta_filter(scores: torch.Tensor, epsilon: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Eta sampling (Hewitt et al. 2022, Eq. 7): drop tokens with p < η, η = min(ε, √ε·e^−H).
    (transformers takes the min, as the paper does.)"""
    check_number("eta_cutoff", epsilon, lambda v: 0 <= v < 1, "0 <= eta_cutoff < 1")
    check_keep(min_tokens_to_keep)
    eps = torch.tensor(epsilon, device=scores.device)
    probs = scores.softmax(dim=-1)
    entropy = torch.distributions.Categorical(logits=scores).entropy()
    eta = torch.min(eps, torch.sqrt(eps) * torch.exp(-entropy))[..., None]
    remove = keep_top(scores, probs < eta, min_tokens_to_keep)
    return scores.masked_fill(remove, NEG_INF)


# ----------------------------------------------------------------------------- helpers

def entropy(scores: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of softmax(scores), ``(batch, vocab) -> (batch,)``; -inf scores
    contribute 0."""
    logp = torch.log_softmax(scores, dim=-1)
    return -(logp.exp() * logp).nan_to_num(0.0).sum(-1)
