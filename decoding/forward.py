"""The model side of the loop: one prefill over the prompt, then one token per step (KV cache).

We call the model with exactly the inputs ``generate()`` builds (``position_ids``, an attention
mask only when there is padding, ``logits_to_keep=1``, a ``DynamicCache``), so the logits are
bit-identical to the reference and parity can be token-exact.

A plain ``LlamaForCausalLM`` (the embedded SmolLM2 among them) runs through ``fastpath.py``
instead: the same ops over the same weights without transformers' per-module machinery, still
bit-identical, with the KV cache in one preallocated buffer (``fastpath.KVBuffer``). Anything
else (other architectures, PEFT adapters, hooks, quantised layers) runs through transformers.
``fastpath.set_enabled(False)`` or ``DECODING_LAB_FASTPATH=0`` turns the fast path off.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .fastpath import KVBuffer, fast_model

PREFILL_HEADROOM = 256   # KV positions reserved past the prompt (the buffer grows if needed)


@functools.lru_cache(maxsize=None)
def _accepts_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def supports_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _accepts_logits_to_keep(type(base))


@dataclass
class KVState:
    """The growing state of a batch: cache, attention mask (None without padding), positions.

    ``cache`` is a transformers ``DynamicCache``, or a ``fastpath.KVBuffer`` on the fast path;
    both answer ``reorder_cache(index)`` (the batch may grow or shrink).
    """

    cache: DynamicCache | KVBuffer
    attention_mask: torch.Tensor | None
    next_position: torch.Tensor        # (batch, 1) position id of the next token

    def select_rows(self, index: torch.Tensor) -> None:
        """Row ``i`` becomes old row ``index[i]``, in the cache, the mask and the positions (the
        batch may grow or shrink): beams following their parents, contrastive candidates,
        finished rows leaving, a shared prefill copied to the rows that repeat a prompt."""
        self.cache.reorder_cache(index.to(self.next_position.device))
        if self.attention_mask is not None:
            self.attention_mask = self.attention_mask[index.to(self.attention_mask.device)]
        self.next_position = self.next_position[index.to(self.next_position.device)]


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Left-pad id lists to a ``(batch, length)`` tensor; the mask is None when nothing is padded."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, length - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, length - len(r):] = 1
    return ids, (None if bool(mask.all()) else mask)


def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
            keep_last: bool = True, output_hidden_states: bool = False):
    """Run the prompt. Returns (logits ``(batch, vocab)`` float32, KVState, model output: a
    transformers ``CausalLMOutputWithPast`` or a ``fastpath.FastOutput``, both with ``logits``,
    ``past_key_values`` and, when asked, ``hidden_states``)."""
    device = model.device
    input_ids = input_ids.to(device)
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
        # transformers' _prepare_position_ids_for_generation: cumsum of the mask, pads at 0.
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    else:
        positions = torch.arange(input_ids.shape[1], device=device).unsqueeze(0).expand(
            input_ids.shape[0], -1)
    fast = fast_model(model)
    if fast is not None:
        cache = fast.new_cache(input_ids.shape[0], input_ids.shape[1] + PREFILL_HEADROOM)
        padding = None if attention_mask is None else attention_mask.bool()
        out = fast.forward(input_ids, positions, padding, cache, keep_last=keep_last,
                           output_hidden_states=output_hidden_states)
        state = KVState(cache=cache, attention_mask=attention_mask,
                        next_position=positions[:, -1:] + 1)
        return _last_logits(out.logits, copy=not keep_last), state, out
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    kwargs = {"logits_to_keep": 1} if keep_last and supports_logits_to_keep(model) else {}
    out = model(input_ids=input_ids, position_ids=positions, attention_mask=attention_mask,
                past_key_values=cache, use_cache=True, output_hidden_states=output_hidden_states,
                **kwargs)
    logits = out.logits[:, -1].to(copy=True, dtype=torch.float32)
    state = KVState(cache=out.past_key_values, attention_mask=attention_mask,
                    next_position=positions[:, -1:] + 1)
    return logits, state, out


def decode_step(model, tokens: torch.Tensor, state: KVState, output_hidden_states: bool = False):
    """Feed one new token per row ``(batch,)``; returns (logits float32, model output)."""
    device = model.device
    if state.attention_mask is not None:
        state.attention_mask = torch.cat(
            [state.attention_mask, state.attention_mask.new_ones((tokens.shape[0], 1))], dim=-1)
    if isinstance(state.cache, KVBuffer):
        padding = None if state.attention_mask is None else state.attention_mask.bool()
        out = state.cache.owner.forward(tokens.to(device)[:, None], state.next_position, padding,
                                        state.cache, output_hidden_states=output_hidden_states)
        state.next_position = state.next_position + 1
        return _last_logits(out.logits, copy=False), out
    kwargs = {"logits_to_keep": 1} if supports_logits_to_keep(model) else {}
    out = model(input_ids=tokens.to(device)[:, None], position_ids=state.next_position,
                attention_mask=state.attention_mask, past_key_values=state.cache, use_cache=True,
                output_hidden_states=output_hidden_states, **kwargs)
    state.cache = out.past_key_values
    state.next_position = state.next_position + 1
    return out.logits[:, -1].to(copy=True, dtype=torch.float32), out


def _last_logits(logits: torch.Tensor, copy: bool) -> torch.Tensor:
    """The last position's logits as float32. The fast path's ``(batch, 1, vocab)`` logits are
    a fresh tensor nobody else holds, so their view needs no copy (one vocabulary-sized op less
    per step); with every position kept, the copy frees the rest."""
    return logits[:, -1].to(copy=copy, dtype=torch.float32)
