"""DecodingConfig validation: each bad value is refused naming the parameter, value and range."""

from __future__ import annotations

import pytest

from decoding import ConfigError, DecodingConfig
from decoding.config import help_text

BAD = [
    (dict(top_p=1.5), "top_p=1.5", "0 < top_p <= 1"),
    (dict(top_p=0.0), "top_p=0.0", "0 < top_p <= 1"),
    (dict(top_k=-1), "top_k=-1", ">= 0"),
    (dict(strategy="sample", temperature=0.0), "temperature=0.0", "temperature > 0"),
    (dict(strategy="sample", temperature=-1.0), "temperature=-1.0", "temperature > 0"),
    (dict(num_beams=0), "num_beams=0", ">= 1"),
    (dict(strategy="beam", num_beams=2, num_return_sequences=3), "num_return_sequences=3", "num_beams (2)"),
    (dict(strategy="greedy", num_return_sequences=2), "num_return_sequences=2", "greedy"),
    (dict(strategy="nucleus"), "strategy='nucleus'", "greedy | sample | beam"),
    (dict(max_new_tokens=0), "max_new_tokens=0", ">= 1"),
    (dict(min_new_tokens=10, max_new_tokens=5), "min_new_tokens=10", "max_new_tokens (5)"),
    (dict(min_p=1.5), "min_p=1.5", "0 <= min_p <= 1"),
    (dict(typical_p=0.0), "typical_p=0.0", "0 < typical_p <= 1"),
    (dict(epsilon_cutoff=1.0), "epsilon_cutoff=1.0", "< 1"),
    (dict(eta_cutoff=-0.1), "eta_cutoff=-0.1", "0 <= eta_cutoff"),
    (dict(repetition_penalty=0.0), "repetition_penalty=0.0", "> 0"),
    (dict(no_repeat_ngram_size=-2), "no_repeat_ngram_size=-2", ">= 0"),
    (dict(early_stopping="sometimes"), "early_stopping='sometimes'", "'never'"),
    (dict(seed=-1), "seed=-1", "integer"),
    (dict(stop_strings=("",)), "stop_strings=''", "non-empty"),
    (dict(top_k=2.5), "top_k=2.5", "integer"),
    (dict(top_p=float("nan")), "top_p=nan", "0 < top_p <= 1"),
    # beyond transformers' core
    (dict(strategy="nucleus"), "strategy='nucleus'", "contrastive | mirostat"),
    (dict(frequency_penalty=2.5), "frequency_penalty=2.5", "-2 <= frequency_penalty <= 2"),
    (dict(presence_penalty=float("inf")), "presence_penalty=inf", "-2 <= presence_penalty <= 2"),
    (dict(penalize_prompt="no"), "penalize_prompt='no'", "true | false"),
    (dict(dry_multiplier=-0.1), "dry_multiplier=-0.1", "dry_multiplier >= 0"),
    (dict(dry_base=0.9), "dry_base=0.9", "dry_base >= 1"),
    (dict(dry_allowed_length=0), "dry_allowed_length=0", "an integer >= 1"),
    (dict(dry_penalty_last_n=-2), "dry_penalty_last_n=-2", "-1 = the whole context"),
    (dict(dry_sequence_breakers=("\n", "")), "dry_sequence_breakers=''", "non-empty"),
    (dict(xtc_threshold=1.5), "xtc_threshold=1.5", "0 <= xtc_threshold <= 1"),
    (dict(xtc_threshold=-0.1), "xtc_threshold=-0.1", "0 <= xtc_threshold <= 1"),
    (dict(xtc_probability=1.1), "xtc_probability=1.1", "0 <= xtc_probability <= 1"),
    (dict(top_n_sigma=float("nan")), "top_n_sigma=nan", "a finite number"),
    (dict(min_tokens_to_keep=0), "min_tokens_to_keep=0", "an integer >= 1"),
    (dict(logit_bias={-3: 1.0}), "logit_bias={-3: 1.0}", "token id (integer >= 0)"),
    (dict(logit_bias={"": 1.0}), "logit_bias={'': 1.0}", "non-empty text"),
    (dict(logit_bias={5: float("inf")}), "logit_bias={5: inf}", "finite bias or -inf"),
    (dict(logit_bias=["5=abc"]), "logit_bias=['5=abc']", "a mapping"),
    (dict(processor_order="vllm"), "processor_order='vllm'", "'transformers' | 'llama.cpp'"),
    (dict(processor_order=("top_k", "warp_drive")), "unknown stage name(s): warp_drive",
     "allowed: logit_bias, diversity_penalty"),
    (dict(processor_order=("top_k", "top_k")), "processor_order lists top_k more than once", "at most once"),
    (dict(strategy="sample", top_k=5, temperature=0.5, processor_order=("top_k",)),
     "leaves out the active stage(s) temperature", "names every active stage"),
    (dict(num_beams=4, num_beam_groups=3), "num_beam_groups=3", "a divisor of num_beams (4)"),
    (dict(num_beam_groups=0), "num_beam_groups=0", "an integer >= 1"),
    (dict(diversity_penalty=-1.0), "diversity_penalty=-1.0", "diversity_penalty >= 0"),
    (dict(penalty_alpha=1.2), "penalty_alpha=1.2", "0 <= penalty_alpha <= 1"),
    (dict(penalty_alpha=-0.1), "penalty_alpha=-0.1", "0 <= penalty_alpha <= 1"),
    (dict(strategy="contrastive", num_return_sequences=2), "num_return_sequences=2", "contrastive"),
    (dict(mirostat_tau=0.0), "mirostat_tau=0.0", "mirostat_tau > 0"),
    (dict(mirostat_eta=1.5), "mirostat_eta=1.5", "0 <= mirostat_eta <= 1"),
    (dict(strategy="mirostat", temperature=0.0), "temperature=0.0", "when sampling"),
]


