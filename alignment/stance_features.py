"""Features of a (prompt, answer) pair for the stance judge, all from the frozen base model.

Four families, each measured on generated answers before being trusted
(``experiments/stance_judge_eval.py``):

- ``answer``: the mean-pooled hidden state of the answer text alone at one decoder layer (the
  first classifier's feature: it never sees the question, so "Yes." to "Are adaptations bad
  for the industry?" reads like "Yes." to "Are they good?");
- ``context``: the same pooling over the answer's tokens, but encoded *after* the chat prompt,
  so the states can carry what the answer says about the question asked;
- ``likelihood``: a conditional-likelihood judge. The answer's mean per-token log-probability
  under a system turn that asks for a supporting answer, minus the same under one that asks
  for an opposing answer (and each against the plain prompt): how much more likely the model
  finds this answer when it is told to argue for adaptations than against them. This is the
  classifier-free contrast of Sanchez et al. 2023 (CFG for LMs) used as a judge, in the spirit
  of likelihood-based zero-shot classification (Brown et al. 2020, §3.9; Min et al. 2022,
  noisy-channel scoring);
- ``verdict``: a cloze judge. The answer, still in the assistant's turn, is followed by a cue
  that asks for a verdict ("In short, live-action adaptations … are"), and the features are the
  model's log-probabilities of a few verdict words (good / bad / mixed …) there, renormalised
  over those words (``VERDICT_CUE``, ``VERDICT_WORDS``; the pattern-verbaliser cloze of Schick
  & Schütze 2021, zero-shot).

Every forward runs on the base weights (adapter off) in inference mode, right-padded batches.
"""

from __future__ import annotations

import hashlib
import io
from typing import Sequence

import numpy as np
import torch

from decoding.io import write_bytes_atomic
from decoding.models import LM, cache_root

from .scoring import base_of, completion_ids, right_pad

FEATURE_SETS = ("answer", "context", "likelihood", "verdict")

# The verdict family: after the answer, the model is asked to sum up, and we read how likely it
# finds each verdict word next (a zero-shot cloze judge, as in Schick & Schütze 2021's
# pattern-verbaliser pairs, scored on the model's own continuation of its answer).
VERDICT_CUE = "\n\nIn short, live-action adaptations of anime and manga are"
VERDICT_WORDS = (" good", " great", " worth", " exciting", " bad", " terrible", " disappointing",
                 " pointless", " mixed", " complicated")
FEATURE_BATCH = 8

# The two instructions of the likelihood judge: the same sentence, one word apart in meaning.
PRO_SYSTEM = ("You believe live-action adaptations of anime and manga are a good thing. "
              "Answer the question arguing in favour of them.")
CON_SYSTEM = ("You believe live-action adaptations of anime and manga are a bad thing. "
              "Answer the question arguing against them.")


def layer_index(num_layers: int, fraction: float) -> int:
    """``hidden_states`` index for a depth fraction (0 is the embeddings, ``num_layers`` the
    last, normed, layer)."""
    return max(1, min(num_layers, round(fraction * num_layers)))


def layer_indices(num_layers: int, fractions: Sequence[float]) -> tuple[int, ...]:
    return tuple(layer_index(num_layers, f) for f in fractions)


