"""The degeneration study: many prompts × many strategies on one model, measured and reported.

Protocol (Holtzman et al. 2020, Table 1, in spirit): continue human-written openings (raw mode)
and answer chat questions (chat mode) with every strategy, 200 new tokens at most, end-of-
sequence allowed, fixed seeds; then measure each generation and each strategy's corpus. Writes
``runs/degeneration/<timestamp>/`` (see ``experiments.runs``): ``results.jsonl`` as it goes,
then ``summary.csv``, the figures and ``report.md``, and only then marks the run complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

import decoding
from decoding import DecodingConfig, load_model
from decoding.diagnostics import (
    distinct_n,
    holtzman_repetition,
    mean_curve,
    rep_n,
    self_reinforcement,
    seq_rep_n,
)
from decoding.diagnostics.summary import main_text_loop
from decoding.batch import MIXABLE
from decoding.config import knob
from decoding.engines import VllmSettings, check_engine_name, decode_vllm, sampling_params
from decoding.errors import DecodingLabError, check_range
from decoding.io import write_json_atomic
from decoding.models import LM
from decoding.prompts import Prompt, PromptSet, load_prompt_set
from decoding.seeds import sample_seed
from decoding.trace import SequenceResult

from ..runs import open_run
from . import figures, report, summary
from .strategies import QUICK_STRATEGIES, StudyStrategy, resolve_strategies

STUDY_NAME = "degeneration"


@dataclass
class DegenerationSettings:
    """What one run of the study does. ``quick()`` is the two-minute version."""

    max_new_tokens: int = knob(200, "New tokens per continuation at most.")
    # 8 → 24 openings + 8 chat questions, sized so that the 15 strategies fit in under 20 minutes
    # on 2 free CPU cores.
    per_category: int | None = knob(8, "Use the first N prompts of each category (8: 24 openings + "
                                    "8 chat questions, about 20 minutes on 2 free cores); None: "
                                    "every shipped prompt (50 openings, 22 chat questions: about "
                                    "2.3x the time).")
    strategies: tuple[str, ...] | None = knob(None, "Study strategy labels; None: every strategy.")
    seed: int = knob(0, "Seed of every sampling draw.")
    # On 2 cores a 128-row decode step costs about 1.7x a 64-row one (measured), and finished rows
    # leave the batch as they go.
    batch_rows: int = knob(128, "Model rows per batch (a beam-8 prompt takes 8; greedy and "
                           "sampling strategies share batches, one row each).")
    reinforcement_repeats: int = knob(10, "Self-reinforcement probe: how many times a sentence is "
                                      "repeated.")
    reinforcement_sentences: int | None = knob(None, "Self-reinforcement probe: the first N shipped "
                                               "sentences; None: all.")
    quick: bool = knob(False, "The two-minute version (set by --quick).")
    engine: str = knob("ours", "Who generates: ours (our batched loop) or vllm (one vLLM run for "
                       "every item, make engines; strategies vLLM cannot express are skipped).")

    def __post_init__(self) -> None:
        for name, low in (("max_new_tokens", 1), ("batch_rows", 1), ("reinforcement_repeats", 1),
                          ("seed", 0), ("per_category", 1), ("reinforcement_sentences", 1)):
            check_range(name, getattr(self, name), low, integer=True,
                        optional=name in ("per_category", "reinforcement_sentences"))
        check_engine_name(self.engine)

    @classmethod
    def quick_settings(cls, **changes) -> "DegenerationSettings":
        base = dict(max_new_tokens=64, per_category=1, strategies=QUICK_STRATEGIES,
                    reinforcement_repeats=6, reinforcement_sentences=3, quick=True)
        base.update(changes)
        return cls(**base)

    def base_config(self) -> DecodingConfig:
        return DecodingConfig(max_new_tokens=self.max_new_tokens, seed=self.seed)


# ---------------------------------------------------------------------- generation

def item_config(strategy: StudyStrategy, prompt_id: str) -> DecodingConfig:
    """The strategy's config for one prompt: sampling strategies draw from the prompt's own
    seed (``decoding.seeds.sample_seed`` of the run seed and the prompt id), so prompts are
    independent draws."""
    config = strategy.config
    if config.strategy in ("sample", "mirostat"):
        return config.replace(seed=sample_seed(config.seed, prompt_id, 0))
    return config


def generate_group(lm: LM, items: list[tuple[DecodingConfig, str]],
                   chat: bool) -> list[SequenceResult]:
    """The first returned sequence of every (config, prompt text) item, generated as one mixed
    batch (untraced): greedy and sampling strategies share the loop, each row with its own
    chain; beam and contrastive items run as batches of their own strategy."""
    gens = decoding.generate_mixed(lm, [(text, config) for config, text in items], chat=chat,
                                   trace=False)
    return [g.sequences[0] for g in gens]


def engine_refusals(strategies: list[StudyStrategy]) -> list[tuple[str, str]]:
    """(label, why) for each strategy vLLM cannot run (``vllm_params.sampling_params``)."""
    refused = []
    for strategy in strategies:
        try:
            sampling_params(strategy.config)
        except DecodingLabError as exc:
            refused.append((strategy.label, str(exc)))
    return refused


def generate_plan_vllm(lm: LM, plan: list["Batch"]) -> tuple[list[list[SequenceResult]], float]:
    """Every batch of the plan in one vLLM run (its start-up is paid once): per batch, the first
    sequence of each item; and the run's wall time."""
    ids, configs = [], []
    for batch in plan:
        for strategy, prompt, text in batch.items:
            ids.append(lm.encode(text, chat=batch.chat))
            configs.append(item_config(strategy, prompt.id))
    t0 = time.perf_counter()
    # logprobs=0: the drawn token's raw log-probability, for the study's perplexity
    sequences = [seqs[0] for seqs in decode_vllm(lm, ids, configs, settings=VllmSettings(logprobs=0))]
    elapsed = time.perf_counter() - t0
    out, start = [], 0
    for batch in plan:
        out.append(sequences[start:start + len(batch.items)])
        start += len(batch.items)
    return out, elapsed


