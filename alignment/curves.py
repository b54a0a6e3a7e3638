"""Training curves of a preference run, drawn from the trainer's ``log_history``.

A pure function of the logged numbers: one panel per quantity that was logged (loss; chosen and
rejected rewards; reward margin; reward accuracy). What TRL calls a "reward" differs by method,
so the panel titles say which one is shown:

- DPO / IPO (``trl/trainer/dpo_trainer.py`` ``_compute_loss``): the implicit reward
  β·(log πθ(y|x) − log πref(y|x)), summed over completion tokens (Rafailov et al. 2023, §5).
- ORPO (``trl/experimental/orpo/orpo_trainer.py`` ``odds_ratio_loss``) and SimPO
  (``trl/experimental/cpo/cpo_trainer.py``): β·(mean per-token log πθ(y|x)); no reference model,
  so not an implicit reward. ORPO's β is the odds-ratio weight λ.

Matplotlib is used through ``Figure`` + the Agg canvas, never ``pyplot``: no global backend is set
and nothing leaks between calls (safe inside Streamlit and in tests).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

from decoding.io import write_bytes_atomic

IMPLICIT_REWARD = "implicit reward β·log(πθ/πref), summed over tokens"
LOGPROB_REWARD = "β · mean token log πθ (no reference: not an implicit reward)"


def reward_semantics(log_history: Sequence[dict[str, Any]], method: str | None = None) -> str:
    """What ``rewards/*`` means in this log: ``IMPLICIT_REWARD`` (DPO, IPO) or ``LOGPROB_REWARD``
    (ORPO, SimPO). Read from ``method`` when given, else from the keys only ORPO/CPO log."""
    if method is not None:
        return LOGPROB_REWARD if method in ("orpo", "simpo") else IMPLICIT_REWARD
    keys = {key for entry in log_history for key in entry}
    return LOGPROB_REWARD if "nll_loss" in keys or "log_odds_ratio" in keys else IMPLICIT_REWARD


def series(log_history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of one logged key, skipping entries without it or with a non-finite value."""
    steps, values = [], []
    for entry in log_history:
        value = entry.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(float(entry.get("step", len(steps) + 1)))
            values.append(float(value))
    return steps, values


def curve_panels(log_history: Sequence[dict[str, Any]], method: str | None = None) -> list[dict[str, Any]]:
    """The panels to draw: ``{"title", "lines": [(label, key)], "ylim"}`` for the keys that were logged."""
    meaning = reward_semantics(log_history, method)
    reference_free = meaning == LOGPROB_REWARD
    candidates = [
        {"title": "loss", "lines": [("loss", "loss"), ("NLL part (chosen)", "nll_loss")]},
        {"title": f"rewards: {meaning}",
         "lines": [("chosen", "rewards/chosen"), ("rejected", "rewards/rejected")]},
        {"title": "reward margin (chosen − rejected)" + (" of β·mean log p" if reference_free else ""),
         "lines": [("margin", "rewards/margins")]},
        {"title": "reward accuracy (share of pairs with chosen > rejected)",
         "lines": [("accuracy", "rewards/accuracies")], "ylim": (-0.05, 1.05)},
    ]
    panels = []
    for panel in candidates:
        lines = [(label, key) for label, key in panel["lines"] if series(log_history, key)[0]]
        if lines:
            panels.append({**panel, "lines": lines})
    return panels


def plot_training_curves(log_history: Sequence[dict[str, Any]], path: str | Path, title: str,
                         method: str | None = None) -> Path:
    """Draw the logged curves into a PNG at ``path`` (written atomically) and return the path.

    A log without any plottable key still gives a PNG, with a note saying so, so a run always
    leaves its curves file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = curve_panels(log_history, method)
    columns = 2 if len(panels) > 1 else 1
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(5.2 * columns, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=11)
    if not panels:
        axis = figure.add_subplot(1, 1, 1)
        axis.text(0.5, 0.5, "no training metrics were logged", ha="center", va="center")
        axis.set_axis_off()
    for index, panel in enumerate(panels, start=1):
        axis = figure.add_subplot(rows, columns, index)
        for label, key in panel["lines"]:
            steps, values = series(log_history, key)
            axis.plot(steps, values, marker="o", markersize=2.5, linewidth=1.2, label=label,
                      linestyle="--" if key == "nll_loss" else "-")
        if "ylim" in panel:
            axis.set_ylim(*panel["ylim"])
        axis.set_title(panel["title"], fontsize=9)
        axis.set_xlabel("optimizer step", fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        if len(panel["lines"]) > 1:
            axis.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return write_bytes_atomic(path, buffer.getvalue())
