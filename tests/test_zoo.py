"""The samplers added on the stage registry: top-H (transformers), p-less, dynamic temperature and
adaptive-p (llama.cpp). Hand-computed values on small tensors, top-H token-identical to
transformers' generate(), adaptive-p's per-row state through the loop; plus the registry itself
and every processor refusing a bad parameter when called directly."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from transformers.generation.logits_process import TopHLogitsWarper

from decoding import ConfigError, DecodingConfig, generate, generate_mixed
from decoding import processors as P
from decoding import samplers as S
from decoding.chain import build_chain, chain_names
from decoding.diverse_beam import hamming_diversity
from decoding.mirostat import mirostat_v2_filter, update_mu
from decoding.stages import KNOBS, PROCESSOR_ORDERS, REGISTRY, SPECS, STAGE_NAMES
from decoding.whatif import whatif_config, whatif_step


def logp(values: list[float]) -> torch.Tensor:
    p = torch.tensor(values, dtype=torch.float64)
    return torch.log(p / p.sum()).to(torch.float32)[None, :]


def kept(scores: torch.Tensor) -> list[int]:
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


# ------------------------------------------------------------------ top-H

def test_top_h_by_hand():
    # p = (.5, .25, .15, .1): entropy terms −p ln p = .3466, .3466, .2846, .2303 (H = 1.2080);
    # cumulative .3466, .6931, .9777, 1.2080; kept while ≤ top_h · H
    scores = logp([0.5, 0.25, 0.15, 0.1])
    assert kept(P.top_h_filter(scores, 0.5)) == [0]            # τ = .6040
    assert kept(P.top_h_filter(scores, 0.6)) == [0, 1]         # τ = .7248
    assert kept(P.top_h_filter(scores, 0.8)) == [0, 1]         # τ = .9664 < .9777
    assert kept(P.top_h_filter(scores, 0.85)) == [0, 1, 2]     # τ = 1.0268
    assert kept(P.top_h_filter(scores, 0.01)) == [0]           # the top token always stays


def test_top_h_is_transformers_top_h_bit_for_bit():
    torch.manual_seed(0)
    scores = torch.randn(3, 300) * 3
    scores[1, :250] = -math.inf                                # fewer than 100 tokens left
    for top_h in (0.2, 0.5, 0.9, 1.0):
        ours = P.top_h_filter(scores, top_h)
        theirs = TopHLogitsWarper(top_h)(torch.zeros((3, 1), dtype=torch.long), scores)
        assert torch.equal(ours, theirs)


def reference_top_h(lm, prompt_ids, config):
    torch.manual_seed(config.seed)
    out = lm.model.generate(torch.tensor([prompt_ids]), do_sample=True, top_k=0,
                            temperature=config.temperature, top_h=config.top_h,
                            max_new_tokens=config.max_new_tokens,
                            num_return_sequences=config.num_return_sequences)
    eos = set(lm.eos_token_ids)
    rows = []
    for row in out[:, len(prompt_ids):].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), None)
        rows.append(row if cut is None else row[:cut + 1])
    return rows


@pytest.mark.parametrize("top_h,temperature,seed", [(0.4, 1.0, 0), (0.8, 0.7, 3), (1.0, 1.3, 5)])
def test_top_h_token_identical_to_generate_on_tiny_model(tiny, top_h, temperature, seed):
    config = DecodingConfig(strategy="sample", top_h=top_h, temperature=temperature, seed=seed,
                            max_new_tokens=12, num_return_sequences=2)
    ids = tiny.encode("The cat sat")
    gen = generate(tiny, "The cat sat", config)
    assert [s.token_ids for s in gen.sequences] == reference_top_h(tiny, ids, config)
    assert gen.chain[1:] == (["temperature"] if temperature != 1.0 else []) + ["top_h"]


@pytest.mark.embedded
@pytest.mark.parametrize("top_h,seed", [(0.4, 0), (0.9, 1)])
def test_top_h_token_identical_to_generate_on_the_embedded_model(embedded, top_h, seed):
    config = DecodingConfig(strategy="sample", top_h=top_h, seed=seed, max_new_tokens=16)
    prompt = "Write one sentence about the sea."
    gen = generate(embedded, prompt, config)
    assert [gen.token_ids] == reference_top_h(embedded, embedded.encode(prompt), config)


# ------------------------------------------------------------------ p-less

def test_p_less_keeps_tokens_at_least_as_likely_as_the_collision_probability():
    assert kept(S.p_less_filter(logp([0.5, 0.25, 0.125, 0.125]))) == [0]      # Σp² = 0.34375
    assert kept(S.p_less_filter(logp([0.4, 0.35, 0.15, 0.1]))) == [0, 1]      # Σp² = 0.315
    assert kept(S.p_less_filter(torch.zeros(1, 4))) == [0, 1, 2, 3]           # uniform: p = Σp²
    assert kept(S.p_less_filter(logp([0.5, 0.25, 0.15, 0.1]))) == [0]         # Σp² = 0.345
    assert kept(S.p_less_filter(logp([0.5, 0.25, 0.15, 0.1]), 3)) == [0, 1, 2]


def test_p_less_in_the_chain_and_its_order():
    names = chain_names(build_chain(DecodingConfig(strategy="sample", p_less=True, top_k=40), []))
    assert names == ["raw", "top_k", "p_less"]
    assert chain_names(build_chain(DecodingConfig(strategy="greedy", p_less=True), [])) == ["raw"]


# ------------------------------------------------------------------ dynamic temperature

def test_dynatemp_range_zero_is_plain_temperature():
    scores = torch.randn(2, 50)
    assert torch.equal(S.dynamic_temperature(scores, 0.7, 0.0), P.temperature(scores, 0.7))
    c = DecodingConfig(strategy="sample", temperature=0.7, dynatemp_range=0.0)
    assert chain_names(build_chain(c, [])) == ["raw", "temperature"]


def test_dynatemp_by_hand():
    scores = logp([0.9, 0.1])
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)        # normalised entropy
    for exponent in (1.0, 2.0):
        t = 0.5 + (1.5 - 0.5) * h ** exponent                              # T=1, range 0.5
        out = S.dynamic_temperature(scores, 1.0, 0.5, exponent)
        assert out[0].tolist() == pytest.approx((scores[0] / t).tolist(), rel=1e-5)
    # a uniform distribution is as uncertain as it gets: T + range
    assert S.dynamic_temperature(torch.zeros(1, 3), 1.0, 0.5)[0].tolist() == [0.0, 0.0, 0.0]
    assert S.dynamic_temperature(torch.ones(1, 3), 1.0, 0.5)[0].tolist() == \
        pytest.approx([1 / 1.5] * 3)
    # removed tokens do not count in N; one token left: untouched
    three = torch.cat([scores, torch.tensor([[-math.inf]])], dim=1)
    assert S.dynamic_temperature(three, 1.0, 0.5)[0, :2].tolist() == \
        pytest.approx(S.dynamic_temperature(scores, 1.0, 0.5)[0].tolist())
    one = torch.tensor([[2.0, -math.inf, -math.inf]])
    assert torch.equal(S.dynamic_temperature(one, 1.0, 0.5), one)


def test_dynatemp_takes_temperatures_slot_in_both_orders():
    c = DecodingConfig(strategy="sample", temperature=0.8, dynatemp_range=0.3, top_k=20)
    assert chain_names(build_chain(c, []))[1:] == ["dynatemp", "top_k"]
    assert chain_names(build_chain(c.replace(processor_order="llama.cpp"), []))[1:] == \
        ["top_k", "dynatemp"]
    assert repr(build_chain(c, [])[0]) == \
        "dynatemp(temperature=0.8, dynatemp_range=0.3, dynatemp_exponent=1.0)"


# ------------------------------------------------------------------ adaptive-p

def test_adaptive_p_transform_and_update_by_hand():
    scores = logp([0.6, 0.3, 0.1])
    state = S.adaptive_start(0.3, 0.9, 1)                 # primed: EMA = target
    assert state.tolist() == [pytest.approx([3.0, 10.0])]
    out = S.adaptive_p(scores, state, 0.3, 0.9)
    # d = |p − 0.3| / 0.3 = (1, 0, 2/3): logit = 5 − 10 d²/(1 + d)
    assert out[0].tolist() == pytest.approx([0.0, 5.0, 5 - 10 * (4 / 9) / (5 / 3)], abs=1e-5)
    after = S.adaptive_update(state, torch.tensor([0.6]), 0.9)
    assert after.tolist() == [pytest.approx([3.3, 10.0])]
    assert S.adaptive_target_now(after, 0.3).tolist() == pytest.approx([0.6 - 0.33])
    # removed tokens stay removed
    masked = torch.tensor([[0.0, -math.inf, 1.0]])
    assert not torch.isfinite(S.adaptive_p(masked, state, 0.3, 0.9)[0, 1])


def test_adaptive_p_state_is_kept_per_sequence_and_traced(tiny):
    target, decay = 0.4, 0.8
    config = DecodingConfig(strategy="sample", adaptive_target=target, adaptive_decay=decay,
                            top_k=50, seed=1, max_new_tokens=10, num_return_sequences=2,
                            ignore_eos=True)
    gen = generate(tiny, "The cat", config)
    assert gen.chain[-1] == "adaptive_p"
    for seq in gen.sequences:
        ws, tw = target / (1 - decay), 1 / (1 - decay)
        for st in seq.steps:
            aim = min(1.0, max(0.0, 2 * target - ws / tw))
            assert st.extra["adaptive_target"] == pytest.approx(aim, abs=1e-5)
            # the EMA follows the chosen token's probability before the transform (top-k's output)
            before = st.chosen_candidate.probs[st.stages.index("adaptive_p") - 1]
            assert st.extra["adaptive_p"] == pytest.approx(before, rel=1e-4, abs=1e-6)
            ws, tw = st.extra["adaptive_p"] + decay * ws, 1 + decay * tw
    # each sequence keeps its own average: alone or in a mixed batch, the same tokens
    mixed = generate_mixed(tiny, [("The cat", config), ("The cat", DecodingConfig(max_new_tokens=3)),
                                  ("A unicorn", config)], chat=True, trace=True)
    assert [s.token_ids for s in mixed[0].sequences] == [s.token_ids for s in gen.sequences]
    assert [s.extra["adaptive_target"] for s in mixed[0].steps] == \
        pytest.approx([s.extra["adaptive_target"] for s in gen.steps], abs=1e-6)


def test_adaptive_p_comes_last_whatever_the_order():
    c = DecodingConfig(strategy="sample", adaptive_target=0.5, min_p=0.05, temperature=0.8)
    assert chain_names(build_chain(c, []))[-1] == "adaptive_p"
    assert chain_names(build_chain(c.replace(processor_order="llama.cpp"), []))[1:] == \
        ["min_p", "temperature", "adaptive_p"]
    explicit = c.replace(processor_order=("adaptive_p", "temperature", "min_p"))
    assert chain_names(build_chain(explicit, []))[-1] == "adaptive_p"
    with pytest.raises(ConfigError, match="adaptive_p"):
        c.replace(processor_order=("temperature", "min_p"))
    assert chain_names(build_chain(c.replace(strategy="greedy"), [])) == ["raw"]


# ------------------------------------------------------------------ what-if

def test_whatif_runs_the_new_stages():
    from tests.test_branch_whatif import hand_step

    step = hand_step([math.log(p) for p in (0.5, 0.25, 0.125, 0.125)])
    assert [c.token_id for c in whatif_step(step, whatif_config({}, p_less=True)).candidates
            if c.kept[-1]] == [0]
    assert [c.token_id for c in whatif_step(step, whatif_config({}, top_h=0.6)).candidates
            if c.kept[-1]] == [0, 1]
    result = whatif_step(step, whatif_config({}, dynatemp_range=0.5, adaptive_target=0.3))
    assert result.stages == ["raw", "dynatemp", "adaptive_p"]


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize("call,match", [
    (lambda s: P.temperature(s, 0), "temperature=0 is out of range"),
    (lambda s: P.top_k_filter(s, 0), "top_k=0"),
    (lambda s: P.top_p_filter(s, 1.5), "top_p=1.5"),
    (lambda s: P.min_p_filter(s, -0.1), "min_p=-0.1"),
    (lambda s: P.typical_filter(s, 0.0), "typical_p=0.0"),
    (lambda s: P.epsilon_filter(s, 1.0), "epsilon_cutoff=1.0"),
    (lambda s: P.eta_filter(s, -1e-3), "eta_cutoff=-0.001"),
    (lambda s: P.top_h_filter(s, 0.0), "top_h=0.0"),
    (lambda s: P.top_p_filter(s, 0.9, 0), "min_tokens_to_keep=0"),
    (lambda s: P.repetition_penalty(s, torch.zeros((1, 1), dtype=torch.long), 0.0),
     "repetition_penalty=0.0"),
    (lambda s: P.no_repeat_ngram(s, torch.zeros((1, 3), dtype=torch.long), 0), "no_repeat_ngram_size=0"),
    (lambda s: P.min_new_tokens_filter(s, 0, -1, [1]), "min_new_tokens=-1"),
    (lambda s: S.frequency_penalty(s, torch.zeros((1, 1), dtype=torch.long), 3.0), "frequency_penalty=3.0"),
    (lambda s: S.presence_penalty(s, torch.zeros((1, 1), dtype=torch.long), -3.0), "presence_penalty=-3.0"),
    (lambda s: S.dry_penalty(s, torch.zeros((1, 2), dtype=torch.long), 0.8, 0.5, 2), "dry_base=0.5"),
    (lambda s: S.top_n_sigma_filter(s, float("nan")), "top_n_sigma=nan"),
    (lambda s: S.xtc_filter(s, 1.5, 0.5, torch.zeros(1)), "xtc_threshold=1.5"),
    (lambda s: S.p_less_filter(s, 0), "min_tokens_to_keep=0"),
    (lambda s: S.dynamic_temperature(s, 1.0, -0.5), "dynatemp_range=-0.5"),
    (lambda s: S.dynamic_temperature(s, 0.0, 0.5), "temperature=0.0"),
    (lambda s: S.adaptive_p(s, S.adaptive_start(0.5, 0.9, 1), 1.5, 0.9), "adaptive_target=1.5"),
    (lambda s: S.adaptive_start(0.5, 1.0, 1), "adaptive_decay=1.0"),
    (lambda s: mirostat_v2_filter(s, torch.zeros(1), 0), "min_tokens_to_keep=0"),
    (lambda s: update_mu(torch.zeros(1), torch.zeros(1), -1.0, 0.1), "mirostat_tau=-1.0"),
    (lambda s: hamming_diversity(s, torch.zeros((1, 1), dtype=torch.long), -1.0), "diversity_penalty=-1.0"),
])
def test_each_processor_refuses_a_bad_parameter_when_called_directly(call, match):
    with pytest.raises(ConfigError, match=match + ".*allowed"):
        call(torch.zeros(1, 8))


@pytest.mark.parametrize("changes,match", [
    (dict(top_h=0.0), "top_h=0.0"), (dict(top_h=1.2), "top_h=1.2"), (dict(p_less=1), "p_less=1"),
    (dict(dynatemp_range=-1.0), "dynatemp_range=-1.0"),
    (dict(dynatemp_exponent=-1.0), "dynatemp_exponent=-1.0"),
    (dict(adaptive_target=1.5), "adaptive_target=1.5"), (dict(adaptive_decay=1.0), "adaptive_decay=1.0"),
])
def test_config_refuses_bad_new_knobs(changes, match):
    with pytest.raises(ConfigError, match=match):
        DecodingConfig(**changes)


# ------------------------------------------------------------------ the registry

def test_every_stage_reads_real_config_fields_and_is_off_by_default():
    fields = {f.name for f in dataclasses.fields(DecodingConfig)}
    default = DecodingConfig()
    for spec in REGISTRY:
        assert set(spec.fields) <= fields, spec.name
        assert not spec.is_on(default), spec.name
        assert spec.kind in ("penalty", "sampling")
    assert set(KNOBS) <= fields
    for order in PROCESSOR_ORDERS.values():
        assert sorted(order) == sorted(STAGE_NAMES) and order[-1] == "adaptive_p"


def test_every_stage_turns_on_builds_and_prints_with_its_parameters():
    config = DecodingConfig(strategy="sample", logit_bias={5: 1.0}, repetition_penalty=1.2,
                            frequency_penalty=0.1, presence_penalty=0.1, dry_multiplier=0.8,
                            dry_sequence_breakers=(), no_repeat_ngram_size=3, min_new_tokens=2,
                            ignore_eos=True, dynatemp_range=0.2, top_h=0.5, top_k=40, top_p=0.9,
                            min_p=0.05, typical_p=0.95, epsilon_cutoff=1e-4, eta_cutoff=1e-4,
                            top_n_sigma=1.0, p_less=True, xtc_probability=0.5,
                            adaptive_target=0.5, max_new_tokens=8)
    stages = build_chain(config, [2], None, 400)
    assert [s.name for s in stages] == [n for n in STAGE_NAMES
                                        if n not in ("diversity_penalty", "temperature")]
    shown = {s.name: repr(s) for s in stages}
    assert shown["top_p"] == "top_p(p=0.9, min_tokens_to_keep=1)"
    assert shown["repetition_penalty"] == "repetition_penalty(penalty=1.2)"
    assert shown["adaptive_p"] == "adaptive_p(target=0.5, decay=0.9)"
    assert SPECS["dry"].knob == "dry_multiplier" and SPECS["xtc"].knob == "xtc_probability"


# ------------------------------------------------------------------ in the lab

def test_the_new_samplers_in_the_step_inspector_and_the_whatif_panel(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import lab_state
    from app.views import step_inspector as si
    from app.views import step_whatif as sw
    from tests.test_app_step_inspector import LAB, generate as generate_in_lab

    monkeypatch.setenv(lab_state.TINY_MODEL_ENV, "1")
    at = AppTest.from_file(LAB, default_timeout=60).run()
    at.radio(key=si.STRATEGY_KEY).set_value("sample").run()
    at.slider(key=si.knob_key("top_h")).set_value(0.6)
    at.slider(key=si.knob_key("adaptive_target")).set_value(0.3)
    generate_in_lab(at, "The cat")
    assert not at.exception and not at.error
    generation = at.session_state[si.GENERATION_KEY]
    assert generation.chain == ["raw", "min_new_tokens", "top_h", "adaptive_p"]
    assert any("adaptive-p target now" in c.value for c in at.caption)
    # the what-if panel starts from the run's top_h and offers p-less
    assert at.slider(key=sw.key("top_h")).value == pytest.approx(0.6)
    at.checkbox(key=sw.key("p_less")).check().run()
    assert not at.exception
    assert any("top_h → p_less → adaptive_p" in c.value for c in at.caption)
