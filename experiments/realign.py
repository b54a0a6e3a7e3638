"""``declab experiment realign``: does decode-time realignment track retraining on our model?

DeRa (Liu et al., ICML 2024) decodes a DPO adapter trained with KL strength β at
``logits = base + λ (adapter − base)`` and argues this approximates the adapter retrained with
β/λ. One DPO adapter is trained at β (towards *oppose*, as decoding-vs-alignment, so that it
moves the base), decoded at every λ of ``lambdas``; adapters retrained at β/λ for the λ of
``retrain`` are decoded plainly. Every row: the stance of the held-out test prompts' answers
(the stance judge's P(support), support/oppose/neutral, with intervals), the KL of the
answers to the base (Σ log π_λ − log π_base per token, π_λ the realigned policy), loop rate
and length. λ = 0 must reproduce the base's answers (checked and reported).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, replace

import torch

from alignment.data import load_stance_records
from alignment.evaluate import Subject, generate_answers, judge_line, judge_records
from alignment.stance import StanceConfig, fit_stance_judge
from alignment.train import TrainConfig
from decoding import DecodingConfig, load_model
from decoding.config import knob
from decoding.errors import check_range, out_of_range
from decoding.guide import realign
from decoding.io import write_json_atomic, write_text_atomic
from decoding.models import LM, attach_adapter
from decoding.specs import parse_spec
from decoding.speculative import answer_logits

from . import alignment_kit as kit
from .decoding_vs_alignment import LEARNING_RATE, SUPPORT_RATIO
from .runs import open_run

STUDY = "realign"


@dataclass(frozen=True)
class RealignSettings:
    """The study's size and knobs; the help texts feed the flags."""

    beta: float = knob(0.1, "KL strength β of the DPO adapter that is realigned.")
    lambdas: tuple[float, ...] = knob((0.0, 0.25, 0.5, 1.0, 1.5, 2.0),
                                      "The λ the adapter is decoded at (realign=λ).")
    retrain: tuple[float, ...] = knob((0.5, 2.0), "The λ whose β/λ adapter is trained for "
                                      "comparison (each one of lambdas, not 0 or 1).")
    decoding: str = knob("greedy", "The decoding spec every answer uses (realign is added).")
    pairs: int = knob(50, "Stance training pairs of every adapter.")
    epochs: int = knob(3, "Epochs of every adapter.")
    samples: int = knob(1, "Samples per prompt for a sampling decoding.")
    max_new_tokens: int = knob(64, "New tokens per answer at most.")
    test_prompts: int | None = knob(None, "Only the first N held-out test prompts; None: all.")
    support_ratio: float = knob(SUPPORT_RATIO, "Share of the training pairs that prefer the "
                                "supporting answer, 0..1 (0: towards oppose).")
    learning_rate: float = knob(LEARNING_RATE, "Learning rate of every adapter; 0 < lr < 1.")
    seed: int = knob(0, "Seed of the LoRA initialisation, the data order and the sampling.")
    quick: bool = knob(False, "The few-minute version (set by --quick).")

    def __post_init__(self) -> None:
        kit.check_counts(self, ("pairs", "epochs", "samples", "max_new_tokens", "test_prompts"))
        check_range("beta", self.beta, 0, low_open=True)
        check_range("seed", self.seed, 0, integer=True)
        for lam in self.lambdas:
            check_range("lambdas", lam, 0, 100)
        for lam in self.retrain:
            if lam not in self.lambdas or lam in (0, 1):
                raise out_of_range("retrain", lam, f"one of lambdas {list(self.lambdas)}, not 0 or 1")
        kit.check_training_knobs(self)
        parse_spec(self.decoding).config.replace(realign=1.0)    # refuses beam, contrastive

    @classmethod
    def quick_settings(cls) -> "RealignSettings":
        return cls(lambdas=(0.0, 1.0, 2.0), retrain=(2.0,), pairs=12, epochs=1,
                   max_new_tokens=32, test_prompts=4, quick=True)


def realign_label(lam: float) -> str:
    return f"realign={lam:g}"


