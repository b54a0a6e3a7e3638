"""Beam search, step by step, with the beam tree recorded.

The algorithm is transformers' vectorised beam search (``GenerationMixin._beam_search``, 5.x),
so results are token-identical:

* processors act on log-probabilities: ``scores = chain(log_softmax(logits))``;
* each step keeps the best ``2·num_beams`` of ``num_beams × vocab`` continuations (so that enough
  non-finished ones remain after end-of-sequence candidates are set aside);
* a finished hypothesis scores ``sum log p / L ** length_penalty`` with ``L`` the generated length
  including end-of-sequence;
* ``early_stopping``: True stops once ``num_beams`` hypotheses are finished; False stops when the
  best running beam, normalised at the current length, cannot beat the worst finished one;
  "never" does the same with the maximum length when ``length_penalty > 0`` (the canonical rule).
"""

from __future__ import annotations

import torch

from .chain import StepContext, apply_chain, build_chain, chain_names
from .config import DecodingConfig
from .errors import GenerationError
from .forward import decode_step, left_pad, prefill
from .loop import StopChecker, pad_token_id
from .models import LM
from .recorder import TokenTexts
from .trace import BeamNode, BeamStep, FinishedHypothesis, SequenceResult

NEG = -1.0e9  # transformers' "impossible" score


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select along the beam axis: ``tensor`` (batch, beams, ...), ``index`` (batch, k)."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


def beam_search(lm: LM, prompts: list[list[int]], config: DecodingConfig, trace: bool = True
                ) -> list[tuple[list[SequenceResult], list[BeamStep], list[str]]]:
    """Beam search for each prompt; returns per prompt (sequences, beam tree steps, chain)."""
    model = lm.model
    num_beams, lp = config.num_beams, config.length_penalty
    batch = len(prompts)
    pad = pad_token_id(lm)
    input_ids, mask = left_pad([list(p) for p in prompts for _ in range(num_beams)], pad)
    prompt_len = input_ids.shape[1]
    room = lm.max_context - prompt_len
    max_new = min(config.max_new_tokens, room)
    max_len = prompt_len + max_new
    eos = set() if config.ignore_eos else set(lm.eos_token_ids)
    stop = StopChecker(lm, config, max_new, context_bound=room < config.max_new_tokens)
    beams_to_keep = max(2, 1 + len(lm.eos_token_ids)) * num_beams
    top_beam_mask = torch.arange(beams_to_keep) < num_beams
    stages = build_chain(config, lm.eos_token_ids)
    names = chain_names(stages)
    texts = TokenTexts(lm.tokenizer)

    context = input_ids if mask is None else input_ids.masked_fill(mask == 0, -1)
    running = torch.full((batch, num_beams, max_len), pad, dtype=torch.long)
    running[:, :, :prompt_len] = context.view(batch, num_beams, prompt_len)
    finished_seqs = running.clone()
    running_scores = torch.zeros((batch, num_beams))
    running_scores[:, 1:] = NEG  # all beams start identical: only the first may expand
    finished_scores = torch.full((batch, num_beams), NEG)
    finished_raw = torch.full((batch, num_beams), NEG)
    finished_len = torch.zeros((batch, num_beams), dtype=torch.long)
    is_finished = torch.zeros((batch, num_beams), dtype=torch.bool)
    improvable = torch.ones((batch, 1), dtype=torch.bool)
    tree: list[list[BeamStep]] = [[] for _ in range(batch)]
    hyp_ids = torch.full((batch, num_beams), -1, dtype=torch.long)  # finished pool -> trace record
    records: list[list[FinishedHypothesis]] = [[] for _ in range(batch)]

    cur_len = prompt_len
    with torch.inference_mode():
        logits, state, _ = prefill(model, input_ids, mask)
        while True:
            logits = logits.cpu()
            if not torch.isfinite(logits).all():
                raise GenerationError(f"non-finite logits (nan or inf) from the model at step "
                                      f"{cur_len - prompt_len}; generation stopped")
            flat = running[:, :, :cur_len].reshape(batch * num_beams, cur_len)
            log_probs = torch.log_softmax(logits, dim=-1)
            log_probs, _ = apply_chain(stages, StepContext(flat, prompt_len), log_probs)
            vocab = log_probs.shape[-1]
            acc = (log_probs.view(batch, num_beams, vocab) + running_scores[:, :, None]).view(batch, -1)

            # 1. the best 2·num_beams continuations over all beams
            top_scores, top_index = torch.topk(acc, k=beams_to_keep)
            parent = top_index // vocab
            token = top_index % vocab
            cand = _gather(running, parent)
            cand[:, :, cur_len] = token
            hits = _hits_stop(cand, token, cur_len, prompt_len, max_len, eos, stop)

            # 2. running beams for the next step: the best non-finished candidates
            run_scores = top_scores + hits.float() * NEG
            next_index = torch.topk(run_scores, k=num_beams)[1]
            running = _gather(cand, next_index)
            running_scores = _gather(run_scores, next_index)
            beam_parent = _gather(parent, next_index)

            # 3. finished pool: merge candidates that just finished (among the top num_beams)
            gen_len = cur_len + 1 - prompt_len
            normalised = top_scores / (gen_len ** lp)
            full = is_finished.all(-1, keepdim=True) & (config.early_stopping is True)
            normalised = normalised + full.float() * NEG + (~improvable).float() * NEG
            just_finished = hits & top_beam_mask[None, :]
            normalised = normalised + (~just_finished).float() * NEG
            new_ids = _record_finished(records, just_finished, normalised, top_scores, parent, cand,
                                       cur_len, prompt_len, gen_len)
            merged = torch.topk(torch.cat([finished_scores, normalised], 1), k=num_beams)[1]
            finished_seqs = _gather(torch.cat([finished_seqs, cand], 1), merged)
            finished_scores = _gather(torch.cat([finished_scores, normalised], 1), merged)
            finished_raw = _gather(torch.cat([finished_raw, top_scores], 1), merged)
            finished_len = _gather(torch.cat([finished_len, torch.full_like(parent, gen_len)], 1), merged)
            is_finished = _gather(torch.cat([is_finished, just_finished], 1), merged)
            hyp_ids = _gather(torch.cat([hyp_ids, new_ids], 1), merged)

            if trace:
                for b in range(batch):
                    tree[b].append(_beam_step(gen_len - 1, running[b], running_scores[b], beam_parent[b],
                                              cur_len, texts, records[b], new_ids[b]))

            # 4. reorder the cache to follow the surviving beams' parents
            flat_parent = (beam_parent + torch.arange(batch)[:, None] * num_beams).view(-1)
            state.cache.reorder_cache(flat_parent.to(lm.device))
            if state.attention_mask is not None:
                state.attention_mask = state.attention_mask[flat_parent.to(lm.device)]
                state.next_position = state.next_position[flat_parent.to(lm.device)]
            cur_len += 1

            improvable = _early_stop_heuristic(improvable, running_scores, finished_scores, is_finished,
                                               cur_len, max_len, prompt_len, config.early_stopping, lp)
            open_beam = not (bool(is_finished.all()) and config.early_stopping is True)
            if not (bool(improvable.any()) and open_beam and not bool(hits.all())) or cur_len >= max_len:
                break
            logits, _ = decode_step(model, running[:, :, cur_len - 1].reshape(-1), state)

    return [_results(lm, b, finished_seqs, finished_scores, finished_raw, finished_len, hyp_ids,
                     records, tree, prompt_len, config, eos, stop, names) for b in range(batch)]