@pytest.mark.parametrize("kwargs,named,allowed", BAD)
def test_bad_values_are_refused_with_name_value_range(kwargs, named, allowed):
    with pytest.raises(ConfigError) as err:
        DecodingConfig(**kwargs)
    assert named in str(err.value)
    assert allowed in str(err.value)


def test_defaults_are_valid_and_documented():
    c = DecodingConfig()
    assert c.strategy == "greedy" and c.top_k == 0  # deliberately not transformers' hidden 50
    for name in c.to_dict():
        assert help_text(name), f"{name} has no help text"


def test_round_trip_and_unknown_keys():
    c = DecodingConfig(strategy="sample", top_p=0.9, stop_strings=["\n\n"])
    assert c.stop_strings == ("\n\n",)
    assert DecodingConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown decoding parameter.*topp"):
        DecodingConfig.from_dict({"topp": 0.9})


def test_greedy_ignores_sampling_knobs_but_validates_them():
    assert DecodingConfig(strategy="greedy", temperature=0.5).temperature == 0.5
    with pytest.raises(ConfigError):
        DecodingConfig(strategy="greedy", temperature=0.0)


def test_new_knobs_are_off_by_default_and_round_trip():
    c = DecodingConfig()
    assert (c.frequency_penalty, c.presence_penalty, c.dry_multiplier, c.xtc_probability) == (0, 0, 0, 0)
    assert c.top_n_sigma is None and c.logit_bias == () and c.num_beam_groups == 1
    assert c.penalize_prompt is True and c.processor_order == "transformers"
    assert c.dry_sequence_breakers == ("\n", ":", "\"", "*")
    assert DecodingConfig(strategy="contrastive").contrastive_k == 4
    assert DecodingConfig(strategy="contrastive", top_k=6).contrastive_k == 6
    full = DecodingConfig(strategy="sample", logit_bias={3: -float("inf"), "hi": 1}, top_k=5,
                          processor_order="logit_bias,top_k", dry_sequence_breakers=["\n"])
    assert full.processor_order == ("logit_bias", "top_k")
    assert DecodingConfig(processor_order=["llama.cpp"]).processor_order == "llama.cpp"
    assert DecodingConfig.from_dict(full.to_dict()) == full
    hash(full)  # frozen and hashable: usable as a cache key
