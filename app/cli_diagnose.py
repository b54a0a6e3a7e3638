"""``declab diagnose`` / ``declab compare`` / ``declab reinforce``: repetition in the terminal.

- ``diagnose``: the repetition metrics and the loop of one text or one saved generation, with
  the loop's cycles highlighted (and, for a traced generation, the probability of the token that
  continues the loop, cycle by cycle).
- ``compare``: one prompt, several decoding strategies (specs, see ``decoding.specs``), one row
  each.
- ``reinforce``: the self-reinforcement probe of Xu et al. 2022 (TP / IP / WR per repetition) as
  a table and a PNG.

Presentation only: every number comes from ``decoding.diagnostics`` or the generation's trace.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from decoding import DecodingConfig, Generation, load_model
from decoding.diagnostics import (
    LoopFinding,
    LoopReport,
    loop_probability_trace,
    self_reinforcement,
)
from decoding.diagnostics.summary import (  # noqa: F401  (re-exported: cli_demo, tests)
    MERGE_BELOW_PERIOD,
    MetricOrders,
    compare_rows,
    loop_from_dict,
    loop_spans,
    main_text_loop,
    model_pieces,
    sequence_metrics,
    whitespace_pieces,
)
from decoding.engines import VllmSettings, sampling_params
from decoding.errors import DecodingLabError
from decoding.specs import SYNTAX, parse_specs

from .cli_generate import add_engine_arguments, add_model_arguments

# ---------------------------------------------------------------------- highlighting

_CYCLE_COLOURS = ("\033[30;43m", "\033[30;46m")  # alternate cycles: yellow, cyan background
_PARTIAL_COLOUR = "\033[2;4m"                       # the unfinished last cycle: dim, underlined
_RESET = "\033[0m"
PLAIN_OPEN, PLAIN_CLOSE = "[[", "]]"


def use_colour(choice: str = "auto", stream=None) -> bool:
    """ANSI colour for ``always``, never for ``never``; ``auto``: a TTY and no ``NO_COLOR``."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


def highlight(pieces: list[str], loop: LoopReport | None, colour: bool) -> str:
    """The text ``"".join(pieces)`` with the loop's cycles marked.

    Colour: alternating background per cycle, the partial cycle underlined. Plain: each cycle
    wrapped in ``[[ ]]`` (the partial cycle too).
    """
    spans = loop_spans(loop)
    out, position = [], 0
    for k, (start, end, partial) in enumerate(spans):
        out.append("".join(pieces[position:start]))
        body = "".join(pieces[start:end])
        if colour:
            style = _PARTIAL_COLOUR if partial else _CYCLE_COLOURS[k % 2]
            out.append(f"{style}{body}{_RESET}")
        else:
            out.append(f"{PLAIN_OPEN}{body}{PLAIN_CLOSE}")
        position = end
    out.append("".join(pieces[position:]))
    return "".join(out)


def cycle_means_line(means: list[float | None], keep: int = 8) -> str:
    """``0.41 -> 0.87 -> ... -> 0.99``: the first and last cycles when there are many."""
    shown = ["n/a" if m is None else f"{m:.2f}" for m in means]
    if len(shown) > keep:
        shown = shown[:keep - 3] + ["..."] + shown[-2:]
    return " -> ".join(shown)


def loop_line(loop: LoopReport | LoopFinding | None) -> str:
    if loop is None or not loop.is_loop:
        return "loop: none (no repetition a reader would call a loop)"
    kind = getattr(loop, "kind", "exact")
    period = "period" if kind == "exact" else "cycles of about"
    line = (f"loop ({kind}): {period} {loop.period} tokens, onset at token {loop.onset}, "
            f"{loop.cycles} complete cycles + {loop.partial} tokens")
    if isinstance(loop, LoopFinding):
        line += f"; character {loop.char_onset}" + (", stops before the end" if loop.ends_early
                                                     else "")
    return line


def template_lines(loop: LoopReport | LoopFinding | None) -> list[str]:
    """A template loop's frame and the slot values of each cycle ("…" marks a slot)."""
    if getattr(loop, "frame", None) is None:
        return []
    return [f"  frame: {loop.frame}",
            "  slots per cycle: " + "; ".join(" | ".join(v) for v in loop.slots)]


