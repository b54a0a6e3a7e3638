"""The stage registry: one entry per stage of the processor chain, and nothing written twice.

An entry (``StageSpec``) says
* its name and the ``DecodingConfig`` fields it reads (``fields``, the first is its main knob);
* when it is on (``is_on``: the one place that says what "off" means for its knobs);
* whether it is a penalty (every strategy runs it) or a sampling stage (sampling only);
* its slot in each processor order (``slots``: the orders are derived from these);
* how to build it (``build``): a ``Stage``, a small object that prints with its parameters,
  ``top_p(p=0.9, min_tokens_to_keep=1)``, and calls one processor function;
* the range and step of its knobs for the lab's sliders (``ui``); their help text is the
  config field's own.

The chain orders (``PROCESSOR_ORDERS``), ``stage_switches``, the what-if knobs, the chart labels
and the lab's slider ranges all read this table. Adding a sampler: a config field, one entry
here, one processor function, its tests.

This module knows configs only by their attributes (it imports neither ``config`` nor
``chain``), so ``config`` can validate ``processor_order`` against it without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import guide as G
from . import processors as P
from . import samplers as S
from .diverse_beam import hamming_diversity
from .errors import ConfigError, GenerationError
from .mirostat import initial_mu, mirostat_v2_filter, update_mu

PENALTY, SAMPLING = "penalty", "sampling"


@dataclass
class StepContext:
    """What a stage may look at besides the scores.

    input_ids: ``(batch, length)`` every token so far, prompt included; ``-1`` marks left padding.
    prompt_length: number of positions before the first generated token (padding included).
    generator: the seeded generator of every row, or ``row_generators``: ``(rows, generator)``
    pairs when prompts of a batch have their own (random stages draw through ``uniform``).
    group_tokens: diverse beam search, ``(batch, n)`` tokens chosen by earlier groups this step.
    state: the per-row state of the stateful stages (mirostat's μ, adaptive-p's average), by
    stage name.
    live: the rows still generating (None: all).
    guide: ``(batch, vocab)`` the step's second logits (``guide.GuideStream``: the base with the
    adapter disabled, or the unconditioned prompt), when a two-model stage is on.
    """

    input_ids: torch.Tensor
    prompt_length: int
    generator: torch.Generator | None = None
    row_generators: list[tuple[slice, torch.Generator]] | None = None
    group_tokens: torch.Tensor | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    live: list[int] | None = None
    guide: torch.Tensor | None = None

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
class Memory:
    """The per-row state of a stateful stage: ``start(rows)`` before the first step; after each
    pick, ``update(state, stage_input, stage_output, chosen)`` returns the next state and what to
    trace for this step (name → ``(rows,)`` values, written to ``StepTrace.extra``)."""

    start: Callable[[int], torch.Tensor]
    update: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


class Stage:
    """One built stage: ``fn(scores, **inputs(ctx), **params)``; prints with its parameters."""

    __slots__ = ("name", "fn", "params", "inputs", "memory")

    def __init__(self, name: str, fn: Callable[..., torch.Tensor], params: dict[str, Any],
                 inputs: Callable[[StepContext], dict[str, Any]] | None = None,
                 memory: Memory | None = None) -> None:
        self.name, self.fn, self.params, self.inputs, self.memory = name, fn, params, inputs, memory

    def apply(self, ctx: StepContext, scores: torch.Tensor) -> torch.Tensor:
        if self.inputs is None:
            return self.fn(scores, **self.params)
        return self.fn(scores, **self.inputs(ctx), **self.params)

    def __repr__(self) -> str:
        def show(value: Any) -> str:
            text = repr(value)
            return text if len(text) <= 40 else f"<{len(value)} entries>"
        return f"{self.name}({', '.join(f'{k}={show(v)}' for k, v in self.params.items())})"


@dataclass(frozen=True)
class Knob:
    """A config field as a lab control: range and step; ``none_at``: the control value that
    stands for the config's ``None`` (off), e.g. min_p's slider 0; ``number``: a number box
    (with ``fmt``) rather than a slider."""

    field: str
    low: float
    high: float
    step: float
    none_at: float | None = None
    number: bool = False
    fmt: str | None = None


@dataclass(frozen=True)
class Built:
    """What a stage builder may need besides the config."""

    eos_ids: list[int]
    tokenizer: Any = None
    vocab_size: int | None = None


@dataclass(frozen=True)
class StageSpec:
    name: str
    fields: tuple[str, ...]
    is_on: Callable[[Any], bool]
    kind: str                                   # PENALTY or SAMPLING
    build: Callable[[Any, Built], Stage | None]
    slots: dict[str, int] = field(default_factory=dict)   # processor order -> position
    ui: tuple[Knob, ...] = ()

    @property
    def knob(self) -> str:
        """The config field that sets the stage (chart labels: ``top_p = 0.9``)."""
        return self.fields[0]


def _keep(c) -> dict[str, int]:
    return {"min_tokens_to_keep": c.min_tokens_to_keep}


def _logit_bias(c, b: Built) -> Stage:
    return Stage("logit_bias", S.logit_bias,
                 {"bias": S.resolve_logit_bias(c.logit_bias, b.tokenizer, b.vocab_size)})


def _dry(c, b: Built) -> Stage:
    if c.dry_sequence_breakers and b.tokenizer is None:
        raise ConfigError("dry_sequence_breakers are text and no tokenizer was given to map "
                          "them to token ids; allowed here: dry_sequence_breakers=()")
    return Stage("dry", S.dry_penalty,
                 {"multiplier": c.dry_multiplier, "base": c.dry_base,
                  "allowed_length": c.dry_allowed_length,
                  "breakers": S.breaker_token_ids(b.tokenizer, c.dry_sequence_breakers),
                  "last_n": c.dry_penalty_last_n},
                 lambda ctx: {"context_ids": ctx.input_ids})


def _repetition(c, b: Built) -> Stage:
    if c.penalize_prompt:
        return Stage("repetition_penalty", P.repetition_penalty, {"penalty": c.repetition_penalty},
                     lambda ctx: {"context_ids": ctx.input_ids})
    return Stage("repetition_penalty", P.repetition_penalty, {"penalty": c.repetition_penalty},
                 lambda ctx: {"context_ids": ctx.generated_ids})


def _min_new_tokens(c, b: Built) -> Stage | None:
    if not b.eos_ids:       # nothing to forbid: the stage is left out
        return None
    return Stage("min_new_tokens", P.min_new_tokens_filter,
                 {"min_new_tokens": c.min_new_tokens, "eos_ids": b.eos_ids},
                 lambda ctx: {"generated": ctx.generated})


def _ignore_eos(c, b: Built) -> Stage | None:
    return Stage("ignore_eos", P.forbid_tokens, {"token_ids": b.eos_ids}) if b.eos_ids else None


def _mirostat(c, b: Built) -> Stage:
    tau, eta = c.mirostat_tau, c.mirostat_eta

    def update(mu, stage_input, stage_output, chosen):
        # llama.cpp: the surprise of the drawn token under the truncated, renormalised distribution
        probs = torch.softmax(stage_output, dim=-1)
        observed = -torch.log2(probs.gather(1, chosen[:, None]).squeeze(1)).cpu()
        return update_mu(mu, observed, tau, eta), {"mirostat_mu": mu, "surprise": observed}

    return Stage("mirostat", mirostat_v2_filter, _keep(c),
                 lambda ctx: {"mu": ctx.state["mirostat"]},
                 Memory(lambda rows: initial_mu(tau, rows), update))


def _adaptive(c, b: Built) -> Stage:
    target, decay = c.adaptive_target, c.adaptive_decay

    def update(state, stage_input, stage_output, chosen):
        # the EMA follows the chosen token's probability *before* the transform (llama.cpp)
        before = torch.softmax(stage_input, dim=-1).gather(1, chosen[:, None]).squeeze(1).cpu()
        return (S.adaptive_update(state, before, decay),
                {"adaptive_target": S.adaptive_target_now(state, target), "adaptive_p": before})

    return Stage("adaptive_p", S.adaptive_p, {"target": target, "decay": decay},
                 lambda ctx: {"state": ctx.state["adaptive_p"]},
                 Memory(lambda rows: S.adaptive_start(target, decay, rows), update))


def _second(ctx: StepContext) -> torch.Tensor:
    if ctx.guide is None:
        raise GenerationError("a two-model stage (realign, contrastive decoding, guidance) ran "
                              "without the step's second logits")
    return ctx.guide


def _slots(transformers: int, llama_cpp: int) -> dict[str, int]:
    return {"transformers": transformers, "llama.cpp": llama_cpp}


# Slots: transformers' _get_logits_processor (5.x) with sequence bias first and Hamming diversity
# next (as in 4.x), the penalties transformers lacks right after repetition_penalty, the
# truncations it lacks after eta; llama.cpp's common_sampler_init (logit_bias → penalties → dry →
# top_n_sigma → top_k → typical → top_p → min_p → xtc → temperature), where the EOS bans sit with
# logit_bias (llama.cpp implements ignore_eos as a -inf bias), no_repeat_ngram with the
# penalties, epsilon/eta with the truncations. adaptive-p ends both: it replaces the final draw.
REGISTRY: tuple[StageSpec, ...] = (
    StageSpec("logit_bias", ("logit_bias",), lambda c: bool(c.logit_bias), PENALTY, _logit_bias,
              _slots(10, 10)),
    StageSpec("diversity_penalty", ("diversity_penalty", "num_beam_groups"),
              lambda c: c.strategy == "beam" and c.num_beam_groups > 1 and c.diversity_penalty > 0,
              PENALTY,
              lambda c, b: Stage("diversity_penalty", hamming_diversity,
                                 {"penalty": c.diversity_penalty},
                                 lambda ctx: {"previous_tokens": ctx.group_tokens}),
              _slots(20, 20), (Knob("diversity_penalty", 0.0, 5.0, 0.1),)),
    StageSpec("repetition_penalty", ("repetition_penalty", "penalize_prompt"),
              lambda c: c.repetition_penalty != 1.0, PENALTY, _repetition, _slots(30, 50),
              (Knob("repetition_penalty", 0.05, 10.0, 0.05, number=True, fmt="%.2f"),)),
    StageSpec("frequency_penalty", ("frequency_penalty",), lambda c: c.frequency_penalty != 0.0,
              PENALTY,
              lambda c, b: Stage("frequency_penalty", S.frequency_penalty,
                                 {"penalty": c.frequency_penalty},
                                 lambda ctx: {"generated_ids": ctx.generated_ids}),
              _slots(40, 60), (Knob("frequency_penalty", -2.0, 2.0, 0.1, number=True, fmt="%.1f"),)),
    StageSpec("presence_penalty", ("presence_penalty",), lambda c: c.presence_penalty != 0.0,
              PENALTY,
              lambda c, b: Stage("presence_penalty", S.presence_penalty,
                                 {"penalty": c.presence_penalty},
                                 lambda ctx: {"generated_ids": ctx.generated_ids}),
              _slots(50, 70), (Knob("presence_penalty", -2.0, 2.0, 0.1, number=True, fmt="%.1f"),)),
    StageSpec("dry", ("dry_multiplier", "dry_base", "dry_allowed_length", "dry_sequence_breakers",
                      "dry_penalty_last_n"),
              lambda c: c.dry_multiplier > 0.0 and c.dry_penalty_last_n != 0, PENALTY, _dry,
              _slots(60, 90), (Knob("dry_multiplier", 0.0, 5.0, 0.1, number=True, fmt="%.1f"),)),
    StageSpec("no_repeat_ngram", ("no_repeat_ngram_size",), lambda c: c.no_repeat_ngram_size > 0,
              PENALTY,
              lambda c, b: Stage("no_repeat_ngram", P.no_repeat_ngram,
                                 {"ngram_size": c.no_repeat_ngram_size},
                                 lambda ctx: {"input_ids": ctx.input_ids}),
              _slots(70, 80), (Knob("no_repeat_ngram_size", 0, 20, 1, number=True),)),
    StageSpec("min_new_tokens", ("min_new_tokens",), lambda c: c.min_new_tokens > 0, PENALTY,
              _min_new_tokens,
              _slots(80, 30), (Knob("min_new_tokens", 0, 1024, 1, number=True),)),
    StageSpec("ignore_eos", ("ignore_eos",), lambda c: c.ignore_eos, PENALTY,
              _ignore_eos,
              _slots(90, 40)),
    StageSpec("temperature", ("temperature",),
              lambda c: c.temperature != 1.0 and c.dynatemp_range == 0, SAMPLING,
              lambda c, b: Stage("temperature", P.temperature, {"t": c.temperature}),
              _slots(100, 200), (Knob("temperature", 0.05, 3.0, 0.05),)),
    StageSpec("dynatemp", ("dynatemp_range", "dynatemp_exponent", "temperature"),
              lambda c: c.dynatemp_range > 0, SAMPLING,
              lambda c, b: Stage("dynatemp", S.dynamic_temperature,
                                 {"temperature": c.temperature, "dynatemp_range": c.dynatemp_range,
                                  "dynatemp_exponent": c.dynatemp_exponent}),
              _slots(105, 205), (Knob("dynatemp_range", 0.0, 3.0, 0.05),
                                 Knob("dynatemp_exponent", 0.0, 5.0, 0.1))),
    StageSpec("top_h", ("top_h",), lambda c: c.top_h is not None, SAMPLING,
              lambda c, b: Stage("top_h", P.top_h_filter, {"top_h": c.top_h}),
              _slots(110, 155), (Knob("top_h", 0.0, 1.0, 0.01, none_at=0.0),)),
    StageSpec("top_k", ("top_k",), lambda c: c.top_k != 0, SAMPLING,
              lambda c, b: Stage("top_k", P.top_k_filter, {"k": c.top_k, **_keep(c)}),
              _slots(120, 120), (Knob("top_k", 0, 100_000, 1, number=True),)),
    StageSpec("top_p", ("top_p",), lambda c: c.top_p < 1.0, SAMPLING,
              lambda c, b: Stage("top_p", P.top_p_filter, {"p": c.top_p, **_keep(c)}),
              _slots(130, 140), (Knob("top_p", 0.01, 1.0, 0.01),)),
    StageSpec("min_p", ("min_p",), lambda c: c.min_p is not None, SAMPLING,
              lambda c, b: Stage("min_p", P.min_p_filter, {"min_p": c.min_p, **_keep(c)}),
              _slots(140, 150), (Knob("min_p", 0.0, 1.0, 0.01, none_at=0.0),)),
    StageSpec("typical_p", ("typical_p",), lambda c: c.typical_p < 1.0, SAMPLING,
              lambda c, b: Stage("typical_p", P.typical_filter, {"mass": c.typical_p, **_keep(c)}),
              _slots(150, 130), (Knob("typical_p", 0.01, 1.0, 0.01),)),
    StageSpec("epsilon_cutoff", ("epsilon_cutoff",), lambda c: c.epsilon_cutoff > 0.0, SAMPLING,
              lambda c, b: Stage("epsilon_cutoff", P.epsilon_filter,
                                 {"epsilon": c.epsilon_cutoff, **_keep(c)}),
              _slots(160, 160), (Knob("epsilon_cutoff", 0.0, 0.99, 1e-4, number=True, fmt="%.4f"),)),
    StageSpec("eta_cutoff", ("eta_cutoff",), lambda c: c.eta_cutoff > 0.0, SAMPLING,
              lambda c, b: Stage("eta_cutoff", P.eta_filter, {"epsilon": c.eta_cutoff, **_keep(c)}),
              _slots(170, 170), (Knob("eta_cutoff", 0.0, 0.99, 1e-4, number=True, fmt="%.4f"),)),
    StageSpec("top_n_sigma", ("top_n_sigma",),
              lambda c: c.top_n_sigma is not None and c.top_n_sigma > 0, SAMPLING,
              lambda c, b: Stage("top_n_sigma", S.top_n_sigma_filter,
                                 {"n": c.top_n_sigma, **_keep(c)}),
              _slots(180, 110), (Knob("top_n_sigma", 0.0, 10.0, 0.1, none_at=0.0, number=True, fmt="%.1f"),)),
    StageSpec("p_less", ("p_less",), lambda c: c.p_less, SAMPLING,
              lambda c, b: Stage("p_less", S.p_less_filter, _keep(c)),
              _slots(185, 152)),
    StageSpec("xtc", ("xtc_probability", "xtc_threshold"), lambda c: c.xtc_probability > 0.0,
              SAMPLING,
              lambda c, b: Stage("xtc", S.xtc_filter,
                                 {"threshold": c.xtc_threshold, "probability": c.xtc_probability,
                                  **_keep(c)},
                                 lambda ctx: {"uniform": ctx.uniform(ctx.input_ids.shape[0])}),
              _slots(190, 190), (Knob("xtc_probability", 0.0, 1.0, 0.05),
                                 Knob("xtc_threshold", 0.0, 1.0, 0.01))),
    StageSpec("adaptive_p", ("adaptive_target", "adaptive_decay"),
              lambda c: c.adaptive_target >= 0, SAMPLING, _adaptive, _slots(990, 990),
              (Knob("adaptive_target", -1.0, 1.0, 0.01), Knob("adaptive_decay", 0.0, 0.99, 0.01))),
    # The two-model stages read a second distribution (``guide.py``) and come first, outside the
    # orders: transformers builds its CFG processor before every other one, and DeRa and
    # contrastive decoding combine the two models' raw logits.
    StageSpec("guidance", ("guidance_scale", "negative_prompt"),
              lambda c: c.guidance_scale is not None and c.guidance_scale != 1, PENALTY,
              lambda c, b: Stage("guidance", G.guidance, {"scale": c.guidance_scale},
                                 lambda ctx: {"unconditional": _second(ctx)}),
              {}, (Knob("guidance_scale", 0.0, 5.0, 0.1),)),
    StageSpec("realign", ("realign",), lambda c: c.realign is not None, PENALTY,
              lambda c, b: Stage("realign", G.realign, {"lam": c.realign},
                                 lambda ctx: {"base": _second(ctx)}),
              {}, (Knob("realign", 0.0, 3.0, 0.05),)),
    StageSpec("contrastive_decoding", ("contrastive_alpha", "amateur"),
              lambda c: c.contrastive_alpha is not None, PENALTY,
              lambda c, b: Stage("contrastive_decoding", G.contrastive,
                                 {"alpha": c.contrastive_alpha, "amateur": c.amateur},
                                 lambda ctx: {"other": _second(ctx)}),
              {}, (Knob("contrastive_alpha", 0.01, 1.0, 0.01),)),
    # Mirostat v2 is its strategy's own last stage, outside the orders (see planned_stages).
    StageSpec("mirostat", ("mirostat_tau", "mirostat_eta"), lambda c: c.strategy == "mirostat",
              SAMPLING, _mirostat, {},
              (Knob("mirostat_tau", 0.1, 20.0, 0.5, number=True, fmt="%.1f"), Knob("mirostat_eta", 0.0, 1.0, 0.01))),
)
SPECS: dict[str, StageSpec] = {spec.name: spec for spec in REGISTRY}


def _order(preset: str) -> tuple[str, ...]:
    return tuple(s.name for s in sorted((s for s in REGISTRY if preset in s.slots),
                                        key=lambda s: s.slots[preset]))


# ---------------------------------------------------------------------- derived tables

PROCESSOR_ORDERS: dict[str, tuple[str, ...]] = {p: _order(p) for p in ("transformers", "llama.cpp")}
STAGE_NAMES = PROCESSOR_ORDERS["transformers"]          # the stages an order may name
PENALTY_STAGES = tuple(n for n in STAGE_NAMES if SPECS[n].kind == PENALTY)
SAMPLING_STAGES = tuple(n for n in STAGE_NAMES if SPECS[n].kind == SAMPLING)
# Stages that must end the chain (a stateful one replaces the final draw).
LAST_STAGES = ("adaptive_p",)
# Stages that open the chain, outside the orders: the two-model combinations (at most one is on).
FIRST_STAGES = ("guidance", "realign", "contrastive_decoding")
KNOBS: dict[str, Knob] = {k.field: k for spec in REGISTRY for k in spec.ui}


def stage_switches(c) -> dict[str, bool]:
    """Which orderable stages the knobs turn on (before the strategy decides what it runs)."""
    return {name: SPECS[name].is_on(c) for name in STAGE_NAMES}


def resolve_order(order: str | tuple[str, ...]) -> tuple[str, ...]:
    return PROCESSOR_ORDERS[order] if isinstance(order, str) else tuple(order)


def planned_stages(c, order: tuple[str, ...] | None = None) -> list[str]:
    """The stage names the chain runs for ``c``, in order: the two-model stage first when one is
    on (``FIRST_STAGES``), then

    * sample: every active stage, in ``processor_order`` (adaptive-p last whatever the order);
    * greedy, beam, contrastive: the active penalty stages only (sampling stages cannot change an
      argmax, and transformers does not build them outside sampling);
    * mirostat: the active penalty stages, then temperature → mirostat, as llama.cpp's mirostat
      chain (plain temperature; its other samplers are ignored, as in llama.cpp).
    """
    on = stage_switches(c)
    order = [n for n in (order or resolve_order(c.processor_order)) if on[n]]
    first = [n for n in FIRST_STAGES if SPECS[n].is_on(c)]
    if c.strategy == "sample":
        return (first + [n for n in order if n not in LAST_STAGES]
                + [n for n in LAST_STAGES if n in order])
    penalties = first + [n for n in order if SPECS[n].kind == PENALTY]
    if c.strategy == "mirostat":
        return penalties + (["temperature"] if c.temperature != 1.0 else []) + ["mirostat"]
    return penalties


def build_stage(name: str, c, built: Built) -> Stage | None:
    """The stage ``name`` for config ``c`` (None when it has nothing to do, e.g. no EOS ids)."""
    return SPECS[name].build(c, built)


def stage_knob(stage: str) -> str:
    """The config field that labels ``stage`` in charts (the stage name itself if unknown)."""
    spec = SPECS.get(stage)
    return spec.knob if spec else stage
