"""``DecodingConfig``: every decoding knob, explained once, validated once.

Field names follow transformers' ``GenerationConfig`` where the concept is the same (and
llama.cpp / vLLM names for the knobs transformers does not have), so a user can carry settings
across. The ``help`` metadata of each field feeds ``declab --help`` and the Streamlit tooltips.
Validation happens at construction: an invalid config cannot exist.

Deliberate differences from ``transformers.generate`` (documented in the README and tested):

* ``top_k`` defaults to 0 (off). ``generate`` silently fills in ``top_k=50`` when the model's
  generation config leaves it unset, so its "pure sampling" is really top-50 sampling.
* ``strategy`` is explicit. ``generate`` infers the mode from ``do_sample``/``num_beams``.

Which stages a config turns on, and in which order, is defined by the stage registry
(``stages.planned_stages``); validation uses it to check an explicit ``processor_order``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .guide import AMATEURS
from .stages import FIRST_STAGES, PROCESSOR_ORDERS, STAGE_NAMES, planned_stages
from .errors import (ConfigError, check_number, check_range, is_integer, is_real, out_of_range,
                     range_text)

STRATEGIES = ("greedy", "sample", "beam", "contrastive", "mirostat")
# The strategies a two-model knob (realign, contrastive_alpha, guidance_scale) works with: those
# of the step loop (``loop.decode_mixed``), where the second forward runs.
TWO_MODEL_STRATEGIES = ("greedy", "sample", "mirostat")
CONTRASTIVE_DEFAULT_K = 4  # SimCTG's and transformers' documented k when top_k is 0
DEFAULT_BREAKERS = ("\n", ":", "\"", "*")  # llama.cpp's default DRY sequence breakers

def knob(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field carrying its help text (shown by the CLI and the lab)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class DecodingConfig:
    """How to pick the next token, step after step."""

    strategy: str = knob("greedy", "Decoding strategy: greedy (argmax), sample (draw from the "
                         "processed distribution), beam (beam search; diverse beam search with "
                         "num_beam_groups > 1), contrastive (Su et al. 2022) or mirostat (v2, "
                         "llama.cpp).", choices=STRATEGIES)
    max_new_tokens: int = knob(64, "Maximum number of tokens to generate (end-of-sequence included).")
    min_new_tokens: int = knob(0, "End-of-sequence is forbidden until this many tokens were "
                               "generated (transformers' MinNewTokensLength).")
    ignore_eos: bool = knob(False, "Never stop on end-of-sequence: forbid it at every step (vLLM's "
                            "ignore_eos). Shows what a model does when it is not allowed to stop.")
    temperature: float = knob(1.0, "Divide the logits by T before sampling: T < 1 sharpens, T > 1 "
                              "flattens. Sampling and mirostat only; must be > 0.")
    dynatemp_range: float = knob(0.0, "Dynamic temperature (llama.cpp temp-ext): the temperature "
                                 "of each step is T - range + 2 * range * (H / ln N)^exponent, "
                                 "H the entropy over the N tokens still allowed: confident steps "
                                 "run cooler, uncertain ones hotter. 0 = plain temperature. >= 0.")
    dynatemp_exponent: float = knob(1.0, "Dynamic temperature: exponent of the normalised entropy "
                                    "(> 1 keeps more steps near the low end). >= 0.")
    top_h: float | None = knob(None, "Top-H (arXiv 2509.02510; transformers' top_h): among "
                               "the 100 most likely tokens, keep the most likely ones while their "
                               "cumulative entropy stays <= top_h * their entropy. None = off; "
                               "in (0, 1], typical 0.4. Sampling only.")
    top_k: int = knob(0, "Keep only the k most likely tokens (Fan et al. 2018). 0 = off. Note: "
                      "transformers' generate() silently uses 50 when unset; we do not. "
                      f"Contrastive search: the number of candidates (0 = {CONTRASTIVE_DEFAULT_K}).")
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
    top_n_sigma: float | None = knob(None, "Top-n-sigma (Tang et al. 2024): keep the logits within "
                                     "n standard deviations of the largest one. None or <= 0 = "
                                     "off; typical 1.0. Sampling only.")
    p_less: bool = knob(False, "p-less (llama.cpp): keep the tokens whose probability is at least "
                        "sum(p^2), the chance that two draws agree. No parameter: peaked steps "
                        "keep few tokens, flat ones many. Sampling only.")
    xtc_threshold: float = knob(0.1, "XTC (exclude top choices, llama.cpp): tokens with probability "
                                ">= threshold are 'top choices'; when at least two qualify, all but "
                                "the least likely of them are removed. In [0, 1]; > 0.5 never fires.")
    xtc_probability: float = knob(0.0, "XTC: chance per step that it acts (one seeded draw per step "
                                  "and sequence). 0 = off. Sampling only.")
    adaptive_target: float = knob(-1.0, "Adaptive-p (llama.cpp): the last stage reshapes the "
                                  "distribution to favour tokens whose probability is near a "
                                  "target, steered so that the chosen tokens' probability averages "
                                  "adaptive_target. < 0 = off; in [0, 1]. Sampling only.")
    adaptive_decay: float = knob(0.9, "Adaptive-p: decay of the moving average of chosen "
                                 "tokens' probabilities (higher = longer memory). In [0, 0.99].")
    min_tokens_to_keep: int = knob(1, "Every truncation (top-k/p, min-p, typical, epsilon, eta, "
                                   "top-n-sigma, XTC, mirostat) keeps at least this many tokens.")
    repetition_penalty: float = knob(1.0, "CTRL repetition penalty (Keskar et al. 2019): every token "
                                     "already present (prompt included unless penalize_prompt is "
                                     "false) has its logit divided by the penalty if positive, "
                                     "multiplied if negative. 1.0 = off.")
    penalize_prompt: bool = knob(True, "Whether repetition_penalty counts the prompt's tokens. True "
                                 "= transformers (and vLLM); false = generated tokens only "
                                 "(transformers issue #36642).")
    frequency_penalty: float = knob(0.0, "OpenAI/vLLM frequency penalty: logit -= f * (times the "
                                    "token was generated). Prompt not counted. In [-2, 2]; 0 = off.")
    presence_penalty: float = knob(0.0, "OpenAI/vLLM presence penalty: logit -= p if the token was "
                                   "generated at least once. Prompt not counted. In [-2, 2]; 0 = off.")
    dry_multiplier: float = knob(0.0, "DRY ('don't repeat yourself', llama.cpp): a token that would "
                                 "extend a repeated sequence of length L >= dry_allowed_length loses "
                                 "multiplier * base^(L - allowed_length) from its logit. 0 = off; "
                                 "typical 0.8.")
    dry_base: float = knob(1.75, "DRY: growth of the penalty with the repeat length. >= 1.")
    dry_allowed_length: int = knob(2, "DRY: repeats shorter than this are not penalised. >= 1.")
    dry_sequence_breakers: tuple[str, ...] = knob(
        DEFAULT_BREAKERS, "DRY: a token whose text contains one of these strings ends a repeat (a "
        "match never reaches back across it) and is never penalised itself.")
    dry_penalty_last_n: int = knob(-1, "DRY: how many of the last context tokens (prompt included) "
                                   "are searched for repeats. -1 = the whole context, 0 = off.")
    logit_bias: tuple[tuple[int | str, float], ...] = knob(
        (), "Additive bias per token (OpenAI/llama.cpp logit_bias): token id or single-token text "
        "-> bias; -inf bans the token. CLI: ID_OR_TEXT=BIAS,... (digits mean a token id).",
        metavar="ID_OR_TEXT=BIAS,...")
    no_repeat_ngram_size: int = knob(0, "Forbid any n-gram of this size from occurring twice "
                                     "(prompt included). 0 = off.")
    processor_order: str | tuple[str, ...] = knob(
        "transformers", "Order of the processor stages: 'transformers' (temperature before the "
        "truncations), 'llama.cpp' (temperature last), or a comma-separated list of stage names "
        "that includes every active stage.")
    num_beams: int = knob(4, "Beam width: hypotheses kept at every step. Beam strategy only.")
    num_beam_groups: int = knob(1, "Diverse beam search (Vijayakumar et al. 2016): split the beams "
                                "into this many groups; must divide num_beams. 1 = plain beam search.")
    diversity_penalty: float = knob(0.0, "Diverse beam search: a group's log-probabilities lose "
                                    "penalty * (times earlier groups chose the token at this step) "
                                    "(Hamming diversity). >= 0.")
    length_penalty: float = knob(1.0, "Beam score of a finished hypothesis = sum log p / "
                                 "length^length_penalty. > 0 favours longer outputs, < 0 shorter.")
    early_stopping: bool | str = knob(False, "Beam stopping rule: True = stop when num_beams "
                                      "hypotheses are finished; False = stop when no running beam "
                                      "can beat the finished ones (heuristic); 'never' = the "
                                      "canonical rule.")
    penalty_alpha: float = knob(0.6, "Contrastive search (Su et al. 2022): score = (1 - alpha) * "
                                "p(v) - alpha * max cosine similarity of v's hidden state to the "
                                "context's. In [0, 1]; 0 = greedy.")
    mirostat_tau: float = knob(5.0, "Mirostat v2: target surprise in bits (mu starts at 2 * tau). > 0.")
    mirostat_eta: float = knob(0.1, "Mirostat v2: learning rate of mu: mu -= eta * (surprise - tau). "
                               "In [0, 1].")
    num_return_sequences: int = knob(1, "Sequences to return: samples drawn independently "
                                     "(sample, mirostat), or the best finished hypotheses (beam).")
    realign: float | None = knob(None, "Decoding-time realignment (DeRa, Liu et al. ICML 2024): "
                                 "logits = base + realign * (adapter - base), the base being the "
                                 "model with its adapter disabled. 0 = the base, 1 = the adapter, "
                                 "> 1 stronger alignment (about the adapter retrained with KL "
                                 "strength beta / realign). Needs an adapter. None = off; >= 0. "
                                 "Runs a second forward per step.")
    contrastive_alpha: float | None = knob(None, "Contrastive decoding (Li et al. 2023): score "
                                           "log p_expert - log p_amateur over the tokens with "
                                           "p_expert >= alpha * max p_expert (the rest are "
                                           "removed). Expert and amateur are the adapter and "
                                           "the base (see amateur). Needs an adapter. None = off; "
                                           "in (0, 1], typical 0.1; 1 = greedy on the expert.")
    amateur: str = knob("base", "Contrastive decoding: which model is the amateur, 'base' (the "
                        "adapter is the expert: amplifies what alignment changed) or 'adapter' "
                        "(the base is the expert).", choices=AMATEURS)
    guidance_scale: float | None = knob(None, "Classifier-free guidance (Sanchez et al. 2023; "
                                        "transformers' guidance_scale): log-probabilities = "
                                        "uncond + scale * (cond - uncond), uncond being the "
                                        "model's reading of negative_prompt (or of the last "
                                        "prompt token), as transformers computes it. None or 1 = "
                                        "off; > 1 follows the prompt more; >= 0. Runs a second "
                                        "forward per step.")
    negative_prompt: str | None = knob(None, "Classifier-free guidance: raw text the "
                                       "unconditional side starts from instead of the last "
                                       "prompt token (transformers' negative_prompt_ids). "
                                       "None = none.")
    seed: int = knob(0, "Seed of the torch.Generator every random draw comes from.")
    stop_strings: tuple[str, ...] = knob((), "Stop as soon as the generated text contains one of "
                                         "these strings (the string is kept in the output).")

    def __post_init__(self) -> None:
        for name in ("stop_strings", "dry_sequence_breakers"):
            value = getattr(self, name)
            if isinstance(value, (list, str)):
                object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        order = self.processor_order
        if isinstance(order, str) and "," in order:
            order = [name.strip() for name in order.split(",") if name.strip()]
        if isinstance(order, (list, tuple)):
            order = tuple(order)
            if len(order) == 1 and order[0] in PROCESSOR_ORDERS:  # ["llama.cpp"]: the preset
                order = order[0]
            object.__setattr__(self, "processor_order", order)
        object.__setattr__(self, "logit_bias", _normalise_logit_bias(self.logit_bias))
        validate(self)

    # ------------------------------------------------------------------ conveniences
    @property
    def do_sample(self) -> bool:
        """Whether the sampling stages (temperature, truncations) run: ``strategy="sample"``."""
        return self.strategy == "sample"

    @property
    def contrastive_k(self) -> int:
        return self.top_k if self.top_k > 0 else CONTRASTIVE_DEFAULT_K

    def replace(self, **changes: Any) -> "DecodingConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stop_strings"] = list(self.stop_strings)
        data["dry_sequence_breakers"] = list(self.dry_sequence_breakers)
        data["logit_bias"] = [[key, bias] for key, bias in self.logit_bias]
        if isinstance(self.processor_order, tuple):
            data["processor_order"] = list(self.processor_order)
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


# ---------------------------------------------------------------------- normalisation

def _bias_key(text: str) -> int | str:
    return int(text) if re.fullmatch(r"\d+", text.strip()) else text


def _normalise_logit_bias(value: Any) -> Any:
    """Mapping, ``[(key, bias), ...]`` or CLI strings ``"KEY=BIAS"`` → ``((key, bias), ...)``.

    Stored as pairs (hashable, and JSON keeps int ids apart from texts); values the validator
    refuses are passed through unchanged so that it can name them.
    """
    if isinstance(value, Mapping):
        value = list(value.items())
    if isinstance(value, str):
        value = [part for part in value.split(",") if part]
    if not isinstance(value, (list, tuple)):
        return value
    pairs = []
    for item in value:
        if isinstance(item, str) and "=" in item:
            key, _, bias = item.rpartition("=")
            try:
                item = (_bias_key(key), float(bias))
            except ValueError:
                return value
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            return value
        key, bias = item
        if isinstance(bias, (int, float)) and not isinstance(bias, bool):
            bias = float(bias)
        pairs.append((key, bias))
    return tuple(pairs)


# ---------------------------------------------------------------------- validation


def _check_int(name: str, value: Any, low: int, high: int | None = None, note: str = "") -> None:
    allowed = range_text(name, low, high, integer=True) + note
    check_range(name, value, low, high, integer=True, allowed=allowed)


def _check_float(name: str, value: Any, ok, allowed: str) -> None:
    check_number(name, value, lambda v: ok(float(v)), allowed)


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise out_of_range(name, value, "true | false")


def _check_strings(name: str, values: Any) -> None:
    if not isinstance(values, tuple):
        raise out_of_range(name, values, "a list of non-empty strings")
    for s in values:
        if not isinstance(s, str) or s == "":
            raise out_of_range(name, s, "non-empty strings")


def validate(c: DecodingConfig) -> None:
    """Raise ``ConfigError`` naming the first bad field, its value and the allowed range."""
    if c.strategy not in STRATEGIES:
        raise out_of_range("strategy", c.strategy, " | ".join(STRATEGIES))
    _check_int("max_new_tokens", c.max_new_tokens, 1)
    _check_int("min_new_tokens", c.min_new_tokens, 0)
    if c.min_new_tokens > c.max_new_tokens:
        raise out_of_range("min_new_tokens", c.min_new_tokens,
                           f"0 <= min_new_tokens <= max_new_tokens ({c.max_new_tokens})")
    _check_bool("ignore_eos", c.ignore_eos)
    if c.strategy in ("sample", "mirostat"):
        _check_float("temperature", c.temperature, lambda v: v > 0,
                     "temperature > 0 when sampling (use strategy=greedy for T -> 0)")
    else:
        _check_float("temperature", c.temperature, lambda v: v > 0, "temperature > 0")
    _check_float("dynatemp_range", c.dynatemp_range, lambda v: v >= 0,
                 "dynatemp_range >= 0 (0 = plain temperature)")
    _check_float("dynatemp_exponent", c.dynatemp_exponent, lambda v: v >= 0, "dynatemp_exponent >= 0")
    if c.top_h is not None:
        _check_float("top_h", c.top_h, lambda v: 0 < v <= 1, "0 < top_h <= 1, or None (off)")
    _check_int("top_k", c.top_k, 0)
    _check_float("top_p", c.top_p, lambda v: 0 < v <= 1, "0 < top_p <= 1")
    if c.min_p is not None:
        _check_float("min_p", c.min_p, lambda v: 0 <= v <= 1, "0 <= min_p <= 1, or None (off)")
    _check_float("typical_p", c.typical_p, lambda v: 0 < v <= 1, "0 < typical_p <= 1")
    _check_float("epsilon_cutoff", c.epsilon_cutoff, lambda v: 0 <= v < 1, "0 <= epsilon_cutoff < 1")
    _check_float("eta_cutoff", c.eta_cutoff, lambda v: 0 <= v < 1, "0 <= eta_cutoff < 1")
    if c.top_n_sigma is not None:
        _check_float("top_n_sigma", c.top_n_sigma, lambda v: True,
                     "a finite number (<= 0 = off), or None (off)")
    _check_bool("p_less", c.p_less)
    _check_float("xtc_threshold", c.xtc_threshold, lambda v: 0 <= v <= 1, "0 <= xtc_threshold <= 1")
    _check_float("xtc_probability", c.xtc_probability, lambda v: 0 <= v <= 1,
                 "0 <= xtc_probability <= 1 (0 = off)")
    _check_float("adaptive_target", c.adaptive_target, lambda v: v <= 1,
                 "adaptive_target <= 1 (< 0 = off, else the target probability in [0, 1])")
    _check_float("adaptive_decay", c.adaptive_decay, lambda v: 0 <= v <= 0.99,
                 "0 <= adaptive_decay <= 0.99")
    _check_int("min_tokens_to_keep", c.min_tokens_to_keep, 1)
    _check_float("repetition_penalty", c.repetition_penalty, lambda v: v > 0,
                  "repetition_penalty > 0 (1.0 = off)")
    _check_bool("penalize_prompt", c.penalize_prompt)
    for name in ("frequency_penalty", "presence_penalty"):
        _check_float(name, getattr(c, name), lambda v: -2 <= v <= 2,
                     f"-2 <= {name} <= 2 (the OpenAI/vLLM range; 0 = off)")
    _check_float("dry_multiplier", c.dry_multiplier, lambda v: v >= 0, "dry_multiplier >= 0 (0 = off)")
    _check_float("dry_base", c.dry_base, lambda v: v >= 1,
                 "dry_base >= 1 (the penalty must not shrink as the repeat grows)")
    _check_int("dry_allowed_length", c.dry_allowed_length, 1)
    _check_strings("dry_sequence_breakers", c.dry_sequence_breakers)
    _check_int("dry_penalty_last_n", c.dry_penalty_last_n, -1,
               note=" (-1 = the whole context, 0 = off)")
    _check_logit_bias(c.logit_bias)
    _check_int("no_repeat_ngram_size", c.no_repeat_ngram_size, 0)
    _check_int("num_beams", c.num_beams, 1)
    _check_int("num_beam_groups", c.num_beam_groups, 1)
    if c.num_beams % c.num_beam_groups:
        raise out_of_range("num_beam_groups", c.num_beam_groups,
                           f"a divisor of num_beams ({c.num_beams}), so that every group has as "
                           "many beams")
    _check_float("diversity_penalty", c.diversity_penalty, lambda v: v >= 0, "diversity_penalty >= 0")
    _check_float("length_penalty", c.length_penalty, lambda v: True, "a finite number")
    if c.early_stopping not in (True, False, "never"):
        raise out_of_range("early_stopping", c.early_stopping, "true | false | 'never'")
    _check_float("penalty_alpha", c.penalty_alpha, lambda v: 0 <= v <= 1, "0 <= penalty_alpha <= 1")
    _check_float("mirostat_tau", c.mirostat_tau, lambda v: v > 0, "mirostat_tau > 0 (bits)")
    _check_float("mirostat_eta", c.mirostat_eta, lambda v: 0 <= v <= 1, "0 <= mirostat_eta <= 1")
    _check_int("num_return_sequences", c.num_return_sequences, 1)
    if c.strategy == "beam" and c.num_return_sequences > c.num_beams:
        raise out_of_range("num_return_sequences", c.num_return_sequences,
                           f"1 <= num_return_sequences <= num_beams ({c.num_beams}) for beam search")
    if c.strategy in ("greedy", "contrastive") and c.num_return_sequences != 1:
        raise out_of_range("num_return_sequences", c.num_return_sequences,
                           f"1 for {c.strategy} (it is deterministic: every copy would be the same)")
    _check_int("seed", c.seed, 0, 2**63 - 1)
    _check_strings("stop_strings", c.stop_strings)
    _check_two_models(c)
    _check_processor_order(c)


def _check_two_models(c: DecodingConfig) -> None:
    if c.realign is not None:
        _check_float("realign", c.realign, lambda v: 0 <= v <= 100,
                     "0 <= realign <= 100 (0 = the base, 1 = the adapter), or None (off)")
    if c.contrastive_alpha is not None:
        _check_float("contrastive_alpha", c.contrastive_alpha, lambda v: 0 < v <= 1,
                     "0 < contrastive_alpha <= 1, or None (off)")
    if c.amateur not in AMATEURS:
        raise out_of_range("amateur", c.amateur, " | ".join(AMATEURS))
    if c.guidance_scale is not None:
        _check_float("guidance_scale", c.guidance_scale, lambda v: 0 <= v <= 100,
                     "0 <= guidance_scale <= 100 (1 = off), or None (off)")
    if c.negative_prompt is not None:
        if not isinstance(c.negative_prompt, str) or not c.negative_prompt.strip():
            raise out_of_range("negative_prompt", c.negative_prompt, "non-empty text, or None")
        if c.guidance_scale is None:
            raise out_of_range("negative_prompt", c.negative_prompt,
                               "None unless guidance_scale is set (it feeds guidance only)")
    on = [(name, getattr(c, field)) for name, field in
          (("realign", "realign"), ("contrastive_alpha", "contrastive_alpha"),
           ("guidance_scale", "guidance_scale")) if getattr(c, field) is not None]
    if len(on) > 1:
        raise ConfigError(f"{' and '.join(f'{n}={v!r}' for n, v in on)} are both set; allowed: "
                          "at most one two-model knob (they share the second forward)")
    if on and c.strategy not in TWO_MODEL_STRATEGIES:
        raise out_of_range("strategy", c.strategy,
                           f"{' | '.join(TWO_MODEL_STRATEGIES)} with {on[0][0]}={on[0][1]!r} "
                           "(the two-model stages run in the step loop)")


def _check_logit_bias(pairs: Any) -> None:
    allowed = "token id (integer >= 0) or non-empty text -> finite bias or -inf"
    if not isinstance(pairs, tuple):
        raise out_of_range("logit_bias", pairs, "a mapping " + allowed)
    seen = set()
    for key, bias in pairs:
        key_ok = (is_integer(key) and key >= 0) or (isinstance(key, str) and key != "")
        bias_ok = is_real(bias) or bias == -math.inf
        if not (key_ok and bias_ok):
            raise out_of_range("logit_bias", {key: bias}, allowed)
        if key in seen:
            raise out_of_range("logit_bias", key, "each token at most once")
        seen.add(key)


def _check_processor_order(c: DecodingConfig) -> None:
    order = c.processor_order
    presets = " | ".join(repr(p) for p in PROCESSOR_ORDERS)
    if isinstance(order, str):
        if order not in PROCESSOR_ORDERS:
            raise out_of_range("processor_order", order,
                               f"{presets}, or a list of stage names from: {', '.join(STAGE_NAMES)}")
        return
    if not isinstance(order, tuple) or not all(isinstance(n, str) for n in order):
        raise out_of_range("processor_order", order, f"{presets}, or a list of stage names")
    unknown = [n for n in order if n not in STAGE_NAMES]
    if unknown:
        raise ConfigError(f"processor_order has unknown stage name(s): {', '.join(unknown)}; "
                          f"allowed: {', '.join(STAGE_NAMES)}")
    twice = sorted({n for n in order if order.count(n) > 1})
    if twice:
        raise ConfigError(f"processor_order lists {', '.join(twice)} more than once; allowed: "
                          "each stage at most once")
    fixed = {"temperature", "mirostat"} if c.strategy == "mirostat" else set()
    every = planned_stages(c, PROCESSOR_ORDERS["transformers"])
    missing = [n for n in every if n not in order and n not in fixed and n not in FIRST_STAGES]
    if missing:
        raise ConfigError(f"processor_order={list(order)!r} leaves out the active stage(s) "
                          f"{', '.join(missing)}; allowed: a list that names every active stage "
                          f"(or a preset: {presets})")
