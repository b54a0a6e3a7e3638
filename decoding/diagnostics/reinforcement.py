"""Self-reinforcement probe: does the model grow surer of a sentence each time it has seen it?

Xu et al. 2022, "Learning to Break the Loop: Analyzing and Mitigating Repetitions for Neural
Text Generation" (NeurIPS). Build ``x = [prefix; s; s; …; s]`` with an L-token sentence ``s``
repeated N times and score it teacher-forced. With ``x_{n,l}`` token l of copy n:

    TP(s_n) = (1/L) Σ_l P(x_{n,l} | x_<)                        (token probability)
    IP(s_n) = (1/L) Σ_l 1[P(x_{n,l} | x_<) > P(x_{0,l} | x_<)]   (increasing-probability rate)
    WR(s_n) = (1/L) Σ_l 1[x_{n,l} = argmax_v P(v | x_<)]         (winner rate)

Their finding: TP, IP and WR rise with n. Reference code: ``Jxu-Thu/DITTO``
``fairseq/custom/eval_manual_rep_document.py`` (inputs) and ``repetition_para_parse.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import DecodingLabError, check_count, out_of_range


@dataclass(frozen=True)
class ReinforcementCurve:
    """TP, IP and WR of each copy of one sentence (index n = copy n, copy 0 first)."""

    sentence: str  # as given; the probe scores " " + sentence when it lacks leading whitespace
    prefix: str
    n_tokens: int  # L, tokens in one copy of the sentence
    tp: list[float]  # mean P(x_{n,l} | x_<) over the L tokens of copy n
    ip: list[float]  # fraction of tokens more probable than in copy 0; ip[0] == 0
    wr: list[float]  # fraction of tokens that are the argmax (ties count as wins)
    token_probs: list[list[float]] = field(default_factory=list)  # [repeats][L] P(x_{n,l} | x_<)

    @property
    def repeats(self) -> int:
        return len(self.tp)

    def to_dict(self) -> dict:
        return {
            "sentence": self.sentence,
            "prefix": self.prefix,
            "n_tokens": self.n_tokens,
            "tp": list(self.tp),
            "ip": list(self.ip),
            "wr": list(self.wr),
            "token_probs": [list(row) for row in self.token_probs],
        }

    @classmethod
    def from_dict(cls, data: dict) -> ReinforcementCurve:
        return cls(
            sentence=data["sentence"],
            prefix=data["prefix"],
            n_tokens=int(data["n_tokens"]),
            tp=[float(v) for v in data["tp"]],
            ip=[float(v) for v in data["ip"]],
            wr=[float(v) for v in data["wr"]],
            token_probs=[[float(v) for v in row] for row in data.get("token_probs", [])],
        )


@dataclass(frozen=True)
class MeanReinforcementCurve:
    """TP, IP and WR per copy averaged over sentences, each weighted by its token count."""

    n_sentences: int
    n_tokens: int  # Σ L over the sentences: the weight total
    tp: list[float]
    ip: list[float]
    wr: list[float]

    def to_dict(self) -> dict:
        return {
            "n_sentences": self.n_sentences,
            "n_tokens": self.n_tokens,
            "tp": list(self.tp),
            "ip": list(self.ip),
            "wr": list(self.wr),
        }

    @classmethod
    def from_dict(cls, data: dict) -> MeanReinforcementCurve:
        return cls(
            n_sentences=int(data["n_sentences"]),
            n_tokens=int(data["n_tokens"]),
            tp=[float(v) for v in data["tp"]],
            ip=[float(v) for v in data["ip"]],
            wr=[float(v) for v in data["wr"]],
        )


def _start_ids(tokenizer) -> list[int]:
    """BOS (or EOS, as GPT-2 uses it) so that the first real token has a context."""
    for name in ("bos_token_id", "eos_token_id"):
        token_id = getattr(tokenizer, name, None)
        if token_id is not None:
            return [int(token_id)]
    return []


def probe_ids(
    tokenizer, sentence: str, prefix: str = "", repeats: int = 10
) -> tuple[list[int], int, int]:
    """``(ids, context_len, L)``: ids = [BOS] + prefix ids + sentence ids × repeats.

    The sentence is tokenized once and its ids repeated, so copies are identical token for
    token (tokenizing the repeated text could merge across the join). A leading space is added
    when the sentence has none, so a copy follows the previous one as a new word would. Prefix
    and sentence are tokenized separately without special tokens; BOS comes from the tokenizer
    (its EOS when it has no BOS, as for GPT-2).
    """
    if not isinstance(sentence, str) or not sentence.strip():
        raise DecodingLabError(
            f"sentence={sentence!r} is empty; allowed: a text with at least one token"
        )
    check_count("repeats", repeats, 1)
    if not isinstance(prefix, str):
        raise DecodingLabError(
            f"prefix of type {type(prefix).__name__} is not supported; allowed: a str"
        )
    if not sentence[0].isspace():
        sentence = " " + sentence
    sentence_ids = list(tokenizer.encode(sentence, add_special_tokens=False))
    if not sentence_ids:
        raise DecodingLabError(
            f"sentence={sentence!r} tokenizes to no tokens; allowed: at least one token"
        )
    prefix_ids = list(tokenizer.encode(prefix, add_special_tokens=False)) if prefix else []
    context = _start_ids(tokenizer) + prefix_ids
    if not context:
        raise DecodingLabError(
            "prefix='' with a tokenizer that has neither BOS nor EOS leaves the first token "
            "unconditioned; allowed: a non-empty prefix"
        )
    return context + sentence_ids * int(repeats), len(context), len(sentence_ids)


def _check_fits(model, total: int, context_len: int, n_tokens: int, repeats: int) -> None:
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit is not None and total > limit:
        raise out_of_range(
            "repeats",
            repeats,
            f"1 <= repeats <= {(limit - context_len) // n_tokens} "
            f"({context_len} context + {n_tokens} tokens per copy must fit "
            f"max_position_embeddings={limit})",
        )


def _model_device(model) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def self_reinforcement(
    model, tokenizer, sentence: str, prefix: str = "", repeats: int = 10
) -> ReinforcementCurve:
    """TP, IP and WR for each of ``repeats`` copies of ``sentence``, from one teacher-forced pass.

    ``model`` is any causal LM whose ``model(input_ids=...)`` has ``.logits`` of shape
    [1, T, V]; it is run in eval mode without gradients (and its training flag restored).
    ``tokenizer`` is a Hugging Face tokenizer. See ``probe_ids`` for how the input is built.
    """
    ids, context_len, n_tokens = probe_ids(tokenizer, sentence, prefix, repeats)
    _check_fits(model, len(ids), context_len, n_tokens, int(repeats))

    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            input_ids = torch.tensor([ids], dtype=torch.long, device=_model_device(model))
            logits = model(input_ids=input_ids).logits[0].float()  # [T, V]
    finally:
        model.train(was_training)

    # Position t predicts token t + 1, so the targets are ids[context_len:] and their
    # predictions come from positions context_len - 1 .. T - 2.
    predicting = logits[context_len - 1 : -1]  # [repeats · L, V]
    targets = input_ids[0, context_len:].to(predicting.device)  # [repeats · L]
    target_logits = predicting.gather(-1, targets[:, None])[:, 0]
    probs = (target_logits - predicting.logsumexp(-1)).exp().view(int(repeats), n_tokens)  # [N, L]
    wins = (target_logits >= predicting.max(-1).values).view(int(repeats), n_tokens).float()
    improved = (probs > probs[0]).float()  # strict, so copy 0 scores 0 against itself

    return ReinforcementCurve(
        sentence=sentence,
        prefix=prefix,
        n_tokens=n_tokens,
        tp=probs.mean(-1).tolist(),
        ip=improved.mean(-1).tolist(),
        wr=wins.mean(-1).tolist(),
        token_probs=probs.tolist(),
    )


def mean_curve(curves: Sequence[ReinforcementCurve]) -> MeanReinforcementCurve:
    """Average curves copy by copy, each sentence weighted by its token count L.

    Equals pooling every token of every sentence, which is how Xu et al. average over sentences.
    All curves must have the same number of copies.
    """
    if len(curves) == 0:
        raise DecodingLabError("curves=[] is empty; allowed: at least one ReinforcementCurve")
    repeats = curves[0].repeats
    for index, curve in enumerate(curves):
        if curve.repeats != repeats:
            raise DecodingLabError(
                f"curves[{index}] has repeats={curve.repeats}; "
                f"allowed: the same repeats as curves[0] ({repeats})"
            )
    total = sum(curve.n_tokens for curve in curves)

    def weighted(name: str) -> list[float]:
        return [
            sum(curve.n_tokens * getattr(curve, name)[n] for curve in curves) / total
            for n in range(repeats)
        ]

    return MeanReinforcementCurve(
        n_sentences=len(curves),
        n_tokens=total,
        tp=weighted("tp"),
        ip=weighted("ip"),
        wr=weighted("wr"),
    )