def _hits_stop(cand, token, cur_len, prompt_len, max_len, eos, stop) -> torch.Tensor:
    """Which candidates end here: end-of-sequence, a stop string, or the maximum length."""
    hits = torch.zeros(token.shape, dtype=torch.bool)
    if cur_len + 1 >= max_len:
        return ~hits
    if eos:
        hits |= torch.isin(token, torch.tensor(sorted(eos)))
    if stop.stop_strings:
        for b in range(token.shape[0]):
            for k in range(token.shape[1]):
                if not hits[b, k] and stop._hit_stop_string(cand[b, k, prompt_len:cur_len + 1].tolist()):
                    hits[b, k] = True
    return hits


def _early_stop_heuristic(improvable, running_scores, finished_scores, is_finished, cur_len, max_len,
                          prompt_len, early_stopping, lp) -> torch.Tensor:
    """transformers' ``_check_early_stop_heuristic``: can the best running beam still win?"""
    if early_stopping == "never" and lp > 0.0:
        best_length = max_len - prompt_len
    else:
        best_length = cur_len - prompt_len
    best_running = running_scores[:, :1] / (best_length ** lp)
    worst_finished = torch.where(is_finished, finished_scores.min(1, keepdim=True)[0], NEG)
    return improvable & (best_running > worst_finished).any(-1, keepdim=True)


def _record_finished(records, just_finished, normalised, raw, parent, cand, cur_len, prompt_len,
                     gen_len) -> torch.Tensor:
    """Append a trace record for every hypothesis that finished this step; return their ids."""
    ids = torch.full(just_finished.shape, -1, dtype=torch.long)
    for b, k in just_finished.nonzero().tolist():
        ids[b, k] = len(records[b])
        records[b].append(FinishedHypothesis(
            step=gen_len - 1, parent=int(parent[b, k]),
            token_ids=cand[b, k, prompt_len:cur_len + 1].tolist(), raw_score=float(raw[b, k]),
            score=float(normalised[b, k]), length=gen_len, kept=False))
    return ids


def _beam_step(step, running, scores, parents, cur_len, texts, records, new_ids) -> BeamStep:
    tokens = running[:, cur_len].tolist()
    beams = [BeamNode(beam=i, parent=int(parents[i]), token_id=t, token_text=texts(t),
                      score=float(scores[i])) for i, t in enumerate(tokens)]
    finished = [records[i] for i in new_ids.tolist() if i >= 0]
    return BeamStep(step=step, beams=beams, finished=finished)


def _results(lm, b, seqs, scores, raw, lengths, hyp_ids, records, tree, prompt_len, config, eos,
             stop, names):
    out = []
    for k in range(config.num_return_sequences):
        length = int(lengths[b, k])
        if float(scores[b, k]) <= NEG / 2:  # no finished hypothesis in this slot
            continue
        ids = seqs[b, k, prompt_len:prompt_len + length].tolist()
        if ids and ids[-1] in eos:
            reason = "eos"
        elif stop.stop_strings and stop._hit_stop_string(ids):
            reason = "stop_string"
        else:
            reason = "context" if stop.context_bound else "length"
        out.append(SequenceResult(token_ids=ids, text=lm.decode(ids), finish_reason=reason,
                                  score=float(scores[b, k]), sum_logprob=float(raw[b, k])))
    for k in range(config.num_beams):
        if int(hyp_ids[b, k]) >= 0:
            records[b][int(hyp_ids[b, k])].kept = True
    return out, tree[b], names
