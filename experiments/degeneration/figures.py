"""The study's figures, written atomically as PNG (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from pathlib import Path

from decoding.io import write_bytes_atomic

from .strategies import holtzman_counterparts
from .summary import rows_by


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    _pyplot().close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def repetition_figure(rows: list[dict], path: str | Path) -> Path:
    """Repetition % by strategy (raw and chat bars), Holtzman et al.'s values as markers."""
    plt = _pyplot()
    labels = list(dict.fromkeys(r["strategy"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(labels) + 1.6))
    height = 0.38
    for offset, subset, colour in ((-height / 2, "raw", "#d95f02"), (height / 2, "chat", "#1b9e77")):
        table = rows_by(rows, subset)
        ys = [i + offset for i, label in enumerate(labels) if label in table]
        xs = [table[label]["repetition_pct"] for label in labels if label in table]
        if xs:
            ax.barh(ys, xs, height=height, color=colour,
                    label="open-ended openings (raw)" if subset == "raw" else "chat questions")
    refs = holtzman_counterparts(labels)
    for i, label in enumerate(labels):
        if label in refs:
            name, value = refs[label]
            ax.plot(value, i - height / 2, marker="x", color="black", ms=8)
            ax.annotate(f"Holtzman {name}: {value}%", (value, i - height / 2),
                        xytext=(4, -10), textcoords="offset points", fontsize=7)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("generations ending in a repetition loop (%), Holtzman et al.'s criterion")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def tradeoff_figure(rows: list[dict], path: str | Path) -> Path:
    """Distinct-2 against perplexity, one point per strategy and subset."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for subset, marker, colour in (("raw", "o", "#d95f02"), ("chat", "s", "#1b9e77")):
        pts = [r for r in rows_by(rows, subset).values()
               if r["perplexity"] is not None and r["distinct_2"] is not None]
        if not pts:
            continue
        ax.scatter([r["perplexity"] for r in pts], [r["distinct_2"] for r in pts], marker=marker,
                   color=colour, label="raw openings" if subset == "raw" else "chat questions")
        for r in pts:
            ax.annotate(r["strategy"], (r["perplexity"], r["distinct_2"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("perplexity of the generated tokens under the model (log scale)")
    ax.set_ylabel("distinct-2 (corpus)")
    ax.set_title("Quality–diversity trade-off: distinct-2 against perplexity, per strategy", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def reinforcement_figure(curves, path: str | Path, mean=None) -> Path:
    """TP, IP and WR against the number of earlier repetitions (Xu et al. 2022).

    One thin line per sentence; with ``mean`` (a ``MeanReinforcementCurve``) a thick line for the
    token-weighted mean. A single sentence is drawn as a thick labelled line instead.
    """
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), sharex=True)
    titles = {"tp": "TP: mean P(token)", "ip": "IP: share more probable than in copy 0",
              "wr": "WR: share that is the argmax"}
    single = len(curves) == 1 and mean is None
    for name, ax in zip(("tp", "ip", "wr"), axes):
        for curve in curves:
            values = getattr(curve, name)
            if single:
                label = curve.sentence if len(curve.sentence) <= 40 else curve.sentence[:39] + "…"
                ax.plot(range(len(values)), values, marker="o", ms=3, lw=2, label=label)
            else:
                ax.plot(range(len(values)), values, color="grey", alpha=0.45, lw=1)
        if mean is not None:
            values = getattr(mean, name)
            ax.plot(range(len(values)), values, color="#d95f02", lw=2.5, marker="o", ms=4,
                    label=f"mean of {mean.n_sentences} sentences")
        ax.set_title(titles[name], fontsize=10)
        ax.set_xlabel("copy n (number of earlier repetitions)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    if single or mean is not None:
        axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Self-reinforcement (Xu et al. 2022)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
