"""Batched generation: several prompts through one loop, each as if it were alone.

Prompts are left-padded to a common length; the attention mask hides the padding and position
ids restart at every prompt's first real token (``forward.prefill``), so each row sees exactly
the inputs it would see alone. Every prompt gets its own generator seeded with ``config.seed``,
so sampling draws the same tokens as a single run. Every strategy runs batched: greedy,
sampling and mirostat in ``loop.decode_batch``, beam (and diverse beam) in ``beam.beam_search``,
contrastive in ``contrastive.contrastive_batch``.
"""

from __future__ import annotations

import time

from .config import DecodingConfig
from .errors import ConfigError
from .loop import (DEFAULT_TRACE_TOP, check_prompt, check_prompt_ids, check_trace_top,
                   run_strategy)
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
        check_prompt(lm, prompt)
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

    generations = []
    for i, (prompt, prompt_ids) in enumerate(zip(prompts, ids)):
        (sequences, beam_steps), names = results[i]
        generations.append(Generation(
            model=lm.name, adapter=lm.adapter, prompt=prompt, chat=chat, prompt_ids=list(prompt_ids),
            config=config.to_dict(), chain=names, sequences=sequences, beam_steps=beam_steps,
            elapsed_s=elapsed))
    return generations
