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
