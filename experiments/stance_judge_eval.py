"""``declab experiment stance-judge``: which stance judge agrees with readers on *generated*
answers? Every candidate judge is fitted on the references and the labelled dev split and
scored on the labelled test split (prompts it never saw), beside the first classifier (answer
features, references only, a neutral band) as the baseline; dev numbers are grouped
cross-validation by prompt. The shipped default (``StanceConfig()``) is one of the rows.

A learning curve (``learning_curve``) then asks whether more labelled generations would help:
out-of-fold agreement on every labelled answer against the number of generated prompts the
judge trained on.

Writes ``runs/stance-judge/<time>/report.md`` and ``results.json`` (``judges``, ``learning_curve``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from alignment.agreement import agreement, format_agreement
from alignment.bootstrap import bootstrap_mean, grouped
from alignment.stance import (LABELS, StanceConfig, decide, validate, features_of, fit_model, grouped_folds, judge_layers,
                              row_weights, training_rows)
from decoding import load_model
from decoding.io import write_json_atomic, write_text_atomic
from decoding.models import LM

from .runs import open_run
from .stance_judge_set import SECOND_ROUND_TEST_PROMPTS

STUDY = "stance-judge"

# Every row pins its settings, so the table does not move when the shipped defaults do. The
# baseline is the first classifier exactly: layer 20 of the answer alone, references only,
# L2 1, two-way with a neutral band of 0.15.
FIXED = dict(layers="0.67", l2=30.0, reference_weight=0.5, min_side_probability=0.5, balance_classes=False)
DEPTHS = "0.33+0.67+1.0"
VARIANTS = {
    "baseline: answer, refs, 2-way": StanceConfig(features="answer", three_way=False, layers="0.67", l2=1.0,
                                                  reference_weight=1.0, balance_classes=False),
    "answer, 3-way": StanceConfig(features="answer", **FIXED),
    "context, 3-way": StanceConfig(features="context", **FIXED),
    "context at 3 depths, 3-way": StanceConfig(features="context", **{**FIXED, "layers": DEPTHS}),
    "verdict, 3-way": StanceConfig(features="verdict", **FIXED),
    "context+verdict, 3-way": StanceConfig(features="context+verdict", **FIXED),
    "context at 3 depths+verdict, 3-way": StanceConfig(features="context+verdict", **{**FIXED, "layers": DEPTHS}),
}
# Measured and dropped (first sweep, 264 answers: 132 dev / 132 test): the likelihood family
# alone labelled almost everything neutral (test recall support 0.00, oppose 0.06), and adding
# it to the context features changed no test number; it costs two extra forwards per answer.
# Also measured and dropped (session 7, 444 answers): the context states pooled over the answer's
# first 8 or 16 tokens only (where "No, …" verdicts to yes/no questions sit), added to
# context+verdict and tuned on dev as below. Dev min side recall 0.75 / 0.78 vs 0.78 for the shipped
# judge, so dev prefers the shipped one; on test the 8-token version was one answer apart per side
# (support 0.68 vs 0.70, oppose 0.65 vs 0.59, κ 0.43 vs 0.39), i.e. within noise.


def prepared(lm: LM, config: StanceConfig) -> tuple[list, list, np.ndarray, np.ndarray]:
    """Training rows (references + dev), test rows, and their features."""
    layer = judge_layers(lm, config)
    train, test = training_rows(config)
    return train, test, features_of(lm, train, config, layer), features_of(lm, test, config, layer)


def out_of_fold(x: np.ndarray, train: list, config: StanceConfig, fit_rows: list[int], w: np.ndarray) -> np.ndarray:
    """Probabilities of every training row from a model that did not see its prompt."""
    oof = np.zeros((len(train), len(config.classes)))
    allowed = set(fit_rows)
    for held in grouped_folds([r.prompt_id for r in train], config.folds, config.seed):
        fit = [i for i in np.setdiff1d(np.arange(len(train)), held) if i in allowed]
        oof[held] = fit_model(x[fit], [train[i].label for i in fit], w[fit], config).probabilities(x[held])
    return oof


def variant_probabilities(lm: LM, config: StanceConfig, baseline: bool, data=None) -> dict:
    """Out-of-fold dev probabilities and test probabilities of one judge configuration (the
    baseline trains on the references only, as the first classifier did)."""
    train, test, x, xt = data or prepared(lm, config)
    fit_rows = [i for i, r in enumerate(train) if not baseline or r.split == "reference"]
    w = np.ones(len(train)) if baseline else row_weights(train, config)
    model = fit_model(x[fit_rows], [train[i].label for i in fit_rows], w[fit_rows], config)
    dev = [i for i, r in enumerate(train) if r.split == "dev"]
    oof = out_of_fold(x, train, config, fit_rows, w)
    return {"dev_rows": [train[i] for i in dev], "dev_p": oof[dev], "test_rows": test,
            "test_p": model.probabilities(xt)}


TUNING = {"l2": (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0), "reference_weight": (0.0, 0.5, 1.0),
          "balance_classes": (False, True), "min_side_probability": (0.0, 0.4, 0.5, 0.6)}
# The goal, as the tuning criterion: support and oppose recall >= 0.8 with fewer than
# 20 % of neutral answers called a side with confidence.
MAX_CONFIDENT_NEUTRAL_TO_SIDE = 0.2


def goal_score(a: dict) -> tuple:
    """Order of judges by the goal: first whether confident neutral -> side stays within
    ``MAX_CONFIDENT_NEUTRAL_TO_SIDE``, then the smaller of the two side recalls, then macro-F1."""
    sure = a.get("neutral_called_side_confident") or 0.0
    sides = [a["recall"].get(c) or 0.0 for c in ("support", "oppose")]
    return (sure <= MAX_CONFIDENT_NEUTRAL_TO_SIDE, min(sides), a["macro_f1"])


def tuned(lm: LM, config: StanceConfig) -> tuple[StanceConfig, dict]:
    """The configuration with the best dev ``goal_score`` (grouped cross-validation) over
    ``TUNING``, the test split untouched, and its probabilities."""
    data = prepared(lm, config)
    train = data[0]
    dev = [i for i, r in enumerate(train) if r.split == "dev"]
    best, best_score = config, None
    for l2 in TUNING["l2"]:
        for rw in TUNING["reference_weight"]:
            for balance in TUNING["balance_classes"]:
                c = replace(config, l2=l2, reference_weight=rw, balance_classes=balance)
                oof = out_of_fold(data[2], train, c, list(range(len(train))), row_weights(train, c))[dev]
                for msp in TUNING["min_side_probability"]:
                    c2 = replace(c, min_side_probability=msp)
                    found = goal_score(validate([train[i] for i in dev], oof, c2))
                    if best_score is None or found > best_score:
                        best, best_score = c2, found
    return best, variant_probabilities(lm, best, False, data)


def recall_intervals(rows, p, config: StanceConfig) -> dict[str, list[float]]:
    """95 % bootstrap intervals over prompts of each class's recall (answers nested in prompts)."""
    labels = decide(p, config)
    out = {}
    for c in LABELS:
        mine = [(r.prompt_id, lab == c) for r, lab in zip(rows, labels) if r.label == c]
        groups = grouped([g for g, _ in mine], [v for _, v in mine])
        if groups:
            ci = bootstrap_mean(list(groups.values()))
            out[c] = [ci.low, ci.high]
    return out