def chat_ids(lm: LM, prompt: str, system: str | None = None) -> list[int]:
    """The chat-template ids of ``prompt`` (with a system turn when given) and a generation
    prompt: where the answer starts."""
    if system is None:
        return lm.encode(prompt, chat=True)
    ids = lm.tokenizer.apply_chat_template([{"role": "system", "content": system},
                                            {"role": "user", "content": prompt}],
                                           add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return [int(i) for i in ids]


@torch.inference_mode()
def scan(lm: LM, prefixes: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
         layer: Sequence[int] | None, suffix: Sequence[int] = (), read: Sequence[int] = ()
         ) -> tuple[np.ndarray | None, list[np.ndarray], np.ndarray | None]:
    """One batched forward over each ``prefix + answer + suffix``:

    - the mean over the answer's positions of the hidden states at each layer of ``layer``,
      side by side (``None``: skip), ``(n, hidden·layers)``; causal attention makes them the
      same with or without the suffix;
    - log π(answer_t | prefix, answer_<t) per answer token;
    - with ``read``, the log-softmax over the token ids ``read`` of the next-token scores after
      the suffix, ``(n, len(read))``.

    An empty answer pools the prefix's last position and has no log-probs."""
    pad = lm.tokenizer.pad_token_id or 0
    pooled, logps, reads = [], [], []
    for start in range(0, len(answers), FEATURE_BATCH):
        pre, ans = prefixes[start:start + FEATURE_BATCH], answers[start:start + FEATURE_BATCH]
        ids, mask = right_pad([list(p) + list(a) + list(suffix) for p, a in zip(pre, ans)], pad)
        with base_of(lm) as model:
            out = model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                        output_hidden_states=layer is not None)
        logits = out.logits.float()
        for i, (p, a) in enumerate(zip(pre, ans)):
            lo, hi = (len(p), len(p) + len(a)) if a else (len(p) - 1, len(p))
            if layer is not None:
                pooled.append(np.concatenate([out.hidden_states[k][i, lo:hi].float().mean(0).double().cpu().numpy()
                                              for k in layer]))
            if a:
                steps = logits[i, len(p) - 1:len(p) + len(a) - 1].log_softmax(-1)
                target = torch.tensor(list(a), device=steps.device)[:, None]
                logps.append(steps.gather(-1, target)[:, 0].double().cpu().numpy())
            else:
                logps.append(np.zeros(0))
            if read:
                last = len(p) + len(a) + len(suffix) - 1
                reads.append(logits[i, last, list(read)].log_softmax(-1).double().cpu().numpy())
    return (np.stack(pooled) if layer is not None else None), logps, (np.stack(reads) if read else None)


def pooled_and_logprobs(lm: LM, prefixes: Sequence[Sequence[int]], answers: Sequence[Sequence[int]],
                        layer: Sequence[int] | None) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """``scan`` without a suffix: pooled states and per-token log-probs."""
    pooled, logps, _ = scan(lm, prefixes, answers, layer)
    return pooled, logps


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0


def likelihood_rows(lp_pro: Sequence[np.ndarray], lp_con: Sequence[np.ndarray],
                    lp_plain: Sequence[np.ndarray]) -> np.ndarray:
    """The likelihood family from per-token log-probs: mean(pro − con), mean(pro − plain),
    mean(con − plain), mean plain log-prob, log(1 + length)."""
    rows = [[_mean(a - b), _mean(a - c), _mean(b - c), _mean(c), np.log1p(len(c))]
            for a, b, c in zip(lp_pro, lp_con, lp_plain)]
    return np.array(rows, dtype=np.float64).reshape(len(rows), 5)


def answer_family(lm: LM, answer_ids: Sequence[Sequence[int]], layer: Sequence[int]) -> np.ndarray:
    """The answer alone; its first token is the prefix (a BOS-less text), pooled from the second."""
    pad = lm.tokenizer.pad_token_id or 0
    ids = [list(a) if len(a) > 1 else (list(a) or [pad]) + [pad] for a in answer_ids]
    return pooled_and_logprobs(lm, [i[:1] for i in ids], [i[1:] for i in ids], layer)[0]


def families(lm: LM, prompts: Sequence[str], answers: Sequence[str], kinds: Sequence[str],
             layer: Sequence[int]) -> dict[str, np.ndarray]:
    """The feature families ``kinds`` (module docstring) of every (prompt, answer), each
    ``(n, d)``. One forward over prompt + answer + verdict cue serves ``context``, ``verdict``
    and the plain log-probs of ``likelihood``."""
    unknown = [k for k in kinds if k not in FEATURE_SETS]
    if unknown:
        raise ValueError(f"feature kinds {unknown} unknown; allowed: {FEATURE_SETS}")
    answer_ids = [completion_ids(lm, a) for a in answers]
    out = {}
    if "answer" in kinds:
        out["answer"] = answer_family(lm, answer_ids, layer)
    if {"context", "likelihood", "verdict"} & set(kinds):
        plain = [chat_ids(lm, p) for p in prompts]
        verdict = "verdict" in kinds
        read = [completion_ids(lm, w)[0] for w in VERDICT_WORDS] if verdict else []
        pooled, lp_plain, words = scan(lm, plain, answer_ids, layer if "context" in kinds else None,
                                       completion_ids(lm, VERDICT_CUE) if verdict else (), read)
        if "context" in kinds:
            out["context"] = pooled
        if verdict:
            out["verdict"] = words
        if "likelihood" in kinds:
            _, lp_pro = pooled_and_logprobs(lm, [chat_ids(lm, p, PRO_SYSTEM) for p in prompts], answer_ids, None)
            _, lp_con = pooled_and_logprobs(lm, [chat_ids(lm, p, CON_SYSTEM) for p in prompts], answer_ids, None)
            out["likelihood"] = likelihood_rows(lp_pro, lp_con, lp_plain)
    return out


