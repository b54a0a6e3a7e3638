"""``declab experiment hw6``: the course's DPO runs on the embedded model and our stance set.

Three comparisons, each a pair of DPO LoRA runs that differ in one knob (the others at
support_ratio 1, 3 epochs, 50 pairs):

(a) support_ratio 0 vs 1: does the adapter take the side it was trained on?
(b) 1 vs 3 epochs: how much training does the shift need?
(c) 10 vs 50 pairs: how much data?

The 3-epoch, 50-pair, ratio-1 run is shared by all three, so four adapters are trained. For
each: training curves, held-out preference accuracy, stance fractions (support / oppose /
neutral) of the test prompts' answers under greedy and under top-p 0.9 sampling (several samples
per prompt), and the before/after table. ``report.md`` answers the course's three questions from
these measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from alignment.curves import plot_training_curves
from alignment.data import load_stance_records
from alignment.bootstrap import bootstrap_difference, by_prompt, excludes_zero
from alignment.evaluate import Subject, judge_line, preference_accuracy
from alignment.stance import StanceConfig, fit_stance_judge
from alignment.train import PRECISIONS, TrainConfig
from decoding import DecodingConfig, load_model
from decoding.models import LM
from decoding.config import knob
from decoding.errors import check_range, out_of_range
from decoding.io import write_json_atomic, write_text_atomic
from decoding.specs import parse_specs

from . import alignment_kit as kit
from . import reader_audit
from .runs import open_run

STUDY = "hw6"


@dataclass(frozen=True)
class Hw6Settings:
    """The run's size; ``quick()`` is the few-minute version. The help texts feed the flags."""

    pairs: int = knob(50, "Training pairs of the main runs (the course's data_size).")
    few_pairs: int = knob(10, "Training pairs of comparison (c)'s small run.")
    epochs: int = knob(3, "Epochs of the main runs (the course's num_epoch).")
    few_epochs: int = knob(1, "Epochs of comparison (b)'s short run.")
    test_prompts: int | None = knob(None, "Only the first N held-out test prompts; None: all 14.")
    samples: int = knob(3, "Samples per prompt for top-p sampling (greedy runs once).")
    max_new_tokens: int = knob(80, "New tokens per answer at most.")
    seed: int = knob(0, "Seed of the LoRA initialisation, the data order and the sampling.")
    # 1e-3, not TrainConfig's 1e-4: at 1e-4 the ratio-0 and ratio-1 adapters answered like the
    # base (README, "What the full studies found"), so the course's comparisons showed nothing.
    learning_rate: float = knob(1e-3, "Learning rate of every adapter; 0 < learning_rate < 1, as "
                                "TrainConfig requires (at TrainConfig's 1e-4 the ratio-0 and ratio-1 "
                                "adapters answered like the base).")
    precision: str = knob("auto", "Training arithmetic of every adapter (TrainConfig.precision): auto "
                          "(bf16 autocast where the CPU has bfloat16 arithmetic), bf16 or fp32; run "
                          "the study once with each to see what bf16 changes in the stance shift.")
    quick: bool = knob(False, "The few-minute version (set by --quick).")

    def __post_init__(self) -> None:
        kit.check_counts(self, ("pairs", "few_pairs", "epochs", "few_epochs", "test_prompts", "samples", "max_new_tokens"))
        check_range("seed", self.seed, 0, integer=True)
        kit.check_training_knobs(self, ("learning_rate",))
        if self.precision not in PRECISIONS:
            raise out_of_range("precision", self.precision, ", ".join(PRECISIONS))

    @classmethod
    def quick_settings(cls) -> "Hw6Settings":
        return cls(pairs=12, few_pairs=4, epochs=1, few_epochs=1, test_prompts=4, samples=1,
                   max_new_tokens=40, quick=True)

    def runs(self) -> dict[str, dict]:
        """Adapter label -> TrainConfig knobs. Quick: only comparison (a)."""
        lr = self.learning_rate
        runs = {"ratio1": dict(support_ratio=1.0, data_size=self.pairs, epochs=self.epochs, learning_rate=lr),
                "ratio0": dict(support_ratio=0.0, data_size=self.pairs, epochs=self.epochs, learning_rate=lr)}
        if not self.quick:
            runs["epochs1"] = dict(support_ratio=1.0, data_size=self.pairs, epochs=self.few_epochs, learning_rate=lr)
            runs["pairs10"] = dict(support_ratio=1.0, data_size=self.few_pairs, epochs=self.epochs, learning_rate=lr)
        return runs


COMPARISONS = [("a", "support_ratio 0 vs 1", "ratio0", "ratio1"),
               ("b", "1 vs 3 epochs", "epochs1", "ratio1"),
               ("c", "10 vs 50 pairs", "pairs10", "ratio1")]


