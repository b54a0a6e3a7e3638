"""A reader audit of a stance study: the study's own answers, labelled by reading them, set
against the judge's labels of the same answers.

The stance judge is validated on a labelled test split, but a study's answers come from its
own adapters, lengths and decodings. An audit file (``alignment/datasets/stance_hw6_audit.jsonl``:
every answer of one full ``hw6`` run, each labelled by a reader who saw only the prompt and
the answer) answers two questions on the study's own text:

- how well the judge agrees with readers there (accuracy, recall per class, κ), and
- which of the study's findings survive when the readers' labels are counted instead of the
  judge's: per (model, decoding) stance fractions and the course's between-model differences,
  with 95 % bootstrap intervals over prompts (samples nested, differences paired by prompt).

Usage::

    python -m experiments.reader_audit alignment/datasets/stance_hw6_audit.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alignment.agreement import agreement
from alignment.bootstrap import bootstrap_difference, bootstrap_mean, grouped
from alignment.stance import LABELS

HW6_AUDIT = Path(__file__).resolve().parent.parent / "alignment" / "datasets" / "stance_hw6_audit.jsonl"
# The course's comparisons in ``hw6`` (first minus second).
HW6_PAIRS = (("ratio1", "ratio0"), ("ratio1", "epochs1"), ("ratio1", "pairs10"))
FIELDS = ("prompt_id", "model", "decoding", "label", "judge")


def load_audit(path: str | Path) -> list[dict]:
    """The audit's records; a record without one of ``FIELDS`` or with a label outside
    ``LABELS`` is refused with its line number."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {n}: not JSON ({e.msg})") from None
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise ValueError(f"{path}, line {n}: missing {', '.join(missing)}")
        for f in ("label", "judge"):
            if row[f] not in LABELS:
                raise ValueError(f"{path}, line {n}: {f}={row[f]!r}; allowed: {', '.join(LABELS)}")
        rows.append(row)
    return rows


def cell_groups(rows: list[dict], model: str, decoding: str, who: str, stance: str) -> dict[str, list[float]]:
    """1.0 / 0.0 per answer (``who`` = "label" for the readers, "judge"), grouped by prompt."""
    cell = [r for r in rows if r["model"] == model and r["decoding"] == decoding]
    return grouped([r["prompt_id"] for r in cell], [float(r[who] == stance) for r in cell])


def audit(rows: list[dict], pairs=HW6_PAIRS) -> dict:
    """Agreement of the judge with the readers (overall and per decoding), per-cell stance
    fractions by readers and by judge, and the readers' paired differences for ``pairs``."""
    gold, judged = [r["label"] for r in rows], [r["judge"] for r in rows]
    decodings = sorted({r["decoding"] for r in rows})
    models = list(dict.fromkeys(r["model"] for r in rows))
    out = {"n": len(rows), "agreement": agreement(gold, judged, LABELS), "by_decoding": {}, "cells": [],
           "differences": []}
    for d in decodings:
        keep = [r for r in rows if r["decoding"] == d]
        out["by_decoding"][d] = agreement([r["label"] for r in keep], [r["judge"] for r in keep], LABELS)
        for m in models:
            cell = {"model": m, "decoding": d}
            for who, name in (("label", "readers"), ("judge", "judge")):
                for stance in ("support", "oppose"):
                    groups = cell_groups(rows, m, d, who, stance)
                    if groups:
                        cell[f"{name}_{stance}"] = bootstrap_mean(list(groups.values())).to_dict()
            if len(cell) > 2:
                out["cells"].append(cell)
        for a, b in pairs:
            for stance in ("support", "oppose"):
                ga, gb = cell_groups(rows, a, d, "label", stance), cell_groups(rows, b, d, "label", stance)
                if ga and gb:
                    diff = bootstrap_difference(ga, gb)
                    out["differences"].append({"decoding": d, "first": a, "second": b, "stance": stance,
                                               **diff.to_dict()})
    return out


def _pct(i: dict) -> str:
    return f"{i['estimate'] * 100:.0f}% [{i['low'] * 100:.0f}–{i['high'] * 100:.0f}]"


def audit_text(result: dict) -> str:
    a = result["agreement"]
    rec = ", ".join(f"{k} {v:.2f}" for k, v in a["recall"].items() if v is not None)
    lines = [f"Judge vs readers on {result['n']} answers: accuracy {a['accuracy']:.2f}, recall {rec}, "
             f"kappa {a['kappa']:.2f}"]
    for d, b in result["by_decoding"].items():
        lines.append(f"  {d}: n {b['n']}, accuracy {b['accuracy']:.2f}, kappa {b['kappa']:.2f}")
    lines += ["", "| model | decoding | readers: support | readers: oppose | judge: support | judge: oppose |",
              "|---|---|---|---|---|---|"]
    for c in result["cells"]:
        lines.append(f"| {c['model']} | {c['decoding']} | {_pct(c['readers_support'])} | {_pct(c['readers_oppose'])} | "
                     f"{_pct(c['judge_support'])} | {_pct(c['judge_oppose'])} |")
    lines += ["", "Readers' paired differences (95 % bootstrap over prompts; a finding only if 0 is outside):"]
    for d in result["differences"]:
        lines.append(f"- {d['decoding']}: {d['first']} − {d['second']}, {d['stance']}: {d['estimate'] * 100:+.0f} pp "
                     f"[{d['low'] * 100:+.0f}, {d['high'] * 100:+.0f}]")
    return "\n".join(lines)


def audit_sentence(path: str | Path = HW6_AUDIT) -> str:
    """One line for a study report: how the judge of the audited run agreed with the readers on
    that run's own answers, and which of the audited comparisons the readers back ('' without
    an audit file)."""
    if not Path(path).is_file():
        return ""
    result = audit(load_audit(path))
    a = result["agreement"]
    backed = sorted({f"{d['first']} vs {d['second']}" for d in result["differences"]
                     if d["low"] > 0 or d["high"] < 0})
    return (f"Reader audit of one earlier full run ({Path(path).name}, {result['n']} answers read blind; "
            f"`python -m experiments.reader_audit`): the judge of that run agreed with the readers at "
            f"accuracy {a['accuracy']:.2f}, κ {a['kappa']:.2f} on the study's own answers, and called a side "
            f"for {a['neutral_called_side'] * 100:.0f} % of the answers readers called neutral, so read its "
            f"side fractions as upper bounds. Differences the readers back: "
            f"{', '.join(backed) if backed else 'none'}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("audit", help="a JSONL audit file (fields: " + ", ".join(FIELDS) + ")")
    args = parser.parse_args(argv)
    try:
        rows = load_audit(args.audit)
    except (OSError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    print(audit_text(audit(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
