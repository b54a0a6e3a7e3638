"""Row bookkeeping of a batch: why a row stops, what it generated so far, padding, the shared
prefill. (The KV-row selection itself is one method, ``forward.KVState.select_rows``.)

Every strategy uses these: the step loop of greedy/sampling/mirostat (``loop``), beam search and
contrastive search. Finish reasons are spelled once, in ``trace`` (``EOS``, ``LENGTH``, ...).
"""

from __future__ import annotations

import torch

from .forward import KVState, left_pad, prefill
from .models import LM
from .trace import CONTEXT, EOS, LENGTH, STOP_STRING, SequenceResult, StepTrace


def pad_token_id(lm: LM) -> int:
    pad = lm.tokenizer.pad_token_id
    if pad is None:
        pad = lm.eos_token_ids[0] if lm.eos_token_ids else 0
    return int(pad)


class StopChecker:
    """Finish reasons for one row: end-of-sequence, a stop string, length, context."""

    def __init__(self, lm: LM, config, max_steps: int, context_bound: bool) -> None:
        self.lm = lm
        self.eos = set() if config.ignore_eos else set(lm.eos_token_ids)
        self.stop_strings = config.stop_strings
        self.tail_tokens = max((len(s) for s in self.stop_strings), default=0) + 2
        self.max_steps = max_steps
        self.context_bound = context_bound

    def __call__(self, token_ids: list[int]) -> str | None:
        if token_ids[-1] in self.eos:
            return EOS
        if self.stop_strings and self.hit_stop_string(token_ids):
            return STOP_STRING
        if len(token_ids) >= self.max_steps:
            return self.out_of_room
        return None

    @property
    def out_of_room(self) -> str:
        """The reason for a row that reached its token budget."""
        return CONTEXT if self.context_bound else LENGTH

    def hit_stop_string(self, token_ids: list[int]) -> bool:
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
        return [SequenceResult(token_ids=ids, text=lm.decode(ids), finish_reason=f or LENGTH,
                               steps=steps, sum_logprob=lp)
                for ids, f, steps, lp in zip(self.generated, self.finish, self.steps, self.sum_logprob)]


def shared_prefill(model, rows: list[list[int]], pad: int
                   ) -> tuple[torch.Tensor, KVState, torch.Tensor, torch.Tensor | None]:
    """Prefill every distinct prompt once and copy its cache to the rows that repeat it
    (``num_return_sequences`` samples, beams, or one prompt under several configs). Returns
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
    state.select_rows(expand)
    return logits[expand.to(logits.device)], state, input_ids, mask
