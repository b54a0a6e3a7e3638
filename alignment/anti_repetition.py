"""Preference pairs built from the model's own repetition failures (``declab data anti-repetition``).

Seed 002's base model answered an Alpaca-style instruction and then kept writing
``### Instruction: … ### Response: …`` blocks; DPO and ORPO were asked to un-learn that. This
module rebuilds such a set from whatever model is loaded, offline:

1. every prompt (raw mode) is decoded greedily with end-of-sequence suppressed (vLLM's
   ``ignore_eos``): the model may not stop, which is how the loop shows itself;
2. the loop detector (``decoding.diagnostics.find_loops``: exact, near-verbatim or template
   loops) keeps the prompts whose continuation has a loop of at least ``min_cycles`` cycles
   covering at least ``min_loop_fraction`` of it;
3. **chosen** = the answer cut at its first natural end (its first sentence or line end, before
   any ``###`` template header the model writes itself), then end-of-sequence; **rejected** =
   the looping continuation.

The result is TRL's standard format (``prompt`` / ``chosen`` / ``rejected`` strings) with an
``id`` and a ``meta`` block (loop period, onset, cycles, source set), ready for
``declab train --dataset FILE --chat false``. The chosen text ends with the tokenizer's EOS
token; TRL leaves a completion that already ends with EOS alone and appends EOS to the rejected
one (``DPOTrainer`` ``add_eos``), so both sides close and the difference is what comes before.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from decoding import DecodingConfig
from decoding.batch import generate_batch
from decoding.diagnostics.summary import main_text_loop
from decoding.errors import DecodingLabError, check_range, out_of_range
from decoding.io import write_json_atomic
from decoding.models import LM
from decoding.prompts import Prompt, load_prompt_set

from .data import dataset_hash, parse_records

# a sentence or line end: the cut keeps everything up to and including it
_NATURAL_END = re.compile(r"[.!?](?=\s|$)|\n")
_HEADER = re.compile(r"\n?#{2,}\s")


@dataclass(frozen=True)
class AntiRepetitionConfig:
    """How the set is built (every field is a ``declab data anti-repetition`` flag)."""

    prompt_sets: tuple[str, ...] = field(
        default=("instructions", "template_loop", "open_ended"),
        metadata={"help": "prompt sets to mine (shipped names or JSON files); only raw-mode "
                          "prompts are used"})
    max_new_tokens: int = field(default=128, metadata={
        "help": "greedy tokens per prompt, end-of-sequence suppressed; long enough for a loop "
                "to show two or more cycles"})
    min_cycles: int = field(default=2, metadata={
        "help": "complete loop cycles a continuation needs to count as looping (>= 2)"})
    min_loop_fraction: float = field(default=0.25, metadata={
        "help": "share of the continuation the loop must cover, in (0, 1]"})
    min_chosen_chars: int = field(default=2, metadata={
        "help": "shortest natural answer kept; prompts whose loop starts at once are skipped"})
    batch_size: int = field(default=16, metadata={"help": "prompts generated per batch"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_sets", tuple(self.prompt_sets))  # a CLI list, too
        if not self.prompt_sets:
            raise out_of_range("prompt_sets", self.prompt_sets, "at least one prompt set name or file")
        for name, value, low in (("max_new_tokens", self.max_new_tokens, 8),
                                 ("min_cycles", self.min_cycles, 2),
                                 ("min_chosen_chars", self.min_chosen_chars, 1),
                                 ("batch_size", self.batch_size, 1)):
            check_range(name, value, low, integer=True)
        check_range("min_loop_fraction", self.min_loop_fraction, 0, 1, low_open=True)


def natural_end(text: str, loop_start: int | None = None) -> str:
    """The answer cut at its first natural end: the first sentence or line end, before any
    template header the model writes itself (``###``, ``##``).

    Without a sentence or line end before the header, the cut falls at the start of the loop
    (a character offset), or at the header. Leading whitespace is kept (a raw continuation's
    first token usually starts with a space, and the pair must tokenize as the model wrote it);
    trailing whitespace is not. "Jupiter.\n\n### Explanation: …" → "Jupiter."
    """
    header = _HEADER.search(text)
    head = text[:header.start()] if header else text
    for match in _NATURAL_END.finditer(head):
        if head[:match.end()].strip():
            return head[:match.end()].rstrip()
    if loop_start is not None:
        head = head[:loop_start]
    return head.rstrip() if head.strip() else ""


@dataclass
class Mined:
    """One prompt's outcome: a pair, or the reason it was skipped."""

    prompt: Prompt
    continuation: str
    pair: dict[str, Any] | None
    skipped: str | None = None


def mine_prompt(lm: LM, prompt: Prompt, token_ids: list[int], config: AntiRepetitionConfig,
                source: str) -> Mined:
    """Turn one greedy continuation into a pair (or say why not)."""
    text = lm.tokenizer.decode(token_ids, skip_special_tokens=True)
    pieces = [lm.tokenizer.decode([t], skip_special_tokens=True) for t in token_ids]
    loop = main_text_loop(token_ids, pieces)
    if loop is None or loop.cycles < config.min_cycles:
        return Mined(prompt, text, None, "no loop")
    if loop.length < config.min_loop_fraction * len(token_ids):
        return Mined(prompt, text, None, f"loop covers {loop.length}/{len(token_ids)} tokens")
    loop_start = len(lm.tokenizer.decode(token_ids[:loop.onset], skip_special_tokens=True))
    chosen = natural_end(text, loop_start)
    if len(chosen.strip()) < config.min_chosen_chars:
        return Mined(prompt, text, None, "no answer before the loop")
    eos = lm.tokenizer.eos_token or ""
    pair = {"id": f"{source}/{prompt.id}", "prompt": prompt.text, "chosen": chosen + eos,
            "rejected": text,
            "meta": {"source": source, "loop_period": loop.period, "loop_onset": loop.onset,
                     "loop_cycles": loop.cycles, "loop_kind": loop.kind,
                     "continuation_tokens": len(token_ids)}}
    return Mined(prompt, text, pair)


def build_anti_repetition(lm: LM, config: AntiRepetitionConfig | None = None,
                          progress: Callable[[int, int], None] | None = None
                          ) -> tuple[list[dict[str, Any]], list[Mined]]:
    """Mine every raw prompt of ``config.prompt_sets``; returns (records, every outcome)."""
    config = config or AntiRepetitionConfig()
    jobs: list[tuple[str, Prompt]] = []
    for name in config.prompt_sets:
        prompt_set = load_prompt_set(name)
        jobs += [(prompt_set.name, p) for p in prompt_set.prompts if not p.chat]
    if not jobs:
        raise DecodingLabError(f"prompt_sets={list(config.prompt_sets)!r} hold no raw-mode prompt; "
                               "the set is built from raw continuations")
    decoding = DecodingConfig(strategy="greedy", max_new_tokens=config.max_new_tokens, ignore_eos=True)
    outcomes: list[Mined] = []
    for start in range(0, len(jobs), config.batch_size):
        chunk = jobs[start:start + config.batch_size]
        generations = generate_batch(lm, [p.text for _, p in chunk], decoding, chat=False)
        for (source, prompt), gen in zip(chunk, generations):
            outcomes.append(mine_prompt(lm, prompt, list(gen.token_ids), config, source))
        if progress:
            progress(min(start + config.batch_size, len(jobs)), len(jobs))
    records = [m.pair for m in outcomes if m.pair is not None]
    if records:   # the same validation a user's file gets (identical sides, empty strings, ids)
        parse_records(records, "anti-repetition set")
    return records, outcomes


def write_anti_repetition(lm: LM, out: str | Path, config: AntiRepetitionConfig | None = None,
                          progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Build the set and write it atomically as a JSON list; returns a summary."""
    config = config or AntiRepetitionConfig()
    started = time.perf_counter()
    records, outcomes = build_anti_repetition(lm, config, progress)
    if not records:
        raise DecodingLabError("no prompt looped under greedy decoding with end-of-sequence "
                               f"suppressed ({len(outcomes)} tried); nothing to write. Try a "
                               "larger max_new_tokens or other prompt sets")
    path = write_json_atomic(Path(out), records)
    from .data import PreferencePair

    pairs = [PreferencePair(r["id"], r["prompt"], r["chosen"], r["rejected"]) for r in records]
    skipped: dict[str, int] = {}
    for m in outcomes:
        if m.skipped:
            key = "loop too short" if m.skipped.startswith("loop covers") else m.skipped
            skipped[key] = skipped.get(key, 0) + 1
    return {"path": str(path), "pairs": len(records), "tried": len(outcomes), "skipped": skipped,
            "model": lm.name, "sha256": dataset_hash(pairs), "seconds": round(time.perf_counter() - started, 1),
            "config": asdict(config)}
