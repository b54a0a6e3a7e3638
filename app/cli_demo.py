"""``declab demo NAME``: one-command demonstrations on the embedded model.

- ``unicorn``: greedy vs beam vs top-p on our wording of Holtzman et al.'s unicorn prompt.
- ``template-loop``: the seed-002 failure. Alpaca-style prompts in raw mode, greedy, end-of-
  sequence suppressed: the model answers, then writes ``### Explanation:`` (or similar) blocks
  and repeats one verbatim. Each output is shown with the loop highlighted, the detector's
  kind / period / onset / cycles (``find_loops``), and the probability of the loop-continuing
  token cycle by cycle (for a verbatim loop).
"""

from __future__ import annotations

import decoding
from decoding import DecodingConfig, generate, load_model
from decoding.diagnostics import loop_probability_trace
from decoding.diagnostics.summary import main_text_loop
from decoding.prompts import load_prompt_set

from .cli_diagnose import (
    PLAIN_CLOSE,
    PLAIN_OPEN,
    cycle_means_line,
    highlight,
    loop_line,
    use_colour,
)
from .cli_generate import add_model_arguments

# Our own wording of the GPT-2 "unicorn" prompt that Holtzman et al. (2020, Fig. 1) continue.
UNICORN = ("Scientists exploring a hidden valley high in the Andes have found a herd of unicorns "
           "that nobody had ever seen before. Stranger still, the animals were heard speaking "
           "fluent English.")


def run_unicorn(args) -> int:
    lm = load_model(args.model, adapter=args.adapter, dtype=args.dtype, device=args.device)
    n = args.max_new_tokens or 120
    runs = [("greedy", DecodingConfig(max_new_tokens=n)),
            ("beam-4", DecodingConfig(strategy="beam", num_beams=4, max_new_tokens=n)),
            ("top-p 0.95", DecodingConfig(strategy="sample", top_p=0.95, max_new_tokens=n, seed=0))]
    print(f"Prompt (raw mode): {UNICORN}\n")
    for label, config in runs:
        print(f"=== {label}", flush=True)
        gen = generate(lm, UNICORN, config, chat=False, trace=False)
        print(gen.text.strip())
        print(f"[{len(gen.token_ids)} tokens, finish: {gen.finish_reason}, "
              f"{len(gen.token_ids) / max(gen.elapsed_s, 1e-9):.1f} tok/s]\n", flush=True)
    return 0


# ---------------------------------------------------------------------- template loop

def template_loop_results(lm, cases, max_new_tokens: int) -> list[dict]:
    """Greedy, end-of-sequence suppressed, raw mode, traced: one result per case."""
    config = DecodingConfig(max_new_tokens=max_new_tokens, ignore_eos=True)
    batch = getattr(decoding, "generate_batch", None)
    if batch is not None:
        generations = batch(lm, [c.text for c in cases], config, chat=False, trace=True)
    else:
        generations = [generate(lm, c.text, config, chat=False, trace=True) for c in cases]
    results = []
    for case, gen in zip(cases, generations):
        tokens = list(gen.token_ids)
        loop = main_text_loop(tokens, [s.token_text for s in gen.steps])
        trace = loop_probability_trace(gen)   # follows the verbatim loop, when there is one
        answer = gen.text.split("###")[0]
        expected = case.extra.get("expected", [])
        results.append({
            "id": case.id, "generation": gen, "loop": loop,
            "trace": trace, "answer": answer.strip(),
            "answer_ok": any(e.lower() in answer.lower() for e in expected) if expected else None,
            "expected": expected})
    return results


def _instruction(text: str) -> str:
    """The prompt from its ``### Instruction:`` line on (the Alpaca header is the same for all)."""
    start = text.find("### Instruction:")
    return text[start:] if start >= 0 else text


def run_template_loop(args) -> int:
    cases = load_prompt_set("template_loop").prompts
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        cases = load_prompt_set("template_loop").subset(ids=wanted).prompts
    lm = load_model(args.model, adapter=args.adapter, dtype=args.dtype, device=args.device)
    n = args.max_new_tokens or 200
    colour = use_colour(args.color)
    print(f"Alpaca-style prompts, raw mode, greedy, end-of-sequence suppressed, {n} new tokens "
          f"({lm.name}). Loop cycles are "
          + ("highlighted." if colour else f"wrapped in {PLAIN_OPEN} {PLAIN_CLOSE}.") + "\n",
          flush=True)
    results = template_loop_results(lm, cases, n)
    for case, r in zip(cases, results):
        gen = r["generation"]
        print(f"=== {case.id}")
        print(_instruction(case.text).rstrip())
        print("--- output")
        print(highlight([s.token_text for s in gen.steps], r["loop"], colour).rstrip())
        print(f"[{loop_line(r['loop'])}]")
        if r["trace"] is not None:
            shown = cycle_means_line(r["trace"].cycle_means())
            print(f"[P(loop-continuing token), mean per cycle, cycle 0 = first pass: {shown}]")
        if r["answer_ok"] is not None:
            print(f"[first answer contains {' / '.join(r['expected'])}: "
                  f"{'yes' if r['answer_ok'] else 'no'}]")
        print(flush=True)
    looping = [r for r in results if r["loop"] is not None]
    print(f"{'case':<18} {'answer':<7} {'kind':<8} {'period':>6} {'onset':>6} {'cycles':>6}  "
          "P(cycle 0 -> last)")
    for r in results:
        loop, trace = r["loop"], r["trace"]
        ok = "n/a" if r["answer_ok"] is None else "yes" if r["answer_ok"] else "no"
        if loop is None:
            print(f"{r['id']:<18} {ok:<7} {'-':<8} {'-':>6} {'-':>6} {'-':>6}  -")
            continue
        means = [m for m in trace.cycle_means() if m is not None] if trace else []
        climb = f"{means[0]:.2f} -> {means[-1]:.2f}" if means else "-"
        print(f"{r['id']:<18} {ok:<7} {loop.kind:<8} {loop.period:>6} {loop.onset:>6} "
              f"{loop.cycles:>6}  {climb}")
    print(f"\n{len(looping)} of {len(results)} outputs loop (find_loops: exact, near or template).")
    return 0


DEMOS = {"unicorn": run_unicorn, "template-loop": run_template_loop}


def register(subparsers) -> None:
    d = subparsers.add_parser("demo", help="Terminal demos on the embedded model.")
    d.add_argument("name", choices=sorted(DEMOS), help=(
        "unicorn: greedy vs beam vs top-p on our wording of Holtzman et al.'s unicorn prompt, raw "
        "mode. template-loop: Alpaca-style prompts decoded greedily without end-of-sequence: a "
        "correct answer, then a verbatim loop (highlighted)."))
    add_model_arguments(d)
    d.add_argument("--max-new-tokens", type=int, default=None,
                   help="Default: 120 (unicorn), 200 (template-loop).")
    d.add_argument("--cases", default=None,
                   help="template-loop: comma-separated case ids (default: all).")
    d.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="Highlight loops with ANSI colour (auto: only on a terminal).")
    d.set_defaults(func=lambda args: DEMOS[args.name](args))

