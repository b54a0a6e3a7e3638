"""What-if: re-run the sampling stages on one recorded step, without calling the model.

A ``StepTrace`` keeps, for its top-N candidates, the probability after every stage. The
penalties (repetition, frequency, DRY, the EOS bans, ...) come first in both processor orders,
so the log-probabilities after the last of them are logits of the penalised distribution (up to
a constant). ``whatif_step`` feeds those, as a ``(1, N)`` tensor, through the very stage
functions the loop uses (``chain.build_chain`` → ``processors`` / ``samplers``), with other
temperature / top-k / top-p / min-p / ... settings and either processor order.

It works over the recorded top-N only, renormalised: the tokens outside it are unknown. Top-k,
min-p and temperature depend only on logit differences among the kept tokens, so their kept sets
are exact whenever the recorded tokens include everything they keep; top-p, typical, epsilon and
eta measure probability mass and act as if the tail outside the top-N had none (``top_n_mass``
says how much it really had); so do top-H, p-less and dynamic temperature, which measure
entropy or Σp². XTC is random and is left out; adaptive-p starts from its initial average (the
run's average at that step is in the step's ``extra``).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .chain import PENALTY_STAGES, SAMPLING_STAGES, Chain, StepContext, build_chain
from .config import DecodingConfig
from .stages import SPECS
from .trace import Candidate, StepTrace

# Every knob of the sampling stages (from the stage registry; XTC is random and left out), and
# the settings carried over from the run.
WHATIF_KNOBS = tuple(dict.fromkeys(f for name in SAMPLING_STAGES if name != "xtc"
                                   for f in SPECS[name].fields))
CARRIED_KNOBS = ("min_tokens_to_keep", "processor_order")


def input_stage(step: StepTrace) -> int:
    """Index of the stage whose output the sampling stages received: the last of the leading
    penalty stages (0, ``raw``, when there are none)."""
    index = 0
    for j, name in enumerate(step.stages[1:], start=1):
        if name not in PENALTY_STAGES:
            break
        index = j
    return index


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


def whatif_step(step: StepTrace, config: DecodingConfig) -> StepTrace:
    """``step`` re-run through ``config``'s sampling stages over its recorded candidates.

    Returns a ``StepTrace`` over the same candidates (raw order) whose first stage is the
    distribution the sampling stages received (``"raw"`` or ``"after <last penalty>"``),
    renormalised over the candidates, followed by one stage per active sampling stage in
    ``config.processor_order``. The chosen token stays the recorded one; ``kept_count`` counts
    kept candidates.
    """
    base = input_stage(step)
    if base == 0:
        values = [c.raw_logit for c in step.candidates]
    else:
        values = [math.log(c.probs[base]) if c.kept[base] and c.probs[base] > 0 else -math.inf
                  for c in step.candidates]
    scores = torch.tensor([values], dtype=torch.float32)
    chain = Chain(build_chain(config, eos_ids=[]))
    ctx = StepContext(input_ids=torch.zeros((1, 0), dtype=torch.long), prompt_length=0,
                      state=chain.start(1))
    final, history, _ = chain.run(ctx, scores, record=True)
    logprobs = [torch.log_softmax(h, dim=-1)[0] for h in history]
    probs = torch.stack([lp.exp() for lp in logprobs], dim=1).tolist()      # (candidates, stages)
    kept = torch.stack([torch.isfinite(h[0]) for h in history], dim=1).tolist()
    names = list(chain.names)
    names[0] = "raw" if base == 0 else f"after {step.stages[base]}"
    candidates = [dataclasses.replace(c, probs=p, kept=k)
                  for c, p, k in zip(step.candidates, probs, kept)]
    chosen = next(i for i, c in enumerate(step.candidates) if c.token_id == step.token_id)
    return dataclasses.replace(
        step, stages=names, candidates=candidates,
        prob_raw=probs[chosen][0], prob_final=probs[chosen][-1],
        rank_raw=1 + sum(p[0] > probs[chosen][0] for p in probs),
        rank_final=1 + sum(p[-1] > probs[chosen][-1] for p in probs),
        entropy_raw=_entropy(logprobs[0]), entropy_final=_entropy(logprobs[-1]),
        kept_count=int(torch.isfinite(final).sum()), extra={"whatif_input_stage": step.stages[base]})


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
