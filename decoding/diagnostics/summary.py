"""One sequence summarised for people: its repetition metrics, its loop as spans to highlight,
and the same prompt decoded several ways (``declab compare`` and the lab's Compare page).

Shared by the faces (CLI and Streamlit) so that both show the same numbers: they format, this
module measures.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DecodingConfig
from ..errors import DecodingLabError
from ..engines.vllm_engine import generate_with
from .loop_kinds import LoopFinding, find_loops, main_loop
from .loops import LoopReport
from .metrics import distinct_n, diversity, holtzman_repetition, rep_n, rep_sen, seq_rep_n

# ---------------------------------------------------------------------- metrics


@dataclass
class MetricOrders:
    """Which n-gram orders the summary uses: rep-n and diversity over ``rep`` (Su et al. 2022
    use 2, 3, 4), seq-rep-n of Welleck et al. 2020 and distinct-n of Li et al. 2016."""

    rep: tuple[int, ...] = (2, 3, 4)
    seq_rep: int = 4
    distinct: int = 2


def sequence_metrics(tokens: list, text: str, orders: MetricOrders = MetricOrders(),
                     strict: bool = True) -> dict:
    """rep-n (%), diversity, seq-rep-n, distinct-n, rep-sen and the Holtzman flag of one sequence.

    ``strict``: an order longer than the sequence is an error (``declab diagnose``); otherwise
    that metric is ``None`` (``declab compare``, where a strategy may stop after 2 tokens).
    """
    if not tokens:
        raise DecodingLabError("the sequence has 0 tokens; allowed: a non-empty text")

    def guarded(fn, *args):
        try:
            return fn(*args)
        except DecodingLabError:
            if strict:
                raise
            return None

    metrics = {f"rep-{n}": guarded(rep_n, [tokens], n) for n in orders.rep}
    metrics["diversity"] = guarded(diversity, [tokens], orders.rep)
    metrics[f"seq-rep-{orders.seq_rep}"] = guarded(seq_rep_n, tokens, orders.seq_rep)
    metrics[f"distinct-{orders.distinct}"] = guarded(distinct_n, [tokens], orders.distinct)
    try:
        metrics["rep-sen"] = rep_sen(text)
    except DecodingLabError:
        metrics["rep-sen"] = None   # no sentence in the text: undefined, not an input error
    metrics["holtzman_repetition"] = holtzman_repetition(tokens)
    return metrics


# ---------------------------------------------------------------------- loop spans

MERGE_BELOW_PERIOD = 3  # "at at at ...": one mark around the whole tail reads better than 40


def loop_spans(loop: LoopReport | LoopFinding | None) -> list[tuple[int, int, bool]]:
    """(start, end, partial) token spans to highlight: each complete cycle, then the partial one.

    An exact loop with a period under ``MERGE_BELOW_PERIOD`` tokens is one span (its whole
    tail); template and near loops always show their cycles (the slots change between them).
    """
    if loop is None or not loop.is_loop:
        return []
    if loop.period < MERGE_BELOW_PERIOD and getattr(loop, "kind", "exact") == "exact":
        return [(loop.onset, loop.onset + loop.length, False)]
    spans = [(start, end, False) for start, end in loop.spans]
    if loop.partial:
        end = loop.spans[-1][1]
        spans.append((end, end + loop.partial, True))
    return spans


def text_loops(tokens: list, pieces: list[str] | None) -> list[LoopFinding]:
    """``find_loops`` on a sequence: with its pieces (one string per token) when there is one
    per token, on the tokens alone (exact loops only) otherwise."""
    if len(tokens) < 2:
        return []
    usable = pieces is not None and len(pieces) == len(tokens)
    return find_loops(list(tokens), list(pieces) if usable else None)


def main_text_loop(tokens: list, pieces: list[str] | None) -> LoopFinding | None:
    """The loop a summary names: the finding covering the most characters, or None."""
    return main_loop(text_loops(tokens, pieces))


def loop_from_dict(data: dict | None) -> LoopFinding | LoopReport | None:
    """A row's ``loop`` back as an object: a ``LoopFinding`` when it has a kind (rows written
    since the detector has kinds), a ``LoopReport`` otherwise."""
    if not data:
        return None
    return LoopFinding.from_dict(data) if "kind" in data else LoopReport.from_dict(data)


# ---------------------------------------------------------------------- tokenizing a text

def whitespace_pieces(text: str) -> tuple[list[str], list[str]]:
    """(words, pieces): the text split on whitespace, pieces re-joined with single spaces."""
    words = text.split()
    return words, [w + " " for w in words[:-1]] + words[-1:]


def model_pieces(tokenizer, text: str) -> tuple[list[int], list[str]]:
    """(token ids, pieces) with ``"".join(pieces) == text``: each token's character span, the
    gap before a token (if the tokenizer skipped any) attached to it."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    cuts = [0] + [start for start, _ in offsets[1:]] + [len(text)]
    return ids, [text[cuts[i]:cuts[i + 1]] for i in range(len(ids))]


# ---------------------------------------------------------------------- compare

def compare_rows(lm, prompt: str, specs: list, chat: bool, engine: str = "ours",
                 settings=None) -> list[dict]:
    """Generate ``prompt`` with every (label, config); one row of measurements each.

    The configs run as one mixed batch (``generate_mixed``: each gets the tokens it gets
    alone). Row keys: label, config (dict), text, pieces (one string per token), n_tokens,
    finish_reason, the ``sequence_metrics`` (non-strict), loop (the main ``LoopFinding`` of
    ``find_loops`` as a dict, with its kind, or None), mean_logprob (mean raw log-probability of the generated tokens), elapsed_s (wall
    time of the batch the config ran in). ``engine``: ``ours`` or ``vllm`` (one vLLM run for
    every config; ``settings``: its ``VllmSettings``).
    """
    configs = [c if isinstance(c, DecodingConfig) else DecodingConfig(**c) for _, c in specs]
    gens = generate_with(engine, lm, [(prompt, c) for c in configs], chat=chat, settings=settings)
    rows = []
    for (label, _), config, gen in zip(specs, configs, gens):
        seq = gen.sequences[0]
        tokens = list(seq.token_ids)
        pieces = lm.token_pieces(tokens)
        loop = main_text_loop(tokens, pieces)
        metrics = sequence_metrics(tokens, seq.text, strict=False) if tokens else {}
        rows.append({
            "label": label, "config": config.to_dict(), "text": seq.text,
            "pieces": pieces, "n_tokens": len(tokens),
            "finish_reason": seq.finish_reason, **metrics,
            "loop": loop.to_dict() if loop else None,
            "mean_logprob": seq.mean_logprob, "elapsed_s": round(gen.elapsed_s, 3)})
    return rows
