"""``declab experiment dpo-vs-orpo``: the seed report's comparison, on the embedded model.

The seed report trained DPO and ORPO adapters on a 4-bit 7B model against template loops and
saw the mean output length fall from 3785 characters (base) to 3397 after DPO and 1792 after
ORPO. Here:

- **anti-repetition**: DPO and ORPO LoRA adapters trained (raw mode) on the shipped
  anti-repetition set (``declab data anti-repetition``: the model's own greedy loops as rejected,
  the answer cut at its first natural end + EOS as chosen), *without* the pairs mined from the
  ``template_loop`` prompts; those nine Alpaca prompts are the held-out test. Decoded raw, with
  end-of-sequence allowed: does the model now stop, and stop looping?
- **stance**: DPO and ORPO adapters on the stance set (``--support-ratio``, default 1), answers to the held-out
  test prompts in chat mode: stance beside the same side effects.

Under greedy, beam-4, top-p 0.9 and min-p 0.1: mean output length (characters and tokens), loop
rate, rep-2/3/4, EOS rate, and stance where relevant; ``report.md`` puts the lengths beside the
seed's and says whether the same ordering (base > DPO > ORPO) appears.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import numpy as np

from alignment.curves import plot_training_curves
from alignment.data import load_stance_records, resolve_path
from alignment.evaluate import Subject, judge_line
from alignment.stance import StanceConfig, fit_stance_judge
from alignment.train import TrainConfig
from decoding import DecodingConfig, load_model
from decoding.models import LM
from decoding.config import knob
from decoding.errors import DecodingLabError, check_range
from decoding.io import write_json_atomic, write_text_atomic
from decoding.prompts import load_prompt_set
from decoding.specs import parse_specs

from . import alignment_kit as kit
from .runs import open_run

STUDY = "dpo-vs-orpo"
SEED_CHARS = {"base": 3785, "dpo": 3397, "orpo": 1792}   # seed report, 4-bit 7B model
HELD_OUT_SOURCE = "template_loop"
LEARNING_RATE = 1e-4
STANCE_SUPPORT_RATIO = 1.0


@dataclass(frozen=True)
class DpoOrpoSettings:
    """The run's size and training knobs; the help texts feed the flags."""

    epochs: int = knob(3, "Epochs of every adapter.")
    train_pairs: int | None = knob(None, "Anti-repetition training pairs; None: every pair not mined "
                                   "from the held-out template_loop prompts.")
    stance_pairs: int = knob(50, "Stance training pairs of the stance part.")
    decodings: str = knob("greedy;beam:num_beams=4;sample:top_p=0.9;sample:min_p=0.1",
                          "Decoding specs STRATEGY[:field=value,...], separated by ';'.")
    samples: int = knob(2, "Samples per prompt for sampling decodings.")
    max_new_tokens: int = knob(160, "New tokens per anti-repetition answer at most.")
    stance_tokens: int = knob(80, "New tokens per stance answer at most.")
    test_prompts: int | None = knob(None, "Only the first N test prompts; None: all.")
    stance_part: bool = knob(True, "Also train and measure the stance adapters.")
    learning_rate: float = knob(LEARNING_RATE, "Learning rate of every adapter; 0 < learning_rate "
                                "< 1, as TrainConfig requires.")
    support_ratio: float = knob(STANCE_SUPPORT_RATIO, "Stance part: share of the training pairs "
                                "that prefer the supporting answer, 0..1 (0: towards oppose, 1: "
                                "towards support).")
    seed: int = knob(0, "Seed of the LoRA initialisation, the data order and the sampling.")
    quick: bool = knob(False, "The few-minute version (set by --quick).")

    def __post_init__(self) -> None:
        kit.check_counts(self, ("epochs", "train_pairs", "stance_pairs", "samples", "max_new_tokens", "stance_tokens", "test_prompts"))
        check_range("seed", self.seed, 0, integer=True)
        kit.check_training_knobs(self)

    @classmethod
    def quick_settings(cls) -> "DpoOrpoSettings":
        return cls(epochs=1, train_pairs=12, decodings="greedy", samples=1, max_new_tokens=64,
                   test_prompts=4, stance_part=False, quick=True)


def anti_repetition_split(run) -> tuple[str, list[tuple[str, str]], int]:
    """Write the training pairs (every source but the held-out one) into the run; return the
    file, the held-out prompts (id, text) and the number of training pairs."""
    records = json.loads(resolve_path("anti-repetition").read_text())
    train = [r for r in records if r.get("meta", {}).get("source") != HELD_OUT_SOURCE]
    if not train:
        raise DecodingLabError("the anti-repetition set has no pairs outside the held-out template_loop prompts")
    path = write_json_atomic(run.file("data/anti_repetition_train.json"), train)
    held = [(p.id, p.text) for p in load_prompt_set(HELD_OUT_SOURCE).prompts]
    return str(path), held, len(train)


