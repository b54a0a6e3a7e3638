"""The stance judge: does a *generated* answer support or oppose live-action adaptations, or
take no side? No external judge is available offline, so it is a small supervised model on
frozen base-model features (``alignment.stance_features``), validated where it is used.

- **Trained on** the reference answers of a course-schema set (support / oppose) and the
  *development* split of a set of generated answers labelled by reading them
  (``datasets/stance_judge_set.jsonl``; guide in ``datasets/README.md``), with "neutral"
  (no side, off-topic, incoherent) as a class of its own.
- **Validated on** that set's *test* split, whose prompts it never saw: accuracy, recall per
  class, macro-F1, Cohen's κ and the calibration of P(support) (``alignment.agreement``).
  Below ``min_kappa`` (Cohen's κ with the readers) it refuses to label anything
  (``StanceClassifierError``): a judge that cannot tell generated answers apart must not be
  used to count them. κ, not accuracy, because most test answers are neutral: a judge that
  always says "neutral" is 54 % accurate there and has κ 0.
- **Model:** multinomial logistic regression (standardised features, L2, L-BFGS in float64)
  over P(support), P(oppose), P(neutral), classes balanced (``balance_classes``). The label is
  the most probable class; ``min_side_probability`` can demand more before a side is called.

The first version of this module was the ``answer`` features + references only + a binary
model with a neutral band around P = 0.5. It stays expressible (``StanceConfig(features=
"answer", labelled="", three_way=False)``) as the baseline every report compares against: on
the hand-written references it reached 0.969 cross-validated accuracy, on generated answers it
called almost everything "support".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from decoding.errors import DecodingLabError, check_range, out_of_range
from decoding.models import LM

from .agreement import agreement
from .data import DATASET_DIR, DatasetError, load_stance_records
from .stance_features import FEATURE_SETS, feature_matrix, layer_indices

LABELS = ("support", "oppose", "neutral")
JUDGE_SET = DATASET_DIR / "stance_judge_set.jsonl"
SHIPPED_JUDGE_SETS = {"stance-judge": JUDGE_SET}


class StanceClassifierError(DecodingLabError):
    """The judge is not good enough to be used (or was asked something it cannot do)."""


@dataclass(frozen=True)
class StanceConfig:
    """How the stance judge is built (each field's help is its documentation)."""

    dataset: str = field(default="stance", metadata={
        "help": "course-schema records whose support/oppose reference answers are training "
                "examples ('' for none)"})
    labelled: str = field(default="stance-judge", metadata={
        "help": "generated answers labelled by reading (JSONL with split dev/test): the dev split "
                "trains, the test split validates ('' for none: no validation on generations)"})
    features: str = field(default="context+verdict", metadata={
        "help": f"feature families joined by '+', from {', '.join(FEATURE_SETS)}"})
    three_way: bool = field(default=True, metadata={
        "help": "neutral is a class of its own (else support vs oppose with a neutral band)"})
    layers: str = field(default="0.33+0.67+1.0", metadata={
        "help": "which decoder layers' states to pool, as fractions of the depth joined by '+' "
                "(1.0 = the last; several: their pooled states side by side)"})
    l2: float = field(default=1000.0, metadata={
        "help": "L2 penalty on the weights (on standardised features), > 0; the penalty is "
                "l2 / (2n), so it weakens as the training set grows (tuned on dev)"})
    reference_weight: float = field(default=0.5, metadata={
        "help": "weight of each reference answer relative to a labelled generation, >= 0 (0: the "
                "references are not used when labelled generations are; tuned on dev)"})
    balance_classes: bool = field(default=True, metadata={
        "help": "weight each class's training answers by n / (classes x n_class), so the rarer "
                "sides count as much as the common neutral class (scikit-learn's "
                "class_weight='balanced'; King & Zeng 2001); chosen on dev"})
    min_side_probability: float = field(default=0.0, metadata={
        "help": "three-way: a side is called only at this probability or more, else neutral "
                "(0: the most probable class); in [0, 1)"})
    band: float = field(default=0.15, metadata={
        "help": "two-way only: P(support) within this of 0.5 is neutral, in [0, 0.5)"})
    min_kappa: float = field(default=0.3, metadata={
        "help": "refuse to judge when Cohen's kappa with the readers on the labelled test split is "
                "below this (without a labelled set: on cross-validated reference answers); 0.21-0.40 "
                "is 'fair' agreement, 0.41-0.60 'moderate' (Landis & Koch 1977)"})
    folds: int = field(default=5, metadata={"help": "cross-validation folds (grouped by prompt), >= 2"})
    seed: int = field(default=0, metadata={"help": "fold assignment seed"})

    def __post_init__(self) -> None:
        kinds = self.kinds
        if not kinds or any(k not in FEATURE_SETS for k in kinds) or len(set(kinds)) != len(kinds):
            raise out_of_range("features", self.features, f"distinct names from {', '.join(FEATURE_SETS)} "
                               "joined by '+'")
        try:
            fractions = self.layer_fractions
        except ValueError:
            fractions = ()
        if not fractions or not all(0 < f <= 1 for f in fractions):
            raise out_of_range("layers", self.layers, "depth fractions in (0, 1] joined by '+'")
        check_range("l2", self.l2, 0, low_open=True)
        check_range("reference_weight", self.reference_weight, 0)
        check_range("min_side_probability", self.min_side_probability, 0, 1, high_open=True)
        check_range("band", self.band, 0, 0.5, high_open=True)
        check_range("min_kappa", self.min_kappa, -1, 1)
        check_range("folds", self.folds, 2, integer=True)
        if not self.dataset and not self.labelled:
            raise out_of_range("dataset", self.dataset, "a reference set or a labelled set (both are empty)")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.features.split("+") if k.strip())

    @property
    def layer_fractions(self) -> tuple[float, ...]:
        return tuple(float(f) for f in str(self.layers).split("+") if f.strip())

    @property
    def classes(self) -> tuple[str, ...]:
        return LABELS if self.three_way else LABELS[:2]


