"""``declab diagnose / compare / reinforce``, the template-loop demo and ``declab experiment``:
outputs on known inputs, and one-line errors (exit 2, no traceback) on bad ones."""

from __future__ import annotations

import json

import pytest

import app.cli as cli
from decoding import DecodingConfig, generate


@pytest.fixture
def declab(monkeypatch, tiny, capsys):
    """``app.cli.main`` with our modules registered and every model load giving the tiny model."""
    import app.cli_demo
    import app.cli_diagnose

    modules = list(dict.fromkeys(cli.COMMAND_MODULES + ["app.cli_diagnose", "app.cli_demo",
                                                        "app.cli_experiment"]))
    monkeypatch.setattr(cli, "COMMAND_MODULES", modules)
    monkeypatch.setattr(app.cli_diagnose, "load_model", lambda *a, **k: tiny)
    monkeypatch.setattr(app.cli_demo, "load_model", lambda *a, **k: tiny)

    def run(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _one_line_error(code, err, *fragments):
    assert code == 2
    assert err.startswith("declab: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# ---------------------------------------------------------------------- diagnose

def test_diagnose_text_json_has_hand_computed_metrics_and_spans(declab):
    code, out, _ = declab("diagnose", "--text", "a b c a b c a b c", "--json")
    assert code == 0
    report = json.loads(out)
    m = report["metrics"]
    # 8 bigrams, 3 distinct: rep-2 = 100 * (1 - 3/8); 6 4-grams, 3 distinct
    assert m["rep-2"] == pytest.approx(62.5)
    assert m["seq-rep-4"] == pytest.approx(0.5)
    assert m["distinct-2"] == pytest.approx(3 / 8)
    assert m["holtzman_repetition"] is True
    legacy = {k: report["loop"][k] for k in ("period", "cycles", "onset", "spans", "is_loop",
                                              "partial")}
    assert legacy == {"period": 3, "cycles": 3, "onset": 0,
                      "spans": [[0, 3], [3, 6], [6, 9]], "is_loop": True, "partial": 0}
    assert report["loop"]["kind"] == "exact" and report["loop"]["char_onset"] == 0
    assert report["loop"]["char_span"] == [0, 17] and report["loop"]["ends_early"] is False
    assert report["loop_char_spans"] == [[0, 6], [6, 12], [12, 17]]
    assert report["tokenization"].startswith("whitespace")


def test_diagnose_marks_cycles_plainly_or_in_colour(declab):
    code, out, _ = declab("diagnose", "--text", "x y a b c a b c a b", "--color", "never")
    assert code == 0
    assert out.splitlines()[0] == "x y [[a b c ]][[a b c ]][[a b]]"
    assert "period 3 tokens, onset at token 2, 2 complete cycles + 2 tokens" in out
    code, out, _ = declab("diagnose", "--text", "x y a b c a b c a b", "--color", "always")
    assert "\033[30;43ma b c \033[0m" in out and "[[" not in out.splitlines()[0]


def test_diagnose_with_the_model_tokenizer_counts_model_tokens(declab, tiny):
    text = "The cat sat on the mat. The cat sat on the mat."
    code, out, _ = declab("diagnose", "--text", text, "--tokenizer", "model", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["n_tokens"] == len(tiny.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert report["metrics"]["rep-sen"] == pytest.approx(0.5)


def test_diagnose_a_saved_generation_includes_the_loop_probability(declab, tiny, tmp_path):
    gen = generate(tiny, "The cat sat", DecodingConfig(max_new_tokens=30, ignore_eos=True),
                   chat=False, trace=True)
    path = tmp_path / "gen.json"
    path.write_text(gen.to_json())
    code, out, _ = declab("diagnose", "--generation", str(path), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["n_tokens"] == len(gen.token_ids)
    assert report["loop"]["period"] >= 1
    trace = report["loop_probability"]
    assert trace["probs_raw"] == [gen.steps[t].prob_raw for t in trace["steps"]]
    code, out, _ = declab("diagnose", "--generation", str(path), "--color", "never")
    assert code == 0 and "P(loop-continuing token)" in out


@pytest.mark.parametrize("argv, fragments", [
    (["--text", ""], ["is empty"]),
    (["--text", "   "], ["is empty"]),
    (["--text", "a b"], ["n=3 is out of range", "has 2 tokens"]),
    (["--text", "a b c d e", "--seq-rep-n", "9"], ["n=9 is out of range"]),
    (["--text", "a b c d", "--rep-orders", "2,x"], ["--rep-orders"]),
    (["--generation", "/no/such/file.json"], ["cannot be read"]),
])
def test_diagnose_bad_input_is_one_line_exit_2(declab, argv, fragments):
    code, _, err = declab("diagnose", *argv)
    _one_line_error(code, err, *fragments)


@pytest.mark.parametrize("content", ["{not json", '{"foo": 1}', "[]", '{"sequences": []}'])
def test_diagnose_malformed_generation_json_is_one_line_exit_2(declab, tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _, err = declab("diagnose", "--generation", str(path))
    _one_line_error(code, err, "is not a Generation JSON")


# ---------------------------------------------------------------------- compare

def test_compare_gives_one_row_per_spec(declab, tiny):
    code, out, _ = declab("compare", "The cat", "--no-chat", "--max-new-tokens", "12", "--json",
                          "--strategies", "greedy,beam:num_beams=2",
                          "--strategies", "sample:top_p=0.9,temperature=0.7")
    assert code == 0
    result = json.loads(out)
    rows = result["rows"]
    assert [r["label"] for r in rows] == ["greedy", "beam:num_beams=2",
                                          "sample:top_p=0.9,temperature=0.7"]
    assert rows[2]["config"]["top_p"] == 0.9 and rows[2]["config"]["temperature"] == 0.7
    greedy = generate(tiny, "The cat", DecodingConfig(max_new_tokens=12), chat=False, trace=False)
    assert rows[0]["text"] == greedy.text and rows[0]["n_tokens"] == len(greedy.token_ids)
    assert rows[0]["mean_logprob"] == pytest.approx(greedy.sequences[0].mean_logprob)
    # the three run as one mixed batch; each gets its own single run's tokens
    sampled = generate(tiny, "The cat", DecodingConfig(strategy="sample", top_p=0.9,
                                                       temperature=0.7, max_new_tokens=12),
                       chat=False, trace=False)
    assert rows[2]["text"] == sampled.text
    for r in rows:
        assert r["n_tokens"] <= 12 and r["finish_reason"] in ("eos", "length")
        assert set(r) >= {"rep-2", "rep-3", "rep-4", "distinct-2", "loop", "mean_logprob"}


def test_compare_prints_the_table(declab):
    code, out, _ = declab("compare", "The cat", "--no-chat", "--max-new-tokens", "10",
                          "--strategies", "greedy;sample:top_k=5", "--color", "never")
    assert code == 0
    assert "=== greedy" in out and "=== sample:top_k=5" in out
    header = next(line for line in out.splitlines() if line.startswith("strategy"))
    for column in ("tokens", "finish", "rep-2", "rep-3", "rep-4", "dist-2", "loop", "mean logp"):
        assert column in header


@pytest.mark.parametrize("spec, fragment", [
    ("gredy", "unknown strategy 'gredy'"),
    ("sample:top_q=0.9", "unknown field 'top_q'"),
    ("sample:top_p=high", "is not a number"),
])
def test_compare_bad_spec_shows_the_syntax(declab, spec, fragment):
    code, _, err = declab("compare", "The cat", "--strategies", spec)
    _one_line_error(code, err, fragment, "STRATEGY[:field=value", "strategies: greedy")


def test_compare_empty_prompt_is_an_error(declab):
    code, _, err = declab("compare", " ", "--strategies", "greedy")
    _one_line_error(code, err, "is empty")


# ---------------------------------------------------------------------- reinforce

def test_reinforce_prints_the_table_and_writes_a_png(declab, tmp_path):
    png = tmp_path / "sub" / "tp.png"
    code, out, _ = declab("reinforce", "--sentence", "The cat sat on the mat.", "--repeats", "4",
                          "--out", str(png))
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = [line.split() for line in out.splitlines() if line[:4].strip().isdigit()]
    assert [row[0] for row in table] == ["0", "1", "2", "3"]
    assert float(table[0][2]) == 0.0  # IP of copy 0 against itself


def test_reinforce_json_matches_the_probe(declab, tiny):
    from decoding.diagnostics import self_reinforcement

    code, out, _ = declab("reinforce", "--sentence", "A unicorn lived here.", "--repeats", "3",
                          "--json")
    assert code == 0
    curve = json.loads(out)["curves"][0]
    expected = self_reinforcement(tiny.model, tiny.tokenizer, "A unicorn lived here.", repeats=3)
    assert curve["tp"] == pytest.approx(expected.tp)


@pytest.mark.parametrize("argv, fragment", [
    (["--sentence", "  "], "is empty"),
    (["--sentence", "The cat.", "--repeats", "0"], "repeats=0 is out of range"),
])
def test_reinforce_bad_input(declab, argv, fragment):
    code, _, err = declab("reinforce", *argv)
    _one_line_error(code, err, fragment)


# ---------------------------------------------------------------------- demo, experiment

def test_template_loop_demo_runs_the_named_cases(declab):
    code, out, _ = declab("demo", "template-loop", "--max-new-tokens", "24", "--cases",
                          "plural,gold-symbol", "--color", "never")
    assert code == 0
    assert "=== plural" in out and "=== gold-symbol" in out and "=== antonym" not in out
    assert "### Instruction:\nWhat is the plural of the word mouse?" in out
    assert out.strip().endswith("of 2 outputs loop (find_loops: exact, near or template).")


def test_template_loop_demo_unknown_case(declab):
    code, _, err = declab("demo", "template-loop", "--cases", "nope")
    _one_line_error(code, err, "nope", "largest-planet")


def test_unknown_study_lists_the_available_ones(declab):
    code, _, err = declab("experiment", "nope")
    _one_line_error(code, err, "unknown study 'nope'", "degeneration")
