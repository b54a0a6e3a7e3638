"""``DecodingConfig`` → vLLM ``SamplingParams`` keyword arguments, or a refusal naming the knob.

Pure: imports no vLLM (the mapping is tested in the main environment). The result is a plain
JSON-ready dict that ``vllm_bridge`` passes to ``vllm.SamplingParams(**kwargs)``.

What vLLM (0.32, V1 engine) can express, from its ``SamplingParams`` reference
(https://docs.vllm.ai/en/latest/api/vllm/sampling_params.html):

=====================  ===========================================================
ours                   vLLM
=====================  ===========================================================
greedy                 ``temperature=0`` (argmax after the penalties)
sample, temperature    ``temperature``
top_k / top_p / min_p  ``top_k`` (0 = off) / ``top_p`` / ``min_p`` (0 = off)
repetition_penalty     ``repetition_penalty`` (CTRL; counts prompt and output tokens)
frequency / presence   ``frequency_penalty`` / ``presence_penalty`` (output tokens only)
min_new_tokens         ``min_tokens``;  ignore_eos: ``ignore_eos``
logit_bias (ids)       ``logit_bias``
stop_strings           ``stop`` with ``include_stop_str_in_output=True`` (we keep the string)
num_return_sequences   ``n``;  seed: ``seed`` (vLLM's own generator: same seed, same
                       vLLM tokens, not our loop's torch draws)
max_new_tokens         ``max_tokens``;  logprobs: ``logprobs`` (engine-wide ``logprobs_mode``)
=====================  ===========================================================

Everything else is refused. The refused stages are derived from the stage registry
(``stages.REGISTRY``): a stage not listed in ``VLLM_STAGES`` is refused when its switch is on,
so a sampler added to the lab later is refused until someone maps it here.

Order. vLLM's V1 sampler (``vllm/v1/sample/sampler.py``) runs: logits processors that may change
the argmax (min_tokens, logit_bias) → penalties (repetition, then frequency and presence,
``vllm/model_executor/layers/utils.py: apply_penalties``) → temperature → argmax-invariant
processors (min_p) → top-k → top-p. A config whose ``processor_order`` puts two stages that do
not commute in the other order (temperature after a truncation, as llama.cpp does; min_p before
top_p, as transformers does) is refused.
"""

from __future__ import annotations

import dataclasses
from itertools import combinations
from typing import Any

from ..config import DecodingConfig
from ..errors import ConfigError, out_of_range
from ..stages import REGISTRY, SPECS, planned_stages

ENGINES = ("ours", "vllm")
LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs", "raw_logits", "processed_logits")

# The stages vLLM implements, in the order its V1 sampler applies them (module docstring).
VLLM_STAGES = ("min_new_tokens", "ignore_eos", "logit_bias", "repetition_penalty",
               "frequency_penalty", "presence_penalty", "temperature", "min_p", "top_k", "top_p")
UNSUPPORTED_STAGES = tuple(spec.name for spec in REGISTRY if spec.name not in VLLM_STAGES)
VLLM_STRATEGIES = ("greedy", "sample")

# Pairs whose order does not change the result, so ours and vLLM's may differ on them:
# a -inf mask (min_tokens, ignore_eos) survives every later transform; top-k keeps ranks, which
# temperature does not change and min_p's threshold (relative to the top token) cuts the same
# prefix of; frequency and presence are both additive.
COMMUTING = ({frozenset({"min_new_tokens", other}) for other in VLLM_STAGES}
             | {frozenset({"ignore_eos", other}) for other in VLLM_STAGES}
             | {frozenset({"top_k", "temperature"}), frozenset({"top_k", "min_p"}),
                frozenset({"frequency_penalty", "presence_penalty"})})

# Fields that belong to no stage and are handled (mapped or checked) here, by name.
ENGINE_FIELDS = ("strategy", "max_new_tokens", "min_tokens_to_keep", "processor_order", "num_beams",
                 "num_beam_groups", "length_penalty", "early_stopping", "penalty_alpha",
                 "num_return_sequences", "seed", "stop_strings")


def check_engine_name(engine: str) -> str:
    if engine not in ENGINES:
        raise out_of_range("engine", engine, " | ".join(ENGINES))
    return engine


def _refuse(name: str, value: Any, why: str, allowed: str) -> ConfigError:
    return ConfigError(f"{name}={value!r} cannot run on --engine vllm: {why}; allowed there: {allowed}")