def as_raw_text(lm: LM, prompt: Prompt) -> str | None:
    """The text that, continued in raw mode, is exactly ``prompt`` in its own mode.

    A chat prompt becomes its chat-template text when re-tokenizing that text gives the very ids
    ``lm.encode(prompt, chat=True)`` gives; then raw and chat prompts share one batch, and each
    decoding step (whose fixed cost is reading all the weights) serves both. ``None`` when the
    ids differ: the prompt is generated in a chat batch of its own.
    """
    if not prompt.chat:
        return prompt.text
    try:
        text = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt.text}],
                                                add_generation_prompt=True, tokenize=False)
    except (ValueError, TypeError, AttributeError):
        return None
    if not isinstance(text, str) or lm.encode(text, chat=False) != lm.encode(prompt.text, chat=True):
        return None
    return text


def content_ids(seq: SequenceResult) -> list[int]:
    """The generated ids without the final end-of-sequence token (as degen strips GPT-2's)."""
    ids = list(seq.token_ids)
    return ids[:-1] if seq.finish_reason == "eos" and ids else ids


def _or_none(fn, *args):
    try:
        return fn(*args)
    except DecodingLabError:  # too short for this n: undefined, recorded as null
        return None


def generation_record(strategy: StudyStrategy, prompt: Prompt, seq: SequenceResult,
                      elapsed_s: float, pieces: list[str] | None = None) -> dict:
    """One line of ``results.jsonl``: the generation and its own metrics (model token ids).

    The loop fields come from ``find_loops`` (exact, near-verbatim or template, at the end or
    mid-text) on the ids and, when given, their texts (``pieces``, one per generated token);
    ``holtzman_repetition`` stays Holtzman et al.'s own tail rule, for their Table 1."""
    ids = content_ids(seq)
    loop = main_text_loop(ids, None if pieces is None else pieces[:len(ids)])
    looping = loop is not None
    return {
        "strategy": strategy.label, "spec": strategy.spec, "prompt_id": prompt.id,
        "category": prompt.category, "mode": prompt.mode, "prompt": prompt.text,
        "text": seq.text, "token_ids": list(seq.token_ids), "n_tokens": len(ids),
        "finish_reason": seq.finish_reason, "eos": seq.finish_reason == "eos",
        "seed": item_config(strategy, prompt.id).seed if strategy.config.strategy in ("sample", "mirostat") else None,
        "sum_logprob": seq.sum_logprob, "n_scored": len(seq.token_ids),
        "holtzman_repetition": bool(ids) and holtzman_repetition(ids),
        "loop_period": loop.period if looping else None,
        "loop_onset": loop.onset if looping else None,
        "loop_kind": loop.kind if looping else None,
        "loop_ends_early": loop.ends_early if looping else None,
        **{f"rep-{n}": _or_none(rep_n, [ids], n) for n in (2, 3, 4)},
        "seq-rep-4": _or_none(seq_rep_n, ids, 4) if ids else None,
        "distinct-2": _or_none(distinct_n, [ids], 2) if ids else None,
        "elapsed_s": round(elapsed_s, 3),
    }


