"""Aggregate the study's generations: one row per (strategy, subset), and ``summary.csv``.

Conventions (stated again in the report):

* n-gram metrics count the model's token ids, end-of-sequence excluded. rep-n is Su et al.'s
  corpus micro-average in %, seq-rep-4 Welleck et al.'s per-generation value averaged over
  generations, distinct-2 one set over the whole corpus / all bigrams.
* repetition % is Holtzman et al.'s flag (``holtzman_repetition``) over generations; loop % is
  the share of generations in which ``find_loops`` finds a loop of any kind (exact,
  near-verbatim, template; at the end or mid-text), the rule measured on the labelled loop set.
* perplexity = exp(−Σ log p / Σ tokens) of the generated tokens (end-of-sequence included) under
  the model's raw distribution, pooled over the strategy's generations.
* Self-BLEU-4: every generation is the hypothesis once, with all the strategy's other
  generations of the same subset as references; sacrebleu ``BLEU(effective_order=True)``
  sentence scores (13a tokenization, exponential smoothing), averaged, reported in [0, 1].
  Holtzman et al. used NLTK ``sentence_bleu`` with smoothing method 1 over 1,000 generations, so
  only the direction of differences carries over, not the values.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from statistics import fmean

from decoding.diagnostics import distinct_n, diversity, rep_n
from decoding.errors import DecodingLabError
from decoding.io import write_text_atomic

SUBSETS = ("raw", "chat", "all")
SUMMARY_COLUMNS = ["strategy", "subset", "n", "repetition_pct", "loop_pct", "seq_rep_4", "rep_2", "rep_3",
                   "rep_4", "diversity", "distinct_2", "mean_length", "eos_rate", "mean_logprob",
                   "perplexity", "self_bleu4"]


def self_bleu4(texts: list[str]) -> float | None:
    """Mean sentence BLEU-4 of each text against all the others (see the module docstring)."""
    if len(texts) < 2:
        return None
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)
    scores = [bleu.sentence_score(texts[i], texts[:i] + texts[i + 1:]).score
              for i in range(len(texts))]
    return fmean(scores) / 100.0


def _content(record: dict) -> list[int]:
    ids = record["token_ids"]
    return ids[:-1] if record["eos"] and ids else list(ids)


def _corpus_or_none(fn, corpus, *args):
    try:
        return fn(corpus, *args)
    except DecodingLabError:
        return None


def summary_row(label: str, subset: str, records: list[dict]) -> dict:
    corpus = [_content(r) for r in records]
    nonempty = [c for c in corpus if c]
    seq_rep = [r["seq-rep-4"] for r in records if r["seq-rep-4"] is not None]
    scored = sum(r["n_scored"] for r in records)
    logprob = (sum(r["sum_logprob"] for r in records if r["sum_logprob"] is not None) / scored
               if scored else None)
    return {
        "strategy": label, "subset": subset, "n": len(records),
        "repetition_pct": 100.0 * fmean(r["holtzman_repetition"] for r in records),
        # older results.jsonl files have no loop_kind: their loop % is left empty
        "loop_pct": (100.0 * fmean(r["loop_kind"] is not None for r in records)
                     if all("loop_kind" in r for r in records) else None),
        "seq_rep_4": fmean(seq_rep) if seq_rep else None,
        "rep_2": _corpus_or_none(rep_n, nonempty, 2) if nonempty else None,
        "rep_3": _corpus_or_none(rep_n, nonempty, 3) if nonempty else None,
        "rep_4": _corpus_or_none(rep_n, nonempty, 4) if nonempty else None,
        "diversity": _corpus_or_none(diversity, nonempty) if nonempty else None,
        "distinct_2": _corpus_or_none(distinct_n, nonempty, 2) if nonempty else None,
        "mean_length": fmean(len(c) for c in corpus),
        "eos_rate": fmean(1.0 if r["eos"] else 0.0 for r in records),
        "mean_logprob": logprob,
        "perplexity": math.exp(-logprob) if logprob is not None else None,
        "self_bleu4": self_bleu4([r["text"] for r in records]),
    }


def summarize(records: list[dict], labels: list[str]) -> list[dict]:
    """One row per (strategy, subset): raw openings, chat questions, and both together."""
    rows = []
    for label in labels:
        mine = [r for r in records if r["strategy"] == label]
        for subset in SUBSETS:
            chosen = mine if subset == "all" else [r for r in mine if r["mode"] == subset]
            if chosen:
                rows.append(summary_row(label, subset, chosen))
    return rows


def write_summary_csv(path: str | Path, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else
                             round(row[k], 6) if isinstance(row[k], float) else row[k])
                         for k in SUMMARY_COLUMNS})
    return write_text_atomic(path, buffer.getvalue())


def rows_by(rows: list[dict], subset: str) -> dict[str, dict]:
    return {r["strategy"]: r for r in rows if r["subset"] == subset}


def identical_strategies(records: list[dict]) -> list[list[str]]:
    """Groups of strategies that produced token-identical generations on every prompt.

    Worth saying in a report: two settings that look different (typical-p 0.95 and top-p 0.95,
    say) may keep the same tokens at every step on a given model.
    """
    outputs: dict[str, dict[str, tuple]] = {}
    for r in records:
        outputs.setdefault(r["strategy"], {})[r["prompt_id"]] = tuple(r["token_ids"])
    groups: dict[tuple, list[str]] = {}
    for label, by_prompt in outputs.items():
        groups.setdefault(tuple(sorted(by_prompt.items())), []).append(label)
    return [labels for labels in groups.values() if len(labels) > 1]
