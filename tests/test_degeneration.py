"""The degeneration study end to end on the tiny model, its aggregation and its run directory."""

from __future__ import annotations

import csv
import math
import json

import pytest

from decoding import DecodingConfig, generate
from decoding.errors import DecodingLabError
from decoding.prompts import Prompt, PromptSet, load_prompt_set
from experiments.degeneration import (
    DegenerationSettings,
    load_results,
    resolve_strategies,
    run_degeneration,
)
from experiments.degeneration import report, study, summary
from experiments.degeneration.summary import SUMMARY_COLUMNS
from experiments.runs import latest_run, list_runs, open_run, run_status

PROMPTS = PromptSet("mini", "test prompts", [
    Prompt("news-x", "The council voted on Tuesday to", "raw", "news"),
    Prompt("story-x", "The robot woke up and", "raw", "story"),
    Prompt("chat-x", "Why is the sky blue?", "chat", "chat"),
])
SENTENCES = ["The cat sat on the mat.", "A unicorn lived in a valley."]
SETTINGS = DegenerationSettings(max_new_tokens=8, strategies=("greedy", "beam-4", "top-p 0.95"),
                                reinforcement_repeats=3)


def _run(tiny, tmp_path, settings=SETTINGS):
    return run_degeneration(tiny, PROMPTS, SENTENCES, settings, root=tmp_path, progress=False,
                            log=None)


def test_study_end_to_end_on_the_tiny_model(tiny, tmp_path):
    path = _run(tiny, tmp_path)
    assert path.parent == tmp_path / "degeneration"
    assert run_status(path) == "complete"
    for name in ("results.jsonl", "summary.csv", "report.md", "reinforcement.json",
                 "repetition_by_strategy.png", "quality_diversity.png", "self_reinforcement.png"):
        assert (path / name).is_file(), name
    for png in path.glob("*.png"):
        assert png.read_bytes()[:4] == b"\x89PNG"

    records = load_results(path / "results.jsonl")
    assert len(records) == 3 * len(PROMPTS)
    assert {(r["strategy"], r["prompt_id"]) for r in records} == {
        (s, p.id) for s in SETTINGS.strategies for p in PROMPTS.prompts}
    # batching changes nothing: the greedy record is what generate() gives for that prompt alone
    for r in records:
        if r["strategy"] == "greedy":
            alone = generate(tiny, r["prompt"], DecodingConfig(max_new_tokens=8),
                             chat=r["mode"] == "chat", trace=False)
            assert r["token_ids"] == alone.token_ids
            assert r["sum_logprob"] == pytest.approx(alone.sequences[0].sum_logprob)
        assert r["n_tokens"] <= 8

    with open(path / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == SUMMARY_COLUMNS
    assert {(r["strategy"], r["subset"]) for r in rows} == {
        (s, subset) for s in SETTINGS.strategies for subset in ("raw", "chat", "all")}
    greedy_raw = next(r for r in rows if r["strategy"] == "greedy" and r["subset"] == "raw")
    assert int(greedy_raw["n"]) == 2

    text = (path / "report.md").read_text()
    for reference in ("73.66", "28.94", "0.36", "0.28"):
        assert reference in text
    assert "| greedy | 73.66 | greedy |" in text
    assert "| beam-16 | 28.94 | beam-4 |" in text
    curves = json.loads((path / "reinforcement.json").read_text())
    assert len(curves["curves"]) == 2 and len(curves["mean"]["tp"]) == 3


def test_an_interrupted_run_stays_incomplete_and_writes_no_report(tiny, tmp_path, monkeypatch):
    real = study.generate_group
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "generate_group", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny, tmp_path)
    (path,) = list_runs("degeneration", tmp_path)
    status = json.loads((path / "status.json").read_text())
    assert status["status"] == "incomplete"
    assert status["stopped_by"].startswith("KeyboardInterrupt")
    assert not (path / "report.md").exists() and not (path / "summary.csv").exists()
    # the first batch: greedy and top-p 0.95 mixed, each on all 3 prompts (the chat one as its
    # template text, same ids)
    assert len(load_results(path / "results.jsonl")) == 6
    assert latest_run("degeneration", tmp_path) is None
    assert latest_run("degeneration", tmp_path, complete_only=False) == path


