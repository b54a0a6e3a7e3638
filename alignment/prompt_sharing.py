"""Encode the prompt once per preference pair.

TRL's DPO and ORPO/SimPO forwards stack a batch of B pairs as 2B rows, ``[prompt + chosen_i]``
for i < B then ``[prompt + rejected_i]`` (``trl/trainer/dpo_trainer.py`` collator,
``experimental/orpo/orpo_trainer.py`` ``concatenated_inputs``), so every prompt goes through the
model twice. ``SharedPrefixForward`` replaces the decoder stack's forward during training:

1. the common token prefix of rows i and B + i (the prompt, and any answer tokens the two share)
   runs once, B rows, keeping its keys and values (with their autograd graph);
2. the 2B remainders run on top of those keys and values, each row attending to its own pair's
   prefix (a 4D boolean mask) at its true positions (``position_ids``);
3. the hidden states are put back in the 2B-row layout the caller expects, padding zeros, so the
   LM head, TRL's fused log-prob head and the losses are untouched.

Causal attention makes this exact: a prefix token's state does not depend on what follows it,
so both rows had the same prefix states. In floating point the shapes of the products change,
so the losses agree to rounding (``tests/test_prompt_sharing.py`` states the tolerance). The
gradient of a prefix token collects both rows' contributions through the shared keys/values.

Any call that does not look like such a training batch (odd row count, left padding, a KV cache,
explicit positions or embeddings, a pair without a shared token, no SDPA attention) runs the
stack's own forward.
"""

from __future__ import annotations

import torch
from torch import nn

from .layer_cache import decoder_stack


class SharedPrefixForward:
    """Installed on a model's decoder stack for the duration of ``with``."""

    def __init__(self, model: nn.Module):
        self.stack = decoder_stack(model)
        self.shared_tokens = 0      # prefix tokens run once instead of twice, summed over calls
        self.calls = 0              # forwards that shared a prefix
        self._original = None

    def __enter__(self) -> "SharedPrefixForward":
        self._original = self.stack.forward
        self.stack.forward = self._forward
        return self

    def __exit__(self, *exc) -> None:
        self.stack.__dict__.pop("forward", None)
        self._original = None

    def _forward(self, input_ids=None, attention_mask=None, **kwargs):
        plan = self._plan(input_ids, attention_mask, kwargs)
        if plan is None:
            return self._original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return self._shared(input_ids, *plan, kwargs)

    def _plan(self, input_ids, attention_mask, kwargs):
        """(lengths, prefix lengths) when the batch can share prefixes, else None."""
        if (input_ids is None or attention_mask is None or input_ids.shape[0] % 2
                or any(kwargs.get(k) is not None for k in ("inputs_embeds", "position_ids", "cache",
                                                           "past_key_values"))
                or self.stack.config._attn_implementation != "sdpa"):
            return None
        mask = attention_mask.bool()
        lengths = mask.sum(-1)
        width = input_ids.shape[1]
        if not bool((mask == (torch.arange(width, device=mask.device) < lengths[:, None])).all()):
            return None                       # not right-padded
        half = input_ids.shape[0] // 2
        same = (input_ids[:half] == input_ids[half:]).long().cumprod(-1).sum(-1)
        # keep at least one token in each remainder (its first logit comes from the prefix)
        prefix = torch.minimum(same, torch.minimum(lengths[:half], lengths[half:]) - 1)
        if int(prefix.min()) < 1:
            return None
        return lengths, prefix

    def _shared(self, input_ids, lengths, prefix, kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPast

        half, device = input_ids.shape[0] // 2, input_ids.device
        kwargs = {k: v for k, v in kwargs.items()      # the None-valued ones _plan checked
                  if k not in ("use_cache", "position_ids", "cache", "past_key_values", "inputs_embeds")}
        longest = int(prefix.max())
        slots = torch.arange(longest, device=device)
        prefix_mask = slots < prefix[:, None]
        first = self._original(input_ids=input_ids[:half, :longest], attention_mask=prefix_mask.long(),
                               use_cache=True, **kwargs)
        cache = first.cache if getattr(first, "cache", None) is not None else first.past_key_values
        for layer in cache.layers:            # pair i's prefix serves rows i and B + i
            layer.keys, layer.values = layer.keys.repeat(2, 1, 1, 1), layer.values.repeat(2, 1, 1, 1)

        both = torch.cat([prefix, prefix])
        rest = lengths - both
        width = int(rest.max())
        steps = torch.arange(width, device=device)
        take = (both[:, None] + steps).clamp(max=input_ids.shape[1] - 1)
        rest_ids = input_ids.gather(1, take).masked_fill(steps >= rest[:, None], 0)
        # query j of row r sees its pair's prefix and its own remainder up to j (4D, True = attend)
        sees_prefix = torch.cat([prefix_mask, prefix_mask])[:, None, :].expand(-1, width, -1)
        sees_rest = (steps[None, :] <= steps[:, None])[None].expand(len(both), -1, -1)
        mask = torch.cat([sees_prefix, sees_rest], dim=-1)[:, None]
        second = self._original(input_ids=rest_ids, attention_mask=mask, position_ids=both[:, None] + steps,
                                cache=cache, use_cache=True, **kwargs)

        hidden_first, hidden_rest = first.last_hidden_state, second.last_hidden_state
        rows = []
        for r in range(len(both)):
            p, n = int(both[r]), int(lengths[r])
            parts = [hidden_first[r % half, :p], hidden_rest[r, :n - p]]
            pad = input_ids.shape[1] - n
            if pad:
                parts.append(hidden_rest.new_zeros((pad, hidden_rest.shape[-1])))
            rows.append(torch.cat(parts))
        self.calls += 1
        self.shared_tokens += int(prefix.sum())
        return BaseModelOutputWithPast(last_hidden_state=torch.stack(rows))
