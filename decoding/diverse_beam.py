"""Diverse (group) beam search (Vijayakumar et al. 2016, "Diverse Beam Search", Alg. 1).

The ``num_beams`` beams are split into ``num_beam_groups`` groups of equal width. Each step the
groups are extended one after the other; group g first subtracts the Hamming diversity term
from its log-probabilities (Eq. 3, with the Hamming dissimilarity of §5):

    scores[g] −= diversity_penalty · bincount(tokens chosen by groups 0 … g−1 at this step)

then runs an ordinary beam step of its own width, with its own pool of finished hypotheses.
At the end the finished hypotheses of all groups compete on score. This is what transformers'
``_group_beam_search`` and ``HammingDiversityLogitsProcessor`` did before they moved to the
Hub (``transformers-community/group-beam-search``); the penalty is applied where transformers
put it, right after the sequence/logit bias. The group loop itself lives in ``beam.py``, so that
one group is exactly our beam search.
"""

from __future__ import annotations

import torch

from .errors import check_number
from .samplers import token_counts


def hamming_diversity(scores: torch.Tensor, previous_tokens: torch.Tensor, penalty: float) -> torch.Tensor:
    """Hamming diversity: ``scores`` ``(rows, vocab)`` of one group's beams, ``previous_tokens``
    ``(rows, n)`` the tokens the earlier groups of the same prompt chose at this step (n = 0
    for the first group). Returns ``scores − penalty · counts``."""
    check_number("diversity_penalty", penalty, lambda v: v >= 0, "diversity_penalty >= 0")
    return scores - penalty * token_counts(previous_tokens, scores.shape[-1]).to(scores.device, scores.dtype)


def previous_group_tokens(step_tokens: torch.Tensor, group: int, width: int) -> torch.Tensor:
    """For every beam of ``group``, the tokens chosen at this step by the earlier groups.

    step_tokens: ``(batch, groups, width)`` the tokens chosen this step (valid for groups
    < ``group``). Returns ``(batch · width, group · width)``, row-aligned with the group's beams.
    """
    batch = step_tokens.shape[0]
    earlier = step_tokens[:, :group].reshape(batch, group * width)
    return earlier.repeat_interleave(width, dim=0)
