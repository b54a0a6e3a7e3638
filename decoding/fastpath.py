"""A compact forward for Llama-architecture models: transformers' ``LlamaForCausalLM`` op for op,
without the per-module machinery (module hooks, output-capturing decorators, mask factories,
``Cache`` classes).

Every tensor op below is the one transformers 5.x runs, with the same shapes and arguments:
RMSNorm (``LlamaRMSNorm.forward``), the rotary embedding (``LlamaRotaryEmbedding.forward`` and
``apply_rotary_pos_emb``), the projections and the MLP (``LlamaAttention``, ``LlamaMLP``),
``scaled_dot_product_attention`` called as ``integrations/sdpa_attention.py`` calls it (grouped
query attention through ``enable_gqa``, ``pack_gqa`` or ``repeat_kv``: the same choice, by the
same helpers), and the boolean causal-and-padding mask of ``masking_utils.sdpa_mask`` (``None``
exactly where transformers skips it). So the logits are bit-identical to the transformers
forward. ``tests/test_fastpath.py`` checks that (prefill, 50+ decode steps, padded batches, beam
reordering, hidden states), and ``fast_model`` repeats a small check on first use for every
model, falling back to transformers if it ever differs (say, a transformers release that
reorders an op).

What is saved is Python and dispatch, not arithmetic: the weights are read exactly as often.
The KV cache is one preallocated buffer ``(layers, 2, batch, kv_heads, capacity, head_dim)``
written in place, instead of a ``torch.cat`` of every layer's keys and values at every step.

The one arithmetic change is how the matrix-vector products are spread over threads. MKL runs a
one-row ``F.linear`` (a GEMV) on a single thread, reading the weights at about 10 GB/s here
against 25 GB/s for a two-thread read. ``torch.bmm`` over the weight's rows cut into as many
groups as there are threads runs the same kernel on each group, one group per thread: every
output element is still the same dot product in the same order, so the bits do not change
for up to ``SPLIT_MAX_ROWS`` rows: greedy, sampling, beam-4), and the decode step gets about 1.5x
faster. ``verify_splits`` checks that on first use for every weight shape of the model and turns
the split off if any product differs; prefill and bigger batches keep ``F.linear`` (their GEMMs
are multithreaded already).

Deliberately not done, because it changes the bits (measured with MKL on the 2-core dev box):
fusing q/k/v or gate/up into one matmul (a single-row product rounds differently when the
weight matrix is taller), and running the decode step with fewer threads (the CPU flash-attention
kernel splits a one-token query differently per thread count).
"""

from __future__ import annotations

import os
import warnings
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

try:  # the helpers transformers' SDPA integration itself uses (so the GQA choice is theirs)
    from transformers.activations import SiLUActivation
    from transformers.integrations.sdpa_attention import pack_gqa, repeat_kv, use_gqa_in_sdpa
    from transformers.models.llama import modeling_llama as llama
except ImportError:  # pragma: no cover - another transformers layout: always fall back
    llama = None

ENV_SWITCH = "DECODING_LAB_FASTPATH"       # "0" turns the fast path off for the whole process
# rope types whose ``dynamic_rope_update`` is a no-op: inv_freq is fixed, cos/sin are pure functions
STATIC_ROPE = {"default", "linear", "llama3"}
CACHE_CHUNK = 128                          # the KV buffer grows by whole chunks of positions
# row-split GEMV (``split_linear``) for at most this many input rows: MKL picks its kernel by the
# row count, and with 5-7 rows (measured) the split one rounds differently from the whole one
SPLIT_MAX_ROWS = 4
SPLIT_MIN_OUT = 512        # ... and weights with at least this many output rows (smaller: no gain)