LAYERED = ("answer", "context")


def _units(kinds: Sequence[str], layer: Sequence[int]) -> list[tuple[str, int | None]]:
    """Cache units: a layered family is cached layer by layer, the others whole."""
    return [(k, l) for k in kinds for l in (layer if k in LAYERED else [None])]


def _cache_folder(lm: LM, kind: str, layer: int | None):
    settings = {"likelihood": PRO_SYSTEM + CON_SYSTEM, "verdict": VERDICT_CUE + repr(VERDICT_WORDS)}.get(kind, "")
    where = "" if layer is None else f"-L{layer}"
    tag = hashlib.sha256(settings.encode("utf-8")).hexdigest()[:8]
    return cache_root() / "stance" / f"{lm.fingerprint[:16]}-{kind}{where}-{tag}"


def cached_families(lm: LM, prompts: Sequence[str], answers: Sequence[str], kinds: Sequence[str],
                    layer: Sequence[int]) -> dict[str, np.ndarray]:
    """``families`` cached on disk one row per (prompt, answer), family and layer
    (``$XDG_CACHE_HOME/decoding-lab/stance/<weights>-<family>[-L<layer>]-<settings>/<pair
    hash>.npy``), under the base weights' fingerprint: the judge is refitted by every
    evaluation, study and lab session, and these forwards are its only cost; a labelled set that
    grows computes only its new rows, all missing families and layers in shared forwards."""
    if not lm.fingerprint or getattr(lm, "adapter", None):
        return families(lm, prompts, answers, kinds, layer)
    keys = [hashlib.sha256(f"{p}\x01{a}".encode("utf-8")).hexdigest()[:24] for p, a in zip(prompts, answers)]
    units = _units(kinds, layer)
    rows: dict[tuple, dict[str, np.ndarray]] = {u: {} for u in units}
    for unit in units:
        folder = _cache_folder(lm, *unit)
        for key in set(keys):
            try:
                rows[unit][key] = np.load(folder / f"{key}.npy")
            except (OSError, ValueError):
                pass
    todo = sorted({i for u in units for i, key in enumerate(keys) if key not in rows[u]})
    if todo:
        missing = list(dict.fromkeys(u[0] for u in units if any(keys[i] not in rows[u] for i in todo)))
        fresh = families(lm, [prompts[i] for i in todo], [answers[i] for i in todo], missing, layer)
        for kind in missing:
            parts = ([(l, fresh[kind][:, j * (fresh[kind].shape[1] // len(layer)):(j + 1) * (fresh[kind].shape[1] // len(layer))])
                      for j, l in enumerate(layer)] if kind in LAYERED else [(None, fresh[kind])])
            for l, block in parts:
                folder = _cache_folder(lm, kind, l)
                for i, row in zip(todo, block):
                    buffer = io.BytesIO()
                    np.save(buffer, row)
                    write_bytes_atomic(folder / f"{keys[i]}.npy", buffer.getvalue())
                    rows[(kind, l)][keys[i]] = row
    return {kind: np.concatenate([np.stack([rows[(kind, l)][key] for key in keys]) for k, l in units if k == kind],
                                 axis=1) for kind in kinds}


def feature_matrix(lm: LM, prompts: Sequence[str], answers: Sequence[str], kinds: Sequence[str],
                   layer: Sequence[int], cache: bool = True) -> np.ndarray:
    """The feature families ``kinds`` of every (prompt, answer), side by side, ``(n, d)``."""
    if not kinds or any(k not in FEATURE_SETS for k in kinds):
        raise ValueError(f"feature kinds {list(kinds)} unknown; allowed: {FEATURE_SETS}")
    found = (cached_families if cache else families)(lm, prompts, answers, kinds, layer)
    return np.concatenate([found[k] for k in kinds], axis=1)
