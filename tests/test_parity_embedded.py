"""Token-identical parity with transformers' generate() on the real embedded SmolLM2-135M.

Each family (greedy, beam, sampling) covers 5 chat prompts and 5 raw prompts. Sampling uses the same seed on both sides:
``torch.manual_seed(seed)`` for generate(), a ``torch.Generator`` seeded the same for us.
"""

from __future__ import annotations

import pytest
import torch

from decoding import DecodingConfig, generate
from tests.parity import reference

pytestmark = pytest.mark.embedded

CHAT = ["What is the capital of France?", "Write a haiku about autumn rain.",
        "Explain beam search in one sentence.", "Give me three tips for learning to cook.",
        "Why is the sky blue?"]
RAW = ["The history of the printing press begins", "Once upon a time, in a small fishing village,",
       "The most important thing about machine learning is",
       "### Instruction:\nName a primary colour.\n\n### Response:\n",
       "In a surprising turn of events, the city council announced"]
CASES = [(p, True) for p in CHAT] + [(p, False) for p in RAW]

SAMPLING = [
    DecodingConfig(strategy="sample", seed=1),
    DecodingConfig(strategy="sample", seed=2, temperature=0.7),
    DecodingConfig(strategy="sample", seed=3, top_k=40),
    DecodingConfig(strategy="sample", seed=4, top_p=0.9),
    DecodingConfig(strategy="sample", seed=5, min_p=0.1),
    DecodingConfig(strategy="sample", seed=6, typical_p=0.9),
    DecodingConfig(strategy="sample", seed=7, epsilon_cutoff=3e-4),
    DecodingConfig(strategy="sample", seed=8, eta_cutoff=3e-4),
    DecodingConfig(strategy="sample", seed=9, repetition_penalty=1.3),
    DecodingConfig(strategy="sample", seed=10, no_repeat_ngram_size=2),
    DecodingConfig(strategy="sample", seed=11, temperature=1.3, top_k=50, top_p=0.95, min_p=0.05),
    DecodingConfig(strategy="sample", seed=12, temperature=0.8, typical_p=0.95, repetition_penalty=1.2,
                   no_repeat_ngram_size=3, num_return_sequences=3),
]
BEAM = [
    DecodingConfig(strategy="beam", num_beams=4),
    DecodingConfig(strategy="beam", num_beams=3, length_penalty=0.5, early_stopping=True, num_return_sequences=2),
    DecodingConfig(strategy="beam", num_beams=2, length_penalty=2.0, early_stopping="never", num_return_sequences=2),
    DecodingConfig(strategy="beam", num_beams=4, length_penalty=-1.0, repetition_penalty=1.2,
                   no_repeat_ngram_size=3, num_return_sequences=4),
]


def label(c: DecodingConfig) -> str:
    return ",".join(f"{k}={v}" for k, v in c.changed().items())


def assert_parity(lm, prompt, chat, config):
    ids = lm.encode(prompt, chat=chat)
    ours = generate(lm, prompt, config, chat=chat, trace=False)
    assert [s.token_ids for s in ours.sequences] == reference(lm, ids, config), (prompt, label(config))


def rotation(index: int, per_config: int) -> list[tuple[str, bool]]:
    """``per_config`` prompts for config ``index``, half chat and half raw, rotating so that the
    family as a whole covers all 5 chat and 5 raw prompts (CI time: each case costs seconds)."""
    half = per_config // 2
    chat = [(CHAT[(index * half + i) % len(CHAT)], True) for i in range(half)]
    raw = [(RAW[(index * half + i) % len(RAW)], False) for i in range(half)]
    return chat + raw


@pytest.mark.parametrize("prompt,chat", CASES)
def test_greedy(embedded, prompt, chat):
    assert_parity(embedded, prompt, chat, DecodingConfig(max_new_tokens=16))


@pytest.mark.parametrize("index,config", list(enumerate(BEAM)), ids=[label(c) for c in BEAM])
def test_beam(embedded, index, config):
    cases = CASES if index == 0 else rotation(index, 4)
    for prompt, chat in cases:
        assert_parity(embedded, prompt, chat, config.replace(max_new_tokens=10))


@pytest.mark.parametrize("index,config", list(enumerate(SAMPLING)), ids=[label(c) for c in SAMPLING])
def test_sampling(embedded, index, config):
    for prompt, chat in rotation(index, 4):
        assert_parity(embedded, prompt, chat, config.replace(max_new_tokens=8))


def test_rotation_covers_every_prompt():
    seen = {case for i in range(len(SAMPLING)) for case in rotation(i, 4)}
    assert seen == set(CASES)
    seen = set(CASES) | {case for i in range(1, len(BEAM)) for case in rotation(i, 4)}
    assert seen == set(CASES)


# --------------------------------------------------------------------------- bfloat16

@pytest.fixture(scope="module")
def embedded_bf16():
    """The embedded model loaded in bfloat16 (``load_model(dtype="bfloat16")``, ``--dtype bfloat16``)."""
    from decoding import load_model

    return load_model(dtype="bfloat16", device="cpu")


def test_bf16_load_is_bf16_with_the_same_fingerprint(embedded, embedded_bf16):
    assert {p.dtype for p in embedded_bf16.model.parameters()} == {torch.bfloat16}
    assert embedded_bf16.fingerprint == embedded.fingerprint


@pytest.mark.parametrize("prompt,chat", CASES)
def test_bf16_greedy(embedded_bf16, prompt, chat):
    """Token-identical to generate() on the same bfloat16 model (not to the float32 model:
    that agreement is a measurement, ``experiments/bench.py``'s decoding-dtype entry)."""
    assert_parity(embedded_bf16, prompt, chat, DecodingConfig(max_new_tokens=16))


@pytest.mark.parametrize("config", [SAMPLING[3], SAMPLING[11], BEAM[0]], ids=label)
def test_bf16_sampling_and_beam(embedded_bf16, config):
    for prompt, chat in rotation(0, 4):
        assert_parity(embedded_bf16, prompt, chat, config.replace(max_new_tokens=8))