_enabled = os.environ.get(ENV_SWITCH, "1") != "0"
# model -> (parameter identities, FastLlama or None when the self-check failed)
_built: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def set_enabled(enabled: bool) -> bool:
    """Turn the fast path on or off for this process; returns the previous setting."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    return previous


# --------------------------------------------------------------------------- the KV cache

class KVBuffer:
    """Keys and values of every layer in one preallocated tensor, written in place.

    ``data[layer, 0]`` are the keys and ``data[layer, 1]`` the values, ``(batch, kv_heads,
    capacity, head_dim)``; the first ``length`` positions are filled. It answers the part of
    transformers' ``DynamicCache`` interface the strategies use: ``reorder_cache`` (beam search,
    contrastive search, finished rows leaving: any index, the batch may grow or shrink).
    """

    def __init__(self, layers: int, batch: int, kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self._use(torch.empty((layers, 2, batch, kv_heads, _round_up(capacity), head_dim),
                              dtype=dtype, device=device))
        self.length = 0
        self.owner: FastLlama | None = None     # the forward that fills it
        # buffers left behind by reordering, by batch size: beam search ping-pongs between two
        # of the same size, contrastive search between its batch and batch × k
        self._spares: dict[int, torch.Tensor] = {}

    def _use(self, data: torch.Tensor) -> None:
        self.data = data
        # per-layer views, made once: indexing ``data`` in every layer of every step costs more
        self.keys = list(data[:, 0].unbind(0))
        self.values = list(data[:, 1].unbind(0))

    @property
    def capacity(self) -> int:
        return self.data.shape[4]

    @property
    def batch_size(self) -> int:
        return self.data.shape[2]

    def reserve(self, length: int) -> None:
        """Make room for ``length`` positions (grows by whole chunks, keeps the contents)."""
        if length <= self.capacity:
            return
        grown = self.data.new_empty((*self.data.shape[:4], _round_up(length + CACHE_CHUNK),
                                     self.data.shape[5]))
        grown[..., :self.length, :].copy_(self.data[..., :self.length, :])
        self._use(grown)
        self._spares.clear()

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor, start: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``(batch, kv_heads, q, head_dim)`` keys/values at ``start``; return the filled
        keys and values ``(batch, kv_heads, start + q, head_dim)`` (views of the buffer)."""
        end = start + keys.shape[2]
        stored_keys, stored_values = self.keys[layer], self.values[layer]
        stored_keys[:, :, start:end].copy_(keys)
        stored_values[:, :, start:end].copy_(values)
        return stored_keys[:, :, :end], stored_values[:, :, :end]

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Row ``i`` becomes old row ``beam_idx[i]`` (the batch may grow or shrink)."""
        rows = beam_idx.tolist()
        target = self._spares.pop(len(rows), None)
        if target is None:
            target = self.data.new_empty((*self.data.shape[:2], len(rows), *self.data.shape[3:]))
        filled = self.data[..., :self.length, :]
        # one strided copy per row into a spare buffer, then swap: no temporary, one pass
        for new, old in enumerate(rows):
            target[:, :, new, :, :self.length].copy_(filled[:, :, old])
        self._spares[self.batch_size] = self.data
        self._use(target)


def _round_up(n: int) -> int:
    return -(-n // CACHE_CHUNK) * CACHE_CHUNK


# --------------------------------------------------------------------------- the products

def split_weight(weight: torch.Tensor, bias: torch.Tensor | None, groups: int
                 ) -> torch.Tensor | None:
    """``weight`` ``(out, in)`` as ``(groups, in, out / groups)``, a view for ``torch.bmm``, or
    None when the split does not apply (a bias, which ``F.linear`` fuses into its GEMM; one
    group; a small or indivisible or non-contiguous weight)."""
    out_features = weight.shape[0]
    if (bias is not None or groups < 2 or out_features < SPLIT_MIN_OUT
            or out_features % groups or not weight.is_contiguous()):
        return None
    return weight.view(groups, out_features // groups, weight.shape[1]).transpose(1, 2)


def split_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 split: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a 2-D ``x``, bit for bit, with the rows of the weight
    spread over threads when ``x`` has few rows (see the module docstring)."""
    rows = x.shape[0]
    if split is None or rows > SPLIT_MAX_ROWS:
        return F.linear(x, weight, bias)
    out = torch.bmm(x.expand(split.shape[0], rows, x.shape[1]), split)   # (groups, rows, n)
    if rows == 1:
        return out.view(1, -1)
    return out.transpose(0, 1).reshape(rows, -1)


# --------------------------------------------------------------------------- the model

@dataclass
class FastOutput:
    """What callers read from a forward: like transformers' ``CausalLMOutputWithPast``."""

    logits: torch.Tensor                               # (batch, kept positions, vocab)
    past_key_values: KVBuffer
    hidden_states: tuple[torch.Tensor, ...] | None = None   # embeddings, layer 1..N (last normed)


