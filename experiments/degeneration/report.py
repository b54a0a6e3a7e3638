"""``report.md``: our numbers beside Holtzman et al.'s Table 1, with the prose generated from the
measured numbers (nothing is concluded in advance), the per-subset tables and the protocol."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from decoding.io import write_text_atomic

from .strategies import HOLTZMAN_REPETITION, holtzman_counterparts
from .summary import rows_by


@dataclass
class RunFacts:
    model: str
    settings: dict
    prompt_counts: dict[str, int]
    strategies: list[tuple[str, str]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    generation_s: float = 0.0
    total_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    batched: bool = False
    threads: int | None = None
    identical: list[list[str]] = field(default_factory=list)


def _f(value, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def _table(rows: list[dict], subset: str) -> list[str]:
    head = ("| strategy | n | repetition % | loop % | seq-rep-4 | rep-2 | rep-3 | rep-4 | distinct-2 | "
            "mean length | EOS rate | perplexity | self-BLEU-4 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if r["subset"] != subset:
            continue
        lines.append(
            f"| {r['strategy']} | {r['n']} | {_f(r['repetition_pct'], 1)} "
            f"| {_f(r.get('loop_pct'), 1)} | {_f(r['seq_rep_4'], 3)} "
            f"| {_f(r['rep_2'], 1)} | {_f(r['rep_3'], 1)} | {_f(r['rep_4'], 1)} "
            f"| {_f(r['distinct_2'], 3)} | {_f(r['mean_length'], 1)} | {_f(r['eos_rate'], 2)} "
            f"| {_f(r['perplexity'], 2)} | {_f(r['self_bleu4'], 3)} |")
    return lines


def _compare_sentence(name: str, ours_label: str, ours: float, theirs: float) -> str:
    gap = ours - theirs
    if abs(gap) <= max(5.0, 0.25 * theirs):
        verdict = "close to theirs"
    else:
        verdict = "higher than theirs" if gap > 0 else "lower than theirs"
    return (f"- {name}: ours ({ours_label}) {ours:.1f} % vs Holtzman et al. {theirs:.2f} % "
            f"({gap:+.1f} points, {verdict}).")


def comparison_lines(rows: list[dict]) -> list[str]:
    """Our repetition % beside Holtzman et al.'s Table 1, with verdicts computed from the numbers."""
    raw = rows_by(rows, "raw")
    refs = holtzman_counterparts(list(raw))
    lines = ["| Holtzman et al. row (GPT-2 Large) | their repetition % | our strategy | "
             "our repetition % (raw openings) |", "|---|---|---|---|"]
    for ours_label, (name, theirs) in refs.items():
        lines.append(f"| {name} | {theirs:.2f} | {ours_label} | {raw[ours_label]['repetition_pct']:.1f} |")
    lines.append(f"| human | {HOLTZMAN_REPETITION['human']:.2f} | — | not measured (no human "
                 "continuations of our openings) |")
    lines.append("")
    for ours_label, (name, theirs) in refs.items():
        lines.append(_compare_sentence(name, ours_label, raw[ours_label]["repetition_pct"], theirs))
    ordered = [label for label in refs]  # greedy, widest beam, top-p 0.95 in Holtzman's order
    values = [raw[label]["repetition_pct"] for label in ordered]
    if len(ordered) >= 2:
        holds = all(a > b for a, b in zip(values, values[1:]))
        chain = " > ".join(f"{label} ({v:.1f} %)" for label, v in zip(ordered, values))
        if holds:
            lines.append(f"- Their ordering (greedy > beam > nucleus) holds here: {chain}.")
        else:
            broken = [f"{a} ({va:.1f} %) {'ties' if va == vb else 'is below'} {b} ({vb:.1f} %)"
                      for (a, va), (b, vb) in zip(zip(ordered, values), zip(ordered[1:], values[1:]))
                      if not va > vb]
            lines.append(f"- Their ordering (greedy > beam > nucleus) does not hold here: "
                         f"{'; '.join(broken)}.")
    return lines


def _extremes(table: dict[str, dict], key: str) -> tuple[str, str] | None:
    valued = [(r[key], label) for label, r in table.items() if r[key] is not None]
    if len(valued) < 2:
        return None
    return min(valued)[1], max(valued)[1]