def test_run_directory_helpers(tmp_path):
    with open_run("demo", tmp_path, params={"x": 1}) as run:
        assert run_status(run.path) == "incomplete"
        run.progress(done=3)
        assert json.loads((run.path / "status.json").read_text())["done"] == 3
    assert run_status(run.path) == "complete"
    with pytest.raises(RuntimeError):
        with open_run("demo", tmp_path) as failed:
            raise RuntimeError("boom")
    assert run_status(failed.path) == "incomplete"
    assert failed.path != run.path  # same second: a fresh directory, never reused
    assert list_runs("demo", tmp_path, complete_only=True) == [run.path]
    with pytest.raises(DecodingLabError):
        open_run("../escape", tmp_path).__enter__()


def test_strategies_resolve_from_specs_and_unknown_ones_are_skipped_or_refused():
    base = DecodingConfig(max_new_tokens=5)
    chosen, skipped = resolve_strategies(base, table=[
        ("greedy", "greedy"), ("future", "greedy:not_a_field_yet=1"), ("beam", "beam:num_beams=3")])
    assert [s.label for s in chosen] == ["greedy", "beam"]
    assert chosen[1].config.num_beams == 3 and chosen[1].rows_per_prompt == 3
    assert skipped[0][0] == "future" and "unknown field 'not_a_field_yet'" in skipped[0][1]
    with pytest.raises(DecodingLabError, match="unknown study strategy 'nope'"):
        resolve_strategies(base, ["nope"])


def _record(strategy, mode, ids, eos, logprob, text, flag=False):
    return {"strategy": strategy, "mode": mode, "token_ids": ids, "eos": eos,
            "n_scored": len(ids), "sum_logprob": logprob, "text": text,
            "holtzman_repetition": flag, "seq-rep-4": None if len(ids) - eos < 4 else 0.0}


def test_summary_row_pools_perplexity_and_strips_eos():
    records = [_record("s", "raw", [1, 2, 3, 0], True, -4.0, "a b c", True),
               _record("s", "raw", [1, 2, 1, 2], False, -8.0, "a b a b")]
    row = summary.summary_row("s", "raw", records)
    assert row["repetition_pct"] == 50.0
    assert row["eos_rate"] == 0.5
    assert row["mean_length"] == 3.5                       # EOS not counted as content
    assert row["mean_logprob"] == pytest.approx(-12.0 / 8)  # EOS scored: Σ logp / Σ tokens
    assert row["perplexity"] == pytest.approx(math.exp(1.5))
    # bigrams: (1,2),(2,3) | (1,2),(2,1),(1,2): 5 in all, 3 distinct over the corpus
    assert row["distinct_2"] == pytest.approx(3 / 5)
    assert row["rep_2"] == pytest.approx(100 * (1 - (2 + 2) / 5))


def test_self_bleu_of_identical_and_disjoint_texts():
    same = "the river runs past the old mill and into the sea"
    assert summary.self_bleu4([same, same, same]) == pytest.approx(1.0)
    assert summary.self_bleu4(["alpha beta gamma delta", "one two three four"]) < 0.05
    assert summary.self_bleu4(["only one"]) is None


def _rows(values: dict[str, float]) -> list[dict]:
    return [{"strategy": label, "subset": "raw", "repetition_pct": v, "perplexity": 2.0,
             "distinct_2": 0.5, "eos_rate": 0.0} for label, v in values.items()]


def test_comparison_prose_follows_the_numbers():
    holds = "\n".join(report.comparison_lines(_rows({"greedy": 70.0, "beam-8": 30.0,
                                                     "top-p 0.95": 1.0})))
    assert "ordering (greedy > beam > nucleus) holds here" in holds
    assert "ours (greedy) 70.0 % vs Holtzman et al. 73.66 %" in holds and "close to theirs" in holds
    broken = "\n".join(report.comparison_lines(_rows({"greedy": 10.0, "beam-4": 40.0,
                                                      "top-p 0.95": 0.0})))
    assert "does not hold here: greedy (10.0 %) is below beam-4 (40.0 %)" in broken
    assert "lower than theirs" in broken and "higher than theirs" in broken


def test_quick_settings_and_the_shipped_prompt_set():
    quick = DegenerationSettings.quick_settings()
    assert quick.quick and quick.per_category == 1 and quick.max_new_tokens < 200
    prompts = load_prompt_set("open_ended")
    raw = [p for p in prompts.prompts if p.mode == "raw"]
    chat = [p for p in prompts.prompts if p.mode == "chat"]
    assert len(raw) >= 50 and len(chat) >= 20
    assert {p.category for p in raw} == {"news", "story", "encyclopedic"}
    assert len(prompts.subset(per_category=1)) == 4
    assert len(load_prompt_set("reinforcement")) >= 10


