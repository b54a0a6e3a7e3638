"""The processor chain: an explicit, ordered list of stages built from a ``DecodingConfig``.

The order is data (``PROCESSOR_ORDERS``, chosen by ``processor_order``). A stage is in the chain
only when its knob is on, so an inactive knob costs nothing and changes no bits.

``"transformers"`` (default) — ``GenerationMixin._get_logits_processor`` (5.x), with the stages
transformers lacks slotted in:

    logit_bias → diversity_penalty → repetition_penalty → frequency_penalty → presence_penalty
    → dry → no_repeat_ngram → min_new_tokens → ignore_eos
    → temperature → top_k → top_p → min_p → typical_p → epsilon_cutoff → eta_cutoff
    → top_n_sigma → xtc

``"llama.cpp"`` — ``common_sampler_init``'s default chain (temperature last):

    logit_bias → diversity_penalty → min_new_tokens → ignore_eos → repetition_penalty
    → frequency_penalty → presence_penalty → no_repeat_ngram → dry → top_n_sigma → top_k
    → typical_p → top_p → min_p → epsilon_cutoff → eta_cutoff → xtc → temperature

(no_repeat_ngram, epsilon/eta and the diversity penalty are not in llama.cpp: they sit with
the penalties / truncations; the EOS bans sit with logit_bias, as llama.cpp implements
ignore_eos as a -inf bias.) A tuple of stage names is an explicit order; it must name every
active stage.

Which stages a strategy runs (``planned_stages``): sampling runs all; greedy, beam and
contrastive run the penalty stages only (sampling stages cannot change an argmax; transformers
does not build them outside sampling); mirostat runs the penalties, then temperature → mirostat
(llama.cpp's mirostat chain, which ignores top-k/top-p/…). Penalties — repetition, frequency,
presence, DRY, no-repeat-ngram, logit_bias — therefore apply to every strategy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from . import processors as P
from . import samplers as S
from .diverse_beam import hamming_diversity
from .errors import ConfigError, GenerationError
from .mirostat import mirostat_v2_filter

if TYPE_CHECKING:
    from .config import DecodingConfig

# Stage names. Penalties act in every strategy; sampling stages only when sampling.
PENALTY_STAGES = ("logit_bias", "diversity_penalty", "repetition_penalty", "frequency_penalty",
                  "presence_penalty", "dry", "no_repeat_ngram", "min_new_tokens", "ignore_eos")
SAMPLING_STAGES = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff",
                   "eta_cutoff", "top_n_sigma", "xtc")
STAGE_NAMES = PENALTY_STAGES + SAMPLING_STAGES
PROCESSOR_ORDERS = {
    # transformers' _get_logits_processor (sequence bias first, Hamming diversity next, as in
    # 4.x), the penalties transformers lacks right after repetition_penalty, truncations it
    # lacks after eta.
    "transformers": ("logit_bias", "diversity_penalty", "repetition_penalty", "frequency_penalty",
                     "presence_penalty", "dry", "no_repeat_ngram", "min_new_tokens", "ignore_eos",
                     "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff",
                     "eta_cutoff", "top_n_sigma", "xtc"),
    # llama.cpp's common_sampler_init: logit_bias → penalties → dry → top_n_sigma → top_k →
    # typical → top_p → min_p → xtc → temperature. EOS bans sit with logit_bias (llama.cpp
    # implements ignore_eos as a -inf bias); no_repeat_ngram with the penalties; epsilon/eta
    # with the other truncations.
    "llama.cpp": ("logit_bias", "diversity_penalty", "min_new_tokens", "ignore_eos",
                  "repetition_penalty", "frequency_penalty", "presence_penalty", "no_repeat_ngram",
                  "dry", "top_n_sigma", "top_k", "typical_p", "top_p", "min_p", "epsilon_cutoff",
                  "eta_cutoff", "xtc", "temperature"),
}

@dataclass
class StepContext:
    """What a stage may look at besides the scores.

    input_ids: ``(batch, length)`` every token so far, prompt included; ``-1`` marks left padding.
    prompt_length: number of positions before the first generated token (padding included).
    generator: the seeded generator of every row, or ``row_generators``: ``(rows, generator)``
    pairs when prompts of a batch have their own (random stages draw through ``uniform``).
    group_tokens: diverse beam search, ``(batch, n)`` tokens chosen by earlier groups this step.
    mirostat_mu: mirostat, ``(batch,)`` the current μ of every row.
    """

    input_ids: torch.Tensor
    prompt_length: int
    generator: torch.Generator | None = None
    row_generators: list[tuple[slice, torch.Generator]] | None = None
    group_tokens: torch.Tensor | None = None
    mirostat_mu: torch.Tensor | None = None

    @property
    def generated(self) -> int:
        return self.input_ids.shape[-1] - self.prompt_length

    @property
    def generated_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_length:]

    def uniform(self, rows: int) -> torch.Tensor:
        """Exactly one uniform draw in [0, 1) per row, from that row's seeded generator."""
        pairs = self.row_generators or ([(slice(0, rows), self.generator)] if self.generator else [])
        if not pairs:
            raise GenerationError("a random stage (XTC) needs the step's seeded generator")
        draws = torch.empty(rows)
        for rows_slice, generator in pairs:
            count = len(range(rows)[rows_slice])
            draws[rows_slice] = torch.rand(count, generator=generator, device=generator.device).cpu()
        return draws


