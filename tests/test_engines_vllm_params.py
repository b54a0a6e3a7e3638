"""The DecodingConfig → vLLM SamplingParams mapping: pure, runs without vLLM (make test).

The engine itself (token parity, log-probabilities, LoRA) is tested in test_engines_vllm.py,
which needs the separate environment (make engines)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from decoding import ConfigError, DecodingConfig
from decoding.engines import VllmSettings, check_engine_name, sampling_params
from decoding.engines.vllm_engine import chosen_logprobs, finish_reason, vllm_chain
from decoding.engines.vllm_params import UNSUPPORTED_STAGES, VLLM_STAGES, unmapped_fields
from decoding.stages import REGISTRY, SPECS
from decoding.trace import EOS, LENGTH, STOP_STRING


def test_greedy_is_temperature_zero_with_the_penalties_and_no_truncation():
    params = sampling_params(DecodingConfig(max_new_tokens=7, min_new_tokens=2,
                                            repetition_penalty=1.3, top_p=0.5, temperature=0.3,
                                            stop_strings=("\n",), logit_bias={5: -2.0}))
    assert params["temperature"] == 0.0
    assert "top_p" not in params                # greedy ignores truncations, as our loop does
    assert (params["max_tokens"], params["min_tokens"], params["repetition_penalty"]) == (7, 2, 1.3)
    assert params["stop"] == ["\n"] and params["include_stop_str_in_output"] is True
    assert params["logit_bias"] == {5: -2.0}


def test_sampling_knobs_map_one_to_one():
    config = DecodingConfig(strategy="sample", temperature=0.7, top_k=40, top_p=0.9,
                            frequency_penalty=0.5, presence_penalty=-0.25, seed=11,
                            num_return_sequences=3, ignore_eos=True)
    params = sampling_params(config, logprobs=4)
    assert {k: params[k] for k in ("temperature", "top_k", "top_p", "min_p", "n", "seed",
                                   "frequency_penalty", "presence_penalty", "ignore_eos",
                                   "logprobs")} == {
        "temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "n": 3, "seed": 11,
        "frequency_penalty": 0.5, "presence_penalty": -0.25, "ignore_eos": True, "logprobs": 4}
    assert sampling_params(DecodingConfig(strategy="sample", min_p=0.1))["min_p"] == 0.1


@pytest.mark.parametrize("knobs, name", [
    (dict(strategy="sample", temperature=0.7, top_p=0.9, processor_order="llama.cpp"),
     "processor_order='llama.cpp'"),                                  # temperature last
    (dict(strategy="sample", top_p=0.9, min_p=0.05), "processor_order='transformers'"),
    (dict(strategy="sample", typical_p=0.9), "typical_p=0.9"),
    (dict(dry_multiplier=0.8), "dry_multiplier=0.8"),
    (dict(strategy="sample", xtc_probability=0.5), "xtc_probability=0.5"),
    (dict(strategy="sample", top_n_sigma=1.0), "top_n_sigma=1.0"),
    (dict(strategy="sample", epsilon_cutoff=3e-4), "epsilon_cutoff=0.0003"),
    (dict(no_repeat_ngram_size=3), "no_repeat_ngram_size=3"),
    (dict(strategy="mirostat"), "strategy='mirostat'"),
    (dict(strategy="beam"), "strategy='beam'"),
    (dict(strategy="contrastive", penalty_alpha=0.6), "strategy='contrastive'"),
    (dict(repetition_penalty=1.2, penalize_prompt=False), "penalize_prompt=False"),
    (dict(strategy="sample", top_p=0.9, min_tokens_to_keep=3), "min_tokens_to_keep=3"),
    (dict(logit_bias={"the": -5.0}), "logit_bias='the'"),
    (dict(guidance_scale=1.5), "guidance_scale=1.5"),
])
def test_what_vllm_cannot_express_is_refused_by_name(knobs, name):
    with pytest.raises(ConfigError) as info:
        sampling_params(DecodingConfig(**knobs))
    message = str(info.value)
    assert message.startswith(name) and "--engine vllm" in message and "allowed there" in message


def test_orders_that_commute_are_accepted():
    """llama.cpp's order differs from vLLM's, but without temperature (T = 1) or with only
    top-k (rank-preserving) nothing that matters moves, so nothing is refused."""
    sampling_params(DecodingConfig(strategy="sample", top_p=0.9, processor_order="llama.cpp"))
    sampling_params(DecodingConfig(strategy="sample", temperature=0.5, top_k=5,
                                   processor_order="llama.cpp"))
    sampling_params(DecodingConfig(strategy="sample", min_p=0.1, top_k=5, min_new_tokens=3,
                                   repetition_penalty=1.2))


def test_every_registry_stage_is_mapped_or_refused_and_every_field_is_covered():
    """The refused list is derived from the stage registry, and no config field escapes both
    the registry and the engine's own list: a new knob cannot slip through unmapped."""
    assert set(VLLM_STAGES) | set(UNSUPPORTED_STAGES) == {spec.name for spec in REGISTRY}
    assert unmapped_fields() == []
    for name in UNSUPPORTED_STAGES:
        assert name not in VLLM_STAGES and SPECS[name].knob