def realigned_kl(lm: LM, prompt_ids: list[int], answer_ids: list[int], lam: float) -> float:
    """Σ_t log π_λ(y_t) − log π_base(y_t) along an answer, π_λ = softmax(base + λ (adapter − base))."""
    if not answer_ids:
        return 0.0
    adapter, base = answer_logits(lm, prompt_ids, answer_ids)
    index = torch.tensor(answer_ids)[:, None]
    mixed = torch.log_softmax(realign(adapter, base, lam), -1).gather(1, index)
    return float((mixed - torch.log_softmax(base, -1).gather(1, index)).sum())


def run_realign(settings: RealignSettings, root: str = "runs", model: str | None = None,
                base: LM | None = None, stance_config: StanceConfig | None = None) -> str:
    """Run the study; ``base`` an already loaded model (tests: the tiny one)."""
    base = base or load_model(model)
    records = load_stance_records("stance-test")[: settings.test_prompts]
    items = [(r.id, r.prompt) for r in records]
    prompts = dict(items)
    plain = parse_spec(settings.decoding, DecodingConfig(max_new_tokens=settings.max_new_tokens,
                                                         seed=settings.seed))
    lambda_of = {realign_label(lam): lam for lam in settings.lambdas}
    specs = [plain._replace(label=label, config=plain.config.replace(realign=lam))
             for label, lam in lambda_of.items()]

    def train_config(beta: float) -> TrainConfig:
        return TrainConfig(method="dpo", beta=beta, dataset="stance",
                           support_ratio=float(settings.support_ratio),
                           learning_rate=float(settings.learning_rate), data_size=settings.pairs,
                           epochs=settings.epochs, seed=settings.seed)

    def realigned_kls(lm, mine):      # the realigned policy's KL, not the adapter's
        for r in mine:
            r.kl_tokens = realigned_kl(lm, lm.encode(prompts[r.prompt_id], chat=True),
                                       r.token_ids, lambda_of[r.decoding])

    params = {**settings.__dict__, "lambdas": list(settings.lambdas), "retrain": list(settings.retrain)}
    with open_run(STUDY, root, params=params) as run:
        judge = fit_stance_judge(base, stance_config)
        main = kit.train_into_run(run, f"dpo-b{settings.beta:g}", train_config(settings.beta), base)
        retrained = {lam: kit.train_into_run(run, f"dpo-b{settings.beta / lam:.3g}",
                                             train_config(settings.beta / lam), base)
                     for lam in settings.retrain}
        run.progress(trained=[main.label] + [t.label for t in retrained.values()])
        # unmerged (load_subject merges the LoRA): realign needs the adapter switched off per step
        kit.note(f"{main.label}: {', '.join(spec.label for spec in specs)}")
        adapted = attach_adapter(dataclasses.replace(base, model=copy.deepcopy(base.model)),
                                 str(main.path))
        decoded = generate_answers(adapted, main.label, items, specs, settings.samples, True)
        judge_records(judge, decoded, prompts)
        realigned_kls(adapted, decoded)
        del adapted
        plain_answers = kit.measure_models(
            base, [Subject("base", None)] + [t.subject for t in retrained.values()], items,
            [plain], settings.samples, True, judge)
        rows = kit.cells(decoded + plain_answers)
        base_ids = {(r.prompt_id, r.sample): r.token_ids for r in plain_answers if r.model == "base"}
        at_zero = [r for r in decoded if r.decoding == realign_label(0.0)]
        zero_is_base = (all(r.token_ids == base_ids[(r.prompt_id, r.sample)] for r in at_zero)
                        if at_zero else None)
        pairs = comparison(rows, main.label, retrained, settings)
        kit.write_jsonl(run.file("results.jsonl"), [g.to_dict() for g in decoded + plain_answers])
        kit.write_csv(run.file("summary.csv"), rows)
        write_json_atomic(run.file("realign.json"), {"rows": rows, "comparison": pairs,
                                                      "lambda_0_is_base": zero_is_base})
        write_text_atomic(run.file("report.md"), report(settings, rows, pairs, zero_is_base,
                                                        judge.summary(), [main, *retrained.values()]))
    kit.note(f"report: {run.path / 'report.md'}")
    return str(run.path)