@dataclass(frozen=True)
class Stage:
    name: str
    apply: Callable[[StepContext, torch.Tensor], torch.Tensor]
    samples_only: bool = False   # a truncation/temperature stage, built only when sampling


# ---------------------------------------------------------------------- stage plan

def stage_switches(c: "DecodingConfig") -> dict[str, bool]:
    """Which stages the knobs turn on (before the strategy decides what it runs)."""
    return {
        "logit_bias": bool(c.logit_bias),
        "diversity_penalty": (c.strategy == "beam" and c.num_beam_groups > 1
                              and c.diversity_penalty > 0),
        "repetition_penalty": c.repetition_penalty != 1.0,
        "frequency_penalty": c.frequency_penalty != 0.0,
        "presence_penalty": c.presence_penalty != 0.0,
        "dry": c.dry_multiplier > 0.0 and c.dry_penalty_last_n != 0,
        "no_repeat_ngram": c.no_repeat_ngram_size > 0,
        "min_new_tokens": c.min_new_tokens > 0,
        "ignore_eos": c.ignore_eos,
        "temperature": c.temperature != 1.0,
        "top_k": c.top_k != 0,
        "top_p": c.top_p < 1.0,
        "min_p": c.min_p is not None,
        "typical_p": c.typical_p < 1.0,
        "epsilon_cutoff": c.epsilon_cutoff > 0.0,
        "eta_cutoff": c.eta_cutoff > 0.0,
        "top_n_sigma": c.top_n_sigma is not None and c.top_n_sigma > 0,
        "xtc": c.xtc_probability > 0.0,
    }


def resolve_order(order: str | tuple[str, ...]) -> tuple[str, ...]:
    return PROCESSOR_ORDERS[order] if isinstance(order, str) else tuple(order)


def planned_stages(c: "DecodingConfig", order: tuple[str, ...] | None = None) -> list[str]:
    """The stage names the chain runs for ``c``, in order.

    * sample: every active stage, in ``processor_order``;
    * greedy, beam, contrastive: the active penalty stages only (sampling stages cannot change an
      argmax, and transformers does not build them outside sampling);
    * mirostat: the active penalty stages, then temperature → mirostat, as llama.cpp's mirostat
      chain (its other truncations are ignored, as in llama.cpp).
    """
    on = stage_switches(c)
    order = [n for n in (order or resolve_order(c.processor_order)) if on[n]]
    if c.strategy == "sample":
        return order
    penalties = [n for n in order if n in PENALTY_STAGES]
    if c.strategy == "mirostat":
        return penalties + (["temperature"] if on["temperature"] else []) + ["mirostat"]
    return penalties



# ---------------------------------------------------------------------- stage builders

