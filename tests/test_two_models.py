"""Two distributions per step (decoding/guide.py): DeRa realignment, contrastive decoding and
classifier-free guidance, on hand-built tensors and on the tiny model with a tiny LoRA adapter."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.generation.logits_process import UnbatchedClassifierFreeGuidanceLogitsProcessor

from decoding import ConfigError, DecodingConfig, Generation, generate, generate_ids
from decoding.guide import contrastive, guidance, realign
from decoding.lanes import Request
from decoding.loop import decode_mixed
from tests.tiny import tiny_lm, tiny_lora_lm

PROMPTS = ["The cat sat", "A unicorn lived in", "What is the capital", "Beam search keeps"]


@pytest.fixture(scope="module")
def pair():
    """(the base, the same base with a random LoRA adapter that changes its greedy answers)."""
    return tiny_lm(), tiny_lora_lm()


def tokens(lm, prompt, **knobs):
    config = DecodingConfig(max_new_tokens=12, **knobs)
    return generate(lm, prompt, config, chat=False, trace=False).sequences[0].token_ids


# --------------------------------------------------------------------------- hand-built tensors

def test_realign_is_the_base_at_0_the_adapter_at_1_and_extrapolates():
    base = torch.tensor([[0.3, -1.2, 2.5, 0.0]])
    adapter = torch.tensor([[1.1, 0.4, -0.7, 3.3]])
    assert torch.equal(realign(adapter, base, 0.0), base)
    assert torch.equal(realign(adapter, base, 1.0), adapter)
    assert torch.allclose(realign(adapter, base, 0.5), (base + adapter) / 2)
    assert torch.allclose(realign(adapter, base, 2.0), base + 2 * (adapter - base))
    with pytest.raises(ConfigError, match="realign=-0.5"):
        realign(adapter, base, -0.5)


def test_contrastive_scores_the_plausible_tokens_only():
    expert = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    amateur = torch.log(torch.tensor([[0.6, 0.1, 0.2, 0.1]]))
    out = contrastive(expert, amateur, alpha=0.5, amateur="base")
    # V_head = {p >= 0.5 * 0.5}: tokens 0 and 1; score log(p_e / p_a)
    assert torch.isinf(out[0, 2:]).all()
    assert out[0, 0].item() == pytest.approx(math.log(0.5 / 0.6), abs=1e-6)
    assert out[0, 1].item() == pytest.approx(math.log(0.3 / 0.1), abs=1e-6)
    assert int(out.argmax()) == 1            # the amateur's favourite loses to what the expert adds
    # the other way round: the base is the expert
    swapped = contrastive(amateur, expert, alpha=0.5, amateur="adapter")
    assert torch.equal(swapped, out)
    only_top = contrastive(expert, amateur, alpha=1.0)
    assert torch.isfinite(only_top).sum() == 1 and int(only_top.argmax()) == 0
    with pytest.raises(ConfigError, match="contrastive_alpha=0"):
        contrastive(expert, amateur, alpha=0)


class _Out(dict):
    @property
    def logits(self):
        return self["logits"]


def test_guidance_is_transformers_unbatched_cfg_processor():
    torch.manual_seed(0)
    cond, uncond = torch.randn(2, 20), torch.randn(2, 20)

    def wrapped(ids, **kwargs):        # transformers' processor calls model(ids, ...).logits
        return _Out(logits=uncond[:, None, :].expand(-1, ids.shape[1], -1))

    for scale in (0.5, 1.5, 3.0):
        processor = UnbatchedClassifierFreeGuidanceLogitsProcessor(scale, wrapped)
        expected = processor(torch.zeros(2, 3, dtype=torch.long), cond.clone())
        assert torch.equal(guidance(cond, uncond, scale), expected)
    assert torch.equal(guidance(cond, uncond, 1.0), torch.log_softmax(cond, dim=-1))


# --------------------------------------------------------------------------- config

@pytest.mark.parametrize("knobs, message", [
    (dict(realign=-1.0), "realign=-1.0 is out of range"),
    (dict(contrastive_alpha=1.5), "contrastive_alpha=1.5 is out of range"),
    (dict(amateur="teacher"), "amateur='teacher' is out of range; allowed: base | adapter"),
    (dict(guidance_scale=-2.0), "guidance_scale=-2.0 is out of range"),
    (dict(negative_prompt="bad"), "negative_prompt='bad' is out of range"),
    (dict(guidance_scale=2.0, negative_prompt=" "), "negative_prompt=' ' is out of range"),
    (dict(realign=0.5, contrastive_alpha=0.1), "at most one two-model knob"),
    (dict(realign=0.5, strategy="beam"), "strategy='beam' is out of range"),
    (dict(guidance_scale=2.0, strategy="contrastive"), "strategy='contrastive' is out of range"),
])
def test_two_model_knobs_are_validated(knobs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        DecodingConfig(**knobs)


def test_realign_and_contrastive_need_an_adapter(tiny):
    for knobs in (dict(realign=0.5), dict(contrastive_alpha=0.1)):
        with pytest.raises(ConfigError, match="needs an adapter.*--adapter"):
            tokens(tiny, "The cat sat", **knobs)


def test_a_batch_needs_one_second_distribution(pair):
    _, adapted = pair
    ids = adapted.encode("The cat sat", chat=False)
    with pytest.raises(ConfigError, match="one second distribution"):
        decode_mixed(adapted, [Request(ids, DecodingConfig(max_new_tokens=4, realign=0.5), 0),
                               Request(ids, DecodingConfig(max_new_tokens=4, guidance_scale=2.0), 0)])


# --------------------------------------------------------------------------- the tiny model

def test_realign_0_is_the_base_and_1_the_adapter_token_for_token(pair):
    base, adapted = pair
    differ = 0
    for prompt in PROMPTS:
        base_tokens, adapter_tokens = tokens(base, prompt), tokens(adapted, prompt)
        differ += base_tokens != adapter_tokens
        assert tokens(adapted, prompt, realign=0.0) == base_tokens
        assert tokens(adapted, prompt, realign=1.0) == adapter_tokens
    assert differ >= 2          # the adapter changes answers, so the two checks are not the same


def test_contrastive_alpha_1_is_greedy_on_the_expert(pair):
    base, adapted = pair
    for prompt in PROMPTS:
        assert tokens(adapted, prompt, contrastive_alpha=1.0) == tokens(adapted, prompt)
        assert tokens(adapted, prompt, contrastive_alpha=1.0, amateur="adapter") == tokens(base, prompt)


def test_contrastive_decoding_changes_answers_at_small_alpha(pair):
    _, adapted = pair
    assert any(tokens(adapted, p, contrastive_alpha=0.01) != tokens(adapted, p) for p in PROMPTS)


def test_trace_records_both_distributions_and_their_combination(pair):
    base, adapted = pair
    prompt_ids = adapted.encode("A unicorn lived in", chat=False)
    gen = generate_ids(adapted, prompt_ids, DecodingConfig(max_new_tokens=3, realign=0.5))
    step = gen.sequences[0].steps[0]
    assert gen.chain == ["raw", "realign"] and step.second == "base"
    with torch.inference_mode():
        adapter_logits = adapted.model(torch.tensor([prompt_ids])).logits[0, -1]
        base_logits = base.model(torch.tensor([prompt_ids])).logits[0, -1]
    p_adapter = torch.softmax(adapter_logits, -1)
    p_base = torch.softmax(base_logits, -1)
    p_mixed = torch.softmax(base_logits + 0.5 * (adapter_logits - base_logits), -1)
    assert len(step.candidates) >= 20
    for c in step.candidates:
        assert c.probs[0] == pytest.approx(float(p_adapter[c.token_id]), abs=1e-5)
        assert c.second_prob == pytest.approx(float(p_base[c.token_id]), abs=1e-5)
        assert c.probs[1] == pytest.approx(float(p_mixed[c.token_id]), abs=1e-5)
    assert step.token_id == int(p_mixed.argmax())
    again = Generation.from_json(gen.to_json())
    assert again.sequences[0].steps[0].second == "base"
    assert again.sequences[0].steps[0].candidates[0].second_prob == step.candidates[0].second_prob
    plain = generate_ids(adapted, prompt_ids, DecodingConfig(max_new_tokens=3)).sequences[0].steps[0]
    assert plain.second == "" and all(c.second_prob is None for c in plain.candidates)


def test_seeded_sampling_with_realign_is_reproducible(pair):
    _, adapted = pair
    config = dict(strategy="sample", seed=3, realign=1.5, top_p=0.9)
    assert tokens(adapted, "The cat sat", **config) == tokens(adapted, "The cat sat", **config)


def _count_forwards(lm, config, prompt="The cat sat"):
    calls = []
    handle = lm.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        from decoding import fastpath
        enabled = fastpath.set_enabled(False)        # every forward through the module
        try:
            generate(lm, prompt, config, chat=False, trace=False)
        finally:
            fastpath.set_enabled(enabled)
    finally:
        handle.remove()
    return len(calls)


def test_second_forward_only_when_a_two_model_knob_is_on(tiny):
    plain = _count_forwards(tiny, DecodingConfig(max_new_tokens=6, ignore_eos=True))
    assert _count_forwards(tiny, DecodingConfig(max_new_tokens=6, ignore_eos=True,
                                                guidance_scale=1.0)) == plain
    assert _count_forwards(tiny, DecodingConfig(max_new_tokens=6, ignore_eos=True,
                                                guidance_scale=2.0)) == 2 * plain


def test_guidance_scale_1_changes_nothing(tiny):
    for prompt in PROMPTS:
        ids = tiny.encode(prompt, chat=False)
        plain = generate_ids(tiny, ids, DecodingConfig(max_new_tokens=10))
        one = generate_ids(tiny, ids, DecodingConfig(max_new_tokens=10, guidance_scale=1.0))
        assert one.chain == plain.chain == ["raw"]
        assert one.sequences[0].token_ids == plain.sequences[0].token_ids
        assert ([c.probs for c in one.sequences[0].steps[2].candidates]
                == [c.probs for c in plain.sequences[0].steps[2].candidates])


@pytest.mark.parametrize("scale, negative", [(1.5, None), (10.0, "Sampling draws"),
                                             (0.0, "Sampling draws")])
def test_guidance_matches_transformers_generate(tiny, scale, negative):
    for prompt in PROMPTS:
        ids = tiny.encode(prompt, chat=False)
        ours = generate_ids(tiny, ids, DecodingConfig(max_new_tokens=12, guidance_scale=scale,
                                                      negative_prompt=negative), trace=False)
        kw = {}
        if negative:
            kw["negative_prompt_ids"] = torch.tensor([tiny.encode(negative, chat=False)])
        out = tiny.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                                  guidance_scale=scale, **kw)
        theirs = out[0, len(ids):].tolist()
        eos = set(tiny.eos_token_ids)
        cut = next((i for i, t in enumerate(theirs) if t in eos), None)
        theirs = theirs if cut is None else theirs[:cut + 1]
        assert ours.sequences[0].token_ids == theirs
    if negative:    # the tiny model's sharp logits need a strong push to change an argmax
        assert any(tokens(tiny, p, guidance_scale=scale, negative_prompt=negative)
                   != tokens(tiny, p) for p in PROMPTS)


# --------------------------------------------------------------------------- the embedded model

@pytest.mark.embedded
@pytest.mark.parametrize("scale, negative, chat", [
    (1.5, None, True), (3.0, None, False), (2.0, "Write a rude answer.", True)])
def test_guidance_matches_transformers_generate_on_the_embedded_model(embedded, scale, negative,
                                                                       chat):
    prompt = "Should anime be adapted into live-action films?" if chat else \
        "A unicorn lived in a remote valley"
    ids = embedded.encode(prompt, chat=chat)
    config = DecodingConfig(max_new_tokens=20, guidance_scale=scale, negative_prompt=negative)
    ours = generate_ids(embedded, ids, config, trace=False).sequences[0].token_ids
    kw = {"negative_prompt_ids": torch.tensor([embedded.encode(negative, chat=False)])} if negative else {}
    with torch.inference_mode():
        out = embedded.model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                                      top_k=None, top_p=None, temperature=None,
                                      guidance_scale=scale, **kw)
    theirs = out[0, len(ids):].tolist()
    eos = set(embedded.eos_token_ids)
    cut = next((i for i, t in enumerate(theirs) if t in eos), None)
    assert ours == (theirs if cut is None else theirs[:cut + 1])
    plain = generate_ids(embedded, ids, DecodingConfig(max_new_tokens=20), trace=False)
    assert ours != plain.sequences[0].token_ids      # guidance changed the answer


def test_whatif_reruns_the_sampling_stages_after_the_combination(pair):
    from decoding.whatif import whatif_config, whatif_step

    _, adapted = pair
    gen = generate(adapted, "The cat sat", DecodingConfig(strategy="sample", seed=2, realign=1.5,
                                                          top_p=0.8, max_new_tokens=4), chat=False)
    for step in gen.sequences[0].steps:
        assert step.stages == ["raw", "realign", "top_p"]
        again = whatif_step(step, whatif_config(gen.config))
        assert again.stages[0] == "after realign" and again.extra["exact"]
        assert [c.probs[-1] for c in again.candidates] == pytest.approx(
            [c.probs[-1] for c in step.candidates], abs=1e-6)


@pytest.mark.embedded
def test_realign_0_and_1_on_the_embedded_model_with_a_lora(embedded):
    """SmolLM2 with a random LoRA (a copy: the shared fixture stays untouched): realign=0 decodes
    the base token for token (the adapter switched off, through PEFT, against the fast path),
    realign=1 the adapter."""
    import copy
    import dataclasses

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft = get_peft_model(copy.deepcopy(embedded.model), LoraConfig(
        r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
        init_lora_weights=False))
    peft.eval()
    adapted = dataclasses.replace(embedded, model=peft, adapter="random-lora")
    prompt = "Should anime be adapted into live-action films?"
    base_tokens = tokens(embedded, prompt)
    adapter_tokens = tokens(adapted, prompt)
    assert base_tokens != adapter_tokens
    assert tokens(adapted, prompt, realign=0.0) == base_tokens
    assert tokens(adapted, prompt, realign=1.0) == adapter_tokens