def score(rows, p, config: StanceConfig) -> dict:
    return {**validate(rows, p, config), "recall_ci": recall_intervals(rows, p, config)}


# The test split grew in two labelling rounds (``stance_judge_set``); each round's answers are
# also scored on their own, so the second round (more prompts, more opposing answers) can be
# compared with the first.
ROUNDS = ("first round", "second round")


def labelling_round(prompt_id: str) -> str:
    """Which labelling round a test prompt came from (stance-test's ``t..`` came with the first)."""
    return ROUNDS[1] if prompt_id in SECOND_ROUND_TEST_PROMPTS else ROUNDS[0]


def round_scores(rows, p, config: StanceConfig) -> dict[str, dict]:
    """``score`` of the test answers of each labelling round."""
    out = {}
    for part in ROUNDS:
        keep = [i for i, r in enumerate(rows) if labelling_round(r.prompt_id) == part]
        if keep:
            out[part] = score([rows[i] for i in keep], p[keep], config)
    return out


def abstaining_labels(a: list[str], b: list[str]) -> list[str]:
    """Two judges' labels combined: their shared label, or neutral when they disagree."""
    return [x if x == y else "neutral" for x, y in zip(a, b)]


ENSEMBLE = ("context, 3-way", "verdict, 3-way")
TUNED = (("context+verdict", "0.67"), ("context+verdict", DEPTHS))