def _stage(name: str, c: "DecodingConfig", eos_ids: list[int], tokenizer, vocab_size) -> Stage | None:
    keep = c.min_tokens_to_keep
    if name == "logit_bias":
        bias = S.resolve_logit_bias(c.logit_bias, tokenizer, vocab_size)
        return Stage(name, lambda ctx, s: S.logit_bias(s, bias))
    if name == "diversity_penalty":
        return Stage(name, lambda ctx, s: hamming_diversity(s, ctx.group_tokens, c.diversity_penalty))
    if name == "repetition_penalty":
        return Stage(name, lambda ctx, s: P.repetition_penalty(
            s, ctx.input_ids if c.penalize_prompt else ctx.generated_ids, c.repetition_penalty))
    if name == "frequency_penalty":
        return Stage(name, lambda ctx, s: S.frequency_penalty(s, ctx.generated_ids, c.frequency_penalty))
    if name == "presence_penalty":
        return Stage(name, lambda ctx, s: S.presence_penalty(s, ctx.generated_ids, c.presence_penalty))
    if name == "dry":
        if c.dry_sequence_breakers and tokenizer is None:
            raise ConfigError("dry_sequence_breakers are text and no tokenizer was given to map "
                              "them to token ids; allowed here: dry_sequence_breakers=()")
        breakers = S.breaker_token_ids(tokenizer, c.dry_sequence_breakers)
        return Stage(name, lambda ctx, s: S.dry_penalty(
            s, ctx.input_ids, c.dry_multiplier, c.dry_base, c.dry_allowed_length, breakers,
            c.dry_penalty_last_n))
    if name == "no_repeat_ngram":
        return Stage(name, lambda ctx, s: P.no_repeat_ngram(s, ctx.input_ids, c.no_repeat_ngram_size))
    if name in ("min_new_tokens", "ignore_eos") and not eos_ids:
        return None
    if name == "min_new_tokens":
        return Stage(name, lambda ctx, s: (
            P.forbid_tokens(s, eos_ids) if ctx.generated < c.min_new_tokens else s.clone()))
    if name == "ignore_eos":
        return Stage(name, lambda ctx, s: P.forbid_tokens(s, eos_ids))
    if name == "temperature":
        return Stage(name, lambda ctx, s: P.temperature(s, c.temperature), True)
    if name == "top_k":
        return Stage(name, lambda ctx, s: P.top_k_filter(s, c.top_k, keep), True)
    if name == "top_p":
        return Stage(name, lambda ctx, s: P.top_p_filter(s, c.top_p, keep), True)
    if name == "min_p":
        return Stage(name, lambda ctx, s: P.min_p_filter(s, c.min_p, keep), True)
    if name == "typical_p":
        return Stage(name, lambda ctx, s: P.typical_filter(s, c.typical_p, keep), True)
    if name == "epsilon_cutoff":
        return Stage(name, lambda ctx, s: P.epsilon_filter(s, c.epsilon_cutoff, keep), True)
    if name == "eta_cutoff":
        return Stage(name, lambda ctx, s: P.eta_filter(s, c.eta_cutoff, keep), True)
    if name == "top_n_sigma":
        return Stage(name, lambda ctx, s: S.top_n_sigma_filter(s, c.top_n_sigma, keep), True)
    if name == "xtc":
        return Stage(name, lambda ctx, s: S.xtc_filter(
            s, c.xtc_threshold, c.xtc_probability, ctx.uniform(s.shape[0]), keep), True)
    if name == "mirostat":
        return Stage(name, lambda ctx, s: mirostat_v2_filter(s, ctx.mirostat_mu, keep), True)
    raise KeyError(name)


def build_chain(config: "DecodingConfig", eos_ids: list[int], tokenizer=None,
                vocab_size: int | None = None) -> list[Stage]:
    """The ordered stages for ``config`` (see the module docstring for the orders).

    ``tokenizer`` maps text knobs (``logit_bias`` keys, DRY breakers) to token ids;
    ``vocab_size`` checks ``logit_bias`` ids. The EOS stages are skipped without ``eos_ids``.
    """
    stages = [_stage(name, config, eos_ids, tokenizer, vocab_size) for name in planned_stages(config)]
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
