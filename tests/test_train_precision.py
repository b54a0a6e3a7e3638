"""bfloat16 mixed precision in training (``TrainConfig.precision``): detected from the CPU flags,
autocast in the forward/backward only, the LoRA weights and the written adapter stay float32,
the base is untouched, and fp32 stays available."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import alignment.train as train_mod
import alignment.train_cpu as train_cpu
from alignment.train import TrainConfig, cpu_has_bf16, resolve_precision, train, trl_arguments
from decoding.errors import DecodingLabError
from decoding.models import ADAPTER_META, attach_adapter, from_model
from tests.tiny import tiny_lm, tiny_model, tiny_tokenizer

RECORDS = [{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps people.",
            "oppose": f"No, topic {i} hurts people."} for i in range(4)]

EPYC_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
AVX2_FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
AMX_FLAGS = "flags\t\t: avx2 avx512f amx_tile amx_bf16 amx_int8\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.json"
    path.write_text(json.dumps(RECORDS))
    return path


def tiny_config(data: Path, **overrides) -> TrainConfig:
    knobs = dict(method="dpo", dataset=str(data), epochs=1, batch_size=2, learning_rate=1e-2,
                 max_length=64, threads=1)
    knobs.update(overrides)
    return TrainConfig(**knobs)


def test_cpu_bf16_is_read_from_the_flags():
    assert cpu_has_bf16(EPYC_FLAGS) and cpu_has_bf16(AMX_FLAGS)
    assert not cpu_has_bf16(AVX2_FLAGS) and not cpu_has_bf16("")
    assert not cpu_has_bf16("model name\t: avx512_bf16 in a name, not a flag\n")


def test_precision_auto_follows_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(train_cpu, "cpu_has_bf16", lambda cpuinfo=None: True)
    assert resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(train_cpu, "cpu_has_bf16", lambda cpuinfo=None: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cpu) == "fp32"


def test_precision_is_validated_and_reaches_the_trl_config(tmp_path, data):
    with pytest.raises(DecodingLabError, match=r"^precision='fp16' is out of range; allowed: auto, bf16, fp32"):
        tiny_config(data, precision="fp16")
    config = tiny_config(data)
    cpu = torch.device("cpu")
    assert trl_arguments(config, tmp_path, cpu, False, "bf16")["bf16"] is True
    assert trl_arguments(config, tmp_path, cpu, False, "fp32")["bf16"] is False


def train_watching_dtypes(config, out, lm, monkeypatch) -> tuple:
    """Train, recording the dtype of a frozen projection's output at every training forward."""
    seen = set()
    real_build = train_mod.build_trainer

    def build_and_watch(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        for name, module in trainer.model.named_modules():
            if name.endswith("q_proj.base_layer"):
                module.register_forward_hook(lambda mod, inp, output: seen.add(output.dtype))
        return trainer

    monkeypatch.setattr(train_mod, "build_trainer", build_and_watch)
    return train(config, out, model=lm, progress=False), seen


@pytest.mark.parametrize("precision, compute", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_training_precision(tmp_path, data, monkeypatch, precision, compute):
    """bf16: the frozen layers compute in bfloat16 (autocast), yet the adapter changes, is saved
    and loads in float32, and the base is untouched. fp32: float32 throughout."""
    lm = tiny_lm()
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    result, seen = train_watching_dtypes(tiny_config(data, precision=precision), tmp_path / precision,
                                         lm, monkeypatch)
    assert seen == {compute}
    meta = json.loads((tmp_path / precision / ADAPTER_META).read_text())
    assert meta["precision"] == precision and meta["config"]["precision"] == precision

    weights = load_file(str(tmp_path / precision / "adapter_model.safetensors"))
    assert weights and all(v.dtype == torch.float32 for v in weights.values())
    assert all(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at 0
    trained_base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                    for k, v in result.lm.model.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(trained_base[k], before[k]) for k in before)
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())

    base = from_model(tiny_model(0), tiny_tokenizer(), name="tiny-llama-0")
    ids = torch.tensor([tiny_tokenizer()("Is topic 1 good?")["input_ids"]])
    with torch.no_grad():
        plain = base.model(ids).logits
        attached = attach_adapter(base, str(tmp_path / precision))
        adapted = attached.model(ids).logits
        returned = result.lm.model(ids).logits
    assert all(p.dtype == torch.float32 for p in attached.model.parameters())
    assert adapted.dtype == returned.dtype == torch.float32
    assert torch.allclose(adapted, returned, atol=1e-5)  # the returned model is no longer autocast
    assert not torch.allclose(adapted, plain, atol=1e-4)


def test_bf16_and_fp32_start_from_the_same_loss(tmp_path, data):
    """Step 1 of DPO is ln 2 in both precisions (policy = reference, LoRA B = 0), and both runs
    move the implicit reward margin the same way on these separable pairs."""
    logs = {p: train(tiny_config(data, precision=p), tmp_path / p, model=tiny_lm(), progress=False).log_history
            for p in ("bf16", "fp32")}
    for p, log in logs.items():
        steps = [e for e in log if "loss" in e]
        assert steps[0]["loss"] == pytest.approx(0.693147, abs=1e-5), p
        assert steps[-1]["rewards/margins"] > 0, p


def test_eager_attention_trains_like_sdpa_and_gives_the_model_back(tmp_path, data):
    """``attention="eager"`` only changes the kernel: the same losses as sdpa up to float
    rounding, and the trained model decodes with the model's own kernel again."""
    logs, kernels = {}, {}
    for kind in ("sdpa", "eager"):
        result = train(tiny_config(data, attention=kind, precision="fp32"), tmp_path / kind, model=tiny_lm(),
                       progress=False)
        logs[kind] = [e["loss"] for e in result.log_history if "loss" in e]
        kernels[kind] = result.lm.model.config._attn_implementation
    assert logs["sdpa"] == pytest.approx(logs["eager"], abs=1e-4)
    assert kernels["eager"] == kernels["sdpa"] == tiny_lm().model.config._attn_implementation
    with pytest.raises(DecodingLabError, match="attention='eager'.*sdpa with share_prompt"):
        tiny_config(data, attention="eager", share_prompt=True)
    with pytest.raises(DecodingLabError, match="attention='flash'"):
        tiny_config(data, attention="flash")