# ``--quick`` (the lab's Studies page): the first classifier beside the shipped judge, no tuning
# grid, no learning curve.
QUICK_VARIANTS = {"baseline: answer, refs, 2-way": VARIANTS["baseline: answer, refs, 2-way"],
                  "shipped judge (StanceConfig defaults)": StanceConfig()}


def sweep(lm: LM, variants: dict[str, StanceConfig] | None = None, tune: bool = True) -> dict[str, dict]:
    out, probs = {}, {}
    for name, config in (variants or VARIANTS).items():
        probs[name] = variant_probabilities(lm, config, baseline=name.startswith("baseline"))
        out[name] = {"config": config.__dict__, "dev": score(probs[name]["dev_rows"], probs[name]["dev_p"], config),
                     "test": score(probs[name]["test_rows"], probs[name]["test_p"], config),
                     "test_parts": round_scores(probs[name]["test_rows"], probs[name]["test_p"], config)}
        print(format_agreement(name + " [test]", out[name]["test"]), flush=True)
    for kinds, layers in TUNED if tune else ():
        config, found = tuned(lm, StanceConfig(features=kinds, layers=layers))
        name = f"{kinds} at {layers}, tuned on dev (l2 {config.l2:g}, ref. weight {config.reference_weight:g}, " \
               f"{'balanced' if config.balance_classes else 'unbalanced'}, min side p {config.min_side_probability:g})"
        out[name] = {"config": config.__dict__, "dev": score(found["dev_rows"], found["dev_p"], config),
                     "test": score(found["test_rows"], found["test_p"], config),
                     "test_parts": round_scores(found["test_rows"], found["test_p"], config)}
        print(format_agreement(name + " [test]", out[name]["test"]), flush=True)
    if all(k in probs for k in ENSEMBLE):
        first, second = (probs[k] for k in ENSEMBLE)
        configs = [(variants or VARIANTS)[k] for k in ENSEMBLE]
        name = f"ensemble: {ENSEMBLE[0]} & {ENSEMBLE[1]}, abstains"
        out[name] = {"config": {"ensemble": list(ENSEMBLE)}}
        for split in ("dev", "test"):
            rows = first[f"{split}_rows"]
            labels = abstaining_labels(decide(first[f"{split}_p"], configs[0]), decide(second[f"{split}_p"], configs[1]))
            p_support = (first[f"{split}_p"][:, 0] + second[f"{split}_p"][:, 0]) / 2
            out[name][split] = agreement([r.label for r in rows], labels, LABELS, p_support)
        print(format_agreement(name + " [test]", out[name]["test"]), flush=True)
    return out


# The learning curve: would more labelled generations make the judge better? Every labelled
# generation (dev and test) is held out once in grouped folds by prompt; each fold trains on the
# references plus a random ``fraction`` of the other folds' prompts. This is an analysis, not the
# shipped judge's validation: the test split's answers train other folds' judges here.
CURVE_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
CURVE_REPEATS = 3
CURVE_FOLDS = 10


