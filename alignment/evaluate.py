"""After DPO or ORPO, what does the model actually say, and how much depends on decoding?

``evaluate`` runs the base model and each adapter on held-out stance prompts under several
decodings and measures, per (model, decoding):

- **stance** of the generated answers two ways (no external judge offline):
  (a) the stance judge of ``alignment.stance``, validated on labelled generated answers
  (support / oppose / neutral fractions and the mean P(support), each with a 95 % bootstrap
  interval over prompts, samples nested; adapter − base differences paired by prompt);
  (b) per model, the likelihood margin
  log π(support reference | prompt) − log π(oppose reference | prompt) on the test prompts;
- **side effects**, always beside stance: end-of-sequence rate, mean length, loop rate
  (``find_loops``: exact, near-verbatim or template loops), rep-2/3 (Su et al. 2022) and the
  sample-based KL to the base
  mean_t[log π_adapter(y_t) − log π_base(y_t)] over the adapter's own tokens;
- **pairwise** (seed 001 style): adapter vs base answer for the same prompt, decoding and
  sample, a win when the answer moves P(support) towards the adapter's training target by more
  than ``tie_margin``, a loss when it moves it away by more, else a tie;

and per adapter the **held-out preference accuracy and margin**: on the test prompts' reference
pairs (chosen = the side the adapter was trained towards), DPO-family adapters use the implicit
reward β·(log π − log π_ref) summed over the answer (Rafailov et al. 2023, Eq. 5), ORPO uses the
log-odds of the mean per-token log-probability (Hong et al. 2024, Eq. 4).

Every generation is kept (``EvaluationReport.generations``) so reports can print the
before/after table the course printed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from decoding import DecodingConfig, load_model
from decoding.batch import generate_mixed
from decoding.diagnostics import rep_n
from decoding.diagnostics.summary import main_text_loop
from decoding.engines import check_engine_name, decode_vllm, sampling_params
from decoding.errors import DecodingLabError, check_range
from decoding.models import ADAPTER_META, LM, attach_adapter
from decoding.seeds import sample_seed
from decoding.specs import StrategySpec, parse_specs
from decoding.trace import SequenceResult

from .bootstrap import Interval, bootstrap_difference, bootstrap_mean, by_prompt, percent_interval
from .data import StanceRecord, load_stance_records
from .scoring import sequence_logprobs, token_logprobs
from .stance import StanceConfig, StanceJudge, fit_stance_judge

DEFAULT_DECODINGS = "greedy;sample:top_p=0.9;beam:num_beams=4"
DPO_FAMILY = ("dpo", "ipo", "simpo")


@dataclass(frozen=True)
class EvalConfig:
    """What ``evaluate`` runs (each field is a ``declab evaluate`` flag)."""

    prompts: str = field(default="stance-test", metadata={
        "help": "course-schema test set (shipped name or file): prompts with a support and an "
                "oppose reference answer"})
    decodings: str = field(default=DEFAULT_DECODINGS, metadata={
        "help": "decoding specs STRATEGY[:field=value,...], separated by ';'"})
    samples: int = field(default=3, metadata={
        "help": "samples per prompt for sampling decodings (each (prompt, sample) gets its own seed, "
                "derived from --seed and recorded); "
                "deterministic decodings run once"})
    max_new_tokens: int = field(default=96, metadata={"help": "new tokens per answer"})
    chat: bool = field(default=True, metadata={"help": "use the chat template (the adapters' training format)"})
    seed: int = field(default=0, metadata={"help": "first sampling seed"})
    tie_margin: float = field(default=0.1, metadata={
        "help": "pairwise: |ΔP(support)| at or below this is a tie, in [0, 1)"})
    max_prompts: int | None = field(default=None, metadata={"help": "only the first N test prompts"})
    engine: str = field(default="ours", metadata={
        "help": "who generates the answers: ours (our batched loop) | vllm (one vLLM run, every "
                "adapter as a LoRARequest; make engines); the measurements run on our side"})

    def __post_init__(self) -> None:
        for name, low in (("samples", 1), ("max_new_tokens", 1), ("seed", 0)):
            check_range(name, getattr(self, name), low, integer=True)
        check_range("max_prompts", self.max_prompts, 1, integer=True, optional=True,
                    allowed="an integer >= 1, or None for all")
        check_range("tie_margin", self.tie_margin, 0, 1, high_open=True)
        check_engine_name(self.engine)

    def check_engine(self) -> None:
        """Refuse, before anything loads, a decoding the engine cannot run."""
        if self.engine == "vllm":
            for spec in self.specs():
                try:
                    sampling_params(spec.config)
                except DecodingLabError as exc:
                    raise DecodingLabError(f"decoding {spec.label!r}: {exc}") from None

    def specs(self) -> list[StrategySpec]:
        return parse_specs(self.decodings, DecodingConfig(max_new_tokens=self.max_new_tokens,
                                                          seed=self.seed))


# --------------------------------------------------------------------------- adapters

@dataclass(frozen=True)
class Subject:
    """A model under evaluation: the base (no adapter) or one adapter."""

    label: str
    adapter: str | None
    method: str | None = None
    beta: float | None = None
    target: str | None = None         # "support" / "oppose": the side it was trained to prefer

    @classmethod
    def of_adapter(cls, path: str, label: str | None = None) -> "Subject":
        meta_file = Path(path) / ADAPTER_META
        if not meta_file.is_file():
            raise DecodingLabError(f"adapter={path!r}: no {ADAPTER_META} there; expected an adapter "
                                   "directory written by declab train")
        meta = json.loads(meta_file.read_text())
        ratio = (meta.get("dataset") or {}).get("support_ratio")
        target = None if ratio is None else ("support" if ratio >= 0.5 else "oppose")
        beta = (meta.get("config") or {}).get("beta")
        return cls(label or Path(path).name, str(path), meta.get("method"), beta, target)


def load_subject(subject: Subject, base: LM) -> LM:
    """The adapter's model: a copy of the base with the LoRA weights merged in, so that
    generation takes the plain-Llama fast path. The base LM is never modified (PEFT wraps the
    module it is given in place, hence the copy). Merging changes the products' rounding, not
    the model (about 1e-6 in the logits). The merged weights are frozen (requires_grad False);
    the fast path mirrors transformers for those too (``tests/test_evaluate.py``)."""
    if subject.adapter is None:
        return base
    lm = attach_adapter(dataclasses.replace(base, model=copy.deepcopy(base.model)), subject.adapter)
    merged = lm.model.merge_and_unload()
    merged.eval()
    return dataclasses.replace(lm, model=merged)


# --------------------------------------------------------------------------- measurements

@dataclass
class GenerationRecord:
    """One answer: who wrote it, with which decoding, and what we measured on it."""

    model: str
    decoding: str
    prompt_id: Any
    sample: int
    text: str
    token_ids: list[int]
    finish_reason: str
    p_support: float = float("nan")
    p_oppose: float = float("nan")
    stance: str = ""
    loop_period: int | None = None
    loop_onset: int | None = None
    loop_kind: str | None = None         # exact | near | template (find_loops)
    kl_tokens: float | None = None       # Σ_t log π − log π_base over this answer
    seed: int | None = None              # the sampling seed this answer was drawn with

    @property
    def looped(self) -> bool:
        return self.loop_period is not None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# Model rows per mixed batch: decodings and samples of a model share batches of this size.
MIXED_ROWS = 64


def answer_jobs(items: Sequence[tuple[Any, str]], specs: Sequence[StrategySpec],
                samples: int) -> list[tuple[StrategySpec, int, Any, str, DecodingConfig]]:
    """(spec, sample index, item id, prompt text, config) for every answer to generate: each
    item once per deterministic decoding and ``samples`` times per sampling one (seed
    ``sample_seed(config seed, id, k)`` for sample k); decoding by decoding, then sample by
    sample, then item by item."""
    jobs = []
    for one in specs:
        runs = samples if one.config.strategy in ("sample", "mirostat") else 1
        for k in range(runs):
            jobs += [(one, k, item_id, text, one.config.replace(seed=sample_seed(one.config.seed, item_id, k)))
                     for item_id, text in items]
    return jobs


def answer_records(lm: LM, label: str, jobs: Sequence[tuple], sequences: Sequence[SequenceResult]
                   ) -> list[GenerationRecord]:
    """One record per (job, its generated sequence), with its loop (``answer_loop``)."""
    out = []
    for (one, k, item_id, _, config), seq in zip(jobs, sequences):
        loop = answer_loop(seq.token_ids, pieces=lm.token_pieces(seq.token_ids))
        sampled = one.config.strategy in ("sample", "mirostat")
        out.append(GenerationRecord(label, one.label, item_id, k, seq.text, list(seq.token_ids),
                                    seq.finish_reason,
                                    loop_period=loop.period if loop else None,
                                    loop_onset=loop.onset if loop else None,
                                    loop_kind=loop.kind if loop else None,
                                    seed=config.seed if sampled else None))
    return out


def generate_answers(lm: LM, label: str, items: Sequence[tuple[Any, str]],
                     spec: StrategySpec | Sequence[StrategySpec], samples: int,
                     chat: bool) -> list[GenerationRecord]:
    """Every ``(id, prompt)`` answered as ``answer_jobs`` lists (the seed of each sample is
    recorded). Every decoding and sample runs in shared mixed batches
    (``decoding.generate_mixed``: one forward pass per step for all of them, the tokens each
    gets alone). A loop counts when ``find_loops`` finds one covering >= 8 tokens
    (``answer_loop``)."""
    specs = [spec] if isinstance(spec, StrategySpec) else list(spec)
    jobs = answer_jobs(items, specs, samples)
    gens = generate_mixed(lm, [(text, config) for *_, text, config in jobs], chat=chat,
                          max_rows=MIXED_ROWS)
    return answer_records(lm, label, jobs, [gen.sequences[0] for gen in gens])


def vllm_answers(base: LM, subjects: Sequence["Subject"], items: Sequence[tuple[Any, str]],
                 specs: Sequence[StrategySpec], samples: int, chat: bool
                 ) -> dict[str, list[SequenceResult]]:
    """Every subject's ``answer_jobs`` in one vLLM run (``--engine vllm``): the base as is, each
    adapter as a LoRARequest on it, so the engine starts once. Per subject label, the first
    sequence of each job."""
    jobs = answer_jobs(items, specs, samples)
    ids = [base.encode(text, chat=chat) for *_, text, _ in jobs]
    prompts, configs, adapters = [], [], []
    for subject in subjects:
        prompts += ids
        configs += [config for *_, config in jobs]
        adapters += [subject.adapter] * len(jobs)
    sequences = [seqs[0] for seqs in decode_vllm(base, prompts, configs, adapters=adapters)]
    return {subject.label: sequences[i * len(jobs):(i + 1) * len(jobs)]
            for i, subject in enumerate(subjects)}


def answer_loop(token_ids: Sequence[int], min_tokens: int = 8,
                pieces: Sequence[str] | None = None):
    """The answer's loop (``find_loops``' main finding: exact, near-verbatim or template, at
    the end or mid-text; whitespace repetition is not one) when it covers >= ``min_tokens``
    tokens (a doubled word is not a loop); else None. Without ``pieces`` (each token's text)
    only exact loops can be found."""
    loop = main_text_loop(list(token_ids), None if pieces is None else list(pieces))
    return loop if loop is not None and loop.length >= min_tokens else None


def judge_records(judge: StanceJudge, records: Sequence[GenerationRecord], prompts: dict[Any, str]) -> None:
    """Fill ``p_support``, ``p_oppose`` and ``stance`` of every record from the judge."""
    for g, v in zip(records, judge.judge([prompts[g.prompt_id] for g in records], [g.text for g in records])):
        g.p_support, g.p_oppose, g.stance = v.p_support, v.p_oppose, v.stance


def implicit_reward(policy: LM, base: LM, subject: "Subject | None", prompt_ids: Sequence[int],
                    token_ids: Sequence[int]) -> float | None:
    """β·Σ_t (log π(y_t) − log π_ref(y_t)) over one answer: DPO's implicit reward (Rafailov et
    al. 2023, Eq. 5). None for the base, for methods without a reference (ORPO), and for an
    empty answer."""
    if subject is None or subject.method not in DPO_FAMILY or not token_ids:
        return None
    pad = policy.tokenizer.pad_token_id or 0
    lp = token_logprobs(policy.model, [prompt_ids], [token_ids], pad)[0]
    lb = token_logprobs(base.model, [prompt_ids], [token_ids], pad)[0]
    return float((subject.beta or 0.1) * (lp - lb).sum())


STANCE_VALUES = {
    "support": lambda r: r.stance == "support",
    "oppose": lambda r: r.stance == "oppose",
    "neutral": lambda r: r.stance == "neutral",
    "mean_p_support": lambda r: r.p_support,
    "loop_rate": lambda r: r.looped,
}


def intervals(records: Sequence[GenerationRecord], seed: int = 0) -> dict[str, list[float]]:
    """95 % bootstrap intervals over prompts, samples nested (``alignment.bootstrap``), of the
    stance fractions, the mean P(support) and the loop rate of one cell: ``{name: [low, high]}``."""
    out = {}
    for name, value in STANCE_VALUES.items():
        if name == "mean_p_support" and any(r.p_support != r.p_support for r in records):
            continue
        ci = bootstrap_mean(list(by_prompt(records, value).values()), seed=seed)
        out[name] = [ci.low, ci.high]
    return out


def differences(adapter: Sequence[GenerationRecord], base: Sequence[GenerationRecord],
                seed: int = 0) -> dict[str, Interval]:
    """adapter − base for the same prompts (one decoding), paired by prompt, samples nested:
    the change in each stance fraction, in mean P(support) and in loop rate, with 95 %
    intervals. A difference whose interval contains 0 is not a finding."""
    out = {}
    for name, value in STANCE_VALUES.items():
        if name == "mean_p_support" and any(r.p_support != r.p_support for r in list(adapter) + list(base)):
            continue
        out[name] = bootstrap_difference(by_prompt(adapter, value), by_prompt(base, value), seed=seed)
    return out


def summarise(records: Sequence[GenerationRecord]) -> dict[str, Any]:
    """Stance fractions and side effects of one (model, decoding) cell, with 95 % intervals over
    prompts (``ci``) for the stance fractions, mean P(support) and loop rate."""
    n = len(records)
    stance = {label: sum(r.stance == label for r in records) / n for label in ("support", "oppose", "neutral")}
    ids = [r.token_ids[:-1] if r.finish_reason == "eos" else r.token_ids for r in records]
    kls = [r.kl_tokens for r in records if r.kl_tokens is not None]
    tokens = sum(len(r.token_ids) for r in records if r.kl_tokens is not None)
    return {"answers": n, "prompts": len({r.prompt_id for r in records}), **stance,
            "mean_p_support": float(np.nanmean([r.p_support for r in records])),
            "eos_rate": sum(r.finish_reason == "eos" for r in records) / n,
            "mean_length": float(np.mean([len(r.token_ids) for r in records])),
            "loop_rate": sum(r.looped for r in records) / n,
            **{f"rep_{n}": _safe(rep_n, ids, n) for n in (2, 3, 4)},
            "kl_to_base": (sum(kls) / tokens) if tokens else None,
            "ci": intervals(records)}


def _safe(fn, *args):
    try:
        return fn(*args)
    except DecodingLabError:
        return None


def pairwise_counts(adapter: Sequence[GenerationRecord], base: Sequence[GenerationRecord],
                    target: str | None, tie_margin: float) -> dict[str, Any]:
    """Win / lose / tie of adapter answers against the base's for the same prompt, decoding
    and sample index, judged by the judge's P(support) moved towards ``target``
    (``support`` when the adapter's target is unknown). Counts overall and per prompt."""
    sign = -1.0 if target == "oppose" else 1.0
    base_by_key = {(r.decoding, r.prompt_id, r.sample): r for r in base}
    total = {"win": 0, "lose": 0, "tie": 0}
    per_prompt: dict[Any, dict[str, int]] = {}
    for r in adapter:
        other = base_by_key.get((r.decoding, r.prompt_id, r.sample))
        if other is None:
            continue
        delta = sign * (r.p_support - other.p_support)
        outcome = "tie" if abs(delta) <= tie_margin else ("win" if delta > 0 else "lose")
        total[outcome] += 1
        per_prompt.setdefault(r.prompt_id, {"win": 0, "lose": 0, "tie": 0})[outcome] += 1
    return {"target": target or "support", **total, "per_prompt": per_prompt}


def likelihood_margins(lm: LM, records: Sequence[StanceRecord], chat: bool) -> list[dict[str, Any]]:
    """log π(support | prompt) − log π(oppose | prompt) per test prompt (sum and per-token)."""
    prompts = [r.prompt for r in records]
    sup = sequence_logprobs(lm, prompts, [r.support for r in records], chat=chat)
    opp = sequence_logprobs(lm, prompts, [r.oppose for r in records], chat=chat)
    return [{"prompt_id": r.id, "margin": float(s.sum() - o.sum()),
             "margin_per_token": float(s.mean() - o.mean())} for r, s, o in zip(records, sup, opp)]


def preference_accuracy(policy: LM, base: LM, subject: Subject, records: Sequence[StanceRecord],
                        chat: bool) -> dict[str, Any] | None:
    """Held-out preference accuracy and mean margin of an adapter (module docstring)."""
    if subject.adapter is None:
        return None
    target = subject.target or "support"
    chosen = [r.support if target == "support" else r.oppose for r in records]
    rejected = [r.oppose if target == "support" else r.support for r in records]
    prompts = [r.prompt for r in records]
    pc = sequence_logprobs(policy, prompts, chosen, chat=chat)
    pr = sequence_logprobs(policy, prompts, rejected, chat=chat)
    if subject.method in DPO_FAMILY or subject.method is None:
        beta = subject.beta or 0.1
        bc = sequence_logprobs(base, prompts, chosen, chat=chat)
        br = sequence_logprobs(base, prompts, rejected, chat=chat)
        margins = [beta * ((a.sum() - c.sum()) - (b.sum() - d.sum())) for a, b, c, d in zip(pc, pr, bc, br)]
        kind = f"implicit reward beta*(log pi - log pi_ref), beta={beta}"
    else:
        margins = [_log_odds(a.mean()) - _log_odds(b.mean()) for a, b in zip(pc, pr)]
        kind = "ORPO log-odds of the mean per-token log-probability"
    margins = [float(m) for m in margins]
    return {"target": target, "pairs": len(margins), "accuracy": sum(m > 0 for m in margins) / len(margins),
            "mean_margin": float(np.mean(margins)), "margin": kind}


def _log_odds(mean_logp: torch.Tensor) -> float:
    """log(p / (1 − p)) for p = exp(mean log-prob), computed stably (TRL's ORPO odds_ratio_loss)."""
    x = float(mean_logp)
    return x - math.log(-math.expm1(x)) if x < 0 else float("inf")


def attach_kl(policy: LM, base: LM, records: list[GenerationRecord], prompts: dict[Any, str], chat: bool) -> None:
    """Fill ``kl_tokens`` of every adapter answer: Σ_t log π(y_t) − log π_base(y_t)."""
    if not records:
        return
    prompt_ids = [policy.encode(prompts[r.prompt_id], chat=chat) for r in records]
    comp = [r.token_ids for r in records]
    pad = policy.tokenizer.pad_token_id or 0
    lp = token_logprobs(policy.model, prompt_ids, comp, pad)
    lb = token_logprobs(base.model, prompt_ids, comp, pad)
    for r, a, b in zip(records, lp, lb):
        r.kl_tokens = float((a - b).sum())


# --------------------------------------------------------------------------- the whole evaluation

@dataclass
class EvaluationReport:
    config: dict
    judge: dict                       # the stance judge's validated agreement (StanceJudge.summary)
    subjects: list[dict]
    cells: list[dict]                 # one per (model, decoding): summarise() + labels
    likelihood: dict[str, dict]       # model -> {"mean_margin", "per_prompt"}
    preference: dict[str, dict]       # adapter -> preference_accuracy()
    pairwise: dict[str, dict]         # "adapter|decoding" -> pairwise_counts()
    differences: dict[str, dict]      # "adapter|decoding" -> {stat: Interval dict}: adapter − base
    generations: list[GenerationRecord]
    seconds: float

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["generations"] = [g.to_dict() for g in self.generations]
        return data


def answer_models(base: LM, subjects: Sequence[Subject], items: Sequence[tuple[Any, str]],
                  specs: Sequence[StrategySpec], samples: int, chat: bool,
                  judge: StanceJudge | None,
                  on_model: Callable[[LM, Subject, list[GenerationRecord]], None] | None = None,
                  progress: Callable[[str], None] | None = None,
                  engine_answers: dict[str, list[SequenceResult]] | None = None
                  ) -> list[GenerationRecord]:
    """Every subject × decoding on ``items`` (``(id, prompt)``): answers with their stance
    (when a judge is given) and, for adapters, the KL of their answers to the base. Each
    adapter is loaded once (``load_subject``); ``on_model`` sees every loaded model with its
    answers, for measurements that need the model (likelihood margins, preference accuracy).
    ``engine_answers``: the answers already generated by another engine (``vllm_answers``), per
    subject label; the models are still loaded for the measurements."""
    note = progress or (lambda text: None)
    prompts = dict(items)
    records: list[GenerationRecord] = []
    for subject in subjects:
        note(f"{subject.label}: loading")
        lm = load_subject(subject, base)
        note(f"{subject.label}: {', '.join(spec.label for spec in specs)}")
        if engine_answers is None:
            mine = generate_answers(lm, subject.label, items, specs, samples, chat)
        else:
            mine = answer_records(lm, subject.label, answer_jobs(items, specs, samples),
                                  engine_answers[subject.label])
        if judge is not None:
            judge_records(judge, mine, prompts)
        if subject.adapter is not None:
            attach_kl(lm, base, mine, prompts, chat)
        if on_model is not None:
            on_model(lm, subject, mine)
        records += mine
        del lm
    return records


def evaluate(adapters: Sequence[str], config: EvalConfig | None = None, model_name: str | None = None,
             base: LM | None = None, judge: StanceJudge | None = None, stance_config: StanceConfig | None = None,
             progress: Callable[[str], None] | None = None) -> EvaluationReport:
    """Base + every adapter × every decoding on the test prompts (module docstring).

    ``model_name``: the base model (None: the embedded one); ``base`` an already loaded copy of
    it (never modified); ``judge`` a fitted stance judge to reuse."""
    config = config or EvalConfig()
    started = time.perf_counter()
    specs = config.specs()
    records = load_stance_records(config.prompts)[: config.max_prompts]
    if not records:
        raise DecodingLabError(f"prompts={config.prompts!r} holds no test prompt")
    subjects = [Subject("base", None)] + [Subject.of_adapter(a) for a in adapters]
    labels = [s.label for s in subjects]
    if len(set(labels)) != len(labels):
        raise DecodingLabError(f"adapter names must differ (the directory name labels each): {labels}")
    note = progress or (lambda text: None)
    base = base or load_model(model_name)
    note("fitting the stance judge")
    judge = judge or fit_stance_judge(base, stance_config)
    likelihood, preference, pairwise = {}, {}, {}

    def per_model(lm: LM, subject: Subject, _answers: list[GenerationRecord]) -> None:
        margins = likelihood_margins(lm, records, config.chat)
        likelihood[subject.label] = {"mean_margin": float(np.mean([m["margin"] for m in margins])),
                                     "mean_margin_per_token": float(np.mean([m["margin_per_token"] for m in margins])),
                                     "per_prompt": margins}
        acc = preference_accuracy(lm, base, subject, records, config.chat)
        if acc is not None:
            preference[subject.label] = acc

    items = [(r.id, r.prompt) for r in records]
    engine_answers = None
    if config.engine == "vllm":
        note("generating every answer on vLLM (one engine run)")
        engine_answers = vllm_answers(base, subjects, items, specs, config.samples, config.chat)
    generations = answer_models(base, subjects, items, specs, config.samples,
                                config.chat, judge, per_model, note, engine_answers)
    cells = [{"model": s.label, "decoding": spec.label,
              **summarise([a for a in generations if a.model == s.label and a.decoding == spec.label])}
             for s in subjects for spec in specs]
    by_subject = {s.label: [a for a in generations if a.model == s.label] for s in subjects}
    diffs = {}
    for subject in subjects[1:]:
        for spec in specs:
            mine = [a for a in by_subject[subject.label] if a.decoding == spec.label]
            theirs = [a for a in by_subject["base"] if a.decoding == spec.label]
            key = f"{subject.label}|{spec.label}"
            pairwise[key] = pairwise_counts(mine, theirs, subject.target, config.tie_margin)
            diffs[key] = {k: v.to_dict() for k, v in differences(mine, theirs).items()}
    return EvaluationReport(
        config={**config.__dict__, "decodings": [s.label for s in specs]},
        judge=judge.summary(),
        subjects=[s.__dict__ for s in subjects], cells=cells, likelihood=likelihood,
        preference=preference, pairwise=pairwise, differences=diffs, generations=generations,
        seconds=round(time.perf_counter() - started, 1))


# --------------------------------------------------------------------------- text views

def judge_line(summary: dict) -> str:
    """What the stance numbers rest on, for every report that prints them."""
    rec = ", ".join(f"{k} {r:.2f}" for k, r in summary["recall"].items() if r is not None)
    return (f"stance judge ({summary['features']}): validated on {summary['n']} {summary['validated_on']}: "
            f"accuracy {summary['accuracy']:.2f}, recall {rec}, kappa {summary['kappa']:.2f}")


def _ci(cell: dict, name: str) -> str:
    return f"[{percent_interval(*cell['ci'][name], sep=',')}]"


def format_table(report: EvaluationReport) -> str:
    """The per-(model, decoding) table with 95 % intervals over prompts, the adapter − base
    differences, the likelihood margins and preference accuracies."""
    lines = [judge_line(report.judge), "95 % intervals: bootstrap over prompts, samples nested.", "",
             f"{'model':<16} {'decoding':<24} {'n':>3} {'support %':>14} {'oppose %':>14} {'neutral':>7} "
             f"{'P(sup)':>6} {'EOS':>5} {'len':>6} {'loop %':>13} {'rep-2':>6} {'KL':>7}"]
    for c in report.cells:
        kl = "" if c["kl_to_base"] is None else f"{c['kl_to_base']:.3f}"
        rep2 = "" if c["rep_2"] is None else f"{c['rep_2']:.1f}"
        lines.append(f"{c['model'][:16]:<16} {c['decoding'][:24]:<24} {c['answers']:>3} "
                     f"{100 * c['support']:>4.0f} {_ci(c, 'support'):>9} {100 * c['oppose']:>4.0f} {_ci(c, 'oppose'):>9} "
                     f"{c['neutral']:>7.0%} {c['mean_p_support']:>6.2f} {c['eos_rate']:>5.0%} "
                     f"{c['mean_length']:>6.1f} {100 * c['loop_rate']:>3.0f} {_ci(c, 'loop_rate'):>9} {rep2:>6} {kl:>7}")
    if report.differences:
        lines += ["", "adapter - base, same prompts and decoding (percentage points, 95 % interval; * = excludes 0):"]
        for key, d in report.differences.items():
            parts = []
            for name in ("support", "oppose", "loop_rate"):
                i = d[name]
                star = "*" if i["low"] > 0 or i["high"] < 0 else " "
                parts.append(f"{name} {100 * i['estimate']:+4.0f} [{100 * i['low']:+.0f},{100 * i['high']:+.0f}]{star}")
            lines.append(f"  {key:<40} " + "  ".join(parts))
    lines += ["", "likelihood margin log pi(support ref) - log pi(oppose ref), mean over test prompts:"]
    for model, m in report.likelihood.items():
        lines.append(f"  {model:<16} {m['mean_margin']:+8.2f} nats ({m['mean_margin_per_token']:+.3f} per token)")
    if report.preference:
        lines += ["", "held-out preference accuracy (chosen = the adapter's training side):"]
        for model, p in report.preference.items():
            lines.append(f"  {model:<16} accuracy {p['accuracy']:.0%} of {p['pairs']}, mean margin "
                         f"{p['mean_margin']:+.3f} ({p['margin']}; target {p['target']})")
    if report.pairwise:
        lines += ["", "pairwise vs base (stance moved towards the adapter's target):"]
        for key, p in report.pairwise.items():
            lines.append(f"  {key:<40} win {p['win']:>3}  lose {p['lose']:>3}  tie {p['tie']:>3}")
    return "\n".join(lines)


def before_after(report: EvaluationReport, decoding: str | None = None, width: int = 160) -> str:
    """Per test prompt, the base answer and each adapter's (first sample of one decoding)."""
    decoding = decoding or report.config["decodings"][0]
    rows = [g for g in report.generations if g.decoding == decoding and g.sample == 0]
    out = []
    for prompt_id in dict.fromkeys(g.prompt_id for g in rows):
        out.append(f"[{prompt_id}]")
        for g in (g for g in rows if g.prompt_id == prompt_id):
            text = " ".join(g.text.split())
            out.append(f"  {g.model:<14} {g.stance:<8} {text[:width]}{'…' if len(text) > width else ''}")
    return "\n".join(out)
