"""``DecodingConfig``: every decoding knob, explained once, validated once.

Field names follow transformers' ``GenerationConfig`` where the concept is the same, so a user
can carry settings across. The ``help`` metadata of each field feeds ``declab --help`` and the
Streamlit tooltips. Validation happens at construction: an invalid config cannot exist.

Deliberate differences from ``transformers.generate`` (documented in the README and tested):

* ``top_k`` defaults to 0 (off). ``generate`` silently fills in ``top_k=50`` when the model's
  generation config leaves it unset, so its "pure sampling" is really top-50 sampling.
* ``strategy`` is explicit. ``generate`` infers the mode from ``do_sample``/``num_beams``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, out_of_range

STRATEGIES = ("greedy", "sample", "beam")


def knob(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field carrying its help text (shown by the CLI and the lab)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class DecodingConfig:
    """How to pick the next token, step after step."""

    strategy: str = knob("greedy", "Decoding strategy: greedy (argmax), sample (draw from the "
                         "processed distribution) or beam (beam search).",
                         choices=STRATEGIES)
    max_new_tokens: int = knob(64, "Maximum number of tokens to generate (end-of-sequence included).")
    min_new_tokens: int = knob(0, "End-of-sequence is forbidden until this many tokens were "
                               "generated (transformers' MinNewTokensLength).")
    ignore_eos: bool = knob(False, "Never stop on end-of-sequence: forbid it at every step (vLLM's "
                            "ignore_eos). Shows what a model does when it is not allowed to stop.")
    temperature: float = knob(1.0, "Divide the logits by T before sampling: T < 1 sharpens, T > 1 "
                              "flattens. Sampling only; must be > 0.")
    top_k: int = knob(0, "Keep only the k most likely tokens (Fan et al. 2018). 0 = off. Note: "
                      "transformers' generate() silently uses 50 when unset; we do not.")
    top_p: float = knob(1.0, "Nucleus sampling (Holtzman et al. 2020): keep the smallest set of "
                        "most likely tokens whose probability mass reaches p. 1.0 = off.")
    min_p: float | None = knob(None, "Min-p: drop tokens whose probability is below min_p times "
                               "the top token's probability. None = off; typical 0.05-0.1.")
    typical_p: float = knob(1.0, "Locally typical sampling (Meister et al. 2023): keep the tokens "
                            "whose surprisal is closest to the entropy, up to mass p. 1.0 = off.")
    epsilon_cutoff: float = knob(0.0, "Epsilon sampling (Hewitt et al. 2022): drop tokens with "
                                 "probability below epsilon. 0 = off; typical 3e-4.")
    eta_cutoff: float = knob(0.0, "Eta sampling (Hewitt et al. 2022): drop tokens below "
                             "min(eta, sqrt(eta)*exp(-entropy)). 0 = off; typical 3e-4.")
    repetition_penalty: float = knob(1.0, "CTRL repetition penalty (Keskar et al. 2019): every token "
                                     "already present (prompt included) has its logit divided by "
                                     "the penalty if positive, multiplied if negative. 1.0 = off.")
    no_repeat_ngram_size: int = knob(0, "Forbid any n-gram of this size from occurring twice "
                                     "(prompt included). 0 = off.")
    num_beams: int = knob(4, "Beam width: hypotheses kept at every step. Beam strategy only.")
    length_penalty: float = knob(1.0, "Beam score of a finished hypothesis = sum log p / "
                                 "length^length_penalty. > 0 favours longer outputs, < 0 shorter.")
    early_stopping: bool | str = knob(False, "Beam stopping rule: True = stop when num_beams "
                                      "hypotheses are finished; False = stop when no running beam "
                                      "can beat the finished ones (heuristic); 'never' = the "
                                      "canonical rule.")
    num_return_sequences: int = knob(1, "Sequences to return: samples drawn independently "
                                     "(sample), or the best finished hypotheses (beam).")
    seed: int = knob(0, "Seed of the torch.Generator every random draw comes from.")
    stop_strings: tuple[str, ...] = knob((), "Stop as soon as the generated text contains one of "
                                         "these strings (the string is kept in the output).")

    def __post_init__(self) -> None:
        if isinstance(self.stop_strings, (list, str)):
            value = (self.stop_strings,) if isinstance(self.stop_strings, str) else self.stop_strings
            object.__setattr__(self, "stop_strings", tuple(value))
        validate(self)

    # ------------------------------------------------------------------ conveniences
    @property
    def do_sample(self) -> bool:
        return self.strategy == "sample"

    def replace(self, **changes: Any) -> "DecodingConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stop_strings"] = list(self.stop_strings)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DecodingConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown decoding parameter(s): {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(names))}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the defaults (for compact labels)."""
        default = DecodingConfig()
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


