"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation").

Each step, among the k most probable tokens V(k) (Eq. 5):

    x_t = argmax_{v ∈ V(k)}  (1 − α) · p(v | x_<t)  −  α · max_{j < t} cos(h_v, h_{x_j})
                             └── model confidence ──┘    └──── degeneration penalty ────┘

h are last-layer hidden states: h_v is the state of candidate v fed after the context, the h_j
are those of every context token, prompt included (as the reference implementation, SimCTG and
transformers' ``_contrastive_search`` before it moved to ``transformers-community/
contrastive-search``). p is the softmax of the logits after the penalty stages; sampling stages
do not run. A candidate those stages removed (p = 0, e.g. end-of-sequence before
``min_new_tokens``) is never chosen, which the reference code does not guard against (when
fewer than k tokens are allowed, its top-k fills up with them). With α = 0 the score is p
itself, so contrastive search is greedy search.

Per step the k candidates are run through the model as k rows of a batch sharing the context's
KV cache (``reorder_cache`` expands and then selects rows), so a step costs one forward of k
rows. The trace records, per step, every candidate's confidence, degeneration penalty and score
in ``StepTrace.extra["contrastive"]``.
"""

from __future__ import annotations

import torch

from .chain import Chain, StepContext
from .config import DecodingConfig
from .forward import decode_step, left_pad, prefill
from .models import LM
from .processors import NEG_INF
from .recorder import TokenTexts, record_steps
from .rows import RowProgress, StopChecker, pad_token_id
from .step import check_logits, step
from .trace import SequenceResult

CANDIDATE_STAGE = "contrastive_top_k"


def contrastive_scores(context_hidden: torch.Tensor, context_mask: torch.Tensor,
                       candidate_hidden: torch.Tensor, candidate_probs: torch.Tensor,
                       alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The contrastive score of every candidate (Su et al. 2022, Eq. 5).

    context_hidden: ``(batch, S, H)`` hidden states of the context tokens;
    context_mask: ``(batch, S)`` 1 for real tokens, 0 for padding (ignored);
    candidate_hidden: ``(batch, K, H)``; candidate_probs: ``(batch, K)`` model confidence.
    Returns (score, degeneration penalty), both ``(batch, K)``; the penalty is the largest
    cosine similarity between the candidate and a context token.
    """
    context = context_hidden / context_hidden.norm(dim=-1, keepdim=True)
    candidates = candidate_hidden / candidate_hidden.norm(dim=-1, keepdim=True)
    cosine = candidates @ context.transpose(1, 2)                               # (batch, K, S)
    cosine = cosine.masked_fill(context_mask[:, None, :] == 0, NEG_INF)
    penalty = cosine.max(dim=-1).values
    return (1.0 - alpha) * candidate_probs - alpha * penalty, penalty


def contrastive_batch(lm: LM, prompts: list[list[int]], config: DecodingConfig, *,
                      trace: bool = True, trace_top: int = 20
                      ) -> tuple[list[list[SequenceResult]], list[str]]:
    """Contrastive search on several prompts at once (left padding; padding positions take no
    part in the degeneration penalty). Returns, per prompt, its one sequence, and the chain."""
    model = lm.model
    alpha = config.penalty_alpha
    pad = pad_token_id(lm)
    input_ids, mask = left_pad([list(p) for p in prompts], pad)
    batch, prompt_len = input_ids.shape
    context_ids = input_ids if mask is None else input_ids.masked_fill(mask == 0, -1)
    chain = Chain.of(config, lm)
    names = chain.names + [CANDIDATE_STAGE]
    room = lm.max_context - prompt_len
    max_steps = min(config.max_new_tokens, room)
    progress = RowProgress(batch, StopChecker(lm, config, max_steps,
                                              context_bound=room < config.max_new_tokens))
    texts = TokenTexts(lm.tokenizer)
    seq = context_ids.to(lm.device)
    rows = torch.arange(batch, device=lm.device)

    with torch.inference_mode():
        logits, state, out = prefill(model, input_ids, mask, output_hidden_states=True)
        context_hidden = out.hidden_states[-1].float()
        context_mask = (torch.ones_like(input_ids) if mask is None else mask).to(lm.device)
        k = min(config.contrastive_k, logits.shape[-1])
        for index in range(max_steps):
            live = progress.live
            check_logits(logits, live, index)
            found: dict[str, torch.Tensor] = {}

            def pick(processed: torch.Tensor) -> torch.Tensor:
                """The top-k candidates through the model (k rows per sequence on a shared
                context), re-ranked by confidence and degeneration penalty."""
                top_probs, top_ids = torch.topk(torch.softmax(processed, dim=-1), k=k, dim=-1)
                state.select_rows(rows.repeat_interleave(k))
                cand_logits, cand_out = decode_step(model, top_ids.reshape(-1), state,
                                                    output_hidden_states=True)
                cand_hidden = cand_out.hidden_states[-1][:, -1].float().view(batch, k, -1)
                score, penalty = contrastive_scores(context_hidden, context_mask, cand_hidden,
                                                    top_probs, alpha)
                # a token a stage removed (p = 0) must not win on a negative penalty
                score = score.masked_fill(top_probs <= 0, NEG_INF)
                best = score.argmax(dim=-1)
                picked_rows = rows * k + best
                state.select_rows(picked_rows)
                found.update(top_ids=top_ids, top_probs=top_probs, penalty=penalty, score=score,
                             logits=cand_logits[picked_rows], hidden=cand_hidden[rows, best])
                return progress.pad_finished(top_ids[rows, best], pad)

            def record(history: list[torch.Tensor], chosen: torch.Tensor) -> list:
                processed, top_ids = history[-1], found["top_ids"]
                kept = torch.zeros_like(processed, dtype=torch.bool).scatter(1, top_ids, True)
                history = history + [processed.masked_fill(~kept, NEG_INF)]
                traces = record_steps(index, [h.cpu() for h in history], names, chosen.cpu(), live,
                                      trace_top, texts)
                for r, st in zip(live, traces):
                    st.extra = {"contrastive": _candidates(r, top_ids, found["top_probs"],
                                                           found["penalty"], found["score"], texts),
                                "penalty_alpha": alpha}
                return traces

            ctx = StepContext(seq, prompt_len, live=live)
            chosen, traces, _ = step(chain, ctx, logits, pick, record if trace else None)
            if progress.add(chosen, logits, traces):
                break
            seq = torch.cat([seq, chosen[:, None]], dim=-1)
            logits = found["logits"]
            context_hidden = torch.cat([context_hidden, found["hidden"][:, None]], dim=1)
            context_mask = torch.cat([context_mask, context_mask.new_ones((batch, 1))], dim=1)

    return [[r] for r in progress.results(lm)], names


def _candidates(row, ids, probs, penalty, score, texts) -> list[dict]:
    """One row's candidates, most probable first, as plain data for ``StepTrace.extra``."""
    return [{"token_id": t, "text": texts(t), "confidence": p, "degeneration_penalty": d,
             "score": s}
            for t, p, d, s in zip(ids[row].tolist(), probs[row].tolist(), penalty[row].tolist(),
                                  score[row].tolist())]
