"""Processors beyond transformers' core: the OpenAI/vLLM penalties and llama.cpp's samplers.

Same conventions as ``processors.py``: ``scores`` is ``(batch, vocab)``, a **new** tensor is
returned (inputs are never modified), removed tokens get ``-inf``. Context ids use ``-1`` for
left padding. Definitions follow the upstream code named in each docstring; where we differ,
the docstring says how.
"""

from __future__ import annotations

import math
import weakref

import torch

from .errors import ConfigError, check_integer, check_number
from .processors import NEG_INF, check_keep, keep_top

FLOAT_MAX_LOG = 88.7228391  # ln(float32 max): llama.cpp's DRY exponent clamp


# ----------------------------------------------------------------------------- counting penalties

def token_counts(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """How often each token occurs in each row of ``ids`` ``(batch, length)``, as a
    ``(batch, vocab)`` float tensor. Ids < 0 (padding) are not counted."""
    ids = ids.long()
    safe = torch.where(ids < 0, vocab_size, ids)  # a spare column absorbs the padding
    counts = torch.zeros(ids.shape[0], vocab_size + 1, device=ids.device)
    counts.scatter_add_(1, safe, torch.ones_like(safe, dtype=counts.dtype))
    return counts[:, :vocab_size]


def frequency_penalty(scores: torch.Tensor, generated_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """OpenAI/vLLM frequency penalty: ``logit -= f · count``, count = occurrences of the token
    in ``generated_ids`` (the prompt is not passed in, so it is not counted)."""
    check_number("frequency_penalty", penalty, lambda v: -2 <= v <= 2, "-2 <= frequency_penalty <= 2")
    counts = token_counts(generated_ids, scores.shape[-1]).to(scores.device, scores.dtype)
    return scores - penalty * counts


def presence_penalty(scores: torch.Tensor, generated_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """OpenAI/vLLM presence penalty: ``logit -= p · [count > 0]`` over ``generated_ids``."""
    check_number("presence_penalty", penalty, lambda v: -2 <= v <= 2, "-2 <= presence_penalty <= 2")
    present = token_counts(generated_ids, scores.shape[-1]) > 0
    return scores - penalty * present.to(scores.device, scores.dtype)


def logit_bias(scores: torch.Tensor, bias: dict[int, float]) -> torch.Tensor:
    """Additive per-token bias (OpenAI/llama.cpp ``logit_bias``); ``-inf`` bans a token."""
    vector = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
    if bias:
        ids = torch.tensor(list(bias), dtype=torch.long, device=scores.device)
        vector[ids] = torch.tensor(list(bias.values()), dtype=scores.dtype, device=scores.device)
    return scores + vector


# ----------------------------------------------------------------------------- DRY

def _z_array(s: list[int]) -> list[int]:
    """Z-algorithm: ``z[k]`` = length of the longest common prefix of ``s`` and ``s[k:]``."""
    n = len(s)
    z = [0] * n
    left = right = 0  # the rightmost match window [left, right)
    for k in range(1, n):
        if k < right:
            z[k] = min(right - k, z[k - left])
        while k + z[k] < n and s[z[k]] == s[k + z[k]]:
            z[k] += 1
        if k + z[k] > right:
            left, right = k, k + z[k]
    return z


def dry_repeat_lengths(tokens: list[int], allowed_length: int,
                       breakers: frozenset[int] | set[int] = frozenset()) -> dict[int, int]:
    """DRY match lengths (llama.cpp ``llama_sampler_dry_apply``, steps 1–3).

    For each token t that would extend a repeat: L(t) = the longest suffix of ``tokens`` that
    also occurs earlier, immediately followed by t. Only L ≥ ``allowed_length`` is returned.
    A suffix never reaches back across the most recent breaker token, and nothing is returned
    when fewer than ``allowed_length`` tokens follow that breaker. The suffix matches are a
    Z-algorithm over the reversed context, O(len(tokens)).
    """
    n = len(tokens)
    if n <= allowed_length:
        return {}
    limit = n
    for i in range(n):
        if tokens[n - 1 - i] in breakers:
            limit = i
            break
    if limit < allowed_length:
        return {}
    reverse = tokens[::-1]
    z = _z_array(reverse)
    best: dict[int, int] = {}
    for k in range(1, n):
        # reverse[k:] starts at the earlier occurrence's end; the token after it is reverse[k-1]
        length = min(z[k], limit)
        if length >= allowed_length and best.get(reverse[k - 1], 0) < length:
            best[reverse[k - 1]] = length
    return best


def dry_penalty(scores: torch.Tensor, context_ids: torch.Tensor, multiplier: float, base: float,
                allowed_length: int, breakers: frozenset[int] | set[int] = frozenset(),
                last_n: int = -1) -> torch.Tensor:
    """DRY, "don't repeat yourself" (p-e-w, oobabooga #5677; llama.cpp #9702).

    ``logit(t) -= multiplier · base^(L(t) − allowed_length)`` for every t with
    L(t) ≥ ``allowed_length`` (see ``dry_repeat_lengths``), over the last ``last_n`` tokens of
    ``context_ids`` ``(batch, length)`` (-1 = all; the prompt is part of the context). The
    exponent is clamped to ``88.72 / ln(base)`` as llama.cpp does, and breaker tokens are never
    penalised.
    """
    check_number("dry_multiplier", multiplier, lambda v: v >= 0, "dry_multiplier >= 0 (0 = off)")
    check_number("dry_base", base, lambda v: v >= 1, "dry_base >= 1")
    check_integer("dry_allowed_length", allowed_length, 1)
    check_integer("dry_penalty_last_n", last_n, -1, " (-1 = the whole context)")
    vocab_size = scores.shape[-1]
    max_exponent = int(FLOAT_MAX_LOG / math.log(base)) if base > 1.000001 else 0
    penalty = torch.zeros_like(scores)
    for row, ids in enumerate(context_ids.tolist()):
        tokens = [t for t in ids if t >= 0]
        if last_n > 0:
            tokens = tokens[-last_n:]
        for token, length in dry_repeat_lengths(tokens, allowed_length, breakers).items():
            if token in breakers or token >= vocab_size:
                continue
            exponent = length - allowed_length
            if max_exponent > 0:
                exponent = min(exponent, max_exponent)
            penalty[row, token] = multiplier * base ** exponent
    return scores - penalty


_VOCAB_TEXTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _vocab_texts(tokenizer) -> list[str]:
    """The text of every token id, special tokens written out (memoised per tokenizer)."""
    try:
        return _VOCAB_TEXTS[tokenizer]
    except (KeyError, TypeError):
        pass
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False,
                                   clean_up_tokenization_spaces=False)
    try:
        _VOCAB_TEXTS[tokenizer] = texts
    except TypeError:  # not weak-referenceable: no memo
        pass
    return texts


def breaker_token_ids(tokenizer, breakers: tuple[str, ...]) -> frozenset[int]:
    """Token ids whose text contains one of the ``breakers`` strings.

    This is llama.cpp's single-token rule (``get_overlapping_token_sequences``: a token whose
    text contains the breaker). llama.cpp also registers multi-token breakers (a token ending
    with the start of the breaker, followed by the tokens of its rest); we do not. For
    single-character breakers, such as the defaults, the two rules are the same.
    """
    if not breakers:
        return frozenset()
    return frozenset(i for i, text in enumerate(_vocab_texts(tokenizer))
                     if any(b in text for b in breakers))


def resolve_logit_bias(pairs: tuple, tokenizer, vocab_size: int | None) -> dict[int, float]:
    """``logit_bias`` pairs (token id or text → bias) as ``{token id: bias}``.

    A text must be exactly one token (tokenised without special-token additions)."""
    bias: dict[int, float] = {}
    for key, value in pairs:
        token = key
        if isinstance(key, str):
            if tokenizer is None:
                raise ConfigError(f"logit_bias key {key!r} is text, but no tokenizer was given to "
                                  "map it to a token id; allowed here: token ids")
            ids = tokenizer.encode(key, add_special_tokens=False)
            if len(ids) != 1:
                raise ConfigError(f"logit_bias key {key!r} is {len(ids)} tokens {ids}; allowed: a "
                                  "text that is exactly one token, or a token id")
            token = int(ids[0])
        if vocab_size is not None and token >= vocab_size:
            raise ConfigError(f"logit_bias token id {token} is out of range; allowed: "
                              f"0 <= id < {vocab_size} (the model's vocabulary)")
        if token in bias:
            raise ConfigError(f"logit_bias sets token {token} twice (key {key!r}); allowed: each "
                              "token at most once")
        bias[token] = float(value)
    return bias


# ----------------------------------------------------------------------------- truncation

def top_n_sigma_filter(scores: torch.Tensor, n: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Top-nσ (Tang et al. 2024, arXiv 2411.07641, Eq. 3): keep logits ≥ max − n·σ, with σ the
    population standard deviation over the finite logits (llama.cpp ``top_n_sigma``). Scaling
    the logits (temperature) scales max and σ alike, so the kept set does not depend on T."""
    check_number("top_n_sigma", n, lambda v: v > 0, "top_n_sigma > 0 (<= 0 or None = off)")
    check_keep(min_tokens_to_keep)
    finite = torch.isfinite(scores)
    count = finite.sum(-1, keepdim=True).clamp(min=1)
    mean = torch.where(finite, scores, 0.0).sum(-1, keepdim=True) / count
    var = torch.where(finite, (scores - mean) ** 2, 0.0).sum(-1, keepdim=True) / count
    threshold = scores.amax(-1, keepdim=True) - n * var.sqrt()
    remove = keep_top(scores, scores < threshold, min_tokens_to_keep)
    return scores.masked_fill(remove, NEG_INF)


def xtc_filter(scores: torch.Tensor, threshold: float, probability: float, uniform: torch.Tensor,
               min_tokens_to_keep: int = 1) -> torch.Tensor:
    """XTC, "exclude top choices" (p-e-w, oobabooga #6335; llama.cpp #9742).

    In each row whose draw ``uniform[row] < probability``: the tokens with p ≥ ``threshold`` are
    the top choices; when at least two qualify, all of them but the least probable are removed
    (among equally probable least ones, the lowest id stays). A row is left alone if fewer than
    ``min_tokens_to_keep`` tokens would remain (llama.cpp's ``min_keep`` check).
    ``uniform`` ``(batch,)`` is drawn by the caller from the step's seeded generator.
    """
    check_number("xtc_threshold", threshold, lambda v: 0 <= v <= 1, "0 <= xtc_threshold <= 1")
    check_number("xtc_probability", probability, lambda v: 0 <= v <= 1, "0 <= xtc_probability <= 1")
    check_keep(min_tokens_to_keep)
    probs = torch.softmax(scores, dim=-1)
    finite = torch.isfinite(scores)
    top = (probs >= threshold) & finite
    n_top = top.sum(-1, keepdim=True)
    least = torch.where(top, probs, math.inf).argmin(-1, keepdim=True)
    remove = top.scatter(-1, least, False)
    remaining = finite.sum(-1, keepdim=True) - (n_top - 1)
    fires = (uniform.to(scores.device)[:, None] < probability) & (n_top >= 2)
    fires &= remaining >= min_tokens_to_keep
    return scores.masked_fill(remove & fires, NEG_INF)


def p_less_filter(scores: torch.Tensor, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """p-less sampling (llama.cpp ``p-less``; Tan, Wu & Howard 2025, "p-less Sampling: A Robust
    Hyperparameter-Free Approach for LLM Decoding", arXiv 2509.23234): keep the tokens whose probability is at least
    the collision probability Σ p², the chance that two independent draws agree. A peaked
    distribution keeps few tokens, a flat one many; there is no parameter to tune."""
    check_keep(min_tokens_to_keep)
    probs = torch.softmax(scores, dim=-1)
    collision = (probs * probs).sum(-1, keepdim=True)
    remove = keep_top(scores, probs < collision, min_tokens_to_keep)
    return scores.masked_fill(remove, NEG_INF)


# ----------------------------------------------------------------------------- temperature

def dynamic_temperature(scores: torch.Tensor, temperature: float, dynatemp_range: float,
                        dynatemp_exponent: float = 1.0) -> torch.Tensor:
    """Dynamic temperature (llama.cpp ``llama_sampler_temp_ext_apply``, "entropy-based dynamic
    temperature" of kalomaze, llama.cpp #4972): per row,

        T = T_min + (T_max − T_min) · (H / ln N) ** dynatemp_exponent

    with T_min = max(0, T − range), T_max = T + range, H the entropy of softmax(scores) and N
    the number of tokens still allowed (finite). A row with one token left is untouched; T = 0
    keeps only the top token (llama.cpp's temperature <= 0). ``dynatemp_range`` 0 is plain
    temperature."""
    check_number("temperature", temperature, lambda v: v > 0, "temperature > 0")
    check_number("dynatemp_range", dynatemp_range, lambda v: v >= 0, "dynatemp_range >= 0 (0 = off)")
    check_number("dynatemp_exponent", dynatemp_exponent, lambda v: v >= 0, "dynatemp_exponent >= 0")
    if dynatemp_range == 0:
        return scores / temperature
    t = dynamic_temperature_value(scores, temperature, dynatemp_range, dynatemp_exponent)[:, None]
    top_only = scores.masked_fill(scores < scores.amax(-1, keepdim=True), NEG_INF)
    scaled = torch.where(t > 0, scores / t.clamp(min=torch.finfo(scores.dtype).tiny), top_only)
    return torch.where(torch.isnan(t), scores, scaled)


def dynamic_temperature_value(scores: torch.Tensor, temperature: float, dynatemp_range: float,
                              dynatemp_exponent: float = 1.0) -> torch.Tensor:
    """The temperature ``dynamic_temperature`` uses for every row, ``(batch,)`` (for traces);
    NaN for a row with one token left (untouched)."""
    low, high = max(0.0, temperature - dynatemp_range), temperature + dynatemp_range
    allowed = torch.isfinite(scores).sum(-1)
    logp = torch.log_softmax(scores, dim=-1)
    entropy = -(logp.exp() * logp).nan_to_num(0.0).sum(-1)
    normalised = entropy / torch.log(allowed.clamp(min=2).to(scores.dtype))
    t = low + (high - low) * normalised.pow(dynatemp_exponent)
    return torch.where(allowed > 1, t, torch.nan)


# ----------------------------------------------------------------------------- adaptive-p

# llama.cpp's adaptive-p transform constants (``llama-sampling.cpp``, PR #17927): width of the
# favoured band around the target, the logit at the target, how fast logits fall off.
ADAPTIVE_WIDTH = 0.3
ADAPTIVE_PEAK = 5.0
ADAPTIVE_SHARPNESS = 10.0


def check_adaptive(target: float, decay: float) -> None:
    check_number("adaptive_target", target, lambda v: 0 <= v <= 1,
                 "0 <= adaptive_target <= 1 (< 0 = off: leave the stage out)")
    check_number("adaptive_decay", decay, lambda v: 0 <= v <= 0.99, "0 <= adaptive_decay <= 0.99")


def adaptive_start(target: float, decay: float, rows: int) -> torch.Tensor:
    """The per-row state ``(rows, 2)``: [weighted sum, total weight] of the exponential moving
    average of chosen tokens' probabilities, primed as if the target had been met all along
    (llama.cpp: ``target / (1 − decay)``, ``1 / (1 − decay)``)."""
    check_adaptive(target, decay)
    return torch.tensor([[target / (1.0 - decay), 1.0 / (1.0 - decay)]] * rows, dtype=torch.float32)


def adaptive_target_now(state: torch.Tensor, target: float) -> torch.Tensor:
    """The adapted target of every row, ``(rows,)``: clamp(2·target − EMA, 0, 1). When recent
    choices were more likely than the target, it aims lower, and the other way round."""
    return (2.0 * target - state[:, 0] / state[:, 1]).clamp(0.0, 1.0)


def adaptive_p(scores: torch.Tensor, state: torch.Tensor, target: float, decay: float) -> torch.Tensor:
    """Adaptive-p (llama.cpp ``llama_sampler_adaptive_p_apply``, PR #17927): new logits that peak
    at the tokens whose probability is nearest the adapted target,

        d = |p − target_now| / 0.3,   logit = 5 − 10 · d² / (1 + d)

    (quadratic near the target, linear in the tails); removed tokens stay removed. The caller
    draws from softmax of the result and updates ``state`` with ``adaptive_update``."""
    check_adaptive(target, decay)
    probs = torch.softmax(scores, dim=-1)
    aim = adaptive_target_now(state.to(scores.device), target)[:, None]
    d = ((probs - aim) / ADAPTIVE_WIDTH).abs()
    logits = ADAPTIVE_PEAK - ADAPTIVE_SHARPNESS * d * d / (1.0 + d)
    return torch.where(torch.isfinite(scores), logits.to(scores.dtype), NEG_INF)


def adaptive_update(state: torch.Tensor, chosen_prob: torch.Tensor, decay: float) -> torch.Tensor:
    """After the draw: EMA ← (p + decay · weighted sum, 1 + decay · total weight), with p the
    chosen token's probability *before* the transform (llama.cpp ``adaptive_p_accept``)."""
    p = chosen_prob.to(state.device, state.dtype)
    return torch.stack([p + decay * state[:, 0], 1.0 + decay * state[:, 1]], dim=1)
