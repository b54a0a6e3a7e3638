"""Batched generation: several prompts through one loop, each as if it were alone.

Prompts are left-padded to a common length; the attention mask hides the padding and position
ids restart at every prompt's first real token (``forward.prefill``), so each row sees exactly
the inputs it would see alone. Every prompt gets its own generator seeded with ``config.seed``,
so sampling draws the same tokens as a single run. Every strategy runs batched: greedy,
sampling and mirostat in ``loop.decode_batch``, beam (and diverse beam) in ``beam.beam_search``,
contrastive in ``contrastive.contrastive_batch``.

``generate_mixed`` goes further, as vLLM's per-request ``SamplingParams`` do: prompts with
*different* configs share one batch. Greedy, sampling and mirostat requests run in one loop
(``loop.decode_mixed``: one forward pass per step for all rows, then each config's own chain),
a prompt that several configs continue is prefilled once, and beam or contrastive requests run
as batches of their own. Every request still gets the tokens it would get alone.
"""

from __future__ import annotations

import time

from .config import DecodingConfig
from .errors import ConfigError
from .loop import (DEFAULT_TRACE_TOP, Request, check_prompt, check_prompt_ids, check_trace_top,
                   decode_mixed, run_strategy)
from .models import LM
from .trace import Generation


def generate_batch(lm: LM, prompts: list[str], config: DecodingConfig | None = None,
                   chat: bool = True, trace: bool = False,
                   trace_top: int = DEFAULT_TRACE_TOP) -> list[Generation]:
    """Generate a continuation of every prompt in one batch; returns one ``Generation`` per
    prompt, in order, token-identical to ``generate(lm, prompt, config, chat)`` for each.

    ``elapsed_s`` of every ``Generation`` is the wall time of the whole batch.
    """
    config = config or DecodingConfig()
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ConfigError(f"prompts={prompts!r} is out of range; allowed: a non-empty list of "
                          "prompts")
    for prompt in prompts:
        check_prompt(prompt)
    check_trace_top(trace_top)
    ids = [lm.encode(p, chat=chat) for p in prompts]
    for prompt_ids in ids:
        check_prompt_ids(lm, prompt_ids)

    started = time.perf_counter()
    # Padding shortens the room left in the context: a prompt that would then run into the
    # model's context limit earlier than alone is generated on its own.
    padded = max(len(p) for p in ids)
    batchable = [i for i, p in enumerate(ids)
                 if padded + config.max_new_tokens <= lm.max_context or len(p) == padded]
    results: dict[int, tuple] = {}
    if batchable:
        per_prompt, names = run_strategy(lm, [ids[i] for i in batchable], config, trace, trace_top)
        results.update({i: (out, names) for i, out in zip(batchable, per_prompt)})
    for i in range(len(ids)):
        if i not in results:
            per_prompt, names = run_strategy(lm, [ids[i]], config, trace, trace_top)
            results[i] = (per_prompt[0], names)
    elapsed = time.perf_counter() - started

    return [_generation(lm, (prompt, config), prompt_ids, chat, results[i][1], *results[i][0],
                        elapsed)
            for i, (prompt, prompt_ids) in enumerate(zip(prompts, ids))]


MIXABLE = ("greedy", "sample", "mirostat")


def generate_mixed(lm: LM, requests: list[tuple[str, DecodingConfig]], chat: bool = True,
                   trace: bool = False, trace_top: int = DEFAULT_TRACE_TOP,
                   max_rows: int | None = None) -> list[Generation]:
    """Generate every ``(prompt, config)`` request, batching across configs; returns one
    ``Generation`` per request, in order, token-identical to ``generate(lm, prompt, config,
    chat)``.

    Greedy, sampling and mirostat requests share batches of at most ``max_rows`` model rows
    (default: all in one); beam and contrastive requests are batched per config. ``elapsed_s``
    of every ``Generation`` is the wall time of the batch it ran in.
    """
    if not isinstance(requests, (list, tuple)) or not requests:
        raise ConfigError(f"requests={requests!r} is out of range; allowed: a non-empty list of "
                          "(prompt, DecodingConfig) pairs")
    if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int)
                                 or max_rows < 1):
        raise ConfigError(f"max_rows={max_rows!r} is out of range; allowed: an integer >= 1")
    for item in requests:
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not isinstance(item[1], DecodingConfig)):
            raise ConfigError(f"request {item!r} is not a (prompt, DecodingConfig) pair")
        check_prompt(item[0])
    check_trace_top(trace_top)
    ids = [lm.encode(prompt, chat=chat) for prompt, _ in requests]
    for prompt_ids in ids:
        check_prompt_ids(lm, prompt_ids)

    out: dict[int, Generation] = {}
    mixable = [i for i, (_, c) in enumerate(requests) if c.strategy in MIXABLE]
    for chunk in _chunks(mixable, [requests[i][1].num_return_sequences for i in mixable],
                         max_rows):
        started = time.perf_counter()
        padded = max(len(ids[i]) for i in chunk)
        # As in generate_batch: a prompt that padding would push into the context limit runs alone.
        fits = [i for i in chunk if padded + requests[i][1].max_new_tokens <= lm.max_context
                or len(ids[i]) == padded]
        results = {}
        if fits:
            results.update(zip(fits, decode_mixed(
                lm, [Request(ids[i], requests[i][1], requests[i][1].seed) for i in fits],
                trace=trace, trace_top=trace_top)))
        for i in chunk:
            if i not in results:
                results[i] = decode_mixed(lm, [Request(ids[i], requests[i][1], requests[i][1].seed)],
                                          trace=trace, trace_top=trace_top)[0]
        elapsed = time.perf_counter() - started
        for i in chunk:
            sequences, names = results[i]
            out[i] = _generation(lm, requests[i], ids[i], chat, names, sequences, [], elapsed)

    others: dict[int, list[int]] = {}
    for i, (_, config) in enumerate(requests):
        if config.strategy not in MIXABLE:
            key = next((k for k in others if requests[k][1] == config), i)
            others.setdefault(key, []).append(i)
    for members in others.values():
        config = requests[members[0]][1]
        for gen, i in zip(generate_batch(lm, [requests[i][0] for i in members], config, chat=chat,
                                         trace=trace, trace_top=trace_top), members):
            out[i] = gen
    return [out[i] for i in range(len(requests))]


def _chunks(items: list[int], rows: list[int], max_rows: int | None) -> list[list[int]]:
    """Consecutive groups of ``items`` holding at most ``max_rows`` rows (an item larger than
    that alone)."""
    chunks, current, used = [], [], 0
    for item, n in zip(items, rows):
        if current and max_rows is not None and used + n > max_rows:
            chunks.append(current)
            current, used = [], 0
        current.append(item)
        used += n
    return chunks + ([current] if current else [])


def _generation(lm: LM, request: tuple[str, DecodingConfig], prompt_ids: list[int], chat: bool,
                names: list[str], sequences, beam_steps, elapsed: float) -> Generation:
    prompt, config = request
    return Generation(model=lm.name, adapter=lm.adapter, prompt=prompt, chat=chat,
                      prompt_ids=list(prompt_ids), config=config.to_dict(), chain=names,
                      sequences=sequences, beam_steps=beam_steps, elapsed_s=elapsed)