# --------------------------------------------------------------------------- labelled answers

@dataclass(frozen=True)
class LabelledAnswer:
    """One answer (generated, or a reference) with the stance a reader gave it."""

    uid: str
    prompt_id: str
    prompt: str
    answer: str
    label: str
    split: str        # "dev", "test" or "reference"
    model: str = ""
    decoding: str = ""


def load_labelled_answers(name_or_path: str | Path) -> list[LabelledAnswer]:
    """The labelled generations of a shipped name (``stance-judge``) or a JSONL file; every
    line needs ``uid, prompt_id, prompt, answer, label, split`` (label in support / oppose /
    neutral, split dev / test). A bad line is refused with its number."""
    path = SHIPPED_JUDGE_SETS.get(str(name_or_path)) or Path(name_or_path)
    if not path.is_file():
        raise DatasetError(f"labelled={str(name_or_path)!r} is neither a shipped labelled set "
                           f"({', '.join(SHIPPED_JUDGE_SETS)}) nor an existing file")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = LabelledAnswer(str(row["uid"]), str(row["prompt_id"]), row["prompt"], row["answer"],
                                  row["label"], row["split"], row.get("model", ""), row.get("decoding", ""))
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}: line {number}: not a labelled answer ({exc})") from None
        if item.label not in LABELS or item.split not in ("dev", "test"):
            raise DatasetError(f"{path}: line {number}: label={item.label!r} / split={item.split!r}; "
                               f"allowed: label in {LABELS}, split in ('dev', 'test')")
        out.append(item)
    return out


def reference_answers(dataset: str) -> list[LabelledAnswer]:
    """The support and oppose reference answers of a course-schema set, as labelled answers."""
    out = []
    for r in load_stance_records(dataset):
        out += [LabelledAnswer(f"r{r.id}s", f"r{r.id}", r.prompt, r.support, "support", "reference"),
                LabelledAnswer(f"r{r.id}o", f"r{r.id}", r.prompt, r.oppose, "oppose", "reference")]
    return out


# --------------------------------------------------------------------------- logistic regression

