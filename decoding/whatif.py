"""What-if: re-run the sampling stages on one recorded step, without calling the model.

A ``StepTrace`` keeps, for its candidates, the probability after every stage. The penalties
(repetition, frequency, DRY, the EOS bans, ...) come first in both processor orders, so the
log-probabilities after the last of them are the distribution the sampling stages received.
``whatif_step`` feeds those through the very stage functions the loop uses
(``chain.build_chain`` → ``processors`` / ``samplers``), with other temperature / top-k / top-p /
min-p / ... settings and either processor order.

Exact where the record reaches. The recorder keeps that input distribution's ranking down past
the run's last kept token (``StepTrace.prefix``) and every stage's full-vocabulary kept count,
so the unrecorded tail is known by its mass, its size and a bound (no tail token is more likely
than the prefix's last). The what-if runs the chain over the candidates plus the tail twice,
completed two extreme ways: spread evenly, and piled onto as few tokens as the bound allows.
When both completions drop the tail (or both keep all of it, as with no truncation at T = 1) and
give every candidate the same final probability, the kept set and the final distribution do not
depend on the tail: the result is exact (``extra["exact"]``), as with the run's own settings (a
kept set inside the record).
Otherwise it is approximate (the spread completion is shown). Traces made before the prefix was
recorded are renormalised over their top-N, approximate unless that holds all the mass. XTC is
random and is left out; adaptive-p starts from its initial average (the run's average at that
step is in the step's ``extra``).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .chain import SAMPLING_STAGES, Chain, StepContext, build_chain
from .config import DecodingConfig
from .recorder import input_stage_index
from .stages import SPECS
from .trace import Candidate, StepTrace

# Two completions agree when every candidate's final probability is within this (float32
# softmax over the 49k-token vocabulary).
AGREE = 1e-6

# Every knob of the sampling stages (from the stage registry; XTC is random and left out), and
# the settings carried over from the run.
WHATIF_KNOBS = tuple(dict.fromkeys(f for name in SAMPLING_STAGES if name != "xtc"
                                   for f in SPECS[name].fields))
CARRIED_KNOBS = ("min_tokens_to_keep", "processor_order")


def input_stage(step: StepTrace) -> int:
    """Index of the stage whose output the sampling stages received: the last of the leading
    penalty stages (0, ``raw``, when there are none)."""
    return input_stage_index(step.stages)


def top_n_mass(step: StepTrace) -> float:
    """Probability the recorded candidates hold in the distribution the sampling stages saw."""
    j = input_stage(step)
    return float(sum(c.probs[j] for c in step.candidates))


def whatif_config(recorded: dict, **changes) -> DecodingConfig:
    """A sampling-only config: the recorded sampling knobs (``Generation.config``), ``changes``
    applied, the penalties off (their effect is already in the recorded probabilities) and XTC
    off (random)."""
    knobs = {name: recorded[name] for name in WHATIF_KNOBS + CARRIED_KNOBS if name in recorded}
    knobs.update(changes)
    return DecodingConfig(strategy="sample", xtc_probability=0.0, **knobs)


def whatif_step(step: StepTrace, config: DecodingConfig, run: DecodingConfig | None = None) -> StepTrace:
    """``step`` re-run through ``config``'s sampling stages.

    ``run``: the run's own what-if config (``whatif_config(generation.config)``). When ``config``
    is it, the recorded chain is the what-if's and the recomputation is not exact, the result is
    the record itself (exact by construction, ``extra["recorded"]``): with a temperature other
    than 1 and no truncation the final distribution depends on the whole tail's shape, which
    only the run itself saw.

    Returns a ``StepTrace`` over the same candidates (raw order) whose first stage is the
    distribution the sampling stages received (``"raw"`` or ``"after <last penalty>"``),
    followed by one stage per active sampling stage in ``config.processor_order``. The chosen
    token stays the recorded one; ``kept_count`` counts every kept token, tail included.
    ``extra``: ``exact`` (see the module docstring), ``tail_kept`` (tail tokens kept),
    ``recorded_mass`` and ``whatif_input_stage``.
    """
    base = input_stage(step)
    chain = Chain(build_chain(config, eos_ids=[]))
    logp = _input_logprobs(step, base)
    tails = tail_completions(step, base)
    runs = [_run(chain, logp, tail) for tail in tails]
    logprobs, kept, tail_kept = runs[0]
    n = len(step.candidates)
    exact = _agree(runs, n, len(tails[0]))
    if not tails[0].numel() and step.vocab_size == 0:
        exact = top_n_mass(step) >= 1 - AGREE          # an old trace that holds everything
    if not exact and run is not None and config == run and list(chain.names[1:]) == list(step.stages[base + 1:]):
        return _recorded(step, base)
    probs = torch.stack([lp[:n].exp() for lp in logprobs], dim=1).tolist()   # (candidates, stages)
    kept_flags = torch.stack([k[:n] for k in kept], dim=1).tolist()
    names = list(chain.names)
    names[0] = "raw" if base == 0 else f"after {step.stages[base]}"
    candidates = [dataclasses.replace(c, probs=p, kept=k)
                  for c, p, k in zip(step.candidates, probs, kept_flags)]
    chosen = next(i for i, c in enumerate(step.candidates) if c.token_id == step.token_id)
    return dataclasses.replace(
        step, stages=names, candidates=candidates,
        prob_raw=probs[chosen][0], prob_final=probs[chosen][-1],
        rank_raw=1 + sum(p[0] > probs[chosen][0] for p in probs),
        rank_final=1 + sum(p[-1] > probs[chosen][-1] for p in probs),
        entropy_raw=_entropy(logprobs[0]), entropy_final=_entropy(logprobs[-1]),
        kept_count=int(kept[-1].sum()),
        extra={"whatif_input_stage": step.stages[base], "exact": bool(exact),
               "tail_kept": tail_kept, "recorded_mass": top_n_mass(step)})


def _recorded(step: StepTrace, base: int) -> StepTrace:
    """The what-if of the run's own settings: the recorded stages from the sampling stages' input
    on (the layout ``whatif_step`` returns)."""
    names = ["raw" if base == 0 else f"after {step.stages[base]}"] + list(step.stages[base + 1:])
    candidates = [dataclasses.replace(c, probs=list(c.probs[base:]), kept=list(c.kept[base:]))
                  for c in step.candidates]
    kept = sum(c.kept[-1] for c in step.candidates)
    return dataclasses.replace(
        step, stages=names, candidates=candidates,
        extra={"whatif_input_stage": step.stages[base], "exact": True, "recorded": True,
               "tail_kept": max(0, step.kept_count - kept), "recorded_mass": top_n_mass(step)})


def _agree(runs: list, n: int, tail_size: int) -> bool:
    """Whether the completions of the tail give the same result: every candidate's final
    probability, and a tail that is either dropped or kept whole in each (a tail kept in part
    depends on what the unrecorded tokens are)."""
    whole = {0, tail_size}
    if any(t not in whole for _, _, t in runs) or len({t for _, _, t in runs}) > 1:
        return False
    finals = [r[0][-1].exp() for r in runs]
    return all(torch.allclose(f[:n], finals[0][:n], atol=AGREE, rtol=0)
               and abs(float(f[n:].sum() - finals[0][n:].sum())) <= AGREE for f in finals[1:])


def _input_logprobs(step: StepTrace, base: int) -> torch.Tensor:
    """``(candidates,)`` log-probabilities of the candidates in the sampling stages' input."""
    if base == 0 and step.vocab_size == 0:
        return torch.tensor([c.raw_logit for c in step.candidates], dtype=torch.float64)
    if base == 0:
        return torch.tensor([c.raw_logit - step.raw_logsumexp for c in step.candidates],
                            dtype=torch.float64)
    return torch.tensor([math.log(c.probs[base]) if c.kept[base] and c.probs[base] > 0 else -math.inf
                         for c in step.candidates], dtype=torch.float64)