def findings(rows: list[dict], mean, curves) -> list[str]:
    """Observations generated from the measured numbers (no conclusion is written in advance)."""
    lines = []
    for subset, name in (("raw", "open-ended openings"), ("chat", "chat questions")):
        table = rows_by(rows, subset)
        if not table:
            continue
        looping = sorted(((r["repetition_pct"], label) for label, r in table.items()
                          if r["repetition_pct"] > 0), reverse=True)
        zero = [label for label, r in table.items() if r["repetition_pct"] == 0.0]
        if not looping:
            lines.append(f"- {name}: no generation of any strategy ends in a repetition loop.")
        else:
            top = ", ".join(f"{label} {v:.1f} %" for v, label in looping[:3])
            lines.append(f"- {name}: most loops with {top}"
                         + (f"; none with {', '.join(zero)}." if zero else "."))
        ppl = _extremes(table, "perplexity")
        if ppl:
            low, high = ppl
            lines.append(f"  Lowest perplexity: {low} ({table[low]['perplexity']:.2f}); highest: "
                         f"{high} ({table[high]['perplexity']:.2f}).")
        div = _extremes(table, "distinct_2")
        if div:
            low, high = div
            lines.append(f"  distinct-2 ranges from {table[low]['distinct_2']:.3f} ({low}) to "
                         f"{table[high]['distinct_2']:.3f} ({high}).")
        if "greedy" in table:
            base = table["greedy"]["repetition_pct"]
            for label, r in table.items():
                if label.startswith("greedy +"):
                    change = r["repetition_pct"] - base
                    lines.append(f"  {label}: repetition {r['repetition_pct']:.1f} % "
                                 f"({change:+.1f} points vs greedy), perplexity "
                                 f"{_f(r['perplexity'])} vs {_f(table['greedy']['perplexity'])}.")
        eos = sorted((r["eos_rate"], label) for label, r in table.items())
        if eos[0][0] == eos[-1][0]:
            lines.append(f"  End-of-sequence rate: {eos[0][0]:.2f} for every strategy.")
        else:
            lines.append(f"  End-of-sequence rate: from {eos[0][0]:.2f} ({eos[0][1]}) to "
                         f"{eos[-1][0]:.2f} ({eos[-1][1]}).")
    pairs = [(r["perplexity"], r["distinct_2"]) for r in rows_by(rows, "raw").values()
             if r["perplexity"] is not None and r["distinct_2"] is not None]
    rho = _spearman(pairs)
    if rho is not None:
        direction = ("more diverse text comes with higher perplexity" if rho > 0.3 else
                     "no clear monotone relation" if rho >= -0.3 else
                     "more diverse text comes with lower perplexity")
        lines.append(f"- Quality–diversity (raw openings): Spearman correlation between perplexity "
                     f"and distinct-2 across strategies is {rho:+.2f}: {direction}.")
    if mean is not None and len(mean.tp) >= 2:
        rose = sum(1 for c in curves if c.tp[-1] > c.tp[0])
        verb = "rises" if mean.tp[-1] > mean.tp[0] else "does not rise"
        lines.append(f"- Self-reinforcement: mean TP {verb} from {mean.tp[0]:.3f} (first copy) to "
                     f"{mean.tp[-1]:.3f} (copy {len(mean.tp) - 1}); it rose for {rose} of "
                     f"{len(curves)} sentences. At the last copy IP = {mean.ip[-1]:.2f} and "
                     f"WR = {mean.wr[-1]:.2f} (Xu et al. report all three growing with repetitions).")
    return lines


