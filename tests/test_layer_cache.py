"""Top-N-layer adaptation with the frozen lower layers' outputs cached across epochs
(``TrainConfig.top_layers``, ``alignment.layer_cache``): the same loss and gradients as without
the cache, on a miss and on a hit, and an ordinary PEFT adapter at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from alignment.layer_cache import LowerLayerCache
from alignment.train import TrainConfig, train
from decoding.errors import DecodingLabError
from decoding.models import attach_adapter, from_model
from tests.tiny import tiny_lm, tiny_model, tiny_tokenizer

RECORDS = [{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps people.",
            "oppose": f"No, topic {i} hurts people."} for i in range(4)]


def peft_top_layer(seed: int = 0):
    """The tiny model (2 layers) with LoRA on layer 1 only, B random so gradients reach A too."""
    model = get_peft_model(tiny_model(seed), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                        target_modules=["q_proj", "v_proj"],
                                                        layers_to_transform=[1]))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return model


def right_padded(rows: list[list[int]], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    width = width or max(map(len, rows))
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask


def loss_and_grads(model, ids, mask):
    """Sum of the log-probabilities of the real next tokens, and the LoRA gradients."""
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    logp = logits.log_softmax(-1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    loss = (logp * mask[:, 1:]).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


ROWS = [[5, 17, 30, 41, 8, 9, 60, 12, 33], [7, 7, 21, 50, 3, 44], [90, 11, 2, 64]]
# float32 rounding: the same rows padded to another width go through matmuls of other shapes.
# Same batch: bit-identical on the dev box; other batch shape: within 1e-6 relative.
RTOL, ATOL = 1e-5, 1e-7


def assert_same(a, b):
    assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-6)
    assert a[1].keys() == b[1].keys() and len(a[1]) == 4
    for name in a[1]:
        assert torch.allclose(a[1][name], b[1][name], rtol=RTOL, atol=ATOL), name


def test_same_loss_and_gradients_with_and_without_the_cache():
    model = peft_top_layer()
    ids, mask = right_padded(ROWS)
    order = [2, 0, 1]                   # the same rows in another batch: other order, wider padding
    ids2, mask2 = right_padded([ROWS[i] for i in order], width=12)
    plain = loss_and_grads(model, ids, mask)
    plain2 = loss_and_grads(model, ids2, mask2)
    assert all(g.abs().max() > 0 for g in plain[1].values())
    with LowerLayerCache(model, top_layers=1) as cache:
        miss = loss_and_grads(model, ids, mask)
        assert (cache.misses, cache.hits) == (3, 0)
        hit = loss_and_grads(model, ids, mask)
        assert (cache.misses, cache.hits) == (3, 3)
        reordered = loss_and_grads(model, ids2, mask2)
        assert (cache.misses, cache.hits) == (3, 6)
    after = loss_and_grads(model, ids, mask)
    assert_same(miss, plain)
    assert_same(hit, plain)
    assert_same(after, plain)
    assert_same(reordered, plain2)
    # bit-identical where the shapes are the same
    assert torch.equal(miss[0], plain[0]) and all(torch.equal(miss[1][k], plain[1][k]) for k in plain[1])
    # the cache is gone: the model has its own layers again
    assert all(isinstance(layer, LlamaDecoderLayer) for layer in model.get_base_model().model.layers)


def test_the_cached_layers_are_not_run_on_a_hit():
    model = peft_top_layer()
    ids, mask = right_padded(ROWS)
    calls = []
    lower = model.get_base_model().model.layers[0]
    lower.register_forward_hook(lambda *a: calls.append(1))
    with LowerLayerCache(model, top_layers=1):
        loss_and_grads(model, ids, mask)
        assert len(calls) == 1          # the first sight of the rows: one batched pass
        loss_and_grads(model, ids, mask)
        assert len(calls) == 1


def test_left_padding_and_bad_depths_are_refused():
    model = peft_top_layer()
    with pytest.raises(DecodingLabError, match=r"top_layers=2 is out of range; allowed: 1 <= top_layers < 2"):
        LowerLayerCache(model, top_layers=2)
    ids, mask = right_padded(ROWS)
    with LowerLayerCache(model, top_layers=1):
        with pytest.raises(DecodingLabError, match="right padding"):
            model(input_ids=ids.flip(-1), attention_mask=mask.flip(-1))
    with pytest.raises(DecodingLabError, match=r"^top_layers=0 is out of range; allowed: an integer >= 1"):
        TrainConfig(top_layers=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.json"
    path.write_text(json.dumps(RECORDS))
    return path


@pytest.mark.parametrize("method, hits", [("dpo", 24), ("orpo", 16)])
def test_training_with_top_layers(tmp_path, data, method, hits):
    """The lower layer runs once on each of the 8 sequences (DPO: in the reference pass, so all 3
    epochs hit; ORPO: in epoch 1, then 2 epochs hit); only layer 1 gets LoRA weights; the
    adapter is an ordinary PEFT adapter that loads on the base."""
    lm = tiny_lm()
    config = TrainConfig(method=method, dataset=str(data), epochs=3, batch_size=2, learning_rate=1e-2,
                         max_length=64, threads=1, top_layers=1, precision="fp32")
    result = train(config, tmp_path / method, model=lm, progress=False)
    assert result.meta["lower_layer_cache"] == {"cached_layers": 1, "sequences": 8, "hits": hits, "misses": 8}
    weights = load_file(str(tmp_path / method / "adapter_model.safetensors"))
    assert weights and all(".layers.1." in k for k in weights)
    assert all(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k)
    layers = result.lm.model.get_base_model().model.layers
    assert all(isinstance(layer, LlamaDecoderLayer) for layer in layers)
    base = from_model(tiny_model(0), tiny_tokenizer(), name="tiny-llama-0")
    ids = torch.tensor([tiny_tokenizer()("Is topic 1 good?")["input_ids"]])
    with torch.no_grad():
        adapted = attach_adapter(base, str(tmp_path / method)).model(ids).logits
        returned = result.lm.model(ids).logits
    assert torch.allclose(adapted, returned, atol=1e-5)


def test_top_layers_beyond_the_model_is_refused_before_training(tmp_path, data):
    config = TrainConfig(dataset=str(data), top_layers=3, threads=1, max_length=64)
    with pytest.raises(DecodingLabError, match=r"top_layers=3 is out of range; allowed: 1 <= top_layers <= 2"):
        train(config, tmp_path / "x", model=tiny_lm(), progress=False)
    assert not (tmp_path / "x").exists()
