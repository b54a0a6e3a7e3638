"""Rebuild ``decoding/diagnostics/data/loop_set.jsonl`` from its sources:
``python -m experiments.loop_set.build --texts runs/loop_set_texts.jsonl``.

- the model texts written by ``experiments.loop_set.generate`` (``--texts``, one file or more),
  labelled in ``labels.MODEL_LABELS`` by reading each one; with ``--keep-shipped`` the model texts
  already in the shipped set are kept as they are (so a few new prompts can be generated and
  added without decoding the others again);
- the hand-written texts and labels of ``constructed.CONSTRUCTED``, and those of
  ``constructed_dev.CONSTRUCTED_DEV``, which always go to the dev split (see that module).

A label names where the loop starts by an anchor string (its first occurrence, or ``"@N:..."``
for the N-th), turned into a character offset here. The split follows the group (the prompt, or
the hand-written case): a stable hash puts every text of a prompt in the same split, so the test
split holds prompts the rules were never tuned on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from decoding.diagnostics.loop_set import LOOP_SET_PATH, load_loop_set
from decoding.errors import DecodingLabError
from decoding.io import write_text_atomic

from .constructed import CONSTRUCTED
from .constructed_dev import CONSTRUCTED_DEV
from .labels import MODEL_LABELS


def split_of(group: str) -> str:
    """``test`` for about half of the groups, ``dev`` for the rest (sha1 of the group id)."""
    return "test" if hashlib.sha1(group.encode("utf-8")).digest()[0] % 2 else "dev"


def anchor_offset(text: str, anchor: str, where: str) -> int:
    nth = 1
    if anchor.startswith("@") and ":" in anchor:
        head, anchor = anchor[1:].split(":", 1)
        nth = int(head)
    position = -1
    for _ in range(nth):
        position = text.find(anchor, position + 1)
        if position < 0:
            raise DecodingLabError(f"{where}: onset anchor {anchor!r} (occurrence {nth}) is not "
                                   "in the text")
    return position


def record(item_id: str, group: str, source: str, mode: str, text: str, label, note: str = "",
           split: str | None = None) -> dict:
    """One line of the set; ``split`` None: the group's hash decides (``split_of``)."""
    out = {"id": item_id, "group": group, "source": source, "mode": mode,
           "split": split or split_of(group), "text": text, "loop": label is not None,
           "kind": None, "onset": None, "stops": False, "note": note}
    if label is not None:
        kind, anchor, stops = label[:3]
        out.update(kind=kind, onset=anchor_offset(text, anchor, item_id), stops=stops)
        if len(label) > 3:
            out["note"] = label[3]
    return out


def shipped_texts(path: str | Path = LOOP_SET_PATH) -> list[dict]:
    """The model texts of the shipped set, as rows of ``generate``'s output (the keys ``build``
    reads)."""
    return [{"prompt_id": item.group, "decoding": item.source, "mode": item.mode,
             "text": item.text} for item in load_loop_set(path) if item.source != "hand-written"]


def build(texts_paths: list[str], keep_shipped: bool = False) -> list[dict]:
    records = []
    seen = set()
    rows = shipped_texts() if keep_shipped else []
    for texts_path in texts_paths:
        rows += [json.loads(line) for line in
                 Path(texts_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        key = f"{row['prompt_id']}|{row['decoding']}"
        if key in seen:
            raise DecodingLabError(f"text {key!r} comes twice (a --texts file and the shipped "
                                   "set, or two files)")
        if key not in MODEL_LABELS:
            raise DecodingLabError(f"text {key!r} has no label in experiments/loop_set/labels.py")
        seen.add(key)
        label = MODEL_LABELS[key]
        records.append(record(key, row["prompt_id"], row["decoding"], row["mode"], row["text"],
                              label))
    unused = sorted(set(MODEL_LABELS) - seen)
    if unused:
        raise DecodingLabError(f"labels without a text: {', '.join(unused)}")
    for item_id, text, label in CONSTRUCTED:
        records.append(record(item_id, item_id, "hand-written", "text", text, label))
    for item_id, text, label in CONSTRUCTED_DEV:
        records.append(record(item_id, item_id, "hand-written", "text", text, label, split="dev"))
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", nargs="*", default=[],
                        help="JSONL files from experiments.loop_set.generate.")
    parser.add_argument("--keep-shipped", action="store_true",
                        help="Keep the model texts already in the shipped set (add --texts files "
                             "with new prompts only).")
    parser.add_argument("--out", default=str(LOOP_SET_PATH), help="Where to write the set.")
    args = parser.parse_args(argv)
    if not args.texts and not args.keep_shipped:
        parser.error("--texts: give at least one file, or --keep-shipped")
    records = build(args.texts, args.keep_shipped)
    write_text_atomic(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    items = load_loop_set(args.out)                     # validates what was written
    for split in ("dev", "test"):
        part = [i for i in items if i.split == split]
        print(f"{split}: {len(part)} texts, {sum(i.loop for i in part)} loops, "
              f"{len({i.group for i in part})} groups")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
