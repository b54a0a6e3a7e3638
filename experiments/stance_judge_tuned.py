"""A tuned stance judge: the cloze judge's pattern fine-tuned with LoRA, against the shipped judge.

The shipped judge (``alignment.stance``) is a linear model over the *frozen* base model's
states and its zero-shot cloze reading (``verdict``: after the answer, "In short, live-action
adaptations of anime and manga are" and the probabilities of verdict words). Its learning curve
flattened near 0.74 oppose recall: more labels do not help a linear read-out of frozen states.
The next step is to let the states move. This study fine-tunes the same cloze pattern
end-to-end, as pattern-exploiting training does (PET: Schick & Schütze 2021, EACL, "Exploiting
Cloze Questions for Few Shot Text Classification"), with a LoRA adapter (Hu et al. 2022) on
every linear layer of the base model:

- input: the chat prompt, the answer (at most ``max_answer_tokens``) and ``VERDICT_CUE``;
- each class's score: the log of the summed next-token probabilities of its verbaliser words
  (``VERBALISER``, the verdict words of ``alignment.stance_features``), a softmax over the
  three classes, cross-entropy weighted exactly as the shipped judge weighs its training rows
  (``row_weights``: class-balanced, references at ``reference_weight``);
- training data: the shipped judge's (the reference answers + the labelled dev split); scored
  on the test split (``--fold K``: trained without dev fold K, scored on it, the shipped judge
  refitted the same way), paired with the shipped judge on the same answers.

It is a study, not the shipped judge: training takes ~25-45 min on 2 CPU cores, and one run
is one draw of the adapter's initialisation and batch order (``--seed``).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from alignment.agreement import agreement
from alignment.bootstrap import bootstrap_mean, grouped
from alignment.scoring import completion_ids, right_pad
from alignment.stance import (LABELS, LabelledAnswer, StanceConfig, decide, features_of, fit_model, grouped_folds,
                              judge_layers, row_weights, training_rows)
from alignment.stance_features import VERDICT_CUE, VERDICT_WORDS, chat_ids
from alignment.train_cpu import resolve_precision
from decoding import load_model
from decoding.errors import check_range
from decoding.io import write_json_atomic, write_text_atomic
from decoding.models import LM

from .runs import open_run
from .stance_judge_eval import recall_intervals

STUDY = "stance-judge-tuned"

# The cloze judge's verdict words, each class's share (PET's verbaliser, several words a class).
VERBALISER = {"support": (" good", " great", " worth", " exciting"),
              "oppose": (" bad", " terrible", " disappointing", " pointless"),
              "neutral": (" mixed", " complicated")}
assert sorted(w for ws in VERBALISER.values() for w in ws) == sorted(VERDICT_WORDS)


@dataclass(frozen=True)
class TunedJudgeConfig:
    """How the tuned judge is trained (each field's help is its documentation)."""

    rank: int = field(default=8, metadata={"help": "LoRA rank on every linear layer, >= 1"})
    learning_rate: float = field(default=2e-4, metadata={
        "help": "AdamW learning rate, > 0 (linear warm-up over the first tenth, then linear decay)"})
    epochs: float = field(default=2.0, metadata={"help": "passes over the training answers, > 0"})
    batch_size: int = field(default=8, metadata={"help": "answers per optimiser step, >= 1"})
    max_answer_tokens: int = field(default=160, metadata={
        "help": "answer tokens kept before the cue, >= 1 (the judge set's answers are at most 128)"})
    seed: int = field(default=0, metadata={"help": "seed of the adapter's initialisation and batch order"})
    fold: int | None = field(default=None, metadata={
        "help": "score on dev fold K of 5 (grouped by prompt; trained without it) instead of the test split"})
    limit: int = field(default=0, metadata={
        "help": "keep only the first N training and scored answers (a smoke run), 0: all"})

    def __post_init__(self) -> None:
        check_range("rank", self.rank, 1, integer=True)
        check_range("learning_rate", self.learning_rate, 0, low_open=True)
        check_range("epochs", self.epochs, 0, low_open=True)
        check_range("batch_size", self.batch_size, 1, integer=True)
        check_range("max_answer_tokens", self.max_answer_tokens, 1, integer=True)
        check_range("fold", self.fold, 0, 4, integer=True, optional=True)
        check_range("limit", self.limit, 0, integer=True)


def split_rows(stance: StanceConfig, fold: int | None) -> tuple[list[LabelledAnswer], list[LabelledAnswer]]:
    """(training rows, scored rows): the shipped judge's split, or dev fold ``fold`` held out."""
    train, test = training_rows(stance)
    if fold is None:
        return train, test
    dev = [r for r in train if r.split == "dev"]
    held = {int(i) for i in grouped_folds([r.prompt_id for r in dev], stance.folds, stance.seed)[fold]}
    return ([r for r in train if r.split != "dev"] + [r for i, r in enumerate(dev) if i not in held],
            [r for i, r in enumerate(dev) if i in held])


def cloze_ids(lm: LM, rows: Sequence[LabelledAnswer], max_answer_tokens: int) -> list[list[int]]:
    cue = completion_ids(lm, VERDICT_CUE)
    return [chat_ids(lm, r.prompt) + completion_ids(lm, r.answer)[:max_answer_tokens] + cue for r in rows]


def verbaliser_ids(lm: LM) -> list[list[int]]:
    """Each class's verbaliser token ids, in ``LABELS`` order (every word one token)."""
    out = []
    for c in LABELS:
        ids = [completion_ids(lm, w) for w in VERBALISER[c]]
        if any(len(i) != 1 for i in ids):
            raise ValueError(f"verbaliser words of {c!r} are not single tokens for {lm.name}")
        out.append([i[0] for i in ids])
    return out


def class_log_scores(model: torch.nn.Module, rows: Sequence[Sequence[int]], words: list[list[int]],
                     pad_id: int, bf16: bool) -> torch.Tensor:
    """``(n, 3)``: log Σ P(word) over each class's verbaliser words at the cue's last position."""
    ids, mask = right_pad(rows, pad_id)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(input_ids=ids, attention_mask=mask)
    last = mask.sum(1) - 1
    logp = out.logits[torch.arange(len(rows)), last].float().log_softmax(-1)
    return torch.stack([logp[:, w].logsumexp(-1) for w in words], -1)


def probabilities(model, rows, words, pad_id: int, bf16: bool, batch: int = 16) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        return torch.cat([class_log_scores(model, rows[s:s + batch], words, pad_id, bf16).softmax(-1)
                          for s in range(0, len(rows), batch)]).numpy()


def lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first tenth of the steps, then linear decay to 0."""
    return min(1.0, (step + 1) / max(1, steps // 10)) * max(0.0, (steps - step) / steps)


def train_tuned(lm: LM, train: Sequence[LabelledAnswer], weights: np.ndarray, config: TunedJudgeConfig,
                log=print) -> tuple[torch.nn.Module, dict]:
    """LoRA on ``lm.model`` (wrapped in place) trained on the cloze objective; (model, facts)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    order_rng = random.Random(config.seed)
    bf16 = resolve_precision("auto", lm.device) == "bf16"
    words = verbaliser_ids(lm)
    x = cloze_ids(lm, train, config.max_answer_tokens)
    y = torch.tensor([LABELS.index(r.label) for r in train])
    w = torch.tensor(weights, dtype=torch.float32)
    model = get_peft_model(lm.model, LoraConfig(r=config.rank, lora_alpha=2 * config.rank, lora_dropout=0.05,
                                                target_modules="all-linear", task_type="CAUSAL_LM"))
    steps = max(1, int(config.epochs * len(x) / config.batch_size))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                            weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps))
    pad = lm.tokenizer.pad_token_id or 0
    start, order, losses = time.time(), [], []
    for step in range(steps):
        if not order:
            order = list(range(len(x)))
            order_rng.shuffle(order)
        batch, order = order[:config.batch_size], order[config.batch_size:]
        model.train()
        scores = class_log_scores(model, [x[i] for i in batch], words, pad, bf16)
        loss = (torch.nn.functional.cross_entropy(scores, y[batch], reduction="none") * w[batch]).sum() / w[batch].sum()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        if (step + 1) % 20 == 0:
            log(f"step {step + 1}/{steps} loss {np.mean(losses[-20:]):.3f} {time.time() - start:.0f} s")
    return model, {"steps": steps, "seconds": time.time() - start, "precision": "bf16" if bf16 else "fp32",
                   "first_loss": losses[0], "last_losses": float(np.mean(losses[-20:]))}


