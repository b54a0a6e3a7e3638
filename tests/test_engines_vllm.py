"""vLLM (the separate environment, ``make engines``) against our loop on the embedded model.

Skipped with the reason when ``.venv-vllm`` is absent; ``make test-engines`` builds it and runs
these. An engine start costs about a minute on 2 CPU cores, so the whole module runs two engine
starts (one per ``logprobs_mode``, vLLM's engine-wide setting) and every test reads them.

Tolerance: log-probabilities agree within ``LOGPROB_TOL`` = 1e-3 nats per token (float32 on
both sides; vLLM's CPU kernels and ours sum the matmuls in other orders, measured differences
are around 1e-5).
"""

from __future__ import annotations

import copy
import math

import pytest

from decoding import DecodingConfig, from_model
from decoding.engines import VllmSettings, decode_vllm, engine_available
from decoding.engines.vllm_engine import chosen_logprobs
from decoding.loop import generate_ids

AVAILABLE, WHY = engine_available()
pytestmark = [pytest.mark.embedded, pytest.mark.skipif(not AVAILABLE, reason=WHY)]

LOGPROB_TOL = 1e-3
TOP = 5
RAW_PROMPTS = ["The lighthouse keeper opened the bottle and", "Once upon a time, in a small village,",
               "The three most important rules of cooking are"]
CHAT_PROMPTS = ["What is the capital of France?", "Give me two tips for sleeping better.",
                "Write a short poem about rain."]
LORA_PROMPTS = ["The lighthouse keeper opened the bottle and", "Should anime be adapted into films?"]
GREEDY = DecodingConfig(max_new_tokens=24)
PENALISED = DecodingConfig(max_new_tokens=24, repetition_penalty=1.3)
# one step: its distribution depends on the prompt alone, so ours and vLLM's are comparable
# whichever token each engine then draws
SAMPLED = DecodingConfig(strategy="sample", temperature=0.7, top_k=20, top_p=0.9,
                         repetition_penalty=1.2, max_new_tokens=1, seed=3)


def ids_of(lm, prompts, chat):
    return [lm.encode(p, chat=chat) for p in prompts]


@pytest.fixture(scope="module")
def lora(embedded, tmp_path_factory):
    """(a random LoRA saved as a PEFT directory, our LM with that LoRA merged into the weights)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft = get_peft_model(copy.deepcopy(embedded.model), LoraConfig(
        r=8, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
        init_lora_weights=False))
    path = tmp_path_factory.mktemp("lora") / "random-lora"
    peft.save_pretrained(str(path))
    merged = peft.merge_and_unload()
    return str(path), from_model(merged, embedded.tokenizer, name="merged-lora")


@pytest.fixture(scope="module")
def raw_run(embedded, lora):
    """One engine (raw_logprobs, LoRA enabled): greedy on raw and chat prompts, greedy with the
    adapter."""
    prompts = (ids_of(embedded, RAW_PROMPTS, False) + ids_of(embedded, CHAT_PROMPTS, True)
               + ids_of(embedded, LORA_PROMPTS, False))
    adapters = [None] * (len(RAW_PROMPTS) + len(CHAT_PROMPTS)) + [lora[0]] * len(LORA_PROMPTS)
    out = decode_vllm(embedded, prompts, [GREEDY] * len(prompts), adapters=adapters,
                      settings=VllmSettings(logprobs=TOP, logprobs_mode="raw_logprobs"))
    return prompts, [seqs[0] for seqs in out]


@pytest.fixture(scope="module")
def processed_run(embedded):
    """One engine (processed_logprobs): greedy with a repetition penalty, one sampled step."""
    prompts = ids_of(embedded, RAW_PROMPTS[:2], False) + ids_of(embedded, CHAT_PROMPTS, True)
    configs = [PENALISED] * 2 + [SAMPLED] * len(CHAT_PROMPTS)
    out = decode_vllm(embedded, prompts, configs,
                      settings=VllmSettings(logprobs=TOP, logprobs_mode="processed_logprobs"))
    return prompts, configs, [seqs[0] for seqs in out]


def ours(lm, ids, config, trace=True):
    return generate_ids(lm, ids, config, trace=trace, trace_top=20).sequences[0]


def test_greedy_is_token_identical_to_our_loop_raw_and_chat(embedded, raw_run):
    prompts, seqs = raw_run
    n = len(RAW_PROMPTS) + len(CHAT_PROMPTS)
    for ids, seq in zip(prompts[:n], seqs[:n]):
        assert len(seq.token_ids) > 0
        assert seq.token_ids == ours(embedded, ids, GREEDY, trace=False).token_ids


def test_raw_logprobs_match_our_traces_raw_stage(embedded, raw_run):
    """vLLM's raw_logprobs (the model's own softmax, before any processing) against our trace's
    ``raw`` stage: the chosen token's and each of vLLM's top-5, at every step."""
    prompts, seqs = raw_run
    for ids, seq in list(zip(prompts, seqs))[:len(RAW_PROMPTS) + len(CHAT_PROMPTS)]:
        steps = ours(embedded, ids, GREEDY).steps
        for step, vllm_lp, top in zip(steps, chosen_logprobs(seq.__dict__), seq.logprobs):
            assert vllm_lp == pytest.approx(step.logprob_raw, abs=LOGPROB_TOL)
            ours_raw = {c.token_id: c.probs[0] for c in step.candidates}
            assert top[0][0] == step.candidates[0].token_id     # the same argmax
            for token, lp, _ in top[:TOP]:
                assert lp == pytest.approx(math.log(ours_raw[token]), abs=LOGPROB_TOL)
        assert seq.sum_logprob == pytest.approx(sum(s.logprob_raw for s in steps),
                                                abs=LOGPROB_TOL * len(steps))


def test_processed_logprobs_match_our_traces_last_stage(embedded, processed_run):
    """processed_logprobs (after penalties, temperature, min-p, top-k, top-p) against our last
    stage: along greedy paths with a repetition penalty (which also must stay token-identical),
    and over the first sampled step's top tokens (truncated ones: -inf in vLLM, 0 in ours)."""
    prompts, configs, seqs = processed_run
    moved = 0
    for ids, config, seq in zip(prompts, configs, seqs):
        mine = ours(embedded, ids, config)
        if config is PENALISED:
            assert seq.token_ids == mine.token_ids
            for step, vllm_lp in zip(mine.steps, chosen_logprobs(seq.__dict__)):
                assert vllm_lp == pytest.approx(math.log(step.prob_final), abs=LOGPROB_TOL)
                moved += abs(math.log(step.prob_final) - step.logprob_raw) > 10 * LOGPROB_TOL
            continue
        raw = {c.token_id: c.probs[0] for c in mine.steps[0].candidates}
        final = {c.token_id: c.probs[-1] for c in mine.steps[0].candidates}
        for token, lp, _ in seq.logprobs[0][:TOP]:
            if lp == -math.inf:
                assert final.get(token, 0.0) == 0.0
            else:
                assert lp == pytest.approx(math.log(final[token]), abs=LOGPROB_TOL)
                moved += abs(lp - math.log(raw[token])) > 10 * LOGPROB_TOL
    assert moved > 0       # processed differs from raw here, so the mode is really checked


