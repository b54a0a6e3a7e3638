"""Adapt only the top N decoder layers, and run the frozen lower layers once per sequence.

With LoRA only on the top ``N`` layers (PEFT's ``layers_to_transform``), nothing below them
changes during training: the hidden state entering layer ``L - N`` is a fixed function of the
tokens. ``LowerLayerCache`` computes it the first time a sequence is seen (the first epoch, and
DPO's reference pass) and reuses it afterwards, so later epochs run only the top layers.

How it plugs in, on a Llama-style decoder stack (``embed_tokens``, ``rotary_emb``, ``layers``):

- a forward pre-hook on the stack looks up (or computes, for the rows not seen yet) the cached
  hidden states of the batch's rows and keeps them for this forward;
- the lower layers are swapped for ``_PassThrough`` modules and the last of them for
  ``_CachedOutput``, which returns the cached states. The stack's own code still builds the
  causal mask and the rotary embeddings the top layers need, and the module names (so the
  adapter's parameter names) do not change. ``remove()`` puts the layers back.

Rows are keyed by their unpadded token ids. The collators pad on the right, so a row's real
positions never attend to its padding and their states do not depend on the batch a row lands
in; padding positions get zeros (the losses mask them). The computation mirrors
``LlamaModel.forward`` (transformers 5.x ``models/llama/modeling_llama.py``): embeddings,
``create_causal_mask``, rotary embeddings, then each layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from decoding.errors import out_of_range


def decoder_stack(model: nn.Module) -> nn.Module:
    """The module holding the decoder layers (``model.model`` of a ``LlamaForCausalLM``, also
    inside a PEFT wrapper)."""
    for module in model.modules():
        if (isinstance(getattr(module, "layers", None), nn.ModuleList)
                and hasattr(module, "embed_tokens") and hasattr(module, "rotary_emb")):
            return module
    raise out_of_range("top_layers", "set", "None for this model (no Llama-style decoder stack with "
                       "embed_tokens, rotary_emb and layers to cache)")


def check_top_layers(top_layers: int | None, model: nn.Module) -> None:
    """``top_layers`` must not exceed the model's decoder layers."""
    if top_layers is None:
        return
    count = len(decoder_stack(model).layers)
    if top_layers > count:
        raise out_of_range("top_layers", top_layers,
                           f"1 <= top_layers <= {count} (this model's decoder layers), or None")


class _PassThrough(nn.Module):
    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class _CachedOutput(nn.Module):
    def __init__(self, cache: "LowerLayerCache"):
        super().__init__()
        self._cache = [cache]      # a list: not a registered submodule

    def forward(self, hidden_states, *args, **kwargs):
        return self._cache[0].take()


class LowerLayerCache:
    """The hidden states entering layer ``len(layers) - top_layers``, per sequence."""

    def __init__(self, model: nn.Module, top_layers: int):
        self.stack = decoder_stack(model)
        self.split = len(self.stack.layers) - top_layers
        if not 1 <= top_layers < len(self.stack.layers):
            raise out_of_range("top_layers", top_layers,
                               f"1 <= top_layers < {len(self.stack.layers)} to cache lower layers")
        self.lower = [self.stack.layers[i] for i in range(self.split)]
        self.store: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = 0
        self._pending: torch.Tensor | None = None
        self._hook = None

    # ------------------------------------------------------------------ installing
    def install(self) -> "LowerLayerCache":
        for i in range(self.split - 1):
            self.stack.layers[i] = _PassThrough()
        self.stack.layers[self.split - 1] = _CachedOutput(self)
        self._hook = self.stack.register_forward_pre_hook(self._before_forward, with_kwargs=True)
        return self

    def remove(self) -> None:
        for i, layer in enumerate(self.lower):
            self.stack.layers[i] = layer
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._pending = None

    def __enter__(self) -> "LowerLayerCache":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()

    # ------------------------------------------------------------------ the forward
    def _before_forward(self, module, args: tuple, kwargs: dict[str, Any]):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None or kwargs.get("inputs_embeds") is not None:
            raise out_of_range("top_layers", len(self.stack.layers) - self.split,
                               "None when the model is called with inputs_embeds")
        self._pending = self.hidden_states(input_ids, kwargs.get("attention_mask"))
        return None

    def take(self) -> torch.Tensor:
        if self._pending is None:
            raise RuntimeError("LowerLayerCache: the cached layer ran without its pre-hook")
        pending, self._pending = self._pending, None
        return pending

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, hidden) states entering the first adapted layer; zeros on padding."""
        rows, width = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = [int(n) for n in attention_mask.sum(-1)]
        for i, n in enumerate(lengths):
            if n and not bool(attention_mask[i, :n].all()):
                raise out_of_range("top_layers", len(self.stack.layers) - self.split,
                                   "None for left-padded batches (the cache needs right padding)")
        keys = [input_ids[i, :n].cpu().numpy().tobytes() for i, n in enumerate(lengths)]
        first_seen: dict[bytes, int] = {}   # a row repeated in the batch is computed once
        for i, key in enumerate(keys):
            if key not in self.store:
                first_seen.setdefault(key, i)
        missing = list(first_seen.values())
        if missing:
            longest = max(lengths[i] for i in missing)
            computed = self._compute(input_ids[missing, :longest], attention_mask[missing, :longest])
            for j, i in enumerate(missing):
                self.store[keys[i]] = computed[j, :lengths[i]].detach()
        self.misses += len(missing)
        self.hits += rows - len(missing)
        sample = self.store[keys[0]]
        out = sample.new_zeros((rows, width, sample.shape[-1]))
        for i, key in enumerate(keys):
            out[i, :lengths[i]] = self.store[key]
        return out

    @torch.no_grad()
    def _compute(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The lower layers, as ``LlamaModel.forward`` runs them (right padding, no KV cache)."""
        from transformers.masking_utils import create_causal_mask

        stack = self.stack
        hidden = stack.embed_tokens(input_ids)
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(config=stack.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  cache=None, position_ids=positions)
        rotary = stack.rotary_emb(hidden, position_ids=positions)
        for layer in self.lower:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions,
                           cache=None, use_cache=False)
        return hidden