def judge_row(name: str, rows: Sequence[LabelledAnswer], p: np.ndarray, stance: StanceConfig) -> dict:
    """Agreement of one judge's probabilities, with recall intervals over prompts."""
    labels = decide(p, stance)
    gold = [r.label for r in rows]
    a = agreement(gold, labels, LABELS, p_support=p[:, 0], p_label=p.max(1))
    ci = recall_intervals(rows, p, stance)
    return {"judge": name, **{k: a[k] for k in ("n", "accuracy", "recall", "macro_f1", "kappa", "neutral_called_side",
                                                  "neutral_called_side_confident", "ece")},
            "recall_ci": ci, "labels": labels}


def paired(rows: Sequence[LabelledAnswer], tuned: dict, shipped: dict) -> dict:
    """tuned − shipped, paired by answer, bootstrap over prompts: accuracy and each side's recall."""
    out = {}
    for name, keep in (("accuracy", lambda g: True), ("recall support", lambda g: g == "support"),
                       ("recall oppose", lambda g: g == "oppose")):
        idx = [i for i, r in enumerate(rows) if keep(r.label)]
        values = [float(tuned["labels"][i] == rows[i].label) - float(shipped["labels"][i] == rows[i].label) for i in idx]
        iv = bootstrap_mean(list(grouped([rows[i].prompt_id for i in idx], values).values()))
        out[name] = [iv.estimate, iv.low, iv.high]
    return out