def _spearman(pairs: list[tuple[float, float]]) -> float | None:
    if len(pairs) < 3:
        return None

    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2
            i = j + 1
        return result

    xs, ys = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    mx, my = fmean(xs), fmean(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    return cov / (sx * sy) if sx and sy else None


def render_report(rows: list[dict], mean, curves, facts: RunFacts) -> str:
    s = facts.settings
    counts = ", ".join(f"{n} {cat}" for cat, n in facts.prompt_counts.items())
    lines = [
        "# Degeneration study" + (" (quick)" if s.get("quick") else ""),
        "",
        f"Model: {facts.model}. Prompts: {counts} (categories other than chat are continued in "
        f"raw mode, chat questions go through the chat template). At most "
        f"{s['max_new_tokens']} new tokens, end-of-sequence allowed, seed {s['seed']}, one "
        f"generation per prompt and strategy. Generation took {facts.generation_s:.0f} s "
        f"({'mixed batches of up to ' + str(s.get('batch_rows')) + ' rows' if facts.batched else 'one prompt at a time'}"
        f"{f', {facts.threads} torch thread(s)' if facts.threads else ''}); the whole run "
        f"{facts.total_s:.0f} s.",
        "",
        "Strategies: " + "; ".join(f"{label} (`{spec}`)" for label, spec in facts.strategies) + ".",
    ]
    if facts.skipped:
        lines += ["", "Skipped (not supported by this version's DecodingConfig): "
                  + "; ".join(f"{label}: {why}" for label, why in facts.skipped) + "."]
    lines += ["", "## Beside Holtzman et al. 2020, Table 1", ""] + comparison_lines(rows)
    beams = [label for label, _ in facts.strategies if label.startswith("beam-")]
    widest = max(beams, key=lambda label: int(label.split("-")[1])) if beams else None
    n_raw = sum(n for cat, n in facts.prompt_counts.items() if cat != "chat")
    lines += ["", f"Differences in setting that limit the comparison: {facts.model} instead of "
              f"GPT-2 Large (774M parameters), {n_raw} of our own short openings instead of 5,000 "
              "WebText passages"
              + (f", and {widest} where they report beam-16." if widest else "."), ""]
    lines += ["## Findings (computed from the numbers below)", ""] + findings(rows, mean, curves)
    for group in facts.identical:
        lines.append(f"- {' and '.join(group)} produced token-identical generations on every "
                     "prompt: on this model their settings kept the same tokens where it mattered.")
    for subset, title in (("raw", "Open-ended openings (raw mode)"), ("chat", "Chat questions"),
                          ("all", "All prompts")):
        if any(r["subset"] == subset for r in rows):
            lines += ["", f"## {title}", ""] + _table(rows, subset)
    lines += ["", "## Figures", "",
              "- `repetition_by_strategy.png`: repetition % by strategy (× marks Holtzman et al.'s "
              "values beside the strategy we compare them with).",
              "- `quality_diversity.png`: distinct-2 against perplexity per strategy.",
              "- `self_reinforcement.png`: TP, IP and WR against the number of repetitions of "
              f"{len(curves)} sentences (Xu et al. 2022)."]
    lines += ["", "## Protocol", "",
              "- repetition %: share of generations that end with a phrase of 3–90 tokens repeated "
              "at least twice in a row, or a phrase of 1–2 tokens repeated more than 50 times "
              "(Holtzman et al., `degen/metrics/repetition.py`); model token ids, end-of-sequence "
              "removed.",
              "- loop %: share of generations in which `find_loops` finds a loop of any kind "
              "(exact, near-verbatim or template; at the end or stopping mid-text; whitespace "
              "repetition excluded), on the model's tokens and their texts; the rule's precision "
              "and recall on the labelled loop set are in the README.",
              "- seq-rep-4: 1 − distinct 4-grams / 4-grams of each generation, averaged over "
              "generations (Welleck et al. 2020). rep-n: 100 · (1 − Σ distinct n-grams per text / "
              "Σ n-grams), corpus micro-average (Su et al. 2022). distinct-2: distinct bigrams over "
              "the whole corpus / all bigrams. All on model token ids.",
              "- perplexity: exp(−mean log-probability) of the generated tokens (end-of-sequence "
              "included) under the model's raw distribution, pooled over generations.",
              "- Self-BLEU-4: each generation against all other generations of the same strategy "
              "and subset as references, sacrebleu sentence BLEU with effective order (13a "
              "tokenization, exponential smoothing), averaged, in [0, 1]. Holtzman et al. used "
              "NLTK with smoothing method 1 on 1,000 generations: compare directions, not values.",
              "- EOS rate: share of generations that ended with end-of-sequence before the "
              "token limit."]
    if facts.timings:
        lines += ["", "## Time per strategy", "",
                  "Greedy and sampling strategies share batches (every strategy of a prompt side "
                  "by side); a batch's time is shared out by the rows each generation occupied.",
                  "", "| strategy | seconds |", "|---|---|"]
        lines += [f"| {label} | {t:.1f} |" for label, t in facts.timings.items()]
    return "\n".join(lines) + "\n"


def write_report(path: str | Path, rows: list[dict], mean, curves, facts: RunFacts) -> Path:
    return write_text_atomic(path, render_report(rows, mean, curves, facts))
