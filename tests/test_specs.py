"""Strategy specs: the grammar, typed values, the error messages."""

from __future__ import annotations

import pytest

from decoding import DecodingConfig
from decoding.errors import DecodingLabError
from decoding.specs import (
    SYNTAX,
    format_spec,
    parse_spec,
    parse_specs,
    parse_value,
    split_specs,
    strategies,
)


def test_comma_continues_a_spec_with_field_value_and_starts_one_with_a_strategy():
    assert split_specs("greedy,beam:num_beams=4,sample:top_p=0.9,temperature=0.7") == [
        "greedy", "beam:num_beams=4", "sample:top_p=0.9,temperature=0.7"]
    assert split_specs(" greedy ; sample:top_k=40 ;; beam ") == ["greedy", "sample:top_k=40", "beam"]


def test_values_are_typed_from_the_dataclass_fields():
    (label, config), = parse_specs("sample:top_p=0.9,temperature=0.7,top_k=40,ignore_eos=yes")
    assert label == "sample:top_p=0.9,temperature=0.7,top_k=40,ignore_eos=true"
    assert config.strategy == "sample"
    assert config.top_p == 0.9 and isinstance(config.top_p, float)
    assert config.top_k == 40 and isinstance(config.top_k, int)
    assert config.ignore_eos is True
    # X | None takes "none"; a tuple takes items separated by "|"; bool | str takes either
    (_, c), = parse_specs("sample:min_p=none,stop_strings=###|END")
    assert c.min_p is None and c.stop_strings == ("###", "END")
    (_, c), = parse_specs("beam:num_beams=3,early_stopping=never")
    assert c.early_stopping == "never" and c.num_beams == 3
    (_, c), = parse_specs("beam:early_stopping=true")
    assert c.early_stopping is True


def test_parse_value_rejects_what_does_not_fit():
    with pytest.raises(ValueError):
        parse_value("4.5", int)
    with pytest.raises(ValueError):
        parse_value("maybe", bool)
    assert parse_value("1e-4", float) == 1e-4
    assert parse_value("none", float | None) is None
    assert parse_value("0.1", float | None) == 0.1


def test_base_config_is_kept_and_overridden_by_the_spec():
    base = DecodingConfig(max_new_tokens=17, seed=5)
    specs = parse_specs(["greedy", "sample:seed=9"], base)
    assert [s.config.max_new_tokens for s in specs] == [17, 17]
    assert [s.config.seed for s in specs] == [5, 9]
    assert specs[0].config == base.replace(strategy="greedy")


def test_format_spec_round_trips():
    base = DecodingConfig(max_new_tokens=50)
    for text in ("greedy", "beam:num_beams=8,length_penalty=0.5",
                 "sample:temperature=1.3,top_p=0.95,stop_strings=a|b"):
        config = parse_spec(text, base).config
        assert parse_spec(format_spec(config, base), base).config == config
    assert format_spec(parse_spec("sample:top_p=0.9", base).config, base) == "sample:top_p=0.9"


@pytest.mark.parametrize("bad, problem", [
    ("foo", "unknown strategy 'foo'"),
    ("greedy:top_q=1", "unknown field 'top_q'"),
    ("sample:top_p=x", "top_p='x' is not a number"),
    ("sample:top_k=4.5", "top_k='4.5' is not an integer"),
    ("beam:num_beams", "'num_beams' is not field=value"),
    ("sample:top_p=0.9,top_p=0.8", "field 'top_p' given twice"),
    ("top_p=0.9", "a spec must start with a strategy name"),
    ("greedy; top_p=0.9", "a spec must start with a strategy name"),
    ("greedy:strategy=beam", "unknown field 'strategy'"),
])
def test_bad_specs_show_the_syntax_strategies_and_fields(bad, problem):
    with pytest.raises(DecodingLabError) as info:
        parse_specs(bad)
    message = str(info.value)
    assert problem in message
    assert SYNTAX in message
    assert "strategies: " + ", ".join(strategies()) in message
    assert "top_p" in message.split("fields:")[1]


def test_out_of_range_values_name_the_spec_and_the_range():
    with pytest.raises(DecodingLabError, match=r"spec 'sample:top_p=1.5': top_p=1.5 is out of range"):
        parse_specs("sample:top_p=1.5")


def test_empty_specs_are_an_error():
    with pytest.raises(DecodingLabError, match="no strategy spec given"):
        parse_specs(" ; ,")
    with pytest.raises(DecodingLabError, match="no strategy spec given"):
        parse_specs([])


def test_a_strategy_added_to_the_config_is_accepted_without_changes(monkeypatch):
    import decoding.config as config_module

    monkeypatch.setattr(config_module, "STRATEGIES", tuple(config_module.STRATEGIES) + ("novel",))
    assert "novel" in strategies()
    with pytest.raises(DecodingLabError) as info:
        parse_specs("nope")
    assert "novel" in str(info.value)
