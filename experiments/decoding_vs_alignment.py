"""``declab experiment decoding-vs-alignment``: does the decoding setting change the measured
stance more than β does?

A grid of adapters (none; DPO with β ∈ {0.05, 0.1, 0.5}; ORPO), all trained towards *oppose*
on the stance set (the base already supports; ``--support-ratio``, ``--lr``), × decodings (greedy, beam-4, temperature 0.7 / 1.0 / 1.3 with top-p 0.95,
min-p 0.1, repetition penalty 1.2, DRY 0.8). Every cell: the stance of the held-out test
prompts' answers (the stance judge's P(support) and support/oppose/neutral), loop rate, EOS rate and the
KL to the base. Two heatmaps (support %, loop %), the per-step KL / total variation of one
answer, and a variance decomposition: how much of the spread of P(support) over the grid is
explained by the adapter (row means) and how much by the decoding (column means).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from alignment.data import load_stance_records
from alignment.evaluate import Subject, judge_line, load_subject
from alignment.scoring import stepwise_shift
from alignment.stance import StanceConfig, fit_stance_judge
from alignment.train import TrainConfig
from decoding import DecodingConfig, load_model
from decoding.models import LM
from decoding.config import knob
from decoding.errors import check_range
from decoding.io import write_json_atomic, write_text_atomic
from decoding.specs import parse_specs

from . import alignment_kit as kit
from .runs import open_run

STUDY = "decoding-vs-alignment"
DECODINGS = ("greedy;beam:num_beams=4;sample:temperature=0.7,top_p=0.95;sample:temperature=1.0,top_p=0.95;"
             "sample:temperature=1.3,top_p=0.95;sample:min_p=0.1;greedy:repetition_penalty=1.2;"
             "greedy:dry_multiplier=0.8")
# Trained towards *oppose* at 1e-3: the base already supports 93 % of the test prompts under
# greedy, and at the training default 1e-4 no adapter moves it (hw6, full run: every adapter
# 93 %, KL to the base about 0.001). Measured: DPO towards oppose at 1e-3 (50 pairs, 3 epochs)
# takes greedy support from 93 % to 36 % (oppose 43 %), with 14 % of answers looping
# ("No, no, no, …") and KL 0.18 — an adapter that moves the model, and side effects that
# decoding can act on.
SUPPORT_RATIO = 0.0
LEARNING_RATE = 1e-3
ADAPTERS = {"dpo-b0.05": ("dpo", 0.05), "dpo-b0.1": ("dpo", 0.1), "dpo-b0.5": ("dpo", 0.5),
            "orpo": ("orpo", 0.1)}


@dataclass(frozen=True)
class GridSettings:
    """The grid's size and training knobs; the help texts feed the flags."""

    pairs: int = knob(50, "Stance training pairs of every adapter.")
    epochs: int = knob(3, "Epochs of every adapter.")
    decodings: str = knob(DECODINGS, "Decoding specs STRATEGY[:field=value,...], separated by ';'.")
    adapters: tuple[str, ...] = knob(tuple(ADAPTERS), "Adapters of the grid, from: " + ", ".join(ADAPTERS) + ".")
    samples: int = knob(2, "Samples per prompt for sampling decodings.")
    max_new_tokens: int = knob(64, "New tokens per answer at most.")
    test_prompts: int | None = knob(None, "Only the first N held-out test prompts; None: all.")
    # Direction and step size of the training. The base already supports most test prompts, so
    # adapters trained towards support have little room to move it; see the module docstring.
    support_ratio: float = knob(SUPPORT_RATIO, "Share of the training pairs that prefer the "
                                "supporting answer, 0..1 (0: towards oppose, 1: towards support); "
                                "the base already supports most test prompts.")
    learning_rate: float = knob(LEARNING_RATE, "Learning rate of every adapter; 0 < learning_rate "
                                "< 1, as TrainConfig requires (at 1e-4 no adapter moved the base).")
    seed: int = knob(0, "Seed of the LoRA initialisation, the data order and the sampling.")
    quick: bool = knob(False, "The few-minute version (set by --quick).")

    def __post_init__(self) -> None:
        kit.check_counts(self, ("pairs", "epochs", "samples", "max_new_tokens", "test_prompts"))
        check_range("seed", self.seed, 0, integer=True)
        kit.check_training_knobs(self)

    @property
    def direction(self) -> str:
        return kit.direction(self.support_ratio)

    @classmethod
    def quick_settings(cls) -> "GridSettings":
        return cls(pairs=12, epochs=1, decodings="greedy;sample:temperature=1.0,top_p=0.95",
                   adapters=("dpo-b0.1",), samples=1, max_new_tokens=32, test_prompts=4, quick=True)