def test_engine_name_and_settings_are_checked():
    assert check_engine_name("vllm") == "vllm"
    with pytest.raises(ConfigError, match="engine='tgi' is out of range; allowed: ours | vllm"):
        check_engine_name("tgi")
    with pytest.raises(ConfigError, match="logprobs_mode='final'"):
        VllmSettings(logprobs_mode="final")


def test_vllm_outputs_in_our_words():
    assert finish_reason({"finish_reason": "length", "stop_reason": None}) == LENGTH
    assert finish_reason({"finish_reason": "stop", "stop_reason": None}) == EOS
    assert finish_reason({"finish_reason": "stop", "stop_reason": 2}) == EOS
    assert finish_reason({"finish_reason": "stop", "stop_reason": "\n"}) == STOP_STRING
    output = {"token_ids": [7, 3], "logprobs": [[[5, -0.1, 1], [7, -2.5, 2]], [[3, -0.2, 1]]]}
    assert chosen_logprobs(output) == [-2.5, -0.2]
    assert vllm_chain(DecodingConfig(strategy="sample", temperature=0.7, top_p=0.9,
                                     repetition_penalty=1.1)) == [
        "vllm", "repetition_penalty", "temperature", "top_p"]


def test_cli_refuses_trace_options_and_unmappable_knobs_with_exit_2():
    """Before any model or engine starts: --speculative needs traces, typical_p has no vLLM
    stage."""
    for extra, expected in ((["--speculative"], "--speculative needs our loop's per-step trace"),
                            (["--strategy", "sample", "--typical-p", "0.5"],
                             "typical_p=0.5 cannot run on --engine vllm")):
        done = subprocess.run([sys.executable, "-m", "app.cli", "generate", "hi", "--engine",
                               "vllm", *extra], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr and "Traceback" not in done.stderr


def test_engine_bench_grid_holds_what_both_engines_run():
    """The bench's grid (no engine needed to build it): the study's greedy and sampling
    strategies vLLM accepts, each on every study prompt with the study's seeds, exactly
    ``tokens`` per row; the strategies vLLM refuses are listed with the reason."""
    from experiments.bench_engines import sampling_grid

    items, left_out = sampling_grid(tokens=16, per_category=1)
    labels = list(dict.fromkeys(label for label, _, _ in items))
    prompts = {p.id for _, p, _ in items}
    assert len(items) == len(labels) * len(prompts) and "greedy" in labels
    for _, _, config in items:
        sampling_params(config)                                 # vLLM runs every item
        assert config.min_new_tokens == config.max_new_tokens == 16
    assert left_out and all("cannot run on --engine vllm" in why or why for _, why in left_out)
    assert not {label for label, _ in left_out} & set(labels)