def test_declab_experiment_runs_the_registered_study(tiny, tmp_path, monkeypatch, capsys):
    import app.cli as cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", list(dict.fromkeys(cli.COMMAND_MODULES + ["app.cli_experiment"])))
    monkeypatch.setattr(study, "load_model", lambda *a, **k: tiny)
    code = cli.main(["experiment", "degeneration", "--quick", "--max-new-tokens", "4",
                     "--strategies", "greedy;top-p 0.95", "--root", str(tmp_path), "--no-progress"])
    assert code == 0
    path = latest_run("degeneration", tmp_path)
    assert path is not None
    assert len(load_results(path / "results.jsonl")) == 2 * 4  # quick: one prompt per category
    status = json.loads((path / "status.json").read_text())
    assert status["params"]["settings"]["quick"] is True
    code = cli.main(["experiment", "degeneration", "--strategies", "nope", "--root", str(tmp_path)])
    assert code == 2 and "unknown study strategy 'nope'" in capsys.readouterr().err


def test_chat_prompts_share_raw_batches_only_when_their_ids_are_identical(tiny, monkeypatch):
    chosen, _ = resolve_strategies(DecodingConfig(max_new_tokens=4), ["greedy", "beam-4"])
    chat = PROMPTS.prompts[2]
    text = study.as_raw_text(tiny, chat)
    assert text.startswith("<|im_start|>user\n") and tiny.encode(text, chat=False) == \
        tiny.encode(chat.text, chat=True)
    plan = study.generation_plan(tiny, chosen, PROMPTS, batch_rows=8)
    # greedy: one mixed batch of 3; beam-4: 2 prompts (8 rows) then 1
    assert [(b.chat, [(s.label, p.id) for s, p, _ in b.items]) for b in plan] == [
        (False, [("greedy", "news-x"), ("greedy", "story-x"), ("greedy", "chat-x")]),
        (False, [("beam-4", "news-x"), ("beam-4", "story-x")]),
        (False, [("beam-4", "chat-x")])]
    assert [b.rows for b in plan] == [3, 8, 4]
    monkeypatch.setattr(study, "as_raw_text", lambda lm, p: None if p.chat else p.text)
    plan = study.generation_plan(tiny, chosen[:1], PROMPTS, batch_rows=8)
    assert [(b.chat, [p.id for _, p, _ in b.items]) for b in plan] == [
        (False, ["news-x", "story-x"]), (True, ["chat-x"])]


def test_greedy_and_sampling_strategies_share_batches_prompt_by_prompt(tiny):
    labels = ["greedy", "top-p 0.9", "greedy + DRY 0.8", "beam-4"]
    chosen, _ = resolve_strategies(DecodingConfig(max_new_tokens=4), labels)
    plan = study.generation_plan(tiny, chosen, PROMPTS, batch_rows=4)
    assert [[(s.label, p.id) for s, p, _ in b.items] for b in plan] == [
        [("greedy", "news-x"), ("top-p 0.9", "news-x"), ("greedy + DRY 0.8", "news-x"),
         ("greedy", "story-x")],
        [("top-p 0.9", "story-x"), ("greedy + DRY 0.8", "story-x"), ("greedy", "chat-x"),
         ("top-p 0.9", "chat-x")],
        [("greedy + DRY 0.8", "chat-x")],
        [("beam-4", "news-x")], [("beam-4", "story-x")], [("beam-4", "chat-x")]]
    # every item gets the tokens its strategy gives the prompt alone
    batch = plan[0]
    configs = [study.item_config(s, p.id) for s, p, _ in batch.items]
    sequences = study.generate_group(tiny, [(c, t) for c, (_, _, t) in zip(configs, batch.items)], batch.chat)
    for config, (strategy, prompt, text), seq in zip(configs, batch.items, sequences):
        alone = generate(tiny, text, config, chat=False, trace=False).sequences[0]
        assert seq.token_ids == alone.token_ids
    # sampling strategies draw from each prompt's own seed; greedy ones keep theirs
    items = [item for b in plan for item in b.items]
    top_p = [study.item_config(s, p.id).seed for s, p, _ in items if s.label == "top-p 0.9"]
    assert len(top_p) == 3 and len(set(top_p)) == 3
    assert all(study.item_config(s, p.id).seed == 0 for s, p, _ in items if s.label == "greedy")


def test_identical_strategies_are_grouped():
    def rec(strategy, prompt, ids):
        return {"strategy": strategy, "prompt_id": prompt, "token_ids": ids}

    records = [rec("a", "p", [1, 2]), rec("a", "q", [3]), rec("b", "p", [1, 2]), rec("b", "q", [3]),
               rec("c", "p", [1, 2]), rec("c", "q", [4])]
    assert summary.identical_strategies(records) == [["a", "b"]]