def run_hw6(settings: Hw6Settings, root: str = "runs", model: str | None = None,
        base: LM | None = None, stance_config: StanceConfig | None = None) -> str:
    """Run the study; ``base`` an already loaded model (tests: the tiny one), ``stance_config``
    the stance judge\'s settings."""
    base = base or load_model(model)
    records = load_stance_records("stance-test")[: settings.test_prompts]
    items = [(r.id, r.prompt) for r in records]
    specs = parse_specs("greedy;sample:top_p=0.9",
                        DecodingConfig(max_new_tokens=settings.max_new_tokens, seed=settings.seed))
    with open_run(STUDY, root, params=settings.__dict__) as run:
        trained = {}
        for label, knobs in settings.runs().items():
            config = TrainConfig(method="dpo", dataset="stance", seed=settings.seed,
                                 precision=settings.precision, **knobs)
            trained[label] = kit.train_into_run(run, label, config, base)
            run.progress(trained=list(trained))
        kit.note("fitting the stance judge")
        judge = fit_stance_judge(base, stance_config)
        subjects = [Subject("base", None)] + [t.subject for t in trained.values()]
        preference = {}

        def on_model(lm, subject, _answers):
            if subject.adapter is not None:
                preference[subject.label] = preference_accuracy(lm, base, subject, records, chat=True)

        answers = kit.measure_models(base, subjects, items, specs, settings.samples, True, judge, on_model)
        rows = kit.cells(answers)
        for row in rows:
            t = trained.get(row["model"])
            row.update(train_s=t.seconds if t else None,
                       **({f"pref_{k}": v for k, v in preference[row["model"]].items()
                           if k in ("accuracy", "mean_margin")} if t else {}))
        kit.write_jsonl(run.file("results.jsonl"), [g.to_dict() for g in answers])
        kit.write_csv(run.file("summary.csv"), rows)
        write_json_atomic(run.file("judge.json"), judge.summary())
        for label, t in trained.items():
            plot_training_curves(t.log_history, run.file(f"curves_{label}.png"), title=f"DPO {label}")
        stance_figure(rows, run.file("stance.png"))
        write_text_atomic(run.file("report.md"), report(settings, rows, trained, preference, answers,
                                                        judge.summary(), records))
    kit.note(f"report: {run.path / 'report.md'}")
    return str(run.path)


