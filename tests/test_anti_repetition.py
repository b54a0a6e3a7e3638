"""The anti-repetition preference set: natural-end cutting, mining on a tiny model, the CLI."""

from __future__ import annotations

import json

import pytest

import app.cli
import decoding
from alignment import anti_repetition as ar
from alignment.data import load_dataset
from decoding.errors import ConfigError


@pytest.mark.parametrize("text, loop_start, expected", [
    ("Jupiter.\n\n### Explanation:\nJupiter is big.\n\n### Explanation:\n", None, "Jupiter."),
    ("3000 metres\n### Input:\nx", None, "3000 metres"),
    ("The sky is blue. It is blue. It is blue. It is", 17, "The sky is blue."),
    ("Half a sentence with no end and then loop loop", 30, "Half a sentence with no end an"),
    ("A first line\nA second line that goes on", 25, "A first line"),
    ("### Heading at once", None, ""),
    (" Emperor Trajan ruled. The Roman Empire was divided. The Roman Empire", 30, " Emperor Trajan ruled."),
    ("\nThe answer. More", None, "\nThe answer."),
])
def test_natural_end(text, loop_start, expected):
    assert ar.natural_end(text, loop_start) == expected


def test_config_validation():
    with pytest.raises(ConfigError, match="min_cycles=1 is out of range"):
        ar.AntiRepetitionConfig(min_cycles=1)
    with pytest.raises(ConfigError, match=r"min_loop_fraction=0 is out of range; "
                                          r"allowed: 0 < min_loop_fraction <= 1"):
        ar.AntiRepetitionConfig(min_loop_fraction=0)
    with pytest.raises(ConfigError, match=r"min_loop_fraction=True is out of range"):
        ar.AntiRepetitionConfig(min_loop_fraction=True)     # a bool passed the old 0 < x <= 1
    with pytest.raises(ConfigError, match="prompt_sets"):
        ar.AntiRepetitionConfig(prompt_sets=())
    assert ar.AntiRepetitionConfig(prompt_sets=["a"]).prompt_sets == ("a",)


class _Tok:
    eos_token = "<eos>"

    def decode(self, ids, skip_special_tokens=True):
        return "".join(ids)


class _LM:
    tokenizer = _Tok()


def test_mine_prompt_builds_a_pair_from_a_loop_and_skips_the_rest():
    prompt = decoding.prompts.Prompt(id="p", text="Q:", mode="raw", category="x")
    config = ar.AntiRepetitionConfig()
    looping = list("Yes.\n") + list("ab.") * 6
    mined = ar.mine_prompt(_LM(), prompt, looping, config, "set")
    assert mined.pair["chosen"] == "Yes.<eos>"
    assert mined.pair["rejected"] == "".join(looping)
    assert mined.pair["meta"]["loop_period"] == 3 and mined.pair["meta"]["loop_onset"] == 5
    assert ar.mine_prompt(_LM(), prompt, list("abcdefghij"), config, "set").skipped == "no loop"
    short = list("A long answer without any repetition at all") + list("ab.ab.")
    assert ar.mine_prompt(_LM(), prompt, short, config, "set").skipped.startswith("loop covers")
    doubled = list("A long answer without any repetition at all") + list("zz")
    assert ar.mine_prompt(_LM(), prompt, doubled, config, "set").skipped == "no loop"
    template = list("Yes.\n") + list("### D-One:\n### D-Two:\n### D-Three:\n### D-Four:\n"
                                     "### D-Five:\n")
    mined = ar.mine_prompt(_LM(), prompt, template, config, "set")
    assert mined.pair["chosen"] == "Yes.<eos>" and mined.pair["meta"]["loop_kind"] == "template"
    at_once = list("xy") * 8
    assert ar.mine_prompt(_LM(), prompt, at_once, config, "set").skipped == "no answer before the loop"


def _prompt_file(tmp_path, texts):
    path = tmp_path / "raw.json"
    path.write_text(json.dumps({"name": "raw", "prompts": [
        {"id": f"p{i}", "text": t, "mode": "raw"} for i, t in enumerate(texts)]
        + [{"id": "chat", "text": "ignored", "mode": "chat"}]}))
    return str(path)


def test_build_on_a_tiny_model_mines_raw_prompts_only(tiny, tmp_path):
    """The tiny random model loops from its first token: every raw prompt is tried (the chat
    one is not), and none yields a pair because no answer precedes the loop."""
    prompts = _prompt_file(tmp_path, ["The cat sat on the mat", "A unicorn lived", "Beam"])
    config = ar.AntiRepetitionConfig(prompt_sets=(prompts,), max_new_tokens=32, batch_size=2)
    records, outcomes = ar.build_anti_repetition(tiny, config)
    assert [m.prompt.id for m in outcomes] == ["p0", "p1", "p2"]
    assert records == [] and {m.skipped for m in outcomes} <= {"no answer before the loop", "no loop"}
    with pytest.raises(decoding.errors.DecodingLabError, match="nothing to write"):
        ar.write_anti_repetition(tiny, tmp_path / "none.json", config)
    assert not (tmp_path / "none.json").exists()


@pytest.mark.embedded
def test_embedded_model_template_loops_become_pairs(embedded, tmp_path):
    """Seed 002's failure on the real model: Alpaca prompts, greedy, EOS suppressed, loop on
    template blocks. Most become pairs (6 of 9 measured; 96 tokens are too few for some loops to
    show two cycles); each chosen side is a short answer closed by EOS,
    each rejected side loops, and the file loads as a TRL standard dataset."""
    config = ar.AntiRepetitionConfig(prompt_sets=("template_loop",))   # 128 tokens: 6 of 9 loop
    summary = ar.write_anti_repetition(embedded, tmp_path / "ar.json", config)
    assert summary["tried"] == 9 and summary["pairs"] >= 5, summary
    records = json.loads((tmp_path / "ar.json").read_text())
    eos = embedded.tokenizer.eos_token
    for record in records:
        answer = record["chosen"][: -len(eos)]
        assert record["chosen"].endswith(eos) and "###" not in answer and 0 < len(answer) < len(record["rejected"])
        assert record["meta"]["loop_cycles"] >= 2
    assert load_dataset(tmp_path / "ar.json").format == "standard"


def test_cli_refuses_existing_out_and_bad_knobs(tmp_path, capsys):
    existing = tmp_path / "x.json"
    existing.write_text("[]")
    assert app.cli.main(["data", "anti-repetition", "--out", str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert app.cli.main(["data", "anti-repetition", "--out", str(tmp_path / "y.json"),
                         "--min-cycles", "1"]) == 2
    assert "min_cycles=1 is out of range" in capsys.readouterr().err


def test_cli_refuses_a_directory_as_out(tmp_path, capsys):
    assert app.cli.main(["data", "anti-repetition", "--out", str(tmp_path), "--overwrite"]) == 2
    assert "is a directory" in capsys.readouterr().err
