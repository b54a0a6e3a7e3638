"""Our own generation loop (greedy, sampling, mirostat); beam search lives in ``beam.py``,
contrastive search in ``contrastive.py``, batched generation of several prompts in ``batch.py``.

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
from dataclasses import dataclass

import torch

from .chain import StepContext, apply_chain, build_chain, chain_names
from .config import DecodingConfig
from .errors import ConfigError, GenerationError
from .forward import decode_step, left_pad, prefill
from .models import LM
from .mirostat import initial_mu, update_mu
from .recorder import TokenTexts, record_steps
from .trace import BeamStep, Generation, SequenceResult, StepTrace

DEFAULT_TRACE_TOP = 20


def check_prompt(lm: LM, prompt: str) -> None:
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


def new_generator(lm: LM, seed: int) -> torch.Generator:
    return torch.Generator(device=lm.device).manual_seed(seed)


def generate(lm: LM, prompt: str, config: DecodingConfig | None = None, chat: bool = True,
             trace: bool = True, trace_top: int = DEFAULT_TRACE_TOP) -> Generation:
    """Generate a continuation of ``prompt`` (chat: as the user turn of the chat template).

    Returns a ``Generation`` with the sequences and, when ``trace``, a ``StepTrace`` per step
    holding the top ``trace_top`` tokens through every stage of the chain.
    """
    check_prompt(lm, prompt)
    prompt_ids = lm.encode(prompt, chat=chat)
    return generate_ids(lm, prompt_ids, config, trace=trace, trace_top=trace_top,
                        prompt=prompt, chat=chat)


def generate_ids(lm: LM, prompt_ids: list[int], config: DecodingConfig | None = None, *,
                 trace: bool = True, trace_top: int = DEFAULT_TRACE_TOP, prompt: str | None = None,
                 chat: bool = False) -> Generation:
    """Generate from already tokenised ids (used for branching from a chosen step)."""
    config = config or DecodingConfig()
    check_prompt_ids(lm, prompt_ids)
    check_trace_top(trace_top)
    started = time.perf_counter()
    per_prompt, names = run_strategy(lm, [prompt_ids], config, trace, trace_top)
    sequences, beam_steps = per_prompt[0]
    return Generation(
        model=lm.name, adapter=lm.adapter,
        prompt=prompt if prompt is not None else lm.decode(prompt_ids, skip_special_tokens=False),
        chat=chat, prompt_ids=list(prompt_ids), config=config.to_dict(), chain=names,
        sequences=sequences, beam_steps=beam_steps, elapsed_s=time.perf_counter() - started)


def run_strategy(lm: LM, prompts: list[list[int]], config: DecodingConfig, trace: bool,
                 trace_top: int) -> tuple[list[tuple[list[SequenceResult], list[BeamStep]]], list[str]]:
    """Run ``config.strategy`` on several tokenised prompts at once (left padding).

    Returns, per prompt, (sequences, beam tree steps — empty outside beam search), and the
    chain's stage names.
    """
    if config.strategy == "beam":
        from .beam import beam_search

        out = beam_search(lm, prompts, config, trace=trace)
        return [(seqs, steps) for seqs, steps, _ in out], out[0][2]
    if config.strategy == "contrastive":
        from .contrastive import contrastive_batch

        results, names = contrastive_batch(lm, prompts, config, trace=trace, trace_top=trace_top)
    else:
        results, names = decode_batch(lm, prompts, config, trace=trace, trace_top=trace_top)
    return [(seqs, []) for seqs in results], names


def pad_token_id(lm: LM) -> int:
    pad = lm.tokenizer.pad_token_id
    if pad is None:
        pad = lm.eos_token_ids[0] if lm.eos_token_ids else 0
    return int(pad)


class StopChecker:
    """Finish reasons for one row: end-of-sequence, a stop string, length, context."""

    def __init__(self, lm: LM, config: DecodingConfig, max_steps: int, context_bound: bool) -> None:
        self.lm = lm
        self.eos = set() if config.ignore_eos else set(lm.eos_token_ids)
        self.stop_strings = config.stop_strings
        self.tail_tokens = max((len(s) for s in self.stop_strings), default=0) + 2
        self.max_steps = max_steps
        self.context_bound = context_bound

    def __call__(self, token_ids: list[int]) -> str | None:
        if token_ids[-1] in self.eos:
            return "eos"
        if self.stop_strings and self._hit_stop_string(token_ids):
            return "stop_string"
        if len(token_ids) >= self.max_steps:
            return "context" if self.context_bound else "length"
        return None

    def _hit_stop_string(self, token_ids: list[int]) -> bool:
        # A stop string counts once the newest token completes it (it was not there before).
        tail = token_ids[-self.tail_tokens:]
        now = self.lm.decode(tail, skip_special_tokens=False)
        before = self.lm.decode(tail[:-1], skip_special_tokens=False)
        return any(s in now and s not in before for s in self.stop_strings)


class RowProgress:
    """Per-row bookkeeping of a step loop: tokens so far, traces, log-probabilities, finish.

    ``stop`` is one ``StopChecker`` for every row, or a list of one per row (mixed batches,
    whose rows follow different configs).
    """

    def __init__(self, rows: int, stop: StopChecker | list[StopChecker]) -> None:
        self.stops = list(stop) if isinstance(stop, (list, tuple)) else [stop] * rows
        self.generated: list[list[int]] = [[] for _ in range(rows)]
        self.steps: list[list[StepTrace]] = [[] for _ in range(rows)]
        self.sum_logprob = [0.0] * rows
        self.finish: list[str | None] = [None] * rows

    @property
    def live(self) -> list[int]:
        return [r for r, f in enumerate(self.finish) if f is None]

    def pad_finished(self, chosen: torch.Tensor, pad: int,
                     where: list[int] | None = None) -> torch.Tensor:
        """Rows that already finished get the pad token (their input is ignored from now on).
        ``where[i]`` is the row of ``chosen[i]`` (default: row i), for a lane of a mixed batch
        or a batch that dropped finished rows."""
        rows = range(chosen.shape[0]) if where is None else where
        done = torch.tensor([self.finish[r] is not None for r in rows], device=chosen.device)
        return torch.where(done, torch.full_like(chosen, pad), chosen)

    def add(self, chosen: torch.Tensor, raw_logits: torch.Tensor, traces: list[StepTrace],
            where: list[int] | None = None) -> bool:
        """Append this step's tokens of the live rows (and their traces, in live-row order);
        returns True when every row has finished. ``where[i]``: the row of batch position i
        (default: row i); every live row must be in the batch."""
        live = self.live
        position = (lambda r: r) if where is None else {r: i for i, r in enumerate(where)}.__getitem__
        logp = torch.log_softmax(raw_logits, dim=-1).gather(1, chosen[:, None]).squeeze(1).tolist()
        for r, st in zip(live, traces):
            self.steps[r].append(st)
        chosen_list = chosen.tolist()
        for r in live:
            i = position(r)
            self.generated[r].append(chosen_list[i])
            self.sum_logprob[r] += logp[i]
            self.finish[r] = self.stops[r](self.generated[r])
        return all(f is not None for f in self.finish)

    def results(self, lm: LM) -> list[SequenceResult]:
        return [SequenceResult(token_ids=ids, text=lm.decode(ids), finish_reason=f or "length",
                               steps=steps, sum_logprob=lp)
                for ids, f, steps, lp in zip(self.generated, self.finish, self.steps, self.sum_logprob)]


def check_logits(logits: torch.Tensor, live: list[int], step: int) -> None:
    if not torch.isfinite(logits[live]).all():
        raise GenerationError(
            f"non-finite logits (nan or inf) from the model at step {step}; generation stopped")


def check_kept(final: torch.Tensor, live: list[int], step: int) -> None:
    if not torch.isfinite(final[live]).any(-1).all():
        raise GenerationError(f"every token was removed by the processor chain at step {step}")


def decode_batch(lm: LM, prompts: list[list[int]], config: DecodingConfig, *, trace: bool = True,
                 trace_top: int = DEFAULT_TRACE_TOP, seeds: list[int] | None = None
                 ) -> tuple[list[list[SequenceResult]], list[str]]:
    """Greedy, sampling or mirostat decoding of several prompts at once (left padding).

    Each prompt becomes ``num_return_sequences`` rows drawing from a generator seeded with its
    own seed (default ``config.seed``), so a prompt gets the same tokens alone or in a batch.
    Mirostat keeps μ per row and records it in each step's ``extra`` (``mirostat_mu``: the μ
    that truncated this step, ``surprise``: −log₂ p̂ of the drawn token, in bits).
    Returns, per prompt, its sequences, and the chain's stage names.
    """
    seeds = seeds if seeds is not None else [config.seed] * len(prompts)
    out = decode_mixed(lm, [Request(p, config, s) for p, s in zip(prompts, seeds)],
                       trace=trace, trace_top=trace_top)
    return [sequences for sequences, _ in out], out[0][1]


@dataclass(frozen=True)
class Request:
    """One prompt of a mixed batch with its own decoding settings (vLLM's per-request
    ``SamplingParams``): tokenised prompt, config (greedy, sample or mirostat), seed."""

    prompt_ids: list[int]
    config: DecodingConfig
    seed: int


@dataclass
class Lane:
    """The rows of a batch that share one config: its chain, stop rule and generators.

    ``rows`` is the lane's slice of the batch; ``groups`` are ``(rows, generator)`` pairs, one
    per prompt, relative to the lane (a prompt's ``num_return_sequences`` rows share one).
    """

    config: DecodingConfig
    rows: slice
    stages: list
    names: list[str]
    groups: list[tuple[slice, torch.Generator]]
    mu: torch.Tensor | None = None

    @property
    def sampling(self) -> bool:
        return self.config.strategy in ("sample", "mirostat")

    @property
    def mirostat(self) -> bool:
        return self.config.strategy == "mirostat"


def plan_lanes(lm: LM, requests: list[Request]) -> tuple[list[Lane], list[list[int]], list[int]]:
    """Group requests with equal configs into lanes (first-appearance order).

    Returns the lanes, the batch's rows (prompt ids, lane by lane) and, per request, the index
    of its first row.
    """
    order: list[DecodingConfig] = []
    members: dict[int, list[int]] = {}
    for i, req in enumerate(requests):
        key = next((k for k, c in enumerate(order) if c == req.config), None)
        if key is None:
            key = len(order)
            order.append(req.config)
        members.setdefault(key, []).append(i)
    lanes, rows, first_row = [], [], [0] * len(requests)
    for key, config in enumerate(order):
        start, n, groups = len(rows), config.num_return_sequences, []
        for i in members[key]:
            first_row[i] = len(rows)
            groups.append((slice(len(rows) - start, len(rows) - start + n),
                           new_generator(lm, requests[i].seed)))
            rows += [list(requests[i].prompt_ids)] * n
        stages = build_chain(config, lm.eos_token_ids, lm.tokenizer, lm.vocab_size)
        mu = (initial_mu(config.mirostat_tau, len(rows) - start)
              if config.strategy == "mirostat" else None)
        lanes.append(Lane(config, slice(start, len(rows)), stages, chain_names(stages), groups, mu))
    return lanes, rows, first_row


def shared_prefill(model, rows: list[list[int]], pad: int):
    """Prefill every distinct prompt once and copy its cache to the rows that repeat it
    (``num_return_sequences`` samples, or one prompt under several configs). Returns
    (last logits ``(rows, vocab)``, KVState, ``(rows, length)`` left-padded ids, their mask)."""
    input_ids, mask = left_pad(rows, pad)
    distinct: dict[tuple[int, ...], int] = {}
    index = [distinct.setdefault(tuple(r), len(distinct)) for r in rows]
    if len(distinct) == len(rows):
        logits, state, _ = prefill(model, input_ids, mask)
        return logits, state, input_ids, mask
    unique = [list(r) for r in distinct]
    # The longest prompt is among the distinct ones, so both paddings have the same length.
    unique_ids, unique_mask = left_pad(unique, pad)
    logits, state, _ = prefill(model, unique_ids, unique_mask)
    expand = torch.tensor(index, dtype=torch.long)
    state.cache.reorder_cache(expand.to(model.device))
    if state.attention_mask is not None:
        state.attention_mask = state.attention_mask[expand.to(state.attention_mask.device)]
    state.next_position = state.next_position[expand.to(state.next_position.device)]
    return logits[expand.to(logits.device)], state, input_ids, mask


def decode_mixed(lm: LM, requests: list[Request], *, trace: bool = True,
                 trace_top: int = DEFAULT_TRACE_TOP
                 ) -> list[tuple[list[SequenceResult], list[str]]]:
    """Decode requests with different configs (greedy, sampling, mirostat) in one batch.

    Every step reads the weights once for all rows, then each lane applies its own chain and
    picks its own tokens; a row stops by its own config's rule. Once enough rows have finished
    (``droppable``), they leave the batch and its cache, so the steps that follow compute only
    the rows still generating. Each request gets the tokens it would get alone. Returns, per
    request, (its sequences, its chain's stage names).
    """
    model = lm.model
    lanes, rows, first_row = plan_lanes(lm, requests)
    names = [(lane.config, lane.names) for lane in lanes]   # lanes may leave the batch
    pad = pad_token_id(lm)
    with torch.inference_mode():
        logits, state, input_ids, mask = shared_prefill(model, rows, pad)
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
    texts = TokenTexts(lm.tokenizer)
    longest = max(min(lane.config.max_new_tokens, room) for lane in lanes)
    where = list(range(batch))          # the row of every batch position

    with torch.inference_mode():
        for step in range(longest):
            check_logits(logits, [i for i, r in enumerate(where) if progress.finish[r] is None],
                         step)
            chosen = torch.empty(len(where), dtype=torch.long, device=logits.device)
            traces: list[StepTrace] = []
            for lane in lanes:
                picked, lane_traces = lane_step(lane, logits, seq, prompt_len, where[lane.rows],
                                                step, progress, pad, texts, trace, trace_top)
                chosen[lane.rows] = picked
                traces += lane_traces
            if progress.add(chosen, logits, traces, where):
                break
            keep = droppable(lanes, where, progress)
            if keep is not None:
                index = torch.tensor(keep, dtype=torch.long, device=chosen.device)
                lanes = shrink_lanes(lanes, keep)
                where = [where[i] for i in keep]
                chosen, seq = chosen[index], seq[index]
                state.cache.reorder_cache(index)
                if state.attention_mask is not None:
                    state.attention_mask = state.attention_mask[index]
                state.next_position = state.next_position[index]
            seq = torch.cat([seq, chosen[:, None]], dim=-1)
            logits, _ = decode_step(model, chosen, state)

    results = progress.results(lm)
    return [(results[first_row[i]:first_row[i] + req.config.num_return_sequences],
             next(chain for config, chain in names if config == req.config))
            for i, req in enumerate(requests)]


# Finished rows leave a mixed batch once they are at least this share of it.
DROP_SHARE = 1 / 8


def droppable(lanes: list[Lane], where: list[int], progress: RowProgress) -> list[int] | None:
    """Batch positions to keep when enough rows have finished, else None.

    A prompt's ``num_return_sequences`` rows draw from one generator in one ``multinomial``
    call, and the draws depend on how many rows take part, so a group leaves only when all its
    rows have finished.
    """
    keep = []
    for lane in lanes:
        for rows_slice, _ in lane.groups:
            positions = range(lane.rows.start + rows_slice.start, lane.rows.start + rows_slice.stop)
            if any(progress.finish[where[p]] is None for p in positions):
                keep += positions
    dropped = len(where) - len(keep)
    if dropped == 0 or dropped < DROP_SHARE * len(where):
        return None
    return keep


def shrink_lanes(lanes: list[Lane], keep: list[int]) -> list[Lane]:
    """The lanes over the kept positions (whole groups, in order): their slices, generators and
    mirostat μ; lanes left without rows disappear."""
    kept = set(keep)
    out, start = [], 0
    for lane in lanes:
        groups, local = [], []
        for rows_slice, generator in lane.groups:
            first = lane.rows.start + rows_slice.start
            if first in kept:
                size = rows_slice.stop - rows_slice.start
                groups.append((slice(len(local), len(local) + size), generator))
                local += range(rows_slice.start, rows_slice.stop)
        if not groups:
            continue
        mu = None if lane.mu is None else lane.mu[torch.tensor(local, dtype=torch.long)]
        out.append(Lane(lane.config, slice(start, start + len(local)), lane.stages, lane.names,
                        groups, mu))
        start += len(local)
    return out


def lane_step(lane: Lane, logits: torch.Tensor, seq: torch.Tensor, prompt_len: int,
              lane_rows: list[int], step: int, progress: RowProgress, pad: int,
              texts: TokenTexts, trace: bool, trace_top: int
              ) -> tuple[torch.Tensor, list[StepTrace]]:
    """One step of one lane: its chain over its rows' logits, then argmax or a seeded draw.
    ``lane_rows``: the row of each of the lane's batch positions. Returns the lane's tokens
    (pad for finished rows) and the traces of its live rows."""
    lane_live = [i for i, r in enumerate(lane_rows) if progress.finish[r] is None]
    ctx = StepContext(input_ids=seq[lane.rows], prompt_length=prompt_len,
                      row_generators=lane.groups, mirostat_mu=lane.mu)
    final, history = apply_chain(lane.stages, ctx, logits[lane.rows], record=trace)
    check_kept(final, lane_live, step)
    if lane.sampling:
        probs = torch.softmax(final, dim=-1)
        chosen = torch.empty(final.shape[0], dtype=torch.long, device=final.device)
        for rows_slice, generator in lane.groups:
            chosen[rows_slice] = torch.multinomial(
                probs[rows_slice], num_samples=1, generator=generator).squeeze(1)
    else:
        chosen = torch.argmax(final, dim=-1)
    chosen = progress.pad_finished(chosen, pad, lane_rows)

    traces = (record_steps(step, [h.cpu() for h in history], lane.names, chosen.cpu(), lane_live,
                           trace_top, texts) if trace else [])
    if lane.mirostat:
        observed = -torch.log2(probs.gather(1, chosen[:, None]).squeeze(1)).cpu()
        for r, st in zip(lane_live, traces):
            st.extra = {"mirostat_mu": float(lane.mu[r]), "surprise": float(observed[r])}
        alive = torch.tensor([r in lane_live for r in range(final.shape[0])])
        lane.mu = torch.where(alive, update_mu(lane.mu, observed, lane.config.mirostat_tau,
                                               lane.config.mirostat_eta), lane.mu)
    return chosen, traces
