"""Build the *unlabelled* candidates of the stance judge's validation set: answers the models
actually generate, to be labelled by reading them (``alignment/datasets/README.md``, "Stance
judge validation set").

The stance judge is used on generations, so it is validated on generations (not on the
hand-written references it partly learns from). The candidates cover what the evaluations
produce:

- prompts of ``stance_judge_prompts.json`` (framed both ways: half invite agreement with
  live-action adaptations, half invite criticism) and the 14 held-out ``stance-test`` prompts;
- the base model and DPO adapters trained towards *each* side (given with ``--adapter``);
- per (prompt, model) one deterministic answer (greedy or beam-4, alternating by prompt) and one
  sampled answer (top-p 0.9 at T 1, or T 0.7, alternating), short (48 tokens) or long (128),
  alternating by prompt, so that greedy loops, sampled drift and truncated answers all appear;
- the split is by prompt: the stance-test prompts and ``TEST_JUDGE_PROMPTS`` are the test split,
  the other judge prompts the development split.

Usage (writes a JSONL file of candidates with ``label: null``)::

    python -m experiments.stance_judge_set --adapter runs/judge/dpo-ratio1 \\
        --adapter runs/judge/dpo-ratio0 --out candidates.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alignment.data import load_stance_records
from alignment.evaluate import Subject, load_subject
from decoding import DecodingConfig, generate_mixed, load_model
from decoding.io import write_text_atomic
from decoding.seeds import sample_seed

PROMPTS_FILE = Path(__file__).resolve().parent.parent / "alignment" / "datasets" / "stance_judge_prompts.json"
# Judge prompts held out for the test split, beside all of stance-test, in two labelling rounds:
# j23-j30 (four pairs) with the first, j61-j100 (twenty pairs) in the second, which went to the
# test split only, so the judge's training is unchanged and its test agreement, oppose above all,
# is measured on more answers. The third round (j101-j180, forty pairs) went to the dev split only
# (every prompt not listed here is dev): the test split stays the same 372 answers, so the gain
# from more training answers is measured on answers the judge was already scored on.
FIRST_ROUND_TEST_PROMPTS = tuple(f"j{n}" for n in range(23, 31))
SECOND_ROUND_TEST_PROMPTS = tuple(f"j{n}" for n in range(61, 101))
TEST_JUDGE_PROMPTS = FIRST_ROUND_TEST_PROMPTS + SECOND_ROUND_TEST_PROMPTS


def judge_prompts() -> list[dict]:
    """``[{"id", "framing", "prompt", "split"}]``: the judge prompts, then stance-test's."""
    rows = [dict(r, split="test" if r["id"] in TEST_JUDGE_PROMPTS else "dev")
            for r in json.loads(PROMPTS_FILE.read_text())]
    rows += [{"id": f"t{r.id:02d}", "framing": "open", "prompt": r.prompt, "split": "test"}
             for r in load_stance_records("stance-test")]
    return rows


def decodings_for(index: int, seed: int, prompt_id: str) -> list[tuple[str, DecodingConfig]]:
    """The two decodings of the ``index``-th prompt (see the module docstring)."""
    tokens = 48 if index % 2 else 128
    deterministic = (("greedy", DecodingConfig(max_new_tokens=tokens)) if index % 4 < 2 else
                     ("beam:num_beams=4", DecodingConfig(strategy="beam", num_beams=4, max_new_tokens=tokens)))
    s = sample_seed(seed, prompt_id, 0)
    sampled = (("sample:top_p=0.9", DecodingConfig(strategy="sample", top_p=0.9, seed=s, max_new_tokens=tokens))
               if (index // 2) % 2 == 0 else
               ("sample:temperature=0.7", DecodingConfig(strategy="sample", temperature=0.7, seed=s,
                                                        max_new_tokens=tokens)))
    return [deterministic, sampled]


def build_candidates(adapters: list[str], seed: int = 0, prompt_ids: set[str] | None = None,
                     first_uid: int = 0) -> list[dict]:
    """Candidates for every prompt (or only ``prompt_ids``), uids numbered from ``first_uid``."""
    base = load_model(None)
    prompts = judge_prompts()
    order = {p["id"]: i for i, p in enumerate(prompts)}
    if prompt_ids:
        prompts = [p for p in prompts if p["id"] in prompt_ids]
    subjects = [Subject("base", None)] + [Subject.of_adapter(a) for a in adapters]
    rows = []
    for subject in subjects:
        lm = load_subject(subject, base)
        jobs = [(p, label, config) for p in prompts
                for label, config in decodings_for(order[p["id"]], seed, p["id"])]
        gens = generate_mixed(lm, [(p["prompt"], config) for p, _, config in jobs], chat=True, max_rows=64)
        for (p, label, config), gen in zip(jobs, gens):
            seq = gen.sequences[0]
            rows.append({"prompt_id": p["id"], "split": p["split"], "framing": p["framing"],
                         "prompt": p["prompt"], "model": subject.label,
                         "model_target": subject.target, "decoding": label,
                         "max_new_tokens": config.max_new_tokens,
                         "seed": config.seed if config.strategy == "sample" else None,
                         "finish_reason": seq.finish_reason, "answer": seq.text, "label": None})
        print(f"{subject.label}: {len(jobs)} answers", flush=True)
    for i, row in enumerate(rows, first_uid):
        row["uid"] = f"g{i:03d}"
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", action="append", default=[], help="an adapter directory (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--prompt-ids", default="", help="comma-separated prompt ids (default: all)")
    parser.add_argument("--first-uid", type=int, default=0, help="number of the first uid")
    args = parser.parse_args(argv)
    ids = {x.strip() for x in args.prompt_ids.split(",") if x.strip()} or None
    rows = build_candidates(args.adapter, args.seed, ids, args.first_uid)
    write_text_atomic(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} candidates written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