def report_text(config: TunedJudgeConfig, facts: dict, judges: list[dict], diff: dict) -> str:
    where = "the labelled test split" if config.fold is None else f"dev fold {config.fold} of 5"
    lines = ["# Tuned stance judge (LoRA on the cloze pattern) vs the shipped judge", "",
             f"Scored on {where}; both judges trained on the same answers. Settings: "
             + ", ".join(f"{k} {v}" for k, v in asdict(config).items()) + ". "
             f"Training: {facts['steps']} steps in {facts['seconds']:.0f} s ({facts['precision']}). "
             "Intervals: 95 % bootstrap over prompts, answers nested. "
             "`neutral->side (P>=0.75)`: reader-neutral answers given a side with confidence.", "",
             "| judge | n | accuracy | recall support | recall oppose | recall neutral | κ | neutral->side | "
             "neutral->side (P>=0.75) | ECE |", "|---|---|---|---|---|---|---|---|---|---|"]
    for j in judges:
        rec = " | ".join(f"{j['recall'][c]:.2f} [{j['recall_ci'][c][0]:.2f}–{j['recall_ci'][c][1]:.2f}]"
                         for c in LABELS)
        lines.append(f"| {j['judge']} | {j['n']} | {j['accuracy']:.3f} | {rec} | {j['kappa']:.3f} | "
                     f"{j['neutral_called_side']:.2f} | {j['neutral_called_side_confident']:.2f} | {j['ece']:.3f} |")
    lines += ["", "Tuned − shipped, paired on the same answers (a difference is a finding only when its "
              "interval excludes 0):", ""]
    lines += [f"- {k}: {v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]" for k, v in diff.items()]
    return "\n".join(lines) + "\n"


def run_tuned(config: TunedJudgeConfig, root: str = "runs", model: str | None = None) -> str:
    stance = StanceConfig()
    train, scored = split_rows(stance, config.fold)
    if config.limit:
        train, scored = train[:config.limit], scored[:config.limit]
    with open_run(STUDY, root, {"model": model or "embedded", **asdict(config)}) as run:
        lm = load_model(model)
        # the shipped judge on the same split first, while lm is still the plain base model
        layer = judge_layers(lm, stance)
        shipped_model = fit_model(features_of(lm, train, stance, layer), [r.label for r in train],
                                  row_weights(train, stance), stance)
        p_shipped = shipped_model.probabilities(features_of(lm, scored, stance, layer))
        tuned_model, facts = train_tuned(lm, train, row_weights(train, stance), config)
        p_tuned = probabilities(tuned_model, cloze_ids(lm, scored, config.max_answer_tokens), verbaliser_ids(lm),
                                lm.tokenizer.pad_token_id or 0, facts["precision"] == "bf16")
        shipped, tuned = judge_row("shipped judge", scored, p_shipped, stance), judge_row("tuned cloze judge", scored,
                                                                                         p_tuned, stance)
        diff = paired(scored, tuned, shipped)
        write_json_atomic(run.path / "results.json", {
            "config": asdict(config), "training": facts, "judges": [shipped, tuned], "paired": diff,
            "answers": [{"uid": r.uid, "label": r.label, "shipped": p_shipped[i].tolist(), "tuned": p_tuned[i].tolist()}
                        for i, r in enumerate(scored)]})
        write_text_atomic(run.path / "report.md", report_text(config, facts, [shipped, tuned], diff))
    return str(run.path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .settings_flags import add_setting_flag

    p = argparse.ArgumentParser(prog=f"declab experiment {STUDY}", description=__doc__.splitlines()[0])
    p.add_argument("--root", default="runs", help="where run directories go")
    p.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2-135M-Instruct)")
    for name, flag, type_ in (("rank", "--rank", int), ("learning_rate", "--learning-rate", float),
                              ("epochs", "--epochs", float), ("batch_size", "--batch-size", int),
                              ("max_answer_tokens", "--max-answer-tokens", int), ("seed", "--seed", int),
                              ("fold", "--fold", int), ("limit", "--limit", int)):
        add_setting_flag(p, TunedJudgeConfig, name, flag, type_)
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 40 training and 40 scored answers, one epoch (a few minutes)")
    args = p.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k not in ("root", "model", "quick") and v is not None}
    if args.quick:
        given = {"limit": 40, "epochs": 1.0, **given}
    print(f"report: {run_tuned(TunedJudgeConfig(**given), args.root, args.model)}/report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