def run_dpo_vs_orpo(settings: DpoOrpoSettings, root: str = "runs", model: str | None = None,
        base: LM | None = None, stance_config: StanceConfig | None = None) -> str:
    """Run the study; ``base`` an already loaded model (tests: the tiny one), ``stance_config``
    the stance judge\'s settings."""
    base = base or load_model(model)
    with open_run(STUDY, root, params=settings.__dict__) as run:
        train_file, held_out, n_train = anti_repetition_split(run)
        held_out = held_out[: settings.test_prompts]
        trained = {}
        for method in ("dpo", "orpo"):
            config = TrainConfig(method=method, dataset=train_file, chat=False, epochs=settings.epochs,
                                 data_size=settings.train_pairs, seed=settings.seed,
                                 learning_rate=float(settings.learning_rate))
            trained[f"{method}-antirep"] = kit.train_into_run(run, f"{method}-antirep", config, base)
        if settings.stance_part:
            for method in ("dpo", "orpo"):
                config = TrainConfig(method=method, dataset="stance",
                                     support_ratio=float(settings.support_ratio),
                                     data_size=settings.stance_pairs, epochs=settings.epochs, seed=settings.seed,
                                     learning_rate=float(settings.learning_rate))
                trained[f"{method}-stance"] = kit.train_into_run(run, f"{method}-stance", config, base)
        run.progress(trained=list(trained))

        specs = parse_specs(settings.decodings, DecodingConfig(max_new_tokens=settings.max_new_tokens,
                                                               seed=settings.seed))
        subjects = [Subject("base", None)] + [trained[k].subject for k in trained if k.endswith("antirep")]
        anti = kit.measure_models(base, subjects, held_out, specs, settings.samples, chat=False, judge=None)
        rows = [dict(part="anti-repetition", **r) for r in kit.cells(anti)]
        answers = [dict(part="anti-repetition", **g.to_dict()) for g in anti]
        judge = None
        if settings.stance_part:
            judge = fit_stance_judge(base, stance_config)
            records = load_stance_records("stance-test")[: settings.test_prompts]
            stance_specs = parse_specs(settings.decodings, DecodingConfig(max_new_tokens=settings.stance_tokens,
                                                                          seed=settings.seed))
            subjects = [Subject("base", None)] + [trained[k].subject for k in trained if k.endswith("stance")]
            stance = kit.measure_models(base, subjects, [(r.id, r.prompt) for r in records], stance_specs,
                                        settings.samples, chat=True, judge=judge)
            rows += [dict(part="stance", **r) for r in kit.cells(stance)]
            answers += [dict(part="stance", **g.to_dict()) for g in stance]
        kit.write_jsonl(run.file("results.jsonl"), answers)
        kit.write_csv(run.file("summary.csv"), rows)
        for label, t in trained.items():
            plot_training_curves(t.log_history, run.file(f"curves_{label}.png"), title=label)
        length_figure([r for r in rows if r["part"] == "anti-repetition"], run.file("lengths.png"))
        write_text_atomic(run.file("report.md"), report(settings, rows, trained, n_train, len(held_out),
                                                        judge.summary() if judge else None, anti))
    kit.note(f"report: {run.path / 'report.md'}")
    return str(run.path)