def curve_splits(groups: list, fraction: float, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, held-out) row indices of each grouped fold, the training prompts subsampled to
    ``fraction`` of the rest (at least 2 prompts). No held-out prompt is ever in training."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction}; allowed: 0 < fraction <= 1")
    rng = np.random.default_rng(seed)
    out = []
    for held in grouped_folds(groups, folds, 0):
        out_prompts = {groups[i] for i in held}
        pool = sorted({g for g in groups if g not in out_prompts})
        keep = set(rng.choice(pool, size=max(2, round(fraction * len(pool))), replace=False).tolist())
        out.append((np.array([i for i, g in enumerate(groups) if g in keep]), np.asarray(held)))
    return out


def learning_curve(x: np.ndarray, rows: list, config: StanceConfig, fractions=CURVE_FRACTIONS,
                   repeats: int = CURVE_REPEATS, folds: int = CURVE_FOLDS) -> list[dict]:
    """Out-of-fold agreement on every labelled generation against the number of generated
    prompts the judge trained on (the references always train), averaged over ``repeats`` draws
    of the training prompts (one draw at fraction 1). Rows ``split == "reference"`` train only."""
    refs = np.array([i for i, r in enumerate(rows) if r.split == "reference"], dtype=int)
    gen = np.array([i for i, r in enumerate(rows) if r.split != "reference"], dtype=int)
    groups = [rows[i].prompt_id for i in gen]
    held_rows = [rows[i] for i in gen]
    out, correct = [], []
    for fraction in fractions:
        runs, sizes = [], []
        for rep in range(repeats if fraction < 1 else 1):
            p = np.zeros((len(gen), len(config.classes)))
            for train, held in curve_splits(groups, fraction, folds, rep):
                fit = np.concatenate([refs, gen[train]])
                fit_rows = [rows[i] for i in fit]
                model = fit_model(x[fit], [r.label for r in fit_rows], row_weights(fit_rows, config), config)
                p[held] = model.probabilities(x[gen[held]])
                sizes.append(len({groups[i] for i in train}))
            runs.append(validate(held_rows, p, config))
            if rep == 0:   # the first draw's intervals, and its answers right or wrong for the gain
                first_p = p
        correct.append(np.array([lab == r.label for lab, r in zip(decide(first_p, config), held_rows)], dtype=float))
        out.append({"fraction": fraction, "train_prompts": float(np.mean(sizes)), "draws": len(runs),
                    "recall_ci": recall_intervals(held_rows, first_p, config),
                    "n": runs[0]["n"], "accuracy": float(np.mean([a["accuracy"] for a in runs])),
                    "kappa": float(np.mean([a["kappa"] for a in runs])),
                    "kappa_range": [float(min(a["kappa"] for a in runs)), float(max(a["kappa"] for a in runs))],
                    "recall": {c: float(np.mean([a["recall"][c] or 0.0 for a in runs])) for c in LABELS}})
    if len(out) > 1:   # paired by answer: the accuracy gain from the smallest share to the largest
        gain = bootstrap_mean(list(grouped(groups, correct[-1] - correct[0]).values()))
        out[-1]["accuracy_gain"] = {"from_fraction": out[0]["fraction"], "estimate": gain.estimate,
                                    "low": gain.low, "high": gain.high}
    return out


def shipped_curve(lm: LM) -> list[dict]:
    """``learning_curve`` of the shipped configuration on the references + every labelled answer."""
    config = StanceConfig()
    train, test, x, xt = prepared(lm, config)
    return learning_curve(np.concatenate([x, xt]), train + test, config)