def fit_softmax(x: np.ndarray, y: np.ndarray, classes: int, l2: float, weights: np.ndarray | None = None,
                steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(d, classes)`` and bias ``(classes,)`` of L2-regularised multinomial logistic
    regression: weighted mean cross-entropy + l2/(2n)·|W|², L-BFGS in float64. ``x`` must
    already be standardised; ``y`` holds class indices."""
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.int64))
    wt = torch.from_numpy(np.ones(len(y)) if weights is None else weights.astype(np.float64))
    w = torch.zeros((x.shape[1], classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        losses = torch.nn.functional.cross_entropy(xt @ w + b, yt, reduction="none")
        loss = (wt * losses).sum() / wt.sum() + l2 / (2 * len(y)) * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@dataclass
class Standardiser:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardiser":
        scale = x.std(0)
        return cls(x.mean(0), np.where(scale > 1e-12, scale, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


def grouped_folds(groups: Sequence, folds: int, seed: int) -> list[np.ndarray]:
    """Row indices of each fold, whole groups (prompts) at a time."""
    unique = sorted(set(groups), key=str)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: rank % folds for rank, i in enumerate(order)}
    assignment = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(assignment == k) for k in range(folds)]


# --------------------------------------------------------------------------- the judge

@dataclass(frozen=True)
class Verdict:
    """The judge's view of one answer."""

    p_support: float
    p_oppose: float
    p_neutral: float
    stance: str


def decide(probabilities: np.ndarray, config: StanceConfig) -> list[str]:
    """Labels of rows of class probabilities (columns in ``config.classes`` order)."""
    out = []
    for row in probabilities:
        if not config.three_way:
            p = row[0]
            out.append("neutral" if abs(p - 0.5) < config.band else ("support" if p > 0.5 else "oppose"))
            continue
        best = int(np.argmax(row))
        side = LABELS[best]
        out.append(side if side == "neutral" or row[best] >= config.min_side_probability else "neutral")
    return out


def validate(rows: Sequence["LabelledAnswer"], probabilities: np.ndarray, config: StanceConfig) -> dict:
    """Agreement of the judge's labels for ``rows`` with the readers' (``alignment.agreement``),
    with the probability of each label for the confidence measures."""
    labels = decide(probabilities, config)
    p_label = [float(row[LABELS.index(lab)]) if lab in config.classes else float(1 - row.max())
               for row, lab in zip(probabilities, labels)]
    return agreement([r.label for r in rows], labels, LABELS, probabilities[:, 0], p_label=p_label)


@dataclass
class FittedModel:
    scaler: Standardiser
    weights: np.ndarray
    bias: np.ndarray

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.scaler(x) @ self.weights + self.bias)


def fit_model(x: np.ndarray, labels: Sequence[str], sample_weights: np.ndarray, config: StanceConfig) -> FittedModel:
    index = {c: i for i, c in enumerate(config.classes)}
    keep = np.array([lab in index for lab in labels])
    y = np.array([index[lab] for lab in labels if lab in index])
    scaler = Standardiser.fit(x[keep])
    w, b = fit_softmax(scaler(x[keep]), y, len(config.classes), config.l2, sample_weights[keep])
    return FittedModel(scaler, w, b)


@dataclass
class StanceJudge:
    """P(support), P(oppose), P(neutral) of (prompt, answer) pairs, and the stance label."""

    lm: LM
    config: StanceConfig
    layer: tuple[int, ...]
    model: FittedModel
    validation: dict          # agreement on the labelled test split (or CV on the references)
    validated_on: str         # "generations (test split)" or "references (cross-validation)"
    examples: dict

    def judge(self, prompts: Sequence[str], answers: Sequence[str]) -> list[Verdict]:
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
        if not answers:
            return []
        x = feature_matrix(self.lm, list(prompts), list(answers), self.config.kinds, self.layer, cache=False)
        return self.verdicts(self.model.probabilities(x))

    def verdicts(self, probabilities: np.ndarray) -> list[Verdict]:
        labels = decide(probabilities, self.config)
        out = []
        for row, label in zip(probabilities, labels):
            p_neutral = float(row[2]) if self.config.three_way else 0.0
            out.append(Verdict(float(row[0]), float(row[1]), p_neutral, label))
        return out

    def summary(self) -> dict:
        v = self.validation
        return {"validated_on": self.validated_on, "accuracy": round(v["accuracy"], 4),
                "macro_f1": round(v["macro_f1"], 4), "kappa": round(v["kappa"], 4),
                "recall": {k: (None if r is None else round(r, 4)) for k, r in v["recall"].items()},
                "neutral_called_side": v.get("neutral_called_side"),
                "neutral_called_side_confident": v.get("neutral_called_side_confident"), "n": v["n"],
                "features": self.config.features, "layer": list(self.layer), "three_way": self.config.three_way,
                "examples": self.examples, "min_kappa": self.config.min_kappa}

    def describe(self) -> str:
        """One line for reports: what the judge is and how well it agreed with readers."""
        s = self.summary()
        rec = ", ".join(f"{k} {r:.2f}" for k, r in s["recall"].items() if r is not None)
        return (f"stance judge ({s['features']}, layers {s['layer']}): on {s['n']} {s['validated_on']} "
                f"accuracy {s['accuracy']:.2f}, recall {rec}, macro-F1 {s['macro_f1']:.2f}, "
                f"kappa {s['kappa']:.2f}")


