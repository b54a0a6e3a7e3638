"""Our own generation loop: ``generate`` → ``run_strategy`` → the strategy's batch loop.

Greedy, sampling and mirostat run here (``decode_mixed``: one forward pass per step for every
row, then each lane of rows with one config takes its ``step.step``); beam search lives in
``beam.py``, contrastive search in ``contrastive.py``, the lane scheduler in ``lanes.py``, row
bookkeeping (stop rules, progress, padding, shared prefill) in ``rows.py``.

The step, as on the slide (nanoGPT's ``generate``, plus the explicit chain):

    logits = model(last token, KV cache)[:, -1]          # raw next-token scores
    scores = chain(logits)                                # penalties → temperature → truncation
    token  = argmax(scores)  or  multinomial(softmax(scores), generator)

Every row of a batch is one sequence; ``num_return_sequences`` samples of one prompt are rows
that share a ``torch.Generator`` and are drawn with one ``multinomial`` call, as ``generate``
does, so the same seed gives the same tokens. A random stage of the chain (XTC's coin) draws
from the same generator, once per row and step, before the token is drawn.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .beam import beam_search
from .chain import StepContext
from .config import DecodingConfig
from .contrastive import contrastive_batch
from .errors import ConfigError
from .forward import decode_step
from .guide import check_guides, guide_kind, start_guide
from .lanes import Lane, Request, droppable, plan_lanes, shrink_lanes
from .models import LM
from .recorder import TokenTexts, record_steps
from .rows import RowProgress, StopChecker, pad_token_id, shared_prefill
from .step import argmax, check_logits, multinomial, step
from .trace import BeamStep, Generation, SequenceResult, StepTrace

__all__ = ["DEFAULT_TRACE_TOP", "OnStep", "Request", "RowProgress", "StopChecker", "check_prompt",
           "check_prompt_ids", "check_trace_top", "decode_batch", "decode_mixed", "droppable",
           "generate", "generate_ids", "plan_lanes", "run_strategy", "shrink_lanes"]

DEFAULT_TRACE_TOP = 20

# Called after every step of greedy, sampling and mirostat decoding with (step index, every
# row's tokens so far): the lab streams the text as it is generated. Beam search and
# contrastive search do not call it (their text is settled only at the end).
OnStep = Callable[[int, list[list[int]]], None]


def check_prompt(prompt: str) -> None:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"prompt={prompt!r} is empty; allowed: a non-empty string")


def check_prompt_ids(lm: LM, prompt_ids: list[int]) -> None:
    if len(prompt_ids) == 0:
        raise ConfigError("prompt has 0 tokens; allowed: at least 1 token")
    if len(prompt_ids) >= lm.max_context:
        raise ConfigError(
            f"prompt is {len(prompt_ids)} tokens long; allowed: fewer than the model's context "
            f"of {lm.max_context} tokens")


def check_trace_top(trace_top: int) -> None:
    if not isinstance(trace_top, int) or isinstance(trace_top, bool) or not 1 <= trace_top <= 1000:
        raise ConfigError(f"trace_top={trace_top!r} is out of range; allowed: an integer in [1, 1000]")


def generate(lm: LM, prompt: str, config: DecodingConfig | None = None, chat: bool = True,
             trace: bool = True, trace_top: int = DEFAULT_TRACE_TOP,
             on_step: OnStep | None = None) -> Generation:
    """Generate a continuation of ``prompt`` (chat: as the user turn of the chat template).

    Returns a ``Generation`` with the sequences and, when ``trace``, a ``StepTrace`` per step
    holding the top ``trace_top`` tokens through every stage of the chain. ``on_step`` sees the
    tokens as they are generated (``OnStep``).
    """
    check_prompt(prompt)
    prompt_ids = lm.encode(prompt, chat=chat)
    return generate_ids(lm, prompt_ids, config, trace=trace, trace_top=trace_top,
                        prompt=prompt, chat=chat, on_step=on_step)


def generate_ids(lm: LM, prompt_ids: list[int], config: DecodingConfig | None = None, *,
                 trace: bool = True, trace_top: int = DEFAULT_TRACE_TOP, prompt: str | None = None,
                 chat: bool = False, on_step: OnStep | None = None) -> Generation:
    """Generate from already tokenised ids (used for branching from a chosen step)."""
    config = config or DecodingConfig()
    check_prompt_ids(lm, prompt_ids)
    check_trace_top(trace_top)
    started = time.perf_counter()
    per_prompt, names = run_strategy(lm, [prompt_ids], config, trace, trace_top, on_step)
    sequences, beam_steps = per_prompt[0]
    return Generation(
        model=lm.name, adapter=lm.adapter,
        prompt=prompt if prompt is not None else lm.decode(prompt_ids, skip_special_tokens=False),
        chat=chat, prompt_ids=list(prompt_ids), config=config.to_dict(), chain=names,
        sequences=sequences, beam_steps=beam_steps, elapsed_s=time.perf_counter() - started)


def run_strategy(lm: LM, prompts: list[list[int]], config: DecodingConfig, trace: bool,
                 trace_top: int, on_step: OnStep | None = None) -> tuple[list[tuple[list[SequenceResult], list[BeamStep]]], list[str]]:
    """Run ``config.strategy`` on several tokenised prompts at once (left padding).

    Returns, per prompt, (sequences, beam tree steps — empty outside beam search), and the
    chain's stage names.
    """
    if config.strategy == "beam":
        out = beam_search(lm, prompts, config, trace=trace)
        return [(seqs, steps) for seqs, steps, _ in out], out[0][2]
    if config.strategy == "contrastive":
        results, names = contrastive_batch(lm, prompts, config, trace=trace, trace_top=trace_top)
    else:
        results, names = decode_batch(lm, prompts, config, trace=trace, trace_top=trace_top,
                                      on_step=on_step)
    return [(seqs, []) for seqs in results], names


def decode_batch(lm: LM, prompts: list[list[int]], config: DecodingConfig, *, trace: bool = True,
                 trace_top: int = DEFAULT_TRACE_TOP, seeds: list[int] | None = None,
                 on_step: OnStep | None = None) -> tuple[list[list[SequenceResult]], list[str]]:
    """Greedy, sampling or mirostat decoding of several prompts at once (left padding).

    Each prompt becomes ``num_return_sequences`` rows drawing from a generator seeded with its
    own seed (default ``config.seed``), so a prompt gets the same tokens alone or in a batch.
    Mirostat keeps μ per row and records it in each step's ``extra`` (``mirostat_mu``: the μ
    that truncated this step, ``surprise``: −log₂ p̂ of the drawn token, in bits).
    Returns, per prompt, its sequences, and the chain's stage names.
    """
    seeds = seeds if seeds is not None else [config.seed] * len(prompts)
    out = decode_mixed(lm, [Request(p, config, s) for p, s in zip(prompts, seeds)],
                       trace=trace, trace_top=trace_top, on_step=on_step)
    return [sequences for sequences, _ in out], out[0][1]


def decode_mixed(lm: LM, requests: list[Request], *, trace: bool = True,
                 trace_top: int = DEFAULT_TRACE_TOP, on_step: OnStep | None = None
                 ) -> list[tuple[list[SequenceResult], list[str]]]:
    """Decode requests with different configs (greedy, sampling, mirostat) in one batch.

    Every step reads the weights once for all rows, then each lane applies its own chain and
    picks its own tokens; a row stops by its own config's rule. Once enough rows have finished
    (``droppable``), they leave the batch and its cache, so the steps that follow compute only
    the rows still generating. Each request gets the tokens it would get alone. Returns, per
    request, (its sequences, its chain's stage names).
    """
    model = lm.model
    guide_key = check_guides(lm, [req.config for req in requests])
    lanes, rows, first_row = plan_lanes(lm, requests)
    names = [(lane.config, lane.names) for lane in lanes]   # lanes may leave the batch
    pad = pad_token_id(lm)
    with torch.inference_mode():
        logits, state, input_ids, mask = shared_prefill(model, rows, pad)
        # a two-model knob: the second logits of every step (guide.py); else no second forward
        guide, second = start_guide(lm, guide_key, input_ids, mask)
    batch, prompt_len = input_ids.shape
    seq = (input_ids if mask is None else input_ids.masked_fill(mask == 0, -1)).to(lm.device)
    room = lm.max_context - prompt_len
    stops: list[StopChecker] = []
    for lane in lanes:
        max_steps = min(lane.config.max_new_tokens, room)
        stop = StopChecker(lm, lane.config, max_steps,
                           context_bound=room < lane.config.max_new_tokens)
        stops += [stop] * (lane.rows.stop - lane.rows.start)
    progress = RowProgress(batch, stops)
    texts = TokenTexts(lm.tokenizer) if trace else None
    longest = max(min(lane.config.max_new_tokens, room) for lane in lanes)
    where = list(range(batch))          # the row of every batch position

    with torch.inference_mode():
        for index in range(longest):
            check_logits(logits, [i for i, r in enumerate(where) if progress.finish[r] is None],
                         index)
            chosen = torch.empty(len(where), dtype=torch.long, device=logits.device)
            traces: list[StepTrace] = []
            for lane in lanes:
                picked, lane_traces = lane_step(lane, logits, seq, prompt_len, where[lane.rows],
                                                progress, texts, trace_top, second)
                chosen[lane.rows] = progress.pad_finished(picked, pad, where[lane.rows])
                traces += lane_traces
            done = progress.add(chosen, logits, traces, where)
            if on_step is not None:
                on_step(index, progress.generated)
            if done:
                break
            keep = droppable(lanes, where, progress)
            if keep is not None:
                kept = torch.tensor(keep, dtype=torch.long, device=chosen.device)
                lanes = shrink_lanes(lanes, keep)
                where = [where[i] for i in keep]
                chosen, seq = chosen[kept], seq[kept]
                state.select_rows(kept)
                if guide is not None:
                    guide.select_rows(kept)
            seq = torch.cat([seq, chosen[:, None]], dim=-1)
            logits, _ = decode_step(model, chosen, state)
            if guide is not None:
                second = guide.next(chosen)

    results = progress.results(lm)
    return [(results[first_row[i]:first_row[i] + req.config.num_return_sequences],
             next(chain for config, chain in names if config == req.config))
            for i, req in enumerate(requests)]


def lane_step(lane: Lane, logits: torch.Tensor, seq: torch.Tensor, prompt_len: int,
              lane_rows: list[int], progress: RowProgress, texts: TokenTexts | None,
              trace_top: int, second: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, list[StepTrace]]:
    """One ``step`` of one lane over its rows. ``lane_rows``: the row of each of the lane's
    batch positions; ``second``: the batch's second logits (a two-model knob is on). Returns
    the lane's tokens (pad for finished rows comes later) and the traces of its live rows (none
    when ``texts`` is None)."""
    live = [i for i, r in enumerate(lane_rows) if progress.finish[r] is None]
    kind = guide_kind(lane.config)
    guide = second[lane.rows] if second is not None and kind is not None else None
    ctx = StepContext(input_ids=seq[lane.rows], prompt_length=prompt_len,
                      row_generators=lane.groups, state=lane.state, live=live, guide=guide)
    record = None if texts is None else (
        lambda history, chosen: record_steps(
            ctx.generated, [h.cpu() for h in history], lane.names, chosen.cpu(), live, trace_top,
            texts, None if guide is None else guide.cpu(), kind or ""))
    pick = multinomial(lane.groups) if lane.sampling else argmax
    chosen, traces, lane.state = step(lane.chain, ctx, logits[lane.rows], pick, record)
    return chosen, traces