def variance_split(table: np.ndarray) -> dict[str, float]:
    """Two-way decomposition of a models × decodings table (no replication): the share of the
    total sum of squares explained by the row (adapter) means, by the column (decoding) means,
    and the interaction/residual. Shares sum to 1."""
    grand = table.mean()
    total = ((table - grand) ** 2).sum()
    if total == 0:
        return {"adapter": 0.0, "decoding": 0.0, "interaction": 0.0}
    rows = table.shape[1] * ((table.mean(1) - grand) ** 2).sum()
    cols = table.shape[0] * ((table.mean(0) - grand) ** 2).sum()
    return {"adapter": float(rows / total), "decoding": float(cols / total),
            "interaction": float((total - rows - cols) / total)}


def run_grid(settings: GridSettings, root: str = "runs", model: str | None = None,
        base: LM | None = None, stance_config: StanceConfig | None = None) -> str:
    """Run the study; ``base`` an already loaded model (tests: the tiny one), ``stance_config``
    the stance judge\'s settings."""
    base = base or load_model(model)
    records = load_stance_records("stance-test")[: settings.test_prompts]
    items = [(r.id, r.prompt) for r in records]
    specs = parse_specs(settings.decodings, DecodingConfig(max_new_tokens=settings.max_new_tokens,
                                                           seed=settings.seed))
    with open_run(STUDY, root, params={**settings.__dict__, "adapters": list(settings.adapters)}) as run:
        judge = fit_stance_judge(base, stance_config)
        trained = {}
        for label in settings.adapters:
            method, beta = ADAPTERS[label]
            config = TrainConfig(method=method, beta=beta, dataset="stance",
                                 support_ratio=float(settings.support_ratio),
                                 learning_rate=float(settings.learning_rate),
                                 data_size=settings.pairs, epochs=settings.epochs, seed=settings.seed)
            trained[label] = kit.train_into_run(run, label, config, base)
            run.progress(trained=list(trained))
        subjects = [Subject("base", None)] + [t.subject for t in trained.values()]
        answers = kit.measure_models(base, subjects, items, specs, settings.samples, True, judge)
        rows = kit.cells(answers)
        models = [s.label for s in subjects]
        decodings = [s.label for s in specs]
        grid = {key: np.array([[next(r[key] for r in rows if r["model"] == m and r["decoding"] == d)
                                for d in decodings] for m in models])
                for key in ("mean_p_support", "support", "loop_rate")}
        split = variance_split(grid["mean_p_support"])
        shift = per_step_shift(base, trained[settings.adapters[-1 if len(settings.adapters) == 1 else 1]],
                               records[0].prompt, settings.max_new_tokens)
        kit.write_jsonl(run.file("results.jsonl"), [g.to_dict() for g in answers])
        kit.write_csv(run.file("summary.csv"), rows)
        write_json_atomic(run.file("grid.json"), {"models": models, "decodings": decodings,
                                                  **{k: v.tolist() for k, v in grid.items()},
                                                  "variance_split_p_support": split,
                                                  "per_step_shift": shift})
        heatmaps(grid, models, decodings, run.file("heatmaps.png"))
        shift_figure(shift, run.file("per_step_kl.png"))
        write_text_atomic(run.file("report.md"), report(settings, rows, grid, models, decodings, split,
                                                        shift, judge.summary(), trained))
    kit.note(f"report: {run.path / 'report.md'}")
    return str(run.path)


def per_step_shift(base, trained: kit.Trained, prompt: str, max_new_tokens: int) -> dict:
    """The adapter's greedy answer to one prompt, with KL / TV to the base at every step."""
    from decoding import generate

    lm = load_subject(trained.subject, base)
    gen = generate(lm, prompt, DecodingConfig(strategy="greedy", max_new_tokens=max_new_tokens))
    steps = stepwise_shift(lm, base, gen.prompt_ids, list(gen.token_ids))
    return {"adapter": trained.label, "prompt": prompt, "text": gen.text, "steps": [s.to_dict() for s in steps]}


def heatmaps(grid, models, decodings, path) -> None:
    plt = kit.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(max(12, 1.6 * len(decodings) * 2), 1.0 * len(models) + 3))
    for ax, key, title, cmap in ((axes[0], "support", "support (% of answers)", "cividis"),
                                 (axes[1], "loop_rate", "answers ending in a loop (%)", "cividis")):
        values = 100 * grid[key]
        image = ax.imshow(values, cmap=cmap, vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(decodings)), [d.replace("sample:", "").replace("greedy:", "greedy ") for d in decodings],
                      rotation=35, ha="right")
        ax.set_yticks(range(len(models)), models)
        for i in range(len(models)):
            for j in range(len(decodings)):
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center",
                        color="white" if values[i, j] < 50 else "black", fontsize=11)
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.04)
    kit.save_figure(fig, path)


