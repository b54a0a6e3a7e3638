"""``declab stance FILE``: judge the stance of answers produced anywhere (a course notebook, another
model). FILE is JSON lines, one ``{"prompt": ..., "answer": ...}`` record per line (other fields
are kept in ``--json`` output). Presentation only: the judge is ``alignment.stance``. A bad record
is refused with its line number and exit 2, before the model is loaded; nothing is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from alignment.stance import StanceConfig, fit_stance_judge
from decoding import load_model
from decoding.errors import DecodingLabError
from decoding.io import write_json_atomic

from .cli_common import add_dataclass_arguments, dataclass_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stance", help="judge (prompt, answer) records: P(support) and support / oppose / neutral",
        description="Judge the stance of answers towards live-action adaptations of anime and manga. "
                    "FILE holds JSON lines with fields 'prompt' and 'answer'. The judge reports its "
                    "agreement with readers on generated answers first, and refuses to judge below "
                    "--min-kappa. Example: declab stance answers.jsonl --json")
    p.add_argument("file", metavar="FILE", help="JSON-lines file of {\"prompt\", \"answer\"} records")
    p.add_argument("--model", default=None, help="base model whose features the judge uses (default: "
                   "the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per record, in input order")
    p.add_argument("--out", default=None, help="also write the JSON list to this file (atomically)")
    add_dataclass_arguments(p, StanceConfig)
    p.set_defaults(func=run_stance)


def read_records(path: str) -> list[dict]:
    """The records of a JSON-lines file; a bad line raises ``DecodingLabError`` naming it."""
    file = Path(path)
    if not file.is_file():
        raise DecodingLabError(f"FILE={path!r} is not a file; expected JSON lines with 'prompt' and 'answer'")
    records = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DecodingLabError(f"{path}: line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DecodingLabError(f"{path}: line {number}: expected an object with 'prompt' and 'answer'")
        for key in ("prompt", "answer"):
            if not isinstance(row.get(key), str):
                raise DecodingLabError(f"{path}: line {number}: field {key!r} missing or not a string")
        if not row["prompt"].strip():
            raise DecodingLabError(f"{path}: line {number}: field 'prompt' is empty")
        records.append(row)
    if not records:
        raise DecodingLabError(f"{path}: holds no record; expected JSON lines with 'prompt' and 'answer'")
    return records


def run_stance(args) -> int:
    records = read_records(args.file)
    config = dataclass_from_args(StanceConfig, args)
    judge = fit_stance_judge(load_model(args.model), config)
    verdicts = judge.judge([r["prompt"] for r in records], [r["answer"] for r in records])
    rows = [{**r, "p_support": round(v.p_support, 4), "p_oppose": round(v.p_oppose, 4),
             "p_neutral": round(v.p_neutral, 4), "stance": v.stance} for r, v in zip(records, verdicts)]
    if args.out:
        write_json_atomic(args.out, rows)
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    print(judge.describe(), file=sys.stderr)
    print(f"{'#':>3}  {'P(support)':>10}  {'stance':<8}  answer")
    for i, row in enumerate(rows, 1):
        text = " ".join(row["answer"].split())
        print(f"{i:>3}  {row['p_support']:>10.3f}  {row['stance']:<8}  {text[:70]}{'…' if len(text) > 70 else ''}")
    return 0
