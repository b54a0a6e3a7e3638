"""A stance classifier for generated answers, with no external judge (offline).

Logistic regression on frozen base-model features: the mean-pooled hidden state of the answer
text (no prompt, no chat template) at one decoder layer, standardised, L2-regularised, fitted
with L-BFGS in float64. Trained on the stance set's supporting (label 1) and opposing (label 0)
answers; the classifier only judges *answers*, so it does not depend on the policy being
evaluated (``alignment_anchors.md`` §5, option 3).

Honesty checks, both reported:

- cross-validated accuracy with folds grouped by record, so a prompt's two answers are never
  split between training and validation; below ``min_accuracy`` (0.9) the classifier refuses
  to label anything (``StanceClassifierError``);
- a neutral band: answers with P(support) within ``band`` of 0.5 are "neutral", not forced to a
  side (off-topic text, loops, empty answers land here or get flagged by the side effects).

Known weakness: a bag-of-states model latches onto lexical cues; a looping "… it is great, it
is great …" reads as supportive. That is why loop rate and length are always reported beside it.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from decoding.errors import DecodingLabError, out_of_range
from decoding.io import write_bytes_atomic
from decoding.models import LM, cache_root

from .data import StanceRecord, load_stance_records
from .scoring import base_of, right_pad

LABELS = ("support", "oppose", "neutral")


class StanceClassifierError(DecodingLabError):
    """The classifier is not good enough to be used (or was asked something it cannot do)."""


@dataclass(frozen=True)
class StanceConfig:
    """How the stance classifier is built."""

    dataset: str = field(default="stance", metadata={
        "help": "course-schema records whose support/oppose answers train the classifier"})
    layer_fraction: float = field(default=0.67, metadata={
        "help": "which decoder layer's states to pool, as a fraction of the depth (1.0 = the "
                "last layer); middle-upper layers carry more topic-independent stance"})
    l2: float = field(default=1.0, metadata={
        "help": "L2 penalty on the weights (on standardised features), > 0"})
    folds: int = field(default=5, metadata={"help": "cross-validation folds (grouped by record), >= 2"})
    min_accuracy: float = field(default=0.9, metadata={
        "help": "refuse to classify when cross-validated accuracy is below this"})
    band: float = field(default=0.15, metadata={
        "help": "P(support) within this of 0.5 is labelled neutral, in [0, 0.5)"})
    seed: int = field(default=0, metadata={"help": "fold assignment seed"})

    def __post_init__(self) -> None:
        if not 0 < self.layer_fraction <= 1:
            raise out_of_range("layer_fraction", self.layer_fraction, "(0, 1]")
        if not self.l2 > 0:
            raise out_of_range("l2", self.l2, "l2 > 0")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise out_of_range("folds", self.folds, "an integer >= 2")
        if not 0 <= self.min_accuracy <= 1:
            raise out_of_range("min_accuracy", self.min_accuracy, "[0, 1]")
        if not 0 <= self.band < 0.5:
            raise out_of_range("band", self.band, "0 <= band < 0.5")


# --------------------------------------------------------------------------- features

def layer_index(num_layers: int, fraction: float) -> int:
    """``hidden_states`` index for a depth fraction (0 is the embeddings, ``num_layers`` the
    last, normed, layer)."""
    return max(1, min(num_layers, round(fraction * num_layers)))


@torch.inference_mode()
def answer_features(lm: LM, texts: Sequence[str], layer: int, batch_size: int = 16) -> np.ndarray:
    """Mean-pooled hidden states ``(len(texts), hidden)`` of each text at ``layer``, computed by
    the base model (adapter off), right-padded batches."""
    tok = lm.tokenizer
    pad = tok.pad_token_id or 0
    rows = []
    for start in range(0, len(texts), batch_size):
        chunk = [tok(t, add_special_tokens=False)["input_ids"] or [pad] for t in texts[start:start + batch_size]]
        ids, mask = right_pad(chunk, pad)
        with base_of(lm) as model:
            states = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                           output_hidden_states=True).hidden_states[layer].float().cpu()
        weights = mask[..., None].float()
        rows.append(((states * weights).sum(1) / weights.sum(1)).double().numpy())
    return np.concatenate(rows)


def cached_features(lm: LM, texts: Sequence[str], layer: int) -> np.ndarray:
    """``answer_features`` of the training answers, cached on disk under the model's weight
    fingerprint, the layer and a hash of the texts (``$XDG_CACHE_HOME/decoding-lab/stance``):
    the classifier is refitted by every evaluation, study and lab session, and the forward
    passes are its only cost (about a minute on 2 cores; the fit itself takes a second)."""
    if not lm.fingerprint or getattr(lm, "adapter", None):
        return answer_features(lm, texts, layer)
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8")).hexdigest()[:16]
    path = cache_root() / "stance" / f"{lm.fingerprint[:16]}-L{layer}-{digest}.npy"
    if path.is_file():
        try:
            x = np.load(path)
            if x.shape[0] == len(texts):
                return x
        except (OSError, ValueError):
            pass
    x = answer_features(lm, texts, layer)
    buffer = io.BytesIO()
    np.save(buffer, x)
    write_bytes_atomic(path, buffer.getvalue())
    return x


# --------------------------------------------------------------------------- logistic regression

def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 200) -> tuple[np.ndarray, float]:
    """Weights and bias of L2-regularised logistic regression (mean log-loss + l2/2n·|w|²),
    L-BFGS on float64. ``x`` must already be standardised."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float64))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt)
        loss = loss + l2 / (2 * len(y)) * (w @ w)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


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
    """Fold index of every row, whole groups at a time (a record's two answers together)."""
    unique = sorted(set(groups), key=str)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: rank % folds for rank, i in enumerate(order)}
    assignment = np.array([fold_of[g] for g in groups])
    return [np.flatnonzero(assignment == k) for k in range(folds)]