STATS = ("mean_p_support", "support", "kl_to_base", "loop_rate", "mean_length")


def comparison(rows: list[dict], main_label: str, retrained: dict, settings: RealignSettings
               ) -> list[dict]:
    """Per retrained λ: the realigned row and the retrained row side by side, with differences."""
    out = []
    for lam, trained in retrained.items():
        ours = next(r for r in rows if r["model"] == main_label and r["decoding"] == realign_label(lam))
        theirs = next(r for r in rows if r["model"] == trained.label)
        entry = {"lambda": lam, "retrained_beta": settings.beta / lam, "retrained": trained.label}
        for stat in STATS:
            a, b = ours.get(stat), theirs.get(stat)
            entry[stat] = {"realigned": a, "retrained": b,
                           "difference": None if a is None or b is None else a - b}
        out.append(entry)
    return out


def _num(value, fmt="{:.3f}") -> str:
    return "–" if value is None else fmt.format(value)


def report(settings, rows, pairs, zero_is_base, judge, trained) -> str:
    lines = [f"# Decode-time realignment vs retraining ({'quick' if settings.quick else 'full'})", "",
             f"One DPO adapter at β = {settings.beta:g} towards {kit.direction(settings.support_ratio)}, "
             f"decoded at λ ∈ {{{', '.join(f'{x:g}' for x in settings.lambdas)}}} ({settings.decoding}); "
             f"adapters retrained at β/λ for λ ∈ {{{', '.join(f'{x:g}' for x in settings.retrain)}}}. "
             f"{len({r['model'] for r in rows})} models, {settings.pairs} pairs, {settings.epochs} epochs.",
             "", judge_line(judge) + ".", "", kit.precision_sentence(trained), "",
             "| model | decoding | P(support) | support | KL/token to base | loops | length |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['decoding']} | {_num(r.get('mean_p_support'))} | "
                     f"{_num(r.get('support'), '{:.0%}')} | {_num(r.get('kl_to_base'))} | "
                     f"{_num(r.get('loop_rate'), '{:.0%}')} | {_num(r.get('mean_length'), '{:.1f}')} |")
    lines += ["", "## Does realignment track retraining?", ""]
    if zero_is_base is not None:
        lines.append(f"λ = 0 reproduced the base's answers token for token: "
                     f"{'yes' if zero_is_base else 'NO'}.")
    for p in pairs:
        s, k = p["mean_p_support"], p["kl_to_base"]
        lines.append(f"- λ = {p['lambda']:g} vs retrained at β = {p['retrained_beta']:.3g}: "
                     f"P(support) {_num(s['realigned'])} vs {_num(s['retrained'])} "
                     f"(difference {_num(s['difference'], '{:+.3f}')}); KL/token "
                     f"{_num(k['realigned'])} vs {_num(k['retrained'])}; loops "
                     f"{_num(p['loop_rate']['realigned'], '{:.0%}')} vs "
                     f"{_num(p['loop_rate']['retrained'], '{:.0%}')}.")
    diffs = [abs(p["mean_p_support"]["difference"]) for p in pairs
             if p["mean_p_support"]["difference"] is not None]
    if diffs:
        lines += ["", f"Largest |difference| in mean P(support) between realigned and retrained: "
                  f"{max(diffs):.3f} (over {len(diffs)} λ). Intervals per row are in `summary.csv`."]
    lines += ["", "Data: `realign.json`, `summary.csv`, `results.jsonl`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = kit.study_parser(STUDY, __doc__, "one small adapter at λ 0, 1, 2 and one retrained, 4 prompts")
    kit.add_training_flags(p, RealignSettings)
    args = p.parse_args(argv)
    settings = RealignSettings.quick_settings() if args.quick else RealignSettings()
    changes = kit.training_changes(args)
    run_realign(replace(settings, **changes) if changes else settings, args.root, args.model)
    return 0