def test_lora_request_matches_our_merged_adapter(embedded, raw_run, lora):
    """The adapter served as a LoRARequest on the base weights decodes greedily like our loop on
    the base with the adapter merged in, and unlike the base."""
    prompts, seqs = raw_run
    _, merged = lora
    first = len(RAW_PROMPTS) + len(CHAT_PROMPTS)
    differs = 0
    for ids, seq in zip(prompts[first:], seqs[first:]):
        assert seq.token_ids == ours(merged, ids, GREEDY, trace=False).token_ids
        differs += seq.token_ids != ours(embedded, ids, GREEDY, trace=False).token_ids
    assert differs > 0


def test_degeneration_study_on_vllm(embedded, tmp_path):
    """``--engine vllm``: one engine run for the plan; beam is skipped with vLLM's reason;
    greedy rows are our loop's tokens, with their raw log-probabilities (the study's
    perplexity)."""
    import json

    from decoding import generate
    from decoding.prompts import Prompt, PromptSet
    from experiments.degeneration import DegenerationSettings, load_results, run_degeneration

    prompts = PromptSet("mini", "test prompts", [
        Prompt("news-x", "The council voted on Tuesday to", "raw", "news"),
        Prompt("chat-x", "Why is the sky blue?", "chat", "chat")])
    settings = DegenerationSettings(max_new_tokens=12, strategies=("greedy", "beam-4", "top-p 0.95"),
                                    reinforcement_repeats=2, engine="vllm")
    path = run_degeneration(embedded, prompts, ["The cat sat on the mat."], settings,
                            root=tmp_path, progress=False, log=None)
    params = json.loads((path / "status.json").read_text())["params"]
    assert params["engine"] == "vllm"
    assert [s["label"] for s in params["skipped"]] == ["beam-4"]
    assert "cannot run on --engine vllm" in params["skipped"][0]["reason"]
    records = load_results(path / "results.jsonl")
    assert {(r["strategy"], r["prompt_id"]) for r in records} == {
        (s, p.id) for s in ("greedy", "top-p 0.95") for p in prompts.prompts}
    for r in records:
        if r["strategy"] == "greedy":
            alone = generate(embedded, r["prompt"], DecodingConfig(max_new_tokens=12),
                             chat=r["mode"] == "chat", trace=False)
            assert r["token_ids"] == alone.token_ids
            assert r["sum_logprob"] == pytest.approx(alone.sequences[0].sum_logprob,
                                                     abs=LOGPROB_TOL * len(alone.token_ids))
        assert 0 < len(r["token_ids"]) <= 12


def test_evaluate_answers_on_vllm_match_our_loop(embedded, lora):
    """``declab evaluate --engine vllm``'s generation step: the base and an adapter (a
    LoRARequest, served apart from the base's requests) answer greedily in one engine run,
    token for token as our loop answers with the adapter merged (``load_subject``)."""
    from alignment.evaluate import Subject, generate_answers, vllm_answers
    from decoding.specs import parse_specs

    items = [("q1", "Should homework be banned?"), ("q2", "Is remote work better than office work?")]
    specs = parse_specs("greedy", DecodingConfig(max_new_tokens=16))
    subjects = [Subject("base", None), Subject("random-lora", lora[0])]
    answers = vllm_answers(embedded, subjects, items, specs, samples=1, chat=True)
    ours_base = generate_answers(embedded, "base", items, specs, 1, chat=True)
    ours_lora = generate_answers(lora[1], "random-lora", items, specs, 1, chat=True)
    assert [s.token_ids for s in answers["base"]] == [r.token_ids for r in ours_base]
    assert [s.token_ids for s in answers["random-lora"]] == [r.token_ids for r in ours_lora]
    assert [r.token_ids for r in ours_base] != [r.token_ids for r in ours_lora]
