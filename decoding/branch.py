"""Branching: take another token at one step of a recorded generation and continue from there.

The branch's prefix is the prompt, the tokens generated before ``step`` and the chosen
alternative; the continuation is ``generate_ids`` on that prefix with the generation's own
config (what-if generation in SillyTavern, "force a token" in Benjoyo's visualizer). The
returned ``Generation`` reads like the original one: the shared steps are the original traces,
the forced step is the original step's trace with the other token marked as chosen
(``extra["forced_from"]``), and the continuation's steps are renumbered after it.

What restarts at the branch point: the continuation is a fresh call, so its random draws come
from a generator seeded with ``seed`` again (mirostat's μ starts afresh), and the stages that count only *generated* tokens
(frequency/presence penalties, ``repetition_penalty`` with ``penalize_prompt=False``) see the
tokens before the branch as prompt. ``min_new_tokens`` and ``max_new_tokens`` are shortened by
the tokens already there. With greedy decoding and prompt-counting penalties, branching to the
token that was chosen reproduces the original generation exactly (tested).
"""

from __future__ import annotations

import dataclasses

from .config import DecodingConfig
from .errors import ConfigError
from .loop import DEFAULT_TRACE_TOP, generate_ids
from .models import LM
from .trace import EOS, LENGTH, Generation, SequenceResult, StepTrace


def forced_step(step: StepTrace, token_id: int) -> StepTrace:
    """``step`` with ``token_id`` (one of its recorded candidates) as the chosen token.

    Probabilities and ranks come from the recorded candidates; a rank is among the recorded
    top-N (exact for tokens of the raw top-N). ``extra["forced_from"]`` keeps the original token.
    """
    candidate = next((c for c in step.candidates if c.token_id == token_id), None)
    if candidate is None:
        recorded = ", ".join(str(c.token_id) for c in step.candidates)
        raise ConfigError(f"token_id={token_id} is not a recorded candidate of step {step.step}; "
                          f"allowed: one of {recorded}")
    rank_raw = 1 + sum(c.probs[0] > candidate.probs[0] for c in step.candidates)
    rank_final = 1 + sum(c.probs[-1] > candidate.probs[-1] for c in step.candidates)
    return dataclasses.replace(
        step, token_id=token_id, token_text=candidate.text, prob_raw=candidate.probs[0],
        prob_final=candidate.probs[-1], logprob_raw=candidate.raw_logit - step.raw_logsumexp,
        rank_raw=rank_raw, rank_final=rank_final,
        extra={**step.extra, "forced_from": step.token_id, "forced_from_text": step.token_text})


def branch_config(config: DecodingConfig, prefix_tokens: int) -> DecodingConfig:
    """``config`` for the continuation after ``prefix_tokens`` generated tokens (forced one
    included): the token budgets shortened by what is already there; one sequence returned."""
    remaining = max(1, config.max_new_tokens - prefix_tokens)
    return config.replace(max_new_tokens=remaining,
                          min_new_tokens=min(remaining, max(0, config.min_new_tokens - prefix_tokens)),
                          num_return_sequences=1)


def branch(lm: LM, generation: Generation, step: int, token_id: int, *,
           trace_top: int = DEFAULT_TRACE_TOP) -> Generation:
    """Continue ``generation`` with ``token_id`` in place of the token chosen at ``step``.

    Returns a new ``Generation`` (the original is not modified) whose first ``step`` tokens are
    the original's, then ``token_id``, then the continuation. No continuation is generated when
    ``token_id`` ends the sequence or the token budget is spent.
    """
    steps = generation.steps
    if not 0 <= step < len(steps):
        raise ConfigError(f"step={step} is out of range; allowed: 0 <= step < {len(steps)} "
                          "(a generation with step traces)")
    config = DecodingConfig.from_dict(generation.config)
    head_ids = list(generation.token_ids[:step]) + [token_id]
    head_steps = list(steps[:step]) + [forced_step(steps[step], token_id)]
    tail_ids: list[int] = []
    tail_steps: list[StepTrace] = []
    finish = EOS if token_id in lm.eos_token_ids and not config.ignore_eos else None
    elapsed = 0.0
    if finish is None and len(head_ids) >= config.max_new_tokens:
        finish = LENGTH
    if finish is None:
        tail = generate_ids(lm, list(generation.prompt_ids) + head_ids, branch_config(config, len(head_ids)),
                            trace=True, trace_top=trace_top, prompt=generation.prompt,
                            chat=generation.chat)
        tail_ids, finish, elapsed = tail.token_ids, tail.finish_reason, tail.elapsed_s
        tail_steps = [dataclasses.replace(s, step=s.step + len(head_ids)) for s in tail.steps]
    ids = head_ids + tail_ids
    sequence = SequenceResult(token_ids=ids, text=lm.decode(ids), finish_reason=finish,
                              steps=head_steps + tail_steps,
                              sum_logprob=sum(s.logprob_raw for s in head_steps + tail_steps))
    return dataclasses.replace(generation, sequences=[sequence], beam_steps=[], elapsed_s=elapsed)
