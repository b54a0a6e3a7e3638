"""Bootstrap intervals over prompts, samples nested: how sure is a stance fraction or a loop rate?

The unit of replication is the *prompt*: answers to one prompt are correlated (several samples
of one model, or one prompt's answers under two models), so resampling answers as if they were
independent makes intervals too narrow. Each bootstrap replicate draws the prompts with
replacement and then, inside every drawn prompt, its samples with replacement (the two-stage
or "nested" bootstrap for clustered data; Davison & Hinkley 1997, §3.8; Field & Welsh 2007).
The statistic is the mean over all drawn answers. Intervals are percentile intervals (Efron &
Tibshirani 1993, §13.3).

A between-model difference is *paired*: both models' answers to the same drawn prompts enter
the same replicate, so prompt difficulty cancels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from decoding.errors import check_range

DEFAULT_REPLICATES = 2000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    level: float
    prompts: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def format(self, percent: bool = True, signed: bool = False) -> str:
        f = (lambda v: f"{100 * v:+.0f}" if signed else f"{100 * v:.0f}") if percent else \
            (lambda v: f"{v:+.2f}" if signed else f"{v:.2f}")
        unit = " pp" if percent and signed else ("%" if percent else "")
        return f"{f(self.estimate)}{unit} [{f(self.low)}, {f(self.high)}]"


def percent_interval(low: float, high: float, sep: str = "–") -> str:
    """A fraction's interval in whole percent, ``30–55``: the one rounding every table and the app
    print an interval with (each adds its brackets or unit: ``42% [30–55]``, ``30–55 %``)."""
    return f"{100 * low:.0f}{sep}{100 * high:.0f}"


def _check(level: float, replicates: int) -> None:
    check_range("level", level, 0, 1, low_open=True, high_open=True)
    check_range("replicates", replicates, 100, integer=True)


def _matrix(groups: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Groups as a ``(prompts, max samples)`` matrix (NaN-padded) and each group's size."""
    sizes = np.array([len(g) for g in groups])
    values = np.full((len(groups), max(sizes)), np.nan)
    for i, g in enumerate(groups):
        values[i, :len(g)] = np.asarray(g, dtype=float)
    return values, sizes


def _replicate_means(values: np.ndarray, sizes: np.ndarray, prompts: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Mean over the answers of each replicate: ``prompts`` ``(B, P)`` drawn prompt indices;
    inside each, samples drawn with replacement from that prompt's own answers."""
    width = values.shape[1]
    n = sizes[prompts]                                              # (B, P)
    draws = (rng.random(prompts.shape + (width,)) * n[..., None]).astype(int)  # (B, P, W)
    picked = values[prompts[..., None], draws]                      # (B, P, W)
    used = np.arange(width)[None, None, :] < n[..., None]           # a prompt of k answers draws k
    return np.where(used, picked, 0.0).sum((1, 2)) / used.sum((1, 2))


def bootstrap_mean(groups: Sequence[Sequence[float]], level: float = 0.95,
                   replicates: int = DEFAULT_REPLICATES, seed: int = 0) -> Interval:
    """The mean over all answers (``groups``: one list of per-answer values per prompt, e.g.
    1.0 / 0.0 for "labelled support") with its nested-bootstrap interval."""
    _check(level, replicates)
    groups = [g for g in groups if len(g)]
    if not groups:
        raise ValueError("bootstrap_mean needs at least one prompt with an answer")
    values, sizes = _matrix(groups)
    estimate = float(np.nansum(values) / sizes.sum())
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, len(groups), size=(replicates, len(groups)))
    means = _replicate_means(values, sizes, prompts, rng)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high), level, len(groups))


def bootstrap_difference(a: Mapping[Any, Sequence[float]], b: Mapping[Any, Sequence[float]],
                         level: float = 0.95, replicates: int = DEFAULT_REPLICATES,
                         seed: int = 0) -> Interval:
    """mean(a) − mean(b), paired by prompt (the keys both have): one draw of prompts per
    replicate serves both sides, samples nested within each side."""
    _check(level, replicates)
    keys = [k for k in a if k in b and len(a[k]) and len(b[k])]
    if not keys:
        raise ValueError("bootstrap_difference needs prompts answered by both sides")
    va, sa = _matrix([a[k] for k in keys])
    vb, sb = _matrix([b[k] for k in keys])
    estimate = float(np.nansum(va) / sa.sum() - np.nansum(vb) / sb.sum())
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, len(keys), size=(replicates, len(keys)))
    diffs = _replicate_means(va, sa, prompts, rng) - _replicate_means(vb, sb, prompts, rng)
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate, float(low), float(high), level, len(keys))


def grouped(keys: Sequence[Any], values: Sequence[float]) -> dict[Any, list[float]]:
    """``{key: [value, ...]}`` with keys in first-seen order: the per-prompt groups the nested
    bootstrap resamples (``keys`` and ``values`` of equal length)."""
    out: dict[Any, list[float]] = {}
    for k, v in zip(keys, values, strict=True):
        out.setdefault(k, []).append(float(v))
    return out


def by_prompt(records: Sequence[Any], value) -> dict[Any, list[float]]:
    """``{prompt_id: [value(record), ...]}`` of records that carry ``prompt_id``, in order."""
    return grouped([r.prompt_id for r in records], [value(r) for r in records])


def excludes_zero(interval: Interval) -> bool:
    """A difference is reported as a finding only when its interval excludes 0."""
    return interval.low > 0 or interval.high < 0