def help_text(name: str) -> str:
    """The help text of a ``DecodingConfig`` field (for tooltips)."""
    for f in dataclasses.fields(DecodingConfig):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


# ---------------------------------------------------------------------- validation

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if not _is_int(value) or value < low or (high is not None and value > high):
        raise out_of_range(name, value, allowed)


def _check_float(name: str, value: Any, ok, allowed: str) -> None:
    if not _is_number(value) or not ok(float(value)):
        raise out_of_range(name, value, allowed)


def validate(c: DecodingConfig) -> None:
    """Raise ``ConfigError`` naming the first bad field, its value and the allowed range."""
    if c.strategy not in STRATEGIES:
        raise out_of_range("strategy", c.strategy, " | ".join(STRATEGIES))
    _check_int("max_new_tokens", c.max_new_tokens, 1)
    _check_int("min_new_tokens", c.min_new_tokens, 0)
    if c.min_new_tokens > c.max_new_tokens:
        raise out_of_range("min_new_tokens", c.min_new_tokens,
                           f"0 <= min_new_tokens <= max_new_tokens ({c.max_new_tokens})")
    if not isinstance(c.ignore_eos, bool):
        raise out_of_range("ignore_eos", c.ignore_eos, "true | false")
    if c.strategy == "sample":
        _check_float("temperature", c.temperature, lambda v: v > 0,
                     "temperature > 0 when sampling (use strategy=greedy for T -> 0)")
    else:
        _check_float("temperature", c.temperature, lambda v: v > 0, "temperature > 0")
    _check_int("top_k", c.top_k, 0)
    _check_float("top_p", c.top_p, lambda v: 0 < v <= 1, "0 < top_p <= 1")
    if c.min_p is not None:
        _check_float("min_p", c.min_p, lambda v: 0 <= v <= 1, "0 <= min_p <= 1, or None (off)")
    _check_float("typical_p", c.typical_p, lambda v: 0 < v <= 1, "0 < typical_p <= 1")
    _check_float("epsilon_cutoff", c.epsilon_cutoff, lambda v: 0 <= v < 1, "0 <= epsilon_cutoff < 1")
    _check_float("eta_cutoff", c.eta_cutoff, lambda v: 0 <= v < 1, "0 <= eta_cutoff < 1")
    _check_float("repetition_penalty", c.repetition_penalty, lambda v: v > 0,
                 "repetition_penalty > 0 (1.0 = off)")
    _check_int("no_repeat_ngram_size", c.no_repeat_ngram_size, 0)
    _check_int("num_beams", c.num_beams, 1)
    _check_float("length_penalty", c.length_penalty, lambda v: True, "a finite number")
    if c.early_stopping not in (True, False, "never"):
        raise out_of_range("early_stopping", c.early_stopping, "true | false | 'never'")
    _check_int("num_return_sequences", c.num_return_sequences, 1)
    if c.strategy == "beam" and c.num_return_sequences > c.num_beams:
        raise out_of_range("num_return_sequences", c.num_return_sequences,
                           f"1 <= num_return_sequences <= num_beams ({c.num_beams}) for beam search")
    if c.strategy == "greedy" and c.num_return_sequences != 1:
        raise out_of_range("num_return_sequences", c.num_return_sequences,
                           "1 for greedy (greedy is deterministic: every copy would be the same)")
    _check_int("seed", c.seed, 0, 2**63 - 1)
    for s in c.stop_strings:
        if not isinstance(s, str) or s == "":
            raise out_of_range("stop_strings", s, "non-empty strings")