@dataclass
class _Layer:
    """One decoder layer's weight tensors (biases None when the config has none)."""

    input_norm: torch.Tensor
    input_eps: float
    q: torch.Tensor
    q_bias: torch.Tensor | None
    k: torch.Tensor
    k_bias: torch.Tensor | None
    v: torch.Tensor
    v_bias: torch.Tensor | None
    o: torch.Tensor
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor
    post_eps: float
    gate: torch.Tensor
    gate_bias: torch.Tensor | None
    up: torch.Tensor
    up_bias: torch.Tensor | None
    down: torch.Tensor
    down_bias: torch.Tensor | None
    # ``split_weight`` views (None: plain ``F.linear``), by projection name
    splits: dict[str, torch.Tensor | None]

    @classmethod
    def of(cls, layer, groups: int) -> "_Layer":
        a, m = layer.self_attn, layer.mlp
        projections = {"q": a.q_proj, "k": a.k_proj, "v": a.v_proj, "o": a.o_proj,
                       "gate": m.gate_proj, "up": m.up_proj, "down": m.down_proj}
        splits = {name: split_weight(p.weight, p.bias, groups) for name, p in projections.items()}
        return cls(layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon,
                   a.q_proj.weight, a.q_proj.bias, a.k_proj.weight, a.k_proj.bias,
                   a.v_proj.weight, a.v_proj.bias, a.o_proj.weight, a.o_proj.bias,
                   layer.post_attention_layernorm.weight,
                   layer.post_attention_layernorm.variance_epsilon,
                   m.gate_proj.weight, m.gate_proj.bias, m.up_proj.weight, m.up_proj.bias,
                   m.down_proj.weight, m.down_proj.bias, splits)