def stance_figure(rows: list[dict], path) -> None:
    plt = kit.pyplot()
    decodings = list(dict.fromkeys(r["decoding"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(decodings), figsize=(5.5 * len(decodings), 4.2), sharey=True)
    for ax, decoding in zip(np.atleast_1d(axes), decodings):
        sub = {r["model"]: r for r in rows if r["decoding"] == decoding}
        bottom = np.zeros(len(models))
        for label, colour in zip(("support", "neutral", "oppose"), (kit.PALETTE[0], "#BBBBBB", kit.PALETTE[3])):
            values = np.array([100 * sub[m][label] for m in models])
            ax.bar(models, values, bottom=bottom, color=colour, label=label)
            bottom += values
        ax.set_title(decoding)
        ax.set_ylabel("% of answers")
        ax.tick_params(axis="x", rotation=30)
    np.atleast_1d(axes)[0].legend(loc="lower left")
    fig.suptitle("Stance of test-prompt answers (stance judge)")
    kit.save_figure(fig, path)


COLUMNS = [("model", "model", ""), ("decoding", "decoding", ""), ("answers", "n", ""),
           kit.with_ci("support", "support [95% CI]"), kit.with_ci("oppose", "oppose [95% CI]"),
           ("neutral", "neutral", "{:.0%}"), kit.with_ci("mean_p_support", "P(support) [95% CI]"),
           ("eos_rate", "EOS", "{:.0%}"), ("mean_length", "tokens", "{:.0f}"), kit.with_ci("loop_rate", "loops [95% CI]"),
           ("kl_to_base", "KL to base", "{:.3f}"), ("pref_accuracy", "pref. acc.", "{:.0%}"),
           ("pref_mean_margin", "margin", "{:+.2f}")]


def _cell(rows, model, decoding):
    return next((r for r in rows if r["model"] == model and r["decoding"] == decoding), None)


def report(settings, rows, trained, preference, answers, judge, records) -> str:
    greedy, sampled = rows[0]["decoding"], rows[1]["decoding"]
    lines = ["# hw6: DPO on the stance set, three comparisons", "",
             f"Embedded SmolLM2-135M-Instruct, DPO LoRA (r=8, q/k/v/o), β=0.1, learning rate "
             f"{settings.learning_rate:g}, our defaults otherwise; "
             f"{len(records)} held-out test prompts; decodings: {greedy}, {sampled} "
             f"({settings.samples} samples per prompt); {settings.max_new_tokens} new tokens."
             + (" **Quick run: small and short, only comparison (a).**" if settings.quick else ""), "",
             judge_line(judge) + ". Intervals: 95 %, bootstrap over prompts with samples nested; a "
             "difference is called a finding only when its interval excludes 0.", ""]
    audit = reader_audit.audit_sentence()
    lines += [audit, ""] if audit else []
    lines += ["## Results", ""]
    lines += kit.md_table(rows, COLUMNS)
    lines += ["", "Training: " + "; ".join(f"{k}: {t.config.data_size} pairs × {t.config.epochs} epochs, "
                                             f"ratio {t.config.support_ratio}, {t.seconds:.0f} s, final "
                                             f"accuracy {t.final_metrics.get('rewards/accuracies', float('nan')):.2f}, "
                                             f"margin {t.final_metrics.get('rewards/margins', float('nan')):.2f}"
                                             for k, t in trained.items()), ""]
    lines += [kit.precision_sentence(trained.values()), ""]
    lines += ["## The course's questions, answered from these numbers", ""]
    for key, title, left, right in COMPARISONS:
        if left not in trained or right not in trained:
            continue
        lines.append(f"**({key}) {title}.** " + _compare(rows, answers, preference, left, right, greedy, sampled))
        lines.append("")
    lines += ["## Before / after (greedy)", ""]
    for r in records:
        lines.append(f"**{r.prompt}**")
        for g in (g for g in answers if g.prompt_id == r.id and g.decoding == greedy):
            text = " ".join(g.text.split())
            lines.append(f"- *{g.model}* ({g.stance}, P(support) {g.p_support:.2f}): {text[:300]}")
        lines.append("")
    lines += ["Figures: `stance.png`, `curves_<adapter>.png`. Every answer: `results.jsonl`."]
    return "\n".join(lines) + "\n"


def _values(answers, model, decoding, value) -> dict:
    return by_prompt([g for g in answers if g.model == model and g.decoding == decoding], value)


def difference_text(answers, left, right, decoding) -> str:
    """right − left in support share and in mean P(support), paired by prompt."""
    parts = []
    for name, value, percent in (("support", lambda g: g.stance == "support", True),
                                 ("P(support)", lambda g: g.p_support, False)):
        d = bootstrap_difference(_values(answers, right, decoding, value), _values(answers, left, decoding, value))
        verdict = "a finding" if excludes_zero(d) else "within noise"
        parts.append(f"{name} {d.format(percent=percent, signed=True)} ({verdict})")
    return f"{right} − {left}: " + ", ".join(parts)


def sides_sentence(rows, decoding) -> str:
    """(a)'s question: do the ratio-0 and ratio-1 adapters end on different sides, with
    intervals of mean P(support) that do not overlap?"""
    one, zero = _cell(rows, "ratio1", decoding), _cell(rows, "ratio0", decoding)
    if one is None or zero is None:
        return ""
    lo1, hi1 = one["ci"]["mean_p_support"]
    lo0, hi0 = zero["ci"]["mean_p_support"]
    side = lambda c: max(("support", "oppose", "neutral"), key=lambda k: c[k])
    apart = lo1 > hi0 or lo0 > hi1
    return (f"Under {decoding} the ratio-1 adapter's most common stance is {side(one)}, the ratio-0 "
            f"adapter's {side(zero)}; mean P(support) {one['mean_p_support']:.2f} [{lo1:.2f}–{hi1:.2f}] vs "
            f"{zero['mean_p_support']:.2f} [{lo0:.2f}–{hi0:.2f}]: the intervals "
            + ("do not overlap." if apart else "overlap."))


def _compare(rows, answers, preference, left, right, greedy, sampled) -> str:
    parts = []
    for decoding in (greedy, sampled):
        a, b = _cell(rows, left, decoding), _cell(rows, right, decoding)
        lo_a, hi_a = a["ci"]["support"]
        lo_b, hi_b = b["ci"]["support"]
        parts.append(f"under {decoding}, support {a['support']:.0%} [{100 * lo_a:.0f}–{100 * hi_a:.0f}] ({left}) vs "
                     f"{b['support']:.0%} [{100 * lo_b:.0f}–{100 * hi_b:.0f}] ({right}), oppose {a['oppose']:.0%} vs "
                     f"{b['oppose']:.0%}; {difference_text(answers, left, right, decoding)}")
    pa, pb = preference[left], preference[right]
    base = _cell(rows, "base", greedy)
    parts.append(f"held-out preference accuracy {pa['accuracy']:.0%} vs {pb['accuracy']:.0%} "
                 f"(towards each adapter's own target); the base model answered {base['support']:.0%} "
                 f"support / {base['oppose']:.0%} oppose greedily")
    text = "; ".join(parts) + "."
    if {left, right} == {"ratio0", "ratio1"}:
        text += " " + sides_sentence(rows, greedy)
    return text


def main(argv: list[str] | None = None) -> int:
    p = kit.study_parser(STUDY, __doc__, "two small runs (ratio 0 vs 1), 4 prompts, short answers")
    kit.add_setting_flag(p, Hw6Settings, "samples", "--samples", int)
    kit.add_setting_flag(p, Hw6Settings, "learning_rate", "--lr")
    kit.add_setting_flag(p, Hw6Settings, "precision", "--precision", str)
    args = p.parse_args(argv)
    settings = Hw6Settings.quick_settings() if args.quick else Hw6Settings()
    changes = {k: getattr(args, k) for k in ("samples", "learning_rate", "precision")
               if getattr(args, k) is not None}
    if changes:
        settings = replace(settings, **changes)
    run_hw6(settings, args.root, args.model)
    return 0
