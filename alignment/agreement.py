"""How well a judge agrees with labels a person gave by reading: small pure functions.

Conventions: labels are strings; ``classes`` fixes the order of every per-class table.
Recall of class c = (judge says c and the reader said c) / (the reader said c); precision the
same over what the judge said; macro-F1 the unweighted mean of the per-class F1 (classes the
reader never used are left out of the mean). Cohen's κ (Cohen 1960) = (p_o − p_e) / (1 − p_e),
with p_e from the two raters' marginal label frequencies. Reliability of P(support): answers
binned by the judge's P(support) into equal-width bins; per bin the mean prediction and the
fraction the reader labelled "support" (a calibrated judge has them equal); ECE is the
answer-weighted mean gap (Guo et al. 2017).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SIDES = ("support", "oppose")
# A side is "called with confidence" when the judge gives it at least this probability.
CONFIDENT = 0.75


def confusion(gold: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """``(len(classes), len(classes))`` counts: row = the reader's label, column = the judge's."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({x for x in list(gold) + list(predicted) if x not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not among classes {list(classes)}")
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for g, p in zip(gold, predicted):
        matrix[index[g], index[p]] += 1
    return matrix


def cohen_kappa(matrix: np.ndarray) -> float:
    """Cohen's κ of a confusion matrix; 1.0 when both raters used one and the same class only."""
    n = matrix.sum()
    if n == 0:
        return float("nan")
    p_o = np.trace(matrix) / n
    p_e = float((matrix.sum(1) * matrix.sum(0)).sum()) / n ** 2
    return 1.0 if p_e == 1 else float((p_o - p_e) / (1 - p_e))


def reliability(p_support: Sequence[float], is_support: Sequence[bool], bins: int = 5) -> list[dict]:
    """Equal-width bins of P(support) over [0, 1]: ``{"low", "high", "n", "mean_p",
    "fraction_support"}`` for every bin that holds an answer."""
    p = np.asarray(p_support, dtype=float)
    y = np.asarray(is_support, dtype=float)
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            rows.append({"low": b / bins, "high": (b + 1) / bins, "n": int(sel.sum()),
                         "mean_p": float(p[sel].mean()), "fraction_support": float(y[sel].mean())})
    return rows


def expected_calibration_error(rows: Sequence[dict]) -> float:
    n = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["mean_p"] - r["fraction_support"]) for r in rows) / n) if n else float("nan")


def agreement(gold: Sequence[str], predicted: Sequence[str], classes: Sequence[str],
              p_support: Sequence[float] | None = None, bins: int = 5,
              p_label: Sequence[float] | None = None) -> dict:
    """Accuracy, per-class recall / precision / F1, macro-F1, Cohen's κ, the confusion matrix,
    the share of reader-neutral answers the judge assigned a side (and, with ``p_label``, the
    judge's probability of its own label, the share it assigned a side with P >= ``CONFIDENT``),
    and (with ``p_support``) the reliability bins of P(support) and their ECE."""
    matrix = confusion(gold, predicted, classes)
    n = int(matrix.sum())
    recall, precision, f1 = {}, {}, {}
    for i, c in enumerate(classes):
        said, truth, hit = matrix[:, i].sum(), matrix[i].sum(), matrix[i, i]
        recall[c] = float(hit / truth) if truth else None
        precision[c] = float(hit / said) if said else None
        if truth:
            r, p = hit / truth, (hit / said if said else 0.0)
            f1[c] = float(2 * p * r / (p + r)) if p + r else 0.0
    out = {"n": n, "accuracy": float(np.trace(matrix) / n) if n else float("nan"),
           "recall": recall, "precision": precision, "f1": f1,
           "macro_f1": float(np.mean(list(f1.values()))) if f1 else float("nan"),
           "kappa": cohen_kappa(matrix), "classes": list(classes), "confusion": matrix.tolist()}
    if "neutral" in classes:
        i = list(classes).index("neutral")
        sides = [list(classes).index(s) for s in SIDES if s in classes]
        neutral = matrix[i].sum()
        out["neutral_called_side"] = float(matrix[i, sides].sum() / neutral) if neutral else None
        if p_label is not None:
            confident = sum(g == "neutral" and p in SIDES and q >= CONFIDENT
                            for g, p, q in zip(gold, predicted, p_label))
            out["neutral_called_side_confident"] = confident / neutral if neutral else None
    if p_support is not None:
        rows = reliability(p_support, [g == "support" for g in gold], bins)
        out["reliability"] = rows
        out["ece"] = expected_calibration_error(rows)
    return out


def format_agreement(name: str, a: dict) -> str:
    """One table row: accuracy, recall per class, macro-F1, κ, neutral → side."""
    rec = "  ".join(f"{c} {a['recall'][c]:.2f}" if a["recall"].get(c) is not None else f"{c} -"
                    for c in a["classes"])
    side = a.get("neutral_called_side")
    tail = f"  neutral->side {side:.2f}" if side is not None else ""
    return (f"{name:<28} n {a['n']:>3}  acc {a['accuracy']:.2f}  recall: {rec}  macro-F1 "
            f"{a['macro_f1']:.2f}  kappa {a['kappa']:.2f}{tail}")
