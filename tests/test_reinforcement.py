"""Self-reinforcement probe (Xu et al. 2022): a counting stub with hand-computed TP/IP/WR, and a
tiny random Llama checked against a direct computation. No downloads."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from decoding.diagnostics import (
    MeanReinforcementCurve,
    ReinforcementCurve,
    mean_curve,
    probe_ids,
    self_reinforcement,
)
from decoding.errors import DecodingLabError


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer; ids: <s>=0, then the words in order, <unk> last."""
    vocab = {"<s>": 0, **{word: i + 1 for i, word in enumerate(words)}}
    vocab["<unk>"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", unk_token="<unk>")


class CountingLM(torch.nn.Module):
    """logits[t, v] = log(1 + count of v in x_0..x_t): P(v | x_≤t) = (1 + count_v) / (V + t + 1)."""

    def __init__(self, vocab_size: int, max_positions: int = 64):
        super().__init__()
        self.vocab_size = vocab_size
        self.config = SimpleNamespace(max_position_embeddings=max_positions)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, input_ids):
        one_hot = torch.nn.functional.one_hot(input_ids, self.vocab_size).float()
        return SimpleNamespace(logits=torch.log1p(one_hot.cumsum(dim=1)))


@pytest.fixture(scope="module")
def ab_tokenizer():
    return word_tokenizer(["a", "b"])  # <s>=0, a=1, b=2, <unk>=3: V = 4


# --------------------------------------------------------------------------- hand-computed


def test_counting_model_gives_hand_computed_tp_ip_wr(ab_tokenizer):
    # ids = [<s>, a, b, a, b, a, b] = [0, 1, 2, 1, 2, 1, 2]; P(x_{t+1}) = (1 + count) / (4 + t + 1):
    #   copy 0: P(a | <s>) = 1/5,        P(b | <s> a) = 1/6
    #   copy 1: P(a | …b) = 2/7,          P(b | …a) = 2/8
    #   copy 2: P(a | …b) = 3/9,          P(b | …a) = 3/10
    # Argmax: copy 0 loses both (<s> or a lead); copies 1 and 2 win on "a" (tied with the
    # leaders, ties count) and lose on "b" (a leads).
    model = CountingLM(len(ab_tokenizer))
    curve = self_reinforcement(model, ab_tokenizer, "a b", repeats=3)
    assert curve.n_tokens == 2 and curve.repeats == 3
    expected = [[1 / 5, 1 / 6], [2 / 7, 2 / 8], [3 / 9, 3 / 10]]
    for row, expected_row in zip(curve.token_probs, expected, strict=True):
        assert row == pytest.approx(expected_row)
    assert curve.tp == pytest.approx([11 / 60, 15 / 56, 19 / 60])
    assert curve.ip == [0.0, 1.0, 1.0]
    assert curve.wr == [0.0, 0.5, 0.5]


def test_probe_ids_layout(ab_tokenizer):
    assert probe_ids(ab_tokenizer, "a b", repeats=3) == ([0, 1, 2, 1, 2, 1, 2], 1, 2)
    assert probe_ids(ab_tokenizer, "a", prefix="b b", repeats=2) == ([0, 2, 2, 1, 1], 3, 1)


def test_sentence_is_tokenized_once_with_a_leading_space():
    seen: list[str] = []

    class RecordingTokenizer:
        bos_token_id = 9

        def encode(self, text, add_special_tokens=False):
            seen.append(text)
            return [5, 6]

    ids, context_len, n_tokens = probe_ids(RecordingTokenizer(), "a b", prefix="p", repeats=4)
    assert (ids, context_len, n_tokens) == ([9, 5, 6] + [5, 6] * 4, 3, 2)
    assert seen == [" a b", "p"]
    seen.clear()
    probe_ids(RecordingTokenizer(), "\ta b", repeats=2)
    assert seen == ["\ta b"]


def test_without_bos_or_eos_an_empty_prefix_is_an_error():
    class NoSpecials:
        bos_token_id = None
        eos_token_id = None

        def encode(self, text, add_special_tokens=False):
            return [1]

    with pytest.raises(DecodingLabError, match="prefix=''"):
        probe_ids(NoSpecials(), "a", repeats=2)
    assert probe_ids(NoSpecials(), "a", prefix="p", repeats=2) == ([1, 1, 1], 1, 1)


@pytest.mark.parametrize(
    "sentence, repeats, message",
    [
        ("", 3, "sentence=''"),
        ("   ", 3, "sentence='   '"),
        ("a b", 0, r"repeats=0 .*repeats >= 1"),
        ("a b", 2.5, "repeats=2.5"),
        # 1 context token + 2 per copy must fit 64 positions: at most 31 copies.
        ("a b", 32, r"repeats=32 .*1 <= repeats <= 31 .*max_position_embeddings=64"),
    ],
)
def test_probe_rejects_bad_input(ab_tokenizer, sentence, repeats, message):
    with pytest.raises(DecodingLabError, match=message):
        self_reinforcement(CountingLM(len(ab_tokenizer)), ab_tokenizer, sentence, repeats=repeats)