@dataclass
class Batch:
    """One batch of the plan: (strategy, prompt, text) items generated together, in chat mode
    or not. Greedy and sampling strategies are mixed in one batch; a beam or contrastive
    batch holds one strategy."""

    chat: bool
    items: list[tuple[StudyStrategy, Prompt, str]]

    @property
    def rows(self) -> int:
        return sum(s.rows_per_prompt for s, _, _ in self.items)


def mixable(strategy: StudyStrategy) -> bool:
    return strategy.config.strategy in MIXABLE and strategy.rows_per_prompt == 1


def generation_plan(lm: LM, strategies: list[StudyStrategy], prompts: PromptSet,
                    batch_rows: int) -> list[Batch]:
    """Batches of at most ``batch_rows`` model rows.

    Raw prompts and chat prompts whose template text tokenizes back to the same ids share
    batches (``chat=False``); the others form ``chat=True`` batches. Greedy and sampling
    strategies are packed prompt by prompt, every strategy of a prompt side by side, so each
    step reads the weights once for several strategies and a prompt is prefilled once for all
    of them; beam and contrastive search (several rows per prompt) get batches of their own.
    """
    merged, chat_only = [], []
    for prompt in prompts.prompts:
        text = as_raw_text(lm, prompt)
        if text is None:
            chat_only.append((prompt, prompt.text))
        else:
            merged.append((prompt, text))
    mixed = [s for s in strategies if mixable(s)]
    plan: list[Batch] = []
    for chat, group in ((False, merged), (True, chat_only)):
        items = [(s, prompt, text) for prompt, text in group for s in mixed]
        per_batch = max(1, batch_rows)
        plan += [Batch(chat, items[i:i + per_batch]) for i in range(0, len(items), per_batch)]
    for strategy in strategies:
        if mixable(strategy):
            continue
        per_batch = max(1, batch_rows // strategy.rows_per_prompt)
        for chat, group in ((False, merged), (True, chat_only)):
            plan += [Batch(chat, [(strategy, p, t) for p, t in group[i:i + per_batch]])
                     for i in range(0, len(group), per_batch)]
    return plan


# ---------------------------------------------------------------------- self-reinforcement

def reinforcement_curves(lm: LM, sentences: list[str], repeats: int):
    return [self_reinforcement(lm.model, lm.tokenizer, s, prefix="", repeats=repeats)
            for s in sentences]


# ---------------------------------------------------------------------- the run

def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="degeneration", unit="gen", dynamic_ncols=True)