def curve_text(curve: list[dict]) -> list[str]:
    lines = ["## Learning curve (analysis, not the shipped judge's validation)", "",
             f"Every labelled generation held out once in {CURVE_FOLDS} folds grouped by prompt; each fold's "
             "judge (the shipped configuration) trains on the references plus a random share of the other "
             f"folds' prompts ({CURVE_REPEATS} draws below the full share, averaged). Test answers train "
             "other folds' judges here, so these numbers are not the test split's.", "",
             "Recall intervals: 95 % bootstrap over prompts, of the first draw.", "",
             "| share | generated training prompts | n | accuracy | recall support | recall oppose | "
             "recall neutral | κ (range over draws) |", "|---|---|---|---|---|---|---|---|"]
    for c in curve:
        r, ci = c["recall"], c.get("recall_ci", {})
        cells = " | ".join(f"{r[k]:.2f}" + (f" [{ci[k][0]:.2f}–{ci[k][1]:.2f}]" if k in ci else "") for k in LABELS)
        lines.append(f"| {c['fraction']:.2f} | {c['train_prompts']:.0f} | {c['n']} | {c['accuracy']:.2f} | {cells} | "
                     f"{c['kappa']:.2f} [{c['kappa_range'][0]:.2f}–{c['kappa_range'][1]:.2f}] |")
    gain = curve[-1].get("accuracy_gain")
    if gain:
        lines += ["", f"Accuracy gain from the {gain['from_fraction']:.2f} share to the {curve[-1]['fraction']:.2f} "
                  f"share, paired by answer (first draws): {gain['estimate']:+.3f} [{gain['low']:+.3f}, "
                  f"{gain['high']:+.3f}], 95 % bootstrap over prompts."]
    return lines + [""]


def report_text(results: dict[str, dict], curve: list[dict] | None = None) -> str:
    lines = ["# Stance judge: agreement with readers on generated answers", "",
             "Each judge is fitted on the reference answers and the labelled dev split, and scored on the "
             "labelled test split (prompts it never saw). `neutral->side` is the share of answers a reader "
             "called neutral that the judge assigned a side. Dev: grouped 5-fold cross-validation by prompt. "
             "Recall intervals: 95 % bootstrap over prompts, answers nested.", ""]
    tables = [("test split", lambda r: r["test"])]
    tables += [(f"test split, {part} only", lambda r, part=part: r.get("test_parts", {}).get(part)) for part in ROUNDS]
    tables += [("dev split", lambda r: r["dev"])]
    for title, pick in tables:
        lines += [f"## {title}", "", "| judge | n | accuracy | recall support | recall oppose | recall neutral "
                  "| macro-F1 | κ | neutral->side | neutral->side at P>=0.75 | ECE |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in results.items():
            a = pick(r)
            if a is None:
                continue
            ci = a.get("recall_ci", {})
            cells = " | ".join("-" if a["recall"].get(c) is None else
                               f"{a['recall'][c]:.2f}" + (f" [{ci[c][0]:.2f}–{ci[c][1]:.2f}]" if c in ci else "")
                               for c in LABELS)
            side, sure = a.get("neutral_called_side"), a.get("neutral_called_side_confident")
            lines.append(f"| {name} | {a['n']} | {a['accuracy']:.2f} | {cells} | {a['macro_f1']:.2f} | "
                         f"{a['kappa']:.2f} | {'-' if side is None else f'{side:.2f}'} | "
                         f"{'-' if sure is None else f'{sure:.2f}'} | {a.get('ece', float('nan')):.2f} |")
        lines.append("")
    if curve:
        lines += curve_text(curve)
    return "\n".join(lines)


def run_stance_judge(root: str = "runs", model: str | None = None, quick: bool = False) -> str:
    lm = load_model(model)
    with open_run(STUDY, root, {"model": model or "embedded", "quick": quick}) as run:
        results = sweep(lm, QUICK_VARIANTS, tune=False) if quick else sweep(lm)
        curve = [] if quick else shipped_curve(lm)
        write_json_atomic(run.path / "results.json", {"judges": results, "learning_curve": curve})
        write_text_atomic(run.path / "report.md", report_text(results, curve))
    return str(run.path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog=f"declab experiment {STUDY}", description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs", help="where run directories go")
    p.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--quick", action="store_true",
                   help="the first classifier and the shipped judge only: no tuning grid, no learning curve")
    args = p.parse_args(argv)
    print(f"report: {run_stance_judge(args.root, args.model, args.quick)}/report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