# ---------------------------------------------------------------------- metrics

def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _parse_orders(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise DecodingLabError(f"--rep-orders={text!r}; allowed: comma-separated integers >= 1, "
                               "e.g. 2,3,4")
    return values


# ---------------------------------------------------------------------- diagnose

def _text_tokens(text: str, tokenizer_choice: str, args) -> tuple[list, list[str], str]:
    """(tokens, pieces whose concatenation is the shown text, a note on the tokenization)."""
    if tokenizer_choice == "model":
        lm = load_model(args.model, adapter=args.adapter, dtype=args.dtype, device=args.device)
        ids, pieces = model_pieces(lm.tokenizer, text)
        return ids, pieces, f"model tokenizer ({lm.name}), {len(ids)} tokens"
    words, pieces = whitespace_pieces(text)
    return words, pieces, (f"whitespace tokens ({len(words)} words; the text is shown with single "
                           "spaces)")


def _load_generation(path: str) -> Generation:
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DecodingLabError(f"--generation {path!r} cannot be read ({exc.strerror or exc}); "
                               "allowed: a JSON file written by `declab generate --out`") from None
    try:
        gen = Generation.from_json(raw)
        if not gen.sequences:
            raise ValueError("no sequences")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DecodingLabError(f"--generation {path!r} is not a Generation JSON ({first}); "
                               "allowed: a file written by `declab generate --out`") from None
    return gen


def diagnose_report(tokens: list, pieces: list[str], note: str, orders: MetricOrders,
                    generation: Generation | None = None) -> dict:
    text = "".join(pieces)
    metrics = sequence_metrics(tokens, text, orders, strict=True)
    loop = main_text_loop(tokens, pieces)
    report = {"tokenization": note, "n_tokens": len(tokens), "metrics": metrics,
              "loop": loop.to_dict() if loop else None}
    if loop is not None and len(pieces) == len(tokens):
        cuts = [0]
        for piece in pieces:
            cuts.append(cuts[-1] + len(piece))
        report["loop_char_spans"] = [[cuts[s], cuts[e]] for s, e, _ in loop_spans(loop)]
    if generation is not None and generation.steps:
        trace = loop_probability_trace(generation)
        report["loop_probability"] = trace.to_dict() if trace else None
    return report


def run_diagnose(args) -> int:
    orders = MetricOrders(rep=_parse_orders(args.rep_orders), seq_rep=args.seq_rep_n,
                          distinct=args.distinct_n)
    generation = None
    if args.generation is not None:
        generation = _load_generation(args.generation)
        seq = generation.sequences[0]
        tokens = list(seq.token_ids)
        pieces = ([s.token_text for s in seq.steps] if len(seq.steps) == len(tokens)
                  else [seq.text] if tokens else [])
        note = f"model token ids of the saved generation ({generation.model}), {len(tokens)} tokens"
        if len(pieces) != len(tokens):
            note += "; no step traces, so no highlighting"
    else:
        if not args.text or not args.text.strip():
            raise DecodingLabError(f"--text={args.text!r} is empty; allowed: a non-empty text")
        tokens, pieces, note = _text_tokens(args.text, args.tokenizer, args)
    if not tokens:
        raise DecodingLabError("the sequence has 0 tokens; allowed: at least one token")
    report = diagnose_report(tokens, pieces, note, orders, generation)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    loop = loop_from_dict(report["loop"])
    colour = use_colour(args.color)
    shown = highlight(pieces, loop, colour) if len(pieces) == len(tokens) else "".join(pieces)
    print(shown)
    print()
    print(f"tokenization: {note}")
    print("  ".join(f"{k}: {_fmt(v)}" for k, v in report["metrics"].items()))
    print(loop_line(loop) + ("" if colour or not loop or not loop.is_loop
                             else f"  (cycles marked {PLAIN_OPEN} {PLAIN_CLOSE})"))
    for line in template_lines(loop):
        print(line)
    trace = report.get("loop_probability")
    if trace:
        means = cycle_means_line(trace["cycle_means"])
        print(f"P(loop-continuing token), mean per cycle (cycle 0 = first pass): {means}")
    return 0


# ---------------------------------------------------------------------- compare

def compare_table(rows: list[dict]) -> list[str]:
    width = max(len("strategy"), *(len(r["label"]) for r in rows))
    head = (f"{'strategy':<{width}} {'tokens':>6} {'finish':<11} {'rep-2':>6} {'rep-3':>6} "
            f"{'rep-4':>6} {'dist-2':>6} {'loop kind p@onset':>17} {'mean logp':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        loop = r["loop"]
        where = (f"{loop.get('kind', 'exact')[:2]} {loop['period']}@{loop['onset']}" if loop
                 else "-")
        lines.append(
            f"{r['label']:<{width}} {r['n_tokens']:>6} {r['finish_reason']:<11} "
            f"{_pct(r.get('rep-2')):>6} {_pct(r.get('rep-3')):>6} {_pct(r.get('rep-4')):>6} "
            f"{_fmt(r.get('distinct-2')):>6} {where:>17} {_fmt(r['mean_logprob']):>9}")
    return lines


def run_compare(args) -> int:
    if not args.prompt or not args.prompt.strip():
        raise DecodingLabError(f"prompt={args.prompt!r} is empty; allowed: a non-empty text")
    base = DecodingConfig(max_new_tokens=args.max_new_tokens, seed=args.seed,
                          ignore_eos=args.ignore_eos)
    specs = parse_specs(args.strategies or ["greedy"], base)
    settings = None
    if args.engine == "vllm":
        for label, config in specs:            # refuse what vLLM cannot express, before loading
            try:
                sampling_params(config)
            except DecodingLabError as exc:
                raise DecodingLabError(f"spec {label!r}: {exc}") from None
        # logprobs=0: the chosen token's raw log-probability only (the rows' mean logp)
        settings = VllmSettings(logprobs=0, **({"dtype": args.dtype} if args.dtype else {}))
    lm = load_model(args.model, adapter=args.adapter, dtype=args.dtype, device=args.device)
    rows = compare_rows(lm, args.prompt, specs, chat=args.chat, engine=args.engine,
                        settings=settings)
    if args.json:
        for row in rows:
            row.pop("pieces")
        print(json.dumps({"prompt": args.prompt, "chat": args.chat, "model": lm.name,
                          "rows": rows}, ensure_ascii=False))
        return 0
    colour = use_colour(args.color)
    for row in rows:
        loop = loop_from_dict(row["loop"])
        print(f"=== {row['label']}")
        print(highlight(row["pieces"], loop, colour).strip())
        print(f"[{loop_line(loop)}]")
        print("\n".join(template_lines(loop) + [""]))
    print("\n".join(compare_table(rows)))
    print("\nmetrics over the model's token ids; rep-n in %, distinct-2 in [0, 1]; loop kind: "
          "ex(act), ne(ar-verbatim), te(mplate), period and onset in tokens; mean logp = "
          "mean raw log-probability of the generated tokens (nats)")
    return 0


# ---------------------------------------------------------------------- reinforce

def run_reinforce(args) -> int:
    sentences = args.sentence or []
    for s in sentences:
        if not s.strip():
            raise DecodingLabError(f"--sentence={s!r} is empty; allowed: a non-empty sentence")
    lm = load_model(args.model, adapter=args.adapter, dtype=args.dtype, device=args.device)
    curves = [self_reinforcement(lm.model, lm.tokenizer, s, prefix=args.prefix, repeats=args.repeats)
              for s in sentences]
    if args.out:
        from experiments.degeneration.figures import reinforcement_figure

        reinforcement_figure(curves, args.out)
    if args.json:
        print(json.dumps({"model": lm.name, "curves": [c.to_dict() for c in curves],
                          "png": args.out}, ensure_ascii=False))
        return 0
    for curve in curves:
        print(f"sentence: {curve.sentence!r} ({curve.n_tokens} tokens), prefix: {curve.prefix!r}")
        print(f"{'copy':>4} {'TP':>7} {'IP':>7} {'WR':>7}")
        for n, (tp, ip, wr) in enumerate(zip(curve.tp, curve.ip, curve.wr)):
            print(f"{n:>4} {tp:>7.3f} {ip:>7.3f} {wr:>7.3f}")
        print()
    if args.out:
        print(f"plot written to {args.out}")
    return 0


# ---------------------------------------------------------------------- argparse

def _add_colour(parser) -> None:
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="Highlight loops with ANSI colour (auto: only on a terminal); "
                        f"otherwise cycles are wrapped in {PLAIN_OPEN} {PLAIN_CLOSE}.")


def register(subparsers) -> None:
    d = subparsers.add_parser(
        "diagnose", help="Repetition metrics and the loop of a text or a saved generation.",
        description="Repetition metrics (rep-n and diversity of Su et al. 2022, seq-rep-n of "
        "Welleck et al. 2020, distinct-n, rep-sen of Xu et al. 2022, Holtzman et al.'s loop flag) "
        "and its loop (find_loops: exact, near-verbatim or template, at the end or mid-text), with "
        "its cycles highlighted. --text is split on "
        "whitespace unless --tokenizer model; --generation uses the saved model token ids.")
    source = d.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="The text to diagnose.")
    source.add_argument("--generation", help="A Generation JSON (declab generate --out FILE).")
    d.add_argument("--tokenizer", choices=("whitespace", "model"), default="whitespace",
                   help="How to split --text into tokens (default: whitespace).")
    d.add_argument("--rep-orders", default="2,3,4", help="n-gram orders of rep-n and diversity.")
    d.add_argument("--seq-rep-n", type=int, default=4, help="n of seq-rep-n (default 4).")
    d.add_argument("--distinct-n", type=int, default=2, help="n of distinct-n (default 2).")
    d.add_argument("--json", action="store_true", help="Print the report as JSON.")
    _add_colour(d)
    add_model_arguments(d)
    d.set_defaults(func=run_diagnose)

    c = subparsers.add_parser(
        "compare", help="One prompt, several decoding strategies, one row each.",
        description=f"Strategy specs: {SYNTAX}. A comma followed by field=value continues the "
        "current spec; a comma followed by a bare word starts a new spec (the word is a strategy). "
        "Example: --strategies 'greedy,beam:num_beams=4,sample:top_p=0.9,temperature=0.7'. "
        "--strategies may also be repeated.")
    c.add_argument("prompt", help="The prompt (a user message in chat mode, raw text with --no-chat).")
    c.add_argument("--strategies", action="append", metavar="SPECS",
                   help=f"Strategy specs ({SYNTAX}); default: greedy.")
    c.add_argument("--no-chat", dest="chat", action="store_false",
                   help="Treat the prompt as raw text to continue (no chat template).")
    c.add_argument("--max-new-tokens", type=int, default=100, help="Default for every spec.")
    c.add_argument("--seed", type=int, default=0, help="Default seed for every spec.")
    c.add_argument("--ignore-eos", action="store_true", help="Never stop at end-of-sequence.")
    c.add_argument("--json", action="store_true", help="Print the rows as JSON.")
    _add_colour(c)
    add_model_arguments(c)
    add_engine_arguments(c)
    c.set_defaults(func=run_compare)

    r = subparsers.add_parser(
        "reinforce", help="Self-reinforcement probe: TP/IP/WR of a sentence repeated N times.",
        description="Xu et al. 2022: score [BOS, prefix, s, s, ..., s] teacher-forced and report, "
        "per copy of s, TP (mean token probability), IP (share of tokens more probable than in "
        "copy 0) and WR (share that are the argmax).")
    r.add_argument("--sentence", action="append", required=True,
                   help="The sentence to repeat (repeat the flag for several).")
    r.add_argument("--prefix", default="", help="Text before the first copy.")
    r.add_argument("--repeats", type=int, default=10, help="Copies of the sentence (default 10).")
    r.add_argument("--out", default=None, help="Write the TP/IP/WR plot to this PNG.")
    r.add_argument("--json", action="store_true", help="Print the curves as JSON.")
    add_model_arguments(r)
    r.set_defaults(func=run_reinforce)
