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

Diverse beam search (``num_beam_groups`` > 1, ``diverse_beam.py``) runs the same step once per
group, each group with its own width, running scores and finished pool.
"""

from __future__ import annotations

import torch

from .chain import Chain, StepContext
from .config import DecodingConfig
from .diverse_beam import previous_group_tokens
from .errors import GenerationError
from .forward import decode_step, left_pad
from .models import LM
from .recorder import TokenTexts
from .rows import StopChecker, pad_token_id, shared_prefill
from .step import step
from .trace import BeamNode, BeamStep, FinishedHypothesis, SequenceResult

NEG = -1.0e9  # transformers' "impossible" score


def _gather(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select along the beam axis: ``tensor`` (batch, beams, ...), ``index`` (batch, k)."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)


def beam_search(lm: LM, prompts: list[list[int]], config: DecodingConfig, trace: bool = True
                ) -> list[tuple[list[SequenceResult], list[BeamStep], list[str]]]:
    """Beam search for each prompt; returns per prompt (sequences, beam tree steps, chain).

    With ``num_beam_groups`` G > 1 this is diverse beam search (``diverse_beam.py``): the beams
    of a prompt form G groups of width W = num_beams / G, extended one group after the other,
    each an ordinary beam step of width W with its own finished pool. Tensors are laid out
    ``(batch, group, beam)``, so with G = 1 every step is exactly the plain beam step. In the
    trace, beam ``i`` belongs to group ``i // W``.
    """
    model = lm.model
    num_beams, groups, lp = config.num_beams, config.num_beam_groups, config.length_penalty
    width = num_beams // groups
    batch = len(prompts)
    pad = pad_token_id(lm)
    rows = [list(p) for p in prompts for _ in range(num_beams)]
    input_ids, mask = left_pad(rows, pad)
    prompt_len = input_ids.shape[1]
    room = lm.max_context - prompt_len
    max_new = min(config.max_new_tokens, room)
    max_len = prompt_len + max_new
    eos = set() if config.ignore_eos else set(lm.eos_token_ids)
    stop = StopChecker(lm, config, max_new, context_bound=room < config.max_new_tokens)
    beams_to_keep = max(2, 1 + len(lm.eos_token_ids)) * width
    top_beam_mask = torch.arange(beams_to_keep) < width
    chain = Chain.of(config, lm)
    names = chain.names
    texts = TokenTexts(lm.tokenizer)

    shape = (batch, groups, width)
    context = input_ids if mask is None else input_ids.masked_fill(mask == 0, -1)
    running = torch.full((*shape, max_len), pad, dtype=torch.long)
    running[..., :prompt_len] = context.view(*shape, prompt_len)
    finished_seqs = running.clone()
    running_scores = torch.zeros(shape)
    running_scores[..., 1:] = NEG  # a group's beams start identical: only its first may expand
    finished_scores = torch.full(shape, NEG)
    finished_raw = torch.full(shape, NEG)
    finished_len = torch.zeros(shape, dtype=torch.long)
    is_finished = torch.zeros(shape, dtype=torch.bool)
    improvable = torch.ones((batch, groups, 1), dtype=torch.bool)
    tree: list[list[BeamStep]] = [[] for _ in range(batch)]
    hyp_ids = torch.full(shape, -1, dtype=torch.long)  # finished pool -> trace record
    records: list[list[FinishedHypothesis]] = [[] for _ in range(batch)]

    cur_len = prompt_len
    with torch.inference_mode():
        # a prompt's beams start from one prefill (transformers prefills num_beams copies)
        logits, state, _, _ = shared_prefill(model, rows, pad)
        while True:
            logits = logits.cpu()
            if not torch.isfinite(logits).all():
                raise GenerationError(f"non-finite logits (nan or inf) from the model at step "
                                      f"{cur_len - prompt_len}; generation stopped")
            log_probs = torch.log_softmax(logits, dim=-1)
            vocab = log_probs.shape[-1]
            log_probs = log_probs.view(*shape, vocab)
            gen_len = cur_len + 1 - prompt_len
            beam_parent = torch.empty(shape, dtype=torch.long)
            step_ids, all_hit = [], True
            for g in range(groups):
                flat = running[:, g, :, :cur_len].reshape(batch * width, cur_len)
                ctx = StepContext(flat, prompt_len, group_tokens=previous_group_tokens(
                    running[..., cur_len], g, width))
                # 1. the pick: the best 2·width continuations over the group's beams
                (top_scores, top_index), _, _ = step(
                    chain, ctx, log_probs[:, g].reshape(batch * width, vocab),
                    lambda scores: torch.topk((scores.view(batch, width, vocab)
                                               + running_scores[:, g, :, None]).view(batch, -1),
                                              k=beams_to_keep))
                parent = top_index // vocab
                token = top_index % vocab
                cand = _gather(running[:, g], parent)
                cand[:, :, cur_len] = token
                hits = _hits_stop(cand, token, cur_len, prompt_len, max_len, eos, stop)
                all_hit &= bool(hits.all())

                # 2. running beams for the next step: the best non-finished candidates
                run_scores = top_scores + hits.float() * NEG
                next_index = torch.topk(run_scores, k=width)[1]
                running[:, g] = _gather(cand, next_index)
                running_scores[:, g] = _gather(run_scores, next_index)
                beam_parent[:, g] = _gather(parent, next_index) + g * width

                # 3. finished pool: merge candidates that just finished (among the top width)
                normalised = top_scores / (gen_len ** lp)
                full = is_finished[:, g].all(-1, keepdim=True) & (config.early_stopping is True)
                normalised = normalised + full.float() * NEG + (~improvable[:, g]).float() * NEG
                just_finished = hits & top_beam_mask[None, :]
                normalised = normalised + (~just_finished).float() * NEG
                new_ids = _record_finished(records, just_finished, normalised, top_scores,
                                           parent + g * width, cand, cur_len, prompt_len, gen_len)
                merged = torch.topk(torch.cat([finished_scores[:, g], normalised], 1), k=width)[1]
                finished_seqs[:, g] = _gather(torch.cat([finished_seqs[:, g], cand], 1), merged)
                finished_scores[:, g] = _gather(torch.cat([finished_scores[:, g], normalised], 1), merged)
                finished_raw[:, g] = _gather(torch.cat([finished_raw[:, g], top_scores], 1), merged)
                lengths = torch.full_like(parent, gen_len)
                finished_len[:, g] = _gather(torch.cat([finished_len[:, g], lengths], 1), merged)
                is_finished[:, g] = _gather(torch.cat([is_finished[:, g], just_finished], 1), merged)
                hyp_ids[:, g] = _gather(torch.cat([hyp_ids[:, g], new_ids], 1), merged)
                step_ids.append(new_ids)

            if trace:
                new_ids = torch.cat(step_ids, 1)
                for b in range(batch):
                    tree[b].append(_beam_step(gen_len - 1, running[b].view(num_beams, max_len),
                                              running_scores[b].view(-1), beam_parent[b].view(-1),
                                              cur_len, texts, records[b], new_ids[b]))

            # 4. reorder the cache to follow the surviving beams' parents
            flat_parent = (beam_parent.view(batch, num_beams)
                           + torch.arange(batch)[:, None] * num_beams).view(-1)
            state.select_rows(flat_parent)
            cur_len += 1

            improvable = _early_stop_heuristic(
                improvable.view(-1, 1), running_scores.view(-1, width), finished_scores.view(-1, width),
                is_finished.view(-1, width), cur_len, max_len, prompt_len, config.early_stopping,
                lp).view(batch, groups, 1)
            open_beam = not (bool(is_finished.all()) and config.early_stopping is True)
            if not (bool(improvable.any()) and open_beam and not all_hit) or cur_len >= max_len:
                break
            logits, _ = decode_step(model, running[..., cur_len - 1].reshape(-1), state)

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
                if not hits[b, k] and stop.hit_stop_string(cand[b, k, prompt_len:cur_len + 1].tolist()):
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
    """The best ``num_return_sequences`` finished hypotheses of prompt ``b``, all groups
    competing on score (one group: its pool, already in descending order)."""
    seqs, scores, raw = seqs[b].flatten(0, 1), scores[b].flatten(), raw[b].flatten()
    lengths, hyp_ids = lengths[b].flatten(), hyp_ids[b].flatten()
    slots = sorted((k for k in range(len(scores)) if float(scores[k]) > NEG / 2),
                   key=lambda k: -float(scores[k]))  # stable: ties keep pool order
    out = []
    for k in slots[:config.num_return_sequences]:
        length = int(lengths[k])
        ids = seqs[k, prompt_len:prompt_len + length].tolist()
        reason = (stop(ids) if ids else None) or stop.out_of_room
        out.append(SequenceResult(token_ids=ids, text=lm.decode(ids), finish_reason=reason,
                                  score=float(scores[k]), sum_logprob=float(raw[k])))
    for k in range(len(hyp_ids)):
        if int(hyp_ids[k]) >= 0:
            records[b][int(hyp_ids[k])].kept = True
    return out, tree[b], names