def shift_figure(shift: dict, path) -> None:
    plt = kit.pyplot()
    steps = shift["steps"]
    fig, ax = plt.subplots(figsize=(11, 4))
    x = [s["step"] for s in steps]
    ax.plot(x, [s["kl"] for s in steps], color=kit.PALETTE[0], label="KL(adapter ‖ base), nats")
    ax.plot(x, [s["tv"] for s in steps], color=kit.PALETTE[1], label="total variation")
    top = sorted(steps, key=lambda s: -s["kl"])[:5]
    for s in top:
        ax.annotate(repr(s["token"])[1:-1].replace(" ", "␣"), (s["step"], s["kl"]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=10)
    ax.set_xlabel("step of the adapter's greedy answer")
    ax.set_title(f"Where {shift['adapter']} disagrees with the base")
    ax.legend()
    kit.save_figure(fig, path)


def report(settings, rows, grid, models, decodings, split, shift, judge, trained) -> str:
    ps = grid["mean_p_support"]
    adapter_range = float(np.ptp(ps.mean(1)))
    decoding_range = float(np.ptp(ps.mean(0)))
    within = {m: float(np.ptp(ps[i])) for i, m in enumerate(models)}
    verdict = ("the decoding setting moves the measured stance more than the choice of adapter/β does"
               if split["decoding"] > split["adapter"] else
               "the adapter (and its β) moves the measured stance more than the decoding setting does")
    lines = ["# Decoding vs alignment: what moves the measured stance?", "",
             f"Embedded SmolLM2-135M-Instruct; adapters trained towards {settings.direction} on "
             f"{settings.pairs} stance pairs, {settings.epochs} epochs, learning rate "
             f"{settings.learning_rate:g}; {len(decodings)} decodings; held-out test prompts, "
             f"{settings.samples} samples per sampling cell, {settings.max_new_tokens} new tokens. "
             + judge_line(judge) + "."
             + (" **Quick run: one adapter, two decodings, 4 prompts.**" if settings.quick else ""), "",
             "## The answer", "",
             f"Of the spread of mean P(support) over the {len(models)} × {len(decodings)} grid, "
             f"**{split['adapter']:.0%} is explained by the adapter**, **{split['decoding']:.0%} by the decoding** "
             f"and {split['interaction']:.0%} by their interaction: {verdict}. Adapter means span "
             f"{adapter_range:.2f} in P(support); decoding means span {decoding_range:.2f}. Within one "
             "model, the decodings span: " + ", ".join(f"{m} {v:.2f}" for m, v in within.items()) + ".", "",
             "## Support % (rows: adapters; columns: decodings)", ""]
    header = ["model"] + decodings
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for i, m in enumerate(models):
        lines.append("| " + " | ".join([m] + [f"{100 * grid['support'][i, j]:.0f}% (P {ps[i, j]:.2f}, "
                                              f"loops {100 * grid['loop_rate'][i, j]:.0f}%)"
                                              for j in range(len(decodings))]) + " |")
    lines += ["", "## Every cell", ""]
    lines += kit.md_table(rows, [("model", "model", ""), ("decoding", "decoding", ""), ("answers", "n", ""),
                                 kit.with_ci("support", "support [95% CI]"), kit.with_ci("oppose", "oppose [95% CI]"),
                                 ("neutral", "neutral", "{:.0%}"), ("mean_p_support", "P(support)", "{:.2f}"),
                                 kit.with_ci("loop_rate", "loops [95% CI]"), ("eos_rate", "EOS", "{:.0%}"),
                                 ("mean_length", "tokens", "{:.0f}"), ("kl_to_base", "KL", "{:.3f}")])
    steps = shift["steps"]
    if steps:
        top = sorted(steps, key=lambda s: -s["kl"])[:5]
        lines += ["", "## Where alignment changes the model's mind", "",
                  f"{shift['adapter']}'s greedy answer to “{shift['prompt']}”: mean KL to the base "
                  f"{np.mean([s['kl'] for s in steps]):.3f} nats per step; the largest at steps "
                  + ", ".join(f"{s['step']} ({s['token']!r}, {s['kl']:.2f})" for s in top)
                  + ". See `per_step_kl.png`."]
    lines += ["", "Training: " + "; ".join(f"{k} {t.seconds:.0f} s" for k, t in trained.items())
              + ". " + kit.precision_sentence(trained.values()),
              "", "Figures: `heatmaps.png`, `per_step_kl.png`; data: `grid.json`, `summary.csv`, `results.jsonl`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = kit.study_parser(STUDY, __doc__, "one small adapter, two decodings, 4 prompts")
    kit.add_training_flags(p, GridSettings)
    args = p.parse_args(argv)
    settings = GridSettings.quick_settings() if args.quick else GridSettings()
    changes = kit.training_changes(args)
    run_grid(replace(settings, **changes) if changes else settings, args.root, args.model)
    return 0