def tail_completions(step: StepTrace, base: int) -> list[torch.Tensor]:
    """Log-probabilities of the unrecorded tokens still allowed in the sampling stages' input,
    two extreme ways: ``[spread evenly, piled up to the bound]`` (empty when there is no tail or
    the trace predates the recorded prefix)."""
    if step.vocab_size == 0 or not step.stage_kept or step.prefix == 0:
        return [torch.empty(0, dtype=torch.float64)]
    inputs = sorted((c.probs[base] for c in step.candidates if c.kept[base]), reverse=True)
    size = step.stage_kept[base] - len(inputs)
    mass = max(0.0, 1.0 - sum(inputs))
    if size <= 0 or mass <= 0.0:
        return [torch.empty(0, dtype=torch.float64)]
    # No tail token is more likely than the prefix's last (slightly less: ties at the cut stay
    # with the recorded token, as the recorded run kept it and not an unrecorded one).
    bound = inputs[min(step.prefix, len(inputs)) - 1] * (1 - 1e-9)
    spread = torch.full((size,), mass / size, dtype=torch.float64)
    full = min(size, int(mass // bound)) if bound > 0 else 0
    piled = torch.full((size,), 1e-300, dtype=torch.float64)
    piled[:full] = bound
    if full < size:
        piled[full] = mass - full * bound
    return [spread.log(), piled.clamp_min(1e-300).log()]


def _run(chain: Chain, logp: torch.Tensor, tail: torch.Tensor):
    """The chain over candidates + tail: (log-softmax after every stage, kept flags after every
    stage, tail tokens kept at the end)."""
    scores = torch.cat([logp, tail])[None].to(torch.float32)
    ctx = StepContext(input_ids=torch.zeros((1, 0), dtype=torch.long), prompt_length=0,
                      state=chain.start(1))
    final, history, _ = chain.run(ctx, scores, record=True)
    logprobs = [torch.log_softmax(h.double(), dim=-1)[0] for h in history]
    kept = [torch.isfinite(h[0]) for h in history]
    return logprobs, kept, int(kept[-1][len(logp):].sum())


def kept_tokens(step: StepTrace) -> list[Candidate]:
    """The candidates still allowed after the step's last stage."""
    return [c for c in step.candidates if c.kept[-1]]


def kept_set_change(recorded: StepTrace, whatif: StepTrace) -> tuple[list[Candidate], list[Candidate]]:
    """(newly kept, newly removed) candidates of ``whatif`` compared with ``recorded``."""
    before = {c.token_id for c in kept_tokens(recorded)}
    after = {c.token_id for c in kept_tokens(whatif)}
    return ([c for c in whatif.candidates if c.token_id in after - before],
            [c for c in whatif.candidates if c.token_id in before - after])


def _entropy(logp: torch.Tensor) -> float:
    return float(-(logp.exp() * logp).nan_to_num(0.0).sum())