class FastLlama:
    """The forward of a ``LlamaForCausalLM`` over its own weight tensors (no copies)."""

    def __init__(self, model) -> None:
        self.embed = model.model.embed_tokens.weight
        self.lm_head = model.lm_head.weight
        self.norm = model.model.norm.weight
        self.eps = model.model.norm.variance_epsilon
        # one weight group per thread; any count gives the same bits, so a later
        # ``torch.set_num_threads`` only changes the speed
        self.groups_per_linear = torch.get_num_threads() if self.embed.device.type == "cpu" else 1
        self.lm_head_split = split_weight(self.lm_head, None, self.groups_per_linear)
        self.layers = [_Layer.of(layer, self.groups_per_linear)
                       for layer in model.model.layers[: model.config.num_hidden_layers]]
        attention = model.model.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.kv_heads = model.config.num_key_value_heads
        self.groups = attention.num_key_value_groups
        self.scaling = attention.scaling
        self.keys_probe = self.embed.new_empty((1, self.kv_heads, 1, self.head_dim))
        self.inv_freq = model.model.rotary_emb.inv_freq
        self.attention_scaling = model.model.rotary_emb.attention_scaling

    @torch.inference_mode()
    def verify_splits(self) -> bool:
        """``split_linear`` against ``F.linear`` for every distinct weight shape, at 1 to
        ``SPLIT_MAX_ROWS`` rows of random inputs; on any difference every split is dropped
        (False). Cheap: one product per shape and row count."""
        weights = {}
        for layer in self.layers:
            for name, split in layer.splits.items():
                if split is not None:
                    weights.setdefault(tuple(getattr(layer, name).shape), (getattr(layer, name), split))
        if self.lm_head_split is not None:
            weights.setdefault(tuple(self.lm_head.shape), (self.lm_head, self.lm_head_split))
        generator = torch.Generator().manual_seed(0)
        for rows in range(1, SPLIT_MAX_ROWS + 1):
            for weight, split in weights.values():
                x = torch.randn((rows, weight.shape[1]), generator=generator).to(weight)
                if not torch.equal(F.linear(x, weight), split_linear(x, weight, None, split)):
                    return self._drop_splits()
        return True

    def _drop_splits(self) -> bool:
        self.lm_head_split = None
        for layer in self.layers:
            layer.splits = dict.fromkeys(layer.splits)
        return False

    def new_cache(self, batch: int, capacity: int) -> KVBuffer:
        cache = KVBuffer(len(self.layers), batch, self.kv_heads, self.head_dim, capacity,
                         self.embed.dtype, self.embed.device)
        cache.owner = self
        return cache

    # ---- the pieces, each the transformers op sequence it replaces

    @staticmethod
    def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # LlamaRMSNorm.forward (its two dtype casts are no-ops in float32, so they are skipped)
        if x.dtype != torch.float32:
            variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
            return weight * (x.to(torch.float32) * torch.rsqrt(variance + eps)).to(x.dtype)
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def _rotary(self, positions: torch.Tensor, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin, ``(batch, 1, q, head_dim)``: ``LlamaRotaryEmbedding.forward``
        and the ``unsqueeze(1)`` of ``apply_rotary_pos_emb``.

        The sign of ``rotate_half`` moves onto sin: ``rotate_half(x) * sin`` is
        ``cat(-x2, x1) * sin``, and ``(-a) * b == a * (-b)`` exactly in IEEE arithmetic, so
        ``roll(x, half) * cat(-sin1, sin2)`` gives the same bits with two ops fewer per tensor.
        """
        inv_freq = self.inv_freq.to(device=positions.device, dtype=torch.float)
        freqs = positions[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.attention_scaling).to(dtype=dtype)
        sin = (emb.sin() * self.attention_scaling).to(dtype=dtype)
        half = sin.shape[-1] // 2
        signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        return cos.unsqueeze(1), signed_sin.unsqueeze(1)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
        # apply_rotary_pos_emb: (x * cos) + (rotate_half(x) * sin), the sign folded into sin
        return (x * cos) + (torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin)

    @staticmethod
    def _mask(padding: torch.Tensor | None, batch: int, q_len: int, kv_len: int, offset: int,
              device: torch.device) -> torch.Tensor | None:
        """``masking_utils.sdpa_mask`` for a causal model: ``None`` where transformers lets SDPA
        handle causality itself (no padding, and one query or an empty cache), else a
        ``(batch, 1, q, kv)`` bool mask, True where a key is attended (causal and not padding)."""
        if padding is not None and bool(padding.sum() == padding.numel()):
            padding = None                         # _ignore_causal_mask_sdpa's fast_all
        if padding is None and (q_len == 1 or kv_len == q_len or offset == 0):
            return None
        if padding is not None and q_len == 1:     # the newest token sees every earlier slot
            return padding[:, None, None, :kv_len]
        q_idx = torch.arange(q_len, device=device) + offset
        kv_idx = torch.arange(kv_len, device=device)
        mask = kv_idx[None, None, None, :] <= q_idx[None, None, :, None]
        if padding is not None:
            mask = mask & padding[:, None, None, :kv_len]
        return mask.expand(batch, -1, q_len, kv_len)

    def _gqa_mode(self, mask: torch.Tensor | None, q_len: int) -> str | None:
        """How ``sdpa_attention_forward`` lets query heads share key/value heads; the same for
        every layer of a forward, so decided once."""
        if self.groups == 1:
            return None
        probe = self.keys_probe   # use_gqa_in_sdpa looks at the key/value head dims only
        if use_gqa_in_sdpa(mask, probe, probe):
            return "enable_gqa"
        return "pack_gqa" if q_len == 1 else "repeat_kv"

    def _attention(self, query, key, value, mask, q_len, gqa):
        # integrations/sdpa_attention.sdpa_attention_forward, for a causal decoder
        kwargs = {}
        if gqa == "enable_gqa":
            kwargs["enable_gqa"] = True
        elif gqa == "pack_gqa":
            query = pack_gqa(query, self.groups)
            mask = pack_gqa(mask, self.groups)
        elif gqa == "repeat_kv":
            key = repeat_kv(key, self.groups)
            value = repeat_kv(value, self.groups)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0,
                                             scale=self.scaling,
                                             is_causal=q_len > 1 and mask is None, **kwargs)
        # back to (batch, q, heads, head_dim), flattened for o_proj: layout only, same values
        out = out.reshape(out.shape[0], -1, q_len, self.head_dim)
        return out.transpose(1, 2).reshape(out.shape[0] * q_len, -1)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                padding: torch.Tensor | None, cache: KVBuffer, keep_last: bool = True,
                output_hidden_states: bool = False) -> FastOutput:
        """One forward of ``(batch, q)`` tokens at ``positions`` after the cached ones.

        padding: ``(batch, cached + q)`` bool, False at padded slots (None: no padding).
        The hidden state is kept as ``(batch * q, hidden)``: ``F.linear`` folds a 3-D input
        to exactly that matrix before its matmul, so the products are the same.
        """
        batch, q_len = input_ids.shape
        start = cache.length
        end = start + q_len
        cache.reserve(end)
        mask = self._mask(padding, batch, q_len, end, start, input_ids.device)
        gqa = self._gqa_mode(mask, q_len)
        h = F.embedding(input_ids.reshape(-1), self.embed)
        cos, sin = self._rotary(positions, h.dtype)
        hidden = [h] if output_hidden_states else None
        heads = (batch, q_len, -1, self.head_dim)
        for index, layer in enumerate(self.layers):
            residual = h
            x = self._rms_norm(h, layer.input_norm, layer.input_eps)
            splits = layer.splits
            query = split_linear(x, layer.q, layer.q_bias, splits["q"])
            key = split_linear(x, layer.k, layer.k_bias, splits["k"])
            value = split_linear(x, layer.v, layer.v_bias, splits["v"])
            query = query.view(heads).transpose(1, 2)
            key = key.view(heads).transpose(1, 2)
            value = value.view(heads).transpose(1, 2)
            query, key = self._rotate(query, cos, sin), self._rotate(key, cos, sin)
            key, value = cache.write(index, key, value, start)
            attn = self._attention(query, key, value, mask, q_len, gqa)
            h = residual + split_linear(attn, layer.o, layer.o_bias, splits["o"])

            residual = h
            x = self._rms_norm(h, layer.post_norm, layer.post_eps)
            # LlamaMLP: down(act(gate(x)) * up(x)); the activation is SiLU (checked), whose
            # transformers module's forward is F.silu
            gate = F.silu(split_linear(x, layer.gate, layer.gate_bias, splits["gate"]))
            up = split_linear(x, layer.up, layer.up_bias, splits["up"])
            h = residual + split_linear(gate * up, layer.down, layer.down_bias, splits["down"])
            if hidden is not None:
                hidden.append(h)
        cache.length = end
        h = self._rms_norm(h, self.norm, self.eps)
        if hidden is not None:   # transformers ties hidden_states[-1] to the normed last state
            hidden[-1] = h
        h = h.view(batch, q_len, -1)
        if keep_last and q_len > 1:
            # a prefill: transformers' own call, ``lm_head(hidden[:, -1:, :])`` on the strided
            # 3-D slice. torch's matmul (``should_fold``, ATen LinearAlgebra.cpp) folds that
            # slice into one GEMM only when the weight requires grad, and otherwise runs a bmm
            # of single rows, which rounds differently: so a frozen model (a merged adapter,
            # ``requires_grad_(False)``) needs this exact call to keep the same bits
            logits = F.linear(h[:, -1:, :], self.lm_head)
        else:
            # slice_logits_to_keep(hidden, 1) of a one-token step is contiguous and always
            # folds: the 2-D product (row-split or not) is the same GEMM
            last = h[:, -1, :] if keep_last else h.reshape(batch * q_len, -1)
            logits = split_linear(last, self.lm_head, None, self.lm_head_split)
            logits = logits.view(batch, 1 if keep_last else q_len, -1)
        return FastOutput(logits=logits, past_key_values=cache, hidden_states=None if hidden is None
                          else tuple(t.view(batch, q_len, -1) for t in hidden))


# --------------------------------------------------------------------------- eligibility

def _signature(model) -> tuple[int, ...]:
    """Identity of the parameter tensors: a replaced weight means a rebuild."""
    return tuple(id(p) for p in model.parameters())


def _active_hooks(module: nn.Module) -> list:
    """Forward hooks other than transformers' output-capturing ones: those are installed for
    good by the first ``output_hidden_states=True`` call and do nothing outside such a call."""
    hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    return [h for h in hooks
            if getattr(h, "__module__", "") != "transformers.utils.output_capturing"]


def _allowed_modules() -> set[type]:
    """Module classes whose forward this file reproduces; anything else (LoRA layers, quantised
    linears, custom norms) sends the model to transformers."""
    return {llama.LlamaForCausalLM, llama.LlamaModel, llama.LlamaDecoderLayer,
            llama.LlamaAttention, llama.LlamaMLP, llama.LlamaRMSNorm, llama.LlamaRotaryEmbedding,
            nn.ModuleList, nn.Linear, nn.Embedding, nn.SiLU, SiLUActivation}


def unsupported_reason(model) -> str | None:
    """Why ``model`` cannot take the fast path (None: it can)."""
    if llama is None:
        return "this transformers version has no Llama SDPA integration to mirror"
    if type(model) is not llama.LlamaForCausalLM:
        return f"{type(model).__name__} is not a plain LlamaForCausalLM"   # PEFT, other archs
    config = model.config
    if model.training:
        return "the model is in training mode"
    if config._attn_implementation != "sdpa":
        return f"attention implementation {config._attn_implementation!r} (only 'sdpa' is mirrored)"
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope not in STATIC_ROPE:
        return f"rope type {rope!r} updates its frequencies at run time"
    if not getattr(config, "is_causal", True):
        return "a bidirectional configuration"
    if any(getattr(config, flag, False) for flag in ("output_hidden_states", "output_attentions")):
        return "the config asks for extra outputs"
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return "global module hooks are registered"
    allowed = _allowed_modules()
    for name, module in model.named_modules():
        if type(module) not in allowed:
            return f"module {name!r} is a {type(module).__name__}"
        if _active_hooks(module) or hasattr(module, "_hf_hook"):
            return f"module {name or 'model'!r} has forward hooks (offloading, probes)"
    if any(type(layer.mlp.act_fn) not in (nn.SiLU, SiLUActivation) for layer in model.model.layers):
        return f"activation {config.hidden_act!r} (only SiLU is mirrored)"
    params = list(model.parameters())
    if len({p.dtype for p in params}) > 1 or len({p.device for p in params}) > 1:
        return "parameters of several dtypes or devices"
    return None


def fast_model(model) -> FastLlama | None:
    """The fast forward for ``model``, or None when it must run through transformers (the
    switch is off, ``unsupported_reason`` names a reason, or the first-use self-check differed).
    Built once per model and parameter set; it holds the model's own weight tensors (the split
    weights are views of them), so weights updated in place (training) are seen, and replaced
    ones trigger a rebuild."""
    if not _enabled or unsupported_reason(model) is not None:
        return None
    signature = _signature(model)
    cached = _built.get(model)
    if cached is not None and cached[0] == signature:
        return cached[1]
    fast = FastLlama(model)
    if not fast.verify_splits():
        warnings.warn("decoding fast path: row-split products differ from F.linear on this "
                      "machine; using F.linear", RuntimeWarning)
    if not self_check(model, fast):
        warnings.warn(f"decoding fast path: the self-check on {type(model).__name__} differed "
                      "from transformers' forward; using transformers' forward", RuntimeWarning)
        fast = None
    _built[model] = (signature, fast)
    return fast


@torch.inference_mode()
def self_check(model, fast: FastLlama, steps: int = 3) -> bool:
    """Both forwards on a few random tokens, the logits compared bit for bit: one unpadded row,
    then two left-padded rows, each a prefill and ``steps`` decode steps (one small run per
    model, on first use)."""
    from transformers import DynamicCache

    device = fast.embed.device
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, fast.embed.shape[0], (2, 6), generator=generator).to(device)
    for rows, pads in ((1, 0), (2, 2)):
        mask = torch.ones_like(ids[:rows])
        mask[-1, :pads] = 0
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        ref_cache, cache = DynamicCache(config=model.config), fast.new_cache(rows, 6 + steps)
        tokens = ids[:rows]
        for _ in range(steps + 1):
            attention = mask if pads else None
            ref = model(input_ids=tokens, attention_mask=attention, position_ids=positions,
                        past_key_values=ref_cache, use_cache=True, logits_to_keep=1)
            ours = fast.forward(tokens, positions, None if attention is None else attention.bool(),
                                cache)
            if not torch.equal(ref.logits, ours.logits):
                return False
            tokens = ref.logits[:, -1].argmax(-1, keepdim=True)
            positions = positions[:, -1:] + 1
            mask = torch.cat([mask, mask.new_ones((rows, 1))], dim=-1)
    return True