def run_degeneration(lm: LM | None = None, prompts: PromptSet | None = None,
                     sentences: list[str] | None = None,
                     settings: DegenerationSettings | None = None, *,
                     root: str | Path = "runs", progress: bool = True,
                     log: Callable[[str], None] | None = print) -> Path:
    """Run the study; returns the run directory (complete unless an exception escaped).

    ``lm``, ``prompts`` and ``sentences`` default to the embedded model, the shipped
    ``open_ended`` set and the shipped ``reinforcement`` sentences; tests inject small ones.
    """
    settings = settings or DegenerationSettings()
    log = log or (lambda message: None)
    prompts = prompts or load_prompt_set("open_ended")
    if settings.per_category is not None:
        prompts = prompts.subset(per_category=settings.per_category)
    if sentences is None:
        sentences = [p.text for p in load_prompt_set("reinforcement").prompts]
    if settings.reinforcement_sentences is not None:
        sentences = sentences[:settings.reinforcement_sentences]
    strategies, skipped = resolve_strategies(settings.base_config(), settings.strategies)
    if settings.engine == "vllm":
        refused = engine_refusals(strategies)
        strategies = [s for s in strategies if s.label not in {label for label, _ in refused}]
        skipped = skipped + refused
    for label, why in skipped:
        log(f"skipping {label!r}: {why}")
    if not strategies:
        raise DecodingLabError("no study strategy can run with this DecodingConfig")
    lm = lm or load_model()
    params = {"settings": asdict(settings), "model": lm.name,
              "prompt_set": prompts.name, "prompt_ids": [p.id for p in prompts.prompts],
              "strategies": [{"label": s.label, "spec": s.spec} for s in strategies],
              "skipped": [{"label": label, "reason": why} for label, why in skipped],
              "batched": True, "engine": settings.engine,
              "torch_threads": torch.get_num_threads()}

    with open_run(STUDY_NAME, root, params) as run:
        log(f"run directory: {run.path}")
        started = time.perf_counter()
        plan = generation_plan(lm, strategies, prompts, settings.batch_rows)
        engine_out = generate_plan_vllm(lm, plan) if settings.engine == "vllm" else None
        total_rows = sum(batch.rows for batch in plan)
        bar = _progress(sum(len(batch.items) for batch in plan), progress)
        records: list[dict] = []
        timings: dict[str, float] = {}
        try:
            with open(run.file("results.jsonl"), "a", encoding="utf-8") as out:
                for index, batch in enumerate(plan):
                    t0 = time.perf_counter()
                    if engine_out is None:
                        sequences = generate_group(lm, [(item_config(s, p.id), text)
                                                        for s, p, text in batch.items], batch.chat)
                        elapsed = time.perf_counter() - t0
                    else:   # one vLLM run served every batch: its time shared out by rows
                        sequences = engine_out[0][index]
                        elapsed = engine_out[1] * batch.rows / total_rows
                    for (strategy, prompt, _), seq in zip(batch.items, sequences):
                        # a mixed batch's time is shared out by the rows each item occupied
                        share = elapsed * strategy.rows_per_prompt / batch.rows
                        timings[strategy.label] = timings.get(strategy.label, 0.0) + share
                        record = generation_record(strategy, prompt, seq, share,
                                                   lm.token_pieces(seq.token_ids))
                        records.append(record)
                        out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    out.flush()
                    if bar is not None:
                        bar.update(len(batch.items))
                        bar.set_postfix_str(", ".join(dict.fromkeys(s.label for s, _, _ in
                                                                    batch.items)))
                    run.progress(generations=len(records))
        finally:
            if bar is not None:
                bar.close()
        generation_s = time.perf_counter() - started

        t0 = time.perf_counter()
        curves = reinforcement_curves(lm, sentences, settings.reinforcement_repeats)
        mean = mean_curve(curves)
        write_json_atomic(run.file("reinforcement.json"), {
            "repeats": settings.reinforcement_repeats, "mean": mean.to_dict(),
            "curves": [c.to_dict() for c in curves]})
        figures.reinforcement_figure(curves, run.file("self_reinforcement.png"), mean)

        rows = summary.summarize(records, [s.label for s in strategies])
        summary.write_summary_csv(run.file("summary.csv"), rows)
        figures.repetition_figure(rows, run.file("repetition_by_strategy.png"))
        figures.tradeoff_figure(rows, run.file("quality_diversity.png"))
        facts = report.RunFacts(
            model=lm.name, settings=asdict(settings), prompt_counts=_counts(prompts),
            strategies=[(s.label, s.spec) for s in strategies], skipped=skipped,
            generation_s=generation_s, total_s=time.perf_counter() - started,
            timings=timings, batched=params["batched"], threads=params["torch_threads"],
            identical=summary.identical_strategies(records))
        report.write_report(run.file("report.md"), rows, mean, curves, facts)
        log(f"generation {generation_s:.0f} s, analysis {time.perf_counter() - t0:.0f} s; "
            f"report: {run.path / 'report.md'}")
    return run.path


def _counts(prompts: PromptSet) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in prompts.prompts:
        counts[p.category] = counts.get(p.category, 0) + 1
    return counts


def load_results(path: str | Path) -> list[dict]:
    """The records of a run's ``results.jsonl``."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]