def test_largest_fitting_repeats_is_accepted(ab_tokenizer):
    curve = self_reinforcement(CountingLM(len(ab_tokenizer)), ab_tokenizer, "a b", repeats=31)
    assert curve.repeats == 31


# --------------------------------------------------------------------------- tiny Llama


WORDS = "once upon a time the cat sat on mat and dog ran . it was warm".split()


@pytest.fixture(scope="module")
def tiny_llama():
    tokenizer = word_tokenizer(WORDS)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config), tokenizer


def test_tiny_llama_tp_matches_a_direct_computation(tiny_llama):
    model, tokenizer = tiny_llama
    model.train()  # the probe must score in eval mode and hand the mode back
    sentence, prefix, repeats = "the cat sat on the mat .", "once upon a time", 5
    curve = self_reinforcement(model, tokenizer, sentence, prefix=prefix, repeats=repeats)
    assert model.training

    sentence_ids = tokenizer.encode(" " + sentence, add_special_tokens=False)
    context = [tokenizer.bos_token_id] + tokenizer.encode(prefix, add_special_tokens=False)
    ids = context + sentence_ids * repeats
    length = len(sentence_ids)
    assert length == 7 and curve.n_tokens == length

    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    for copy in range(repeats):
        positions = range(len(context) + copy * length, len(context) + (copy + 1) * length)
        expected = [probs[j - 1, ids[j]].item() for j in positions]
        assert curve.token_probs[copy] == pytest.approx(expected, rel=1e-5)
        assert curve.tp[copy] == pytest.approx(sum(expected) / length, rel=1e-5)
        wins = sum(int(probs[j - 1].argmax()) == ids[j] for j in positions)
        assert curve.wr[copy] == pytest.approx(wins / length)


def test_tiny_llama_curve_shapes_and_ranges(tiny_llama):
    model, tokenizer = tiny_llama
    curve = self_reinforcement(model, tokenizer, "the dog ran .", repeats=6)
    assert len(curve.tp) == len(curve.ip) == len(curve.wr) == len(curve.token_probs) == 6
    assert all(len(row) == 4 for row in curve.token_probs)
    assert curve.ip[0] == 0.0
    for values in (curve.tp, curve.ip, curve.wr):
        assert all(0.0 <= v <= 1.0 for v in values)
    for v in curve.ip + curve.wr:  # fractions of the 4 tokens
        assert math.isclose(v * 4, round(v * 4), abs_tol=1e-9)
    for copy in range(6):
        improved = sum(p > p0 for p, p0 in zip(curve.token_probs[copy], curve.token_probs[0]))
        assert curve.ip[copy] == pytest.approx(improved / 4)


def test_tiny_llama_rejects_a_probe_longer_than_its_positions(tiny_llama):
    model, tokenizer = tiny_llama
    # 1 BOS + 4 tokens per copy within 512 positions: at most 127 copies.
    with pytest.raises(DecodingLabError, match=r"repeats=1000 .*1 <= repeats <= 127"):
        self_reinforcement(model, tokenizer, "the dog ran .", repeats=1000)


# --------------------------------------------------------------------------- serialisation, mean


def test_curve_round_trips_through_json(ab_tokenizer):
    curve = self_reinforcement(CountingLM(len(ab_tokenizer)), ab_tokenizer, "a b", repeats=2)
    data = json.loads(json.dumps(curve.to_dict()))
    assert data["sentence"] == "a b" and data["n_tokens"] == 2
    assert ReinforcementCurve.from_dict(data) == curve


def test_mean_curve_weights_by_token_count():
    short = ReinforcementCurve("s", "", 2, tp=[0.1, 0.3], ip=[0.0, 0.5], wr=[0.0, 1.0])
    long = ReinforcementCurve("l", "", 6, tp=[0.5, 0.7], ip=[0.0, 1.0], wr=[0.5, 0.5])
    mean = mean_curve([short, long])
    # tp: (2 · 0.1 + 6 · 0.5) / 8 = 0.4 and (2 · 0.3 + 6 · 0.7) / 8 = 0.6.
    assert mean.tp == pytest.approx([0.4, 0.6])
    assert mean.ip == pytest.approx([0.0, (2 * 0.5 + 6 * 1.0) / 8])
    assert mean.wr == pytest.approx([(6 * 0.5) / 8, (2 * 1.0 + 6 * 0.5) / 8])
    assert (mean.n_sentences, mean.n_tokens) == (2, 8)
    assert MeanReinforcementCurve.from_dict(mean.to_dict()) == mean


def test_mean_curve_errors():
    with pytest.raises(DecodingLabError, match="curves"):
        mean_curve([])
    a = ReinforcementCurve("a", "", 1, tp=[0.1], ip=[0.0], wr=[0.0])
    b = ReinforcementCurve("b", "", 1, tp=[0.1, 0.2], ip=[0.0, 0.0], wr=[0.0, 0.0])
    with pytest.raises(DecodingLabError, match=r"curves\[1\] has repeats=2"):
        mean_curve([a, b])