def training_rows(config: StanceConfig) -> tuple[list[LabelledAnswer], list[LabelledAnswer]]:
    """(training answers, test answers): references + the labelled dev split; the test split."""
    refs = reference_answers(config.dataset) if config.dataset else []
    labelled = load_labelled_answers(config.labelled) if config.labelled else []
    return refs + [a for a in labelled if a.split == "dev"], [a for a in labelled if a.split == "test"]


def row_weights(rows: Sequence[LabelledAnswer], config: StanceConfig) -> np.ndarray:
    """Each training answer's weight: ``reference_weight`` for the references beside labelled
    generations (with references only, every one weighs 1), times its class's balancing weight
    with ``balance_classes``."""
    if all(r.split == "reference" for r in rows):
        weights = np.ones(len(rows))
    else:
        weights = np.array([config.reference_weight if r.split == "reference" else 1.0 for r in rows])
    return weights * class_weights([r.label for r in rows], weights, config) if config.balance_classes else weights


def class_weights(labels: Sequence[str], weights: np.ndarray, config: StanceConfig) -> np.ndarray:
    """Per-row factor total / (classes · class total) over the weighted rows of the judge's
    classes (rows of other labels get 1; a class without weight gets 1)."""
    totals = {c: float(sum(w for lab, w in zip(labels, weights) if lab == c)) for c in config.classes}
    total, present = sum(totals.values()), [c for c in config.classes if totals[c] > 0]
    return np.array([total / (len(present) * totals[lab]) if totals.get(lab, 0) > 0 else 1.0 for lab in labels])


def judge_layers(lm: LM, config: StanceConfig) -> tuple[int, ...]:
    return layer_indices(lm.model.config.get_text_config().num_hidden_layers, config.layer_fractions)


def features_of(lm: LM, rows: Sequence[LabelledAnswer], config: StanceConfig, layer: Sequence[int]) -> np.ndarray:
    return feature_matrix(lm, [r.prompt for r in rows], [r.answer for r in rows], config.kinds, layer)


def cross_validated(x: np.ndarray, rows: Sequence[LabelledAnswer], config: StanceConfig) -> dict:
    """Agreement of out-of-fold predictions, folds grouped by prompt."""
    probabilities = np.zeros((len(rows), len(config.classes)))
    weights = row_weights(rows, config)
    for held in grouped_folds([r.prompt_id for r in rows], config.folds, config.seed):
        train = np.setdiff1d(np.arange(len(rows)), held)
        model = fit_model(x[train], [rows[i].label for i in train], weights[train], config)
        probabilities[held] = model.probabilities(x[held])
    return validate(rows, probabilities, config)


def fit_stance_judge(lm: LM, config: StanceConfig | None = None, require: bool = True) -> StanceJudge:
    """Fit on the references and the labelled dev split with the base model ``lm`` (adapter
    off); validate on the labelled test split (or, with no labelled set, cross-validate on the
    references). ``require=True`` raises ``StanceClassifierError`` below ``min_kappa``."""
    config = config or StanceConfig()
    layer = judge_layers(lm, config)
    train_rows, test_rows = training_rows(config)
    if len({r.label for r in train_rows if r.label in config.classes}) < 2:
        raise StanceClassifierError(f"the judge's training answers ({config.dataset!r} + dev split of "
                                    f"{config.labelled!r}) do not cover two stances")
    x = features_of(lm, train_rows, config, layer)
    model = fit_model(x, [r.label for r in train_rows], row_weights(train_rows, config), config)
    if test_rows:
        validation = validate(test_rows, model.probabilities(features_of(lm, test_rows, config, layer)), config)
        where = "generated answers (labelled test split)"
    else:
        if len({r.prompt_id for r in train_rows}) < config.folds:
            raise StanceClassifierError(f"{len(train_rows)} training answers cannot be cross-validated "
                                        f"in folds={config.folds}")
        validation = cross_validated(x, train_rows, config)
        where = "reference answers (cross-validation)"
    examples = {"train": len(train_rows), "test": len(test_rows)}
    judge = StanceJudge(lm, config, layer, model, validation, where, examples)
    if require and not validation["kappa"] >= config.min_kappa:
        raise StanceClassifierError(
            f"stance judge kappa {validation['kappa']:.3f} (accuracy {validation['accuracy']:.3f}) on "
            f"{validation['n']} {where} is below min_kappa={config.min_kappa} (features {config.features}, "
            f"layers {list(layer)}); its labels would not be trustworthy. Allowed: a labelled set it agrees "
            "with, other features, or a lower min_kappa with care")
    return judge