def length_figure(rows: list[dict], path) -> None:
    plt = kit.pyplot()
    decodings = list(dict.fromkeys(r["decoding"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(models)
    x = np.arange(len(decodings))
    for i, (m, colour) in enumerate(zip(models, kit.PALETTE)):
        sub = {r["decoding"]: r for r in rows if r["model"] == m}
        ax1.bar(x + i * width, [sub[d]["mean_chars"] for d in decodings], width, label=m, color=colour)
        ax2.bar(x + i * width, [100 * sub[d]["loop_rate"] for d in decodings], width, label=m, color=colour)
    for ax, title in ((ax1, "mean output length (characters)"), (ax2, "answers ending in a loop (%)")):
        ax.set_xticks(x + width * (len(models) - 1) / 2, decodings, rotation=20)
        ax.set_title(title)
    ax1.legend()
    fig.suptitle("Held-out template-loop prompts, raw mode, end-of-sequence allowed")
    kit.save_figure(fig, path)


COLUMNS = [("model", "model", ""), ("decoding", "decoding", ""), ("answers", "n", ""),
           ("mean_chars", "chars", "{:.0f}"), ("mean_length", "tokens", "{:.0f}"),
           ("eos_rate", "EOS", "{:.0%}"), kit.with_ci("loop_rate", "loops [95% CI]"), ("rep_2", "rep-2", "{:.1f}"),
           ("rep_3", "rep-3", "{:.1f}"), ("rep_4", "rep-4", "{:.1f}"), ("kl_to_base", "KL", "{:.3f}")]
STANCE_COLUMNS = COLUMNS[:3] + [kit.with_ci("support", "support [95% CI]"), kit.with_ci("oppose", "oppose [95% CI]"),
                                ("neutral", "neutral", "{:.0%}")] + COLUMNS[3:]


def ordering_sentence(rows: list[dict], decoding: str) -> str:
    sub = {r["model"].split("-")[0]: r["mean_chars"] for r in rows if r["decoding"] == decoding}
    if not {"base", "dpo", "orpo"} <= set(sub):
        return ""
    same = sub["base"] > sub["dpo"] > sub["orpo"]
    ranked = sorted(sub, key=sub.get, reverse=True)
    order = f"{ranked[0]} {sub[ranked[0]]:.0f}" + "".join(
        f" {'=' if round(sub[a]) == round(sub[b]) else '>'} {b} {sub[b]:.0f}" for a, b in zip(ranked, ranked[1:]))
    return (f"Under {decoding}: {order} characters — "
            + ("the seed's ordering (base > DPO > ORPO) appears." if same
               else "not the seed's ordering (base > DPO > ORPO)."))


def report(settings, rows, trained, n_train, n_test, judge, anti) -> str:
    anti_rows = [r for r in rows if r["part"] == "anti-repetition"]
    stance_rows = [r for r in rows if r["part"] == "stance"]
    first = anti_rows[0]["decoding"]
    lines = ["# DPO vs ORPO against repetition (and on stance)", "",
             f"Embedded SmolLM2-135M-Instruct, LoRA r=8 on q/k/v/o, {settings.epochs} epochs, learning "
             f"rate {settings.learning_rate:g}. Anti-repetition "
             f"adapters trained on {n_train} pairs mined from the model's own greedy loops (raw mode); "
             f"tested on {n_test} held-out Alpaca-style template prompts, raw, end-of-sequence allowed, "
             f"{settings.max_new_tokens} new tokens at most."
             + (" **Quick run: tiny training, greedy only, no stance part.**" if settings.quick else ""), "",
             "## Anti-repetition", ""]
    lines += kit.md_table(anti_rows, COLUMNS)
    lines += ["", "### Beside the seed report", "",
              f"Seed (4-bit 7B, template loops): base {SEED_CHARS['base']} → DPO {SEED_CHARS['dpo']} → "
              f"ORPO {SEED_CHARS['orpo']} characters on average (ORPO shortest, DPO a little shorter than base).", ""]
    for decoding in dict.fromkeys(r["decoding"] for r in anti_rows):
        sentence = ordering_sentence(anti_rows, decoding)
        if sentence:
            lines.append(f"- {sentence}")
    lines += ["", "Our lengths are bounded by the generation cap; the seed's were not, so compare the "
              "ordering and the ratios, not the absolute numbers.", ""]
    if stance_rows:
        lines += ["## Stance set", "",
                  f"Adapters trained towards {kit.direction(settings.support_ratio)} on "
                  f"{settings.stance_pairs} pairs; " + judge_line(judge) + ".", ""]
        lines += kit.md_table(stance_rows, STANCE_COLUMNS)
        lines.append("")
    lines += ["## Training", "", kit.precision_sentence(trained.values()), ""]
    for label, t in trained.items():
        fm = t.final_metrics
        lines.append(f"- {label}: {t.seconds:.0f} s; final loss {fm.get('loss', float('nan')):.3f}, "
                     f"accuracy {fm.get('rewards/accuracies', float('nan')):.2f}, margin "
                     f"{fm.get('rewards/margins', float('nan')):.2f}")
    lines += ["", f"## Answers ({first})", ""]
    for g in (g for g in anti if g.decoding == first):
        text = " ".join(g.text.split())
        loop = f"loop period {g.loop_period}" if g.looped else "no loop"
        lines.append(f"- *{g.model}* [{g.prompt_id}] ({g.finish_reason}, {loop}): {text[:240]}")
    lines += ["", "Figures: `lengths.png`, `curves_<adapter>.png`; every answer: `results.jsonl`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = kit.study_parser(STUDY, __doc__, "small training, 4 test prompts, greedy only")
    kit.add_training_flags(p, DpoOrpoSettings)
    args = p.parse_args(argv)
    settings = DpoOrpoSettings.quick_settings() if args.quick else DpoOrpoSettings()
    changes = kit.training_changes(args)
    run_dpo_vs_orpo(replace(settings, **changes) if changes else settings, args.root, args.model)
    return 0