def cross_validate(x: np.ndarray, y: np.ndarray, groups: Sequence, l2: float, folds: int,
                   seed: int) -> float:
    """Accuracy over all held-out rows of grouped k-fold cross-validation."""
    correct = 0
    for held in grouped_folds(groups, folds, seed):
        train = np.setdiff1d(np.arange(len(y)), held)
        scaler = Standardiser.fit(x[train])
        w, b = fit_logistic(scaler(x[train]), y[train], l2)
        correct += int(((_sigmoid(scaler(x[held]) @ w + b) >= 0.5) == (y[held] == 1)).sum())
    return correct / len(y)


# --------------------------------------------------------------------------- the classifier

@dataclass
class StanceClassifier:
    """P(support) of answer texts; ``label`` maps it to support / oppose / neutral."""

    lm: LM
    config: StanceConfig
    layer: int
    scaler: Standardiser
    weights: np.ndarray
    bias: float
    cv_accuracy: float
    train_accuracy: float
    examples: int

    def support_probability(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        x = answer_features(self.lm, list(texts), self.layer)
        return _sigmoid(self.scaler(x) @ self.weights + self.bias)

    def label(self, p_support: float) -> str:
        """support / oppose, or neutral within the band around 0.5."""
        if abs(p_support - 0.5) < self.config.band:
            return "neutral"
        return "support" if p_support > 0.5 else "oppose"

    def summary(self) -> dict:
        return {"cv_accuracy": round(self.cv_accuracy, 4), "train_accuracy": round(self.train_accuracy, 4),
                "examples": self.examples, "layer": self.layer, "folds": self.config.folds,
                "l2": self.config.l2, "neutral_band": [0.5 - self.config.band, 0.5 + self.config.band],
                "dataset": self.config.dataset}


def training_texts(records: Sequence[StanceRecord]) -> tuple[list[str], np.ndarray, list]:
    texts, labels, groups = [], [], []
    for r in records:
        texts += [r.support, r.oppose]
        labels += [1, 0]
        groups += [r.id, r.id]
    return texts, np.array(labels), groups


def fit_stance_classifier(lm: LM, config: StanceConfig | None = None,
                          require: bool = True) -> StanceClassifier:
    """Fit on ``config.dataset`` with the base model ``lm`` (adapter off); cross-validate.

    ``require=True`` raises ``StanceClassifierError`` when the cross-validated accuracy is
    below ``config.min_accuracy``: a classifier that cannot tell the reference answers apart
    must not be used to label generations.
    """
    config = config or StanceConfig()
    records = load_stance_records(config.dataset)
    if len(records) < config.folds:
        raise StanceClassifierError(f"dataset {config.dataset!r} has {len(records)} records; "
                                    f"cross-validation needs at least folds={config.folds}")
    num_layers = lm.model.config.get_text_config().num_hidden_layers
    layer = layer_index(num_layers, config.layer_fraction)
    texts, y, groups = training_texts(records)
    x = cached_features(lm, texts, layer)
    cv = cross_validate(x, y, groups, config.l2, config.folds, config.seed)
    scaler = Standardiser.fit(x)
    w, b = fit_logistic(scaler(x), y, config.l2)
    train_acc = float(((_sigmoid(scaler(x) @ w + b) >= 0.5) == (y == 1)).mean())
    classifier = StanceClassifier(lm, config, layer, scaler, w, b, cv, train_acc, len(y))
    if require and cv < config.min_accuracy:
        raise StanceClassifierError(
            f"stance classifier cross-validated accuracy {cv:.3f} is below min_accuracy="
            f"{config.min_accuracy} (layer {layer}, {len(y)} answers of {config.dataset!r}); its "
            "labels would not be trustworthy. Allowed: a dataset or layer_fraction that separates "
            "the stances, or a lower min_accuracy with care")
    return classifier
