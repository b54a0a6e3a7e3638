"""The lane scheduler of mixed batches: requests with equal configs share a lane (one chain, one
stop rule), and finished rows leave the batch.

A mixed batch (vLLM's per-request ``SamplingParams``) runs prompts under different greedy,
sampling and mirostat configs through one forward pass per step; each lane then takes its own
``step.step`` over its rows. ``loop.decode_mixed`` drives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .chain import Chain
from .config import DecodingConfig
from .models import LM
from .rows import RowProgress

# Finished rows leave a mixed batch once they are at least this share of it.
DROP_SHARE = 1 / 8


@dataclass(frozen=True)
class Request:
    """One prompt of a mixed batch with its own decoding settings (vLLM's per-request
    ``SamplingParams``): tokenised prompt, config (greedy, sample or mirostat), seed."""

    prompt_ids: list[int]
    config: DecodingConfig
    seed: int


@dataclass
class Lane:
    """The rows of a batch that share one config: its chain, generators and the per-row state
    of its stateful stages (mirostat's μ, adaptive-p's average).

    ``rows`` is the lane's slice of the batch; ``groups`` are ``(rows, generator)`` pairs, one
    per prompt, relative to the lane (a prompt's ``num_return_sequences`` rows share one).
    """

    config: DecodingConfig
    rows: slice
    chain: Chain
    groups: list[tuple[slice, torch.Generator]]
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return self.chain.names

    @property
    def sampling(self) -> bool:
        return self.config.strategy in ("sample", "mirostat")


def new_generator(lm: LM, seed: int) -> torch.Generator:
    return torch.Generator(device=lm.device).manual_seed(seed)


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
        chain = Chain.of(config, lm)
        lanes.append(Lane(config, slice(start, len(rows)), chain, groups,
                          chain.start(len(rows) - start)))
    return lanes, rows, first_row


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
    per-row state; lanes left without rows disappear."""
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
        index = torch.tensor(local, dtype=torch.long)
        state = {name: values[index] for name, values in lane.state.items()}
        out.append(Lane(lane.config, slice(start, start + len(local)), lane.chain, groups, state))
        start += len(local)
    return out
