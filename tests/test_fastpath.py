"""The Llama fast path (``decoding/fastpath.py``) against transformers' own forward: logits equal
bit for bit (``torch.equal``, no tolerance) on prefill, many decode steps, left-padded batches,
beam-search reordering and contrastive-style batch growth; and the fallback to transformers for
everything it does not mirror."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from decoding import fastpath
from decoding.fastpath import FastLlama, KVBuffer, fast_model, unsupported_reason
from decoding.forward import decode_step, left_pad, prefill
from tests.tiny import tiny_model, tiny_tokenizer

PROMPTS = ["The cat sat on the mat", "Beam", "A unicorn lived in a remote valley in the"]


def encode(texts: list[str]) -> list[list[int]]:
    tok = tiny_tokenizer()
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


class Lockstep:
    """transformers' forward (DynamicCache) and the fast forward (KVBuffer) fed the same inputs;
    ``mismatches`` counts forwards whose logits (and hidden states, when asked) differ."""

    def __init__(self, model, rows: list[list[int]], hidden: bool = False, capacity: int = 0):
        self.model, self.hidden = model, hidden
        self.fast = FastLlama(model)
        ids, self.mask = left_pad(rows, pad_id=0)
        if self.mask is None:
            self.positions = torch.arange(ids.shape[1]).expand(len(rows), -1)
        else:
            self.positions = (self.mask.cumsum(-1) - 1).masked_fill(self.mask == 0, 0)
        self.ref_cache = DynamicCache(config=model.config)
        self.cache = self.fast.new_cache(len(rows), capacity or ids.shape[1])
        self.forwards = self.mismatches = 0
        self.logits = self._both(ids)

    @torch.inference_mode()
    def _both(self, ids: torch.Tensor) -> torch.Tensor:
        ref = self.model(input_ids=ids, attention_mask=self.mask, position_ids=self.positions,
                         past_key_values=self.ref_cache, use_cache=True, logits_to_keep=1,
                         output_hidden_states=self.hidden)
        padding = None if self.mask is None else self.mask.bool()
        ours = self.fast.forward(ids, self.positions, padding, self.cache,
                                 output_hidden_states=self.hidden)
        same = torch.equal(ref.logits, ours.logits)
        if self.hidden:
            same &= len(ref.hidden_states) == len(ours.hidden_states) and all(
                torch.equal(a, b) for a, b in zip(ref.hidden_states, ours.hidden_states))
        self.forwards += 1
        self.mismatches += not same
        return ref.logits[:, -1]

    def step(self, tokens: torch.Tensor | None = None) -> None:
        tokens = self.logits.argmax(-1) if tokens is None else tokens
        self.positions = self.positions[:, -1:] + 1
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], dim=-1)
        self.logits = self._both(tokens[:, None])

    def select_rows(self, index: torch.Tensor) -> None:
        """Beam / contrastive search: row i continues old row index[i] (the batch may change)."""
        self.ref_cache.reorder_cache(index)
        self.cache.reorder_cache(index)
        self.logits, self.positions = self.logits[index], self.positions[index]
        if self.mask is not None:
            self.mask = self.mask[index]


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3, layers=3)


def test_prefill_and_60_decode_steps_are_bit_identical(model):
    run = Lockstep(model, encode(PROMPTS[:1]))
    for _ in range(60):
        run.step()
    assert run.forwards == 61 and run.mismatches == 0


def test_left_padded_batch_is_bit_identical(model):
    run = Lockstep(model, encode(PROMPTS))
    assert run.mask is not None and not bool(run.mask.all())   # really padded
    for _ in range(55):
        run.step()
    assert run.mismatches == 0


@pytest.mark.parametrize("prompts", [PROMPTS[:1] * 4, PROMPTS + PROMPTS[:1]],
                         ids=["same", "padded"])
def test_beam_reordering_is_bit_identical(model, prompts):
    run = Lockstep(model, encode(prompts))
    generator = torch.Generator().manual_seed(0)
    for step in range(40):
        if step % 2:   # parents drawn at random, repeats and drops included
            run.select_rows(torch.randint(0, len(prompts), (len(prompts),), generator=generator))
        run.step()
    assert run.mismatches == 0


def test_contrastive_growth_and_hidden_states_are_bit_identical(model):
    """Contrastive search expands every row to k candidates and selects one back; the last
    hidden states it compares must match too."""
    k = 3
    run = Lockstep(model, encode(PROMPTS[:2]), hidden=True)
    for step in range(12):
        run.select_rows(torch.arange(2).repeat_interleave(k))
        run.step(run.logits.topk(k, dim=-1).indices[::k].reshape(-1))
        run.select_rows(torch.tensor([step % k, k + (step + 1) % k]))
    assert run.forwards == 13 and run.mismatches == 0


def test_buffer_growth_keeps_the_cache(model, monkeypatch):
    monkeypatch.setattr(fastpath, "CACHE_CHUNK", 8)
    run = Lockstep(model, encode(PROMPTS), capacity=1)
    first = run.cache.capacity
    for step in range(30):
        if step == 11:
            run.select_rows(torch.tensor([2, 0, 0]))
        run.step()
    assert run.cache.capacity > first and run.mismatches == 0


def test_all_positions_logits_with_keep_last_false(model):
    ids = torch.tensor(encode(PROMPTS[2:]))
    with torch.inference_mode():
        ref = model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None])
        fast = FastLlama(model)
        ours = fast.forward(ids, torch.arange(ids.shape[1])[None], None,
                            fast.new_cache(1, ids.shape[1]), keep_last=False)
    assert ours.logits.shape == ref.logits.shape and torch.equal(ours.logits, ref.logits)


def test_kv_buffer_reorder_grows_and_shrinks_the_batch(model):
    cache = FastLlama(model).new_cache(2, 4)
    cache.data.normal_()
    cache.length = 5
    before = cache.data[..., :5, :].clone()
    cache.reorder_cache(torch.tensor([0, 0, 1, 1]))           # contrastive: k rows per sequence
    assert cache.batch_size == 4 and torch.equal(cache.data[:, :, 3, :, :5], before[:, :, 1])
    cache.reorder_cache(torch.tensor([2]))                    # the chosen candidate
    assert cache.batch_size == 1 and torch.equal(cache.data[:, :, 0, :, :5], before[:, :, 1])
    assert cache.length == 5


# --------------------------------------------------------------------------- through forward.py

def test_forward_api_takes_the_fast_path_with_identical_logits(model):
    rows = encode(PROMPTS)
    ids, mask = left_pad(rows, 0)
    results = {}
    for enabled in (True, False):
        previous = fastpath.set_enabled(enabled)
        try:
            with torch.inference_mode():
                logits, state, out = prefill(model, ids, mask, output_hidden_states=True)
                seen = [logits, out.hidden_states[-1]]
                for _ in range(8):
                    logits, out = decode_step(model, logits.argmax(-1), state,
                                              output_hidden_states=True)
                    seen += [logits, out.hidden_states[-1]]
                state.cache.reorder_cache(torch.tensor([1, 1, 0]))
                logits, _ = decode_step(model, seen[-2].argmax(-1)[[1, 1, 0]], state)
                seen.append(logits)
        finally:
            fastpath.set_enabled(previous)
        results[enabled] = (seen, type(state.cache))
    assert results[True][1] is KVBuffer and results[False][1] is DynamicCache
    assert all(torch.equal(a, b) for a, b in zip(results[True][0], results[False][0]))


def test_weights_changed_in_place_are_seen_and_replaced_ones_rebuild():
    model = tiny_model(seed=5)
    fast = fast_model(model)
    assert fast is not None
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    assert fast_model(model) is fast
    assert Lockstep(model, encode(PROMPTS[:1])).mismatches == 0
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    rebuilt = fast_model(model)
    assert rebuilt is not None and rebuilt is not fast and rebuilt.lm_head is model.lm_head.weight


def test_a_failing_self_check_falls_back_with_a_warning(monkeypatch):
    model = tiny_model(seed=6)
    real = FastLlama._rms_norm
    monkeypatch.setattr(FastLlama, "_rms_norm", staticmethod(lambda x, w, eps: real(x, w, eps * 2)))
    with pytest.warns(RuntimeWarning, match="self-check"):
        assert fast_model(model) is None
    with torch.inference_mode():
        _, state, _ = prefill(model, torch.tensor(encode(PROMPTS[:1])), None)
    assert isinstance(state.cache, DynamicCache)


# --------------------------------------------------------------------------- fallback

def test_other_architectures_fall_back():
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer()), n_embd=32, n_layer=1,
                                      n_head=2, n_positions=64)).eval()
    assert "GPT2LMHeadModel" in unsupported_reason(gpt2) and fast_model(gpt2) is None
    with torch.inference_mode():
        _, state, _ = prefill(gpt2, torch.tensor(encode(PROMPTS[:1])), None)
    assert isinstance(state.cache, DynamicCache)


def test_peft_lora_models_fall_back():
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(tiny_model(seed=7), lora)
    peft_model.eval()
    assert fast_model(peft_model) is None
    # the adapted Llama inside: its q_proj is a LoRA layer now, which the fast path would ignore
    inner = peft_model.base_model.model
    assert "Linear" in unsupported_reason(inner) and fast_model(inner) is None
    with torch.inference_mode():
        _, state, _ = prefill(peft_model, torch.tensor(encode(PROMPTS[:1])), None)
    assert isinstance(state.cache, DynamicCache)


def test_hooks_eager_attention_and_the_switch_fall_back():
    model = tiny_model(seed=8)
    with torch.inference_mode():   # installs transformers' (idle) output-capturing hooks for good
        model(input_ids=torch.tensor(encode(PROMPTS[:1])), output_hidden_states=True)
    assert unsupported_reason(model) is None
    handle = model.model.layers[1].mlp.register_forward_hook(lambda *args: None)
    assert "hooks" in unsupported_reason(model)
    handle.remove()
    assert unsupported_reason(model) is None
    model.config._attn_implementation = "eager"
    assert "eager" in unsupported_reason(model)
    model.config._attn_implementation = "sdpa"
    previous = fastpath.set_enabled(False)
    try:
        assert fast_model(model) is None
    finally:
        fastpath.set_enabled(previous)
    assert fast_model(model) is not None


# --------------------------------------------------------------------------- the real model

@pytest.mark.embedded
def test_embedded_model_is_bit_identical(embedded):
    """SmolLM2-135M (30 layers, 9 heads over 3 KV heads): 50 greedy steps alone, then a padded
    batch with beam-style reordering."""
    tok = embedded.tokenizer
    single = Lockstep(embedded.model, [embedded.encode("Tell me about lighthouses.", chat=True)])
    for _ in range(50):
        single.step()
    assert single.forwards == 51 and single.mismatches == 0

    rows = [tok("Once upon a time", add_special_tokens=False)["input_ids"],
            embedded.encode("What is the capital of France?", chat=True)]
    batch = Lockstep(embedded.model, rows + rows[:1])
    for step in range(16):
        if step % 4 == 3:
            batch.select_rows(torch.tensor([1, 0, 1]))
        batch.step()
    assert batch.mismatches == 0


@pytest.mark.embedded
def test_embedded_model_uses_row_split_products_bit_identically(embedded):
    """The row-split GEMV (``split_linear``) is on for SmolLM2's big weights at 1-4 rows (one
    row: greedy and sampling; four: beam-4), and the logits still match transformers exactly."""
    fast = FastLlama(embedded.model)
    if torch.get_num_threads() < 2:
        pytest.skip("one thread: nothing to split")
    assert fast.lm_head_split is not None
    assert fast.layers[0].splits["gate"] is not None and fast.layers[0].splits["k"] is None
    verified = fast.verify_splits()
    if verified:
        x = torch.randn((3, fast.lm_head.shape[1]), generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            assert torch.equal(fastpath.split_linear(x, fast.lm_head, None, fast.lm_head_split),
                               torch.nn.functional.linear(x, fast.lm_head))
    else:
        # some machines' GEMV kernels round row-split products differently (seen on this 2-core
        # EPYC under some thread states): every split is dropped and F.linear is used instead
        assert fast.lm_head_split is None and all(v is None for v in fast.layers[0].splits.values())
    beams = Lockstep(embedded.model, [embedded.encode("Name three rivers.", chat=True)] * 4)
    if not verified:
        assert not beams.fast.verify_splits()      # what fast_model does: drop the splits
    for step in range(8):
        if step % 3 == 2:
            beams.select_rows(torch.tensor([0, 0, 2, 1]))
        beams.step()
    assert beams.mismatches == 0


def test_split_weight_refuses_what_it_cannot_split():
    weight = torch.zeros(1024, 8)
    assert fastpath.split_weight(weight, None, 1) is None              # one thread
    assert fastpath.split_weight(weight, torch.zeros(1024), 2) is None  # a bias: F.linear fuses it
    assert fastpath.split_weight(torch.zeros(256, 8), None, 2) is None   # too small to gain
    assert fastpath.split_weight(torch.zeros(1025, 8), None, 2) is None  # indivisible
    assert fastpath.split_weight(weight.t().contiguous().t(), None, 2) is None  # not contiguous
    assert fastpath.split_weight(weight, None, 4).shape == (4, 8, 256)


def test_split_linear_equals_linear_on_a_wide_tiny_model():
    """A tiny model wide enough (hidden 512) for the split to apply: bit-identical to
    transformers, or the first-use check turned the split off on this machine."""
    wide = tiny_model(seed=5, layers=2, hidden=512)
    lock = Lockstep(wide, encode(PROMPTS[:1]))
    for _ in range(6):
        lock.step()
    assert lock.mismatches == 0 or not lock.fast.verify_splits()


def test_a_frozen_model_keeps_the_fast_path_bit_identically():
    """Merged adapters come back with ``requires_grad=False`` on every weight. torch's matmul
    folds the prefill's last-position slice into one GEMM only for a weight that requires grad
    (else a bmm of single rows, other bits), so the fast path must make transformers' exact
    call: the self-check passes and padded prefills match."""
    model = tiny_model(seed=9).requires_grad_(False)
    assert fast_model(model) is not None
    run = Lockstep(model, encode(PROMPTS + PROMPTS[:1]))
    for _ in range(5):
        run.step()
    assert run.mismatches == 0