def check_strategy(c: DecodingConfig) -> None:
    if c.strategy in VLLM_STRATEGIES:
        return
    # vllm/entrypoints/generate/beam_search/offline.py (0.32): every end-of-sequence candidate
    # among a beam's top 2 x width finishes (transformers' BeamSearchScorer: only those ranked
    # within the width), running beams are ranked by length-penalised score, and it takes no
    # penalties, stop strings, early_stopping rule or groups: not our (transformers') beam search.
    why = {"beam": "vLLM's LLM.beam_search finishes hypotheses and ranks beams by other rules "
                   "than transformers' (and ours) and takes no penalties, stop strings or "
                   "early_stopping",
           "contrastive": "contrastive search re-scores candidates by hidden-state similarity, "
                          "which SamplingParams cannot express",
           "mirostat": "vLLM has no mirostat sampler"}.get(c.strategy, "no vLLM equivalent")
    raise _refuse("strategy", c.strategy, why, " | ".join(VLLM_STRATEGIES))


def check_stages(c: DecodingConfig, stages: list[str]) -> None:
    """Refuse the first active stage vLLM lacks, naming its main knob and value."""
    for name in stages:
        if name in UNSUPPORTED_STAGES:
            knob = SPECS[name].knob
            raise _refuse(knob, getattr(c, knob), f"vLLM's SamplingParams has no {name} stage",
                          f"{knob} at its default ({_default(knob)!r})")


def check_order(c: DecodingConfig, stages: list[str]) -> None:
    """Refuse when two non-commuting active stages run in the other order than vLLM's."""
    for a, b in combinations(stages, 2):                 # a before b in our chain
        if frozenset({a, b}) in COMMUTING:
            continue
        if VLLM_STAGES.index(a) > VLLM_STAGES.index(b):
            raise _refuse("processor_order", c.processor_order,
                          f"it applies {a} before {b}, vLLM's sampler {b} before {a}",
                          "an order that agrees with vLLM's (the 'transformers' preset does, "
                          "except min_p with top_p together)")


def check_details(c: DecodingConfig, stages: list[str]) -> None:
    """The knobs of supported stages whose meaning vLLM cannot follow."""
    if "repetition_penalty" in stages and not c.penalize_prompt:
        raise _refuse("penalize_prompt", False, "vLLM's repetition_penalty always counts the "
                      "prompt's tokens", "true")
    truncations = [s for s in ("top_k", "top_p", "min_p") if s in stages]
    if truncations and c.min_tokens_to_keep != 1:
        raise _refuse("min_tokens_to_keep", c.min_tokens_to_keep,
                      f"vLLM's {truncations[0]} has no minimum kept set", "1")
    texts = [key for key, _ in c.logit_bias if isinstance(key, str)]
    if texts:
        raise _refuse("logit_bias", texts[0], "vLLM's logit_bias takes token ids", "token ids")


def sampling_params(c: DecodingConfig, logprobs: int | None = None) -> dict[str, Any]:
    """The ``SamplingParams`` keyword arguments that decode like ``c``; ``logprobs``: how many
    top log-probabilities vLLM returns per step (the chosen token's always comes along)."""
    check_strategy(c)
    stages = planned_stages(c)
    check_stages(c, stages)
    check_order(c, stages)
    check_details(c, stages)
    params: dict[str, Any] = {
        "n": c.num_return_sequences, "max_tokens": c.max_new_tokens, "min_tokens": c.min_new_tokens,
        "ignore_eos": c.ignore_eos, "seed": c.seed,
        "repetition_penalty": c.repetition_penalty, "frequency_penalty": c.frequency_penalty,
        "presence_penalty": c.presence_penalty,
        # our stop strings stay in the output (rows.StopChecker)
        "stop": list(c.stop_strings), "include_stop_str_in_output": True,
        # vLLM's default skips special tokens in .text only; we decode texts ourselves
        "logprobs": logprobs,
    }
    if c.logit_bias:
        params["logit_bias"] = {int(key): float(bias) for key, bias in c.logit_bias}
    if c.strategy == "greedy":
        params["temperature"] = 0.0            # vLLM: temperature 0 means greedy (argmax)
    else:
        params.update(temperature=c.temperature, top_k=c.top_k, top_p=c.top_p,
                      min_p=0.0 if c.min_p is None else c.min_p)
    return params


def _default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(DecodingConfig) if f.name == name)


def unmapped_fields() -> list[str]:
    """Config fields neither read by a registry stage nor handled here: must stay empty (a test
    checks it, so a new knob cannot slip past the engine unnoticed)."""
    covered = {name for spec in REGISTRY for name in spec.fields} | set(ENGINE_FIELDS)
    return [f.name for f in dataclasses.fields(DecodingConfig) if f.name not in covered]
