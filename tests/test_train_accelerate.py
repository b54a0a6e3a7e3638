"""``declab train`` under ``accelerate launch`` with 2 CPU processes (DDP over gloo) on the tiny
model: one adapter, written by the main process only, that loads; the batch split across both.

On a machine without GPUs ``accelerate launch --multi_gpu`` starts the processes through torchrun
and the Trainer (``use_cpu``) joins them over gloo; ``--cpu`` alone starts a single process
unless an MPI hostfile is given (``accelerate/utils/launch.py``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.train_config import TrainConfig
from alignment.train_launch import Launch, batch_line, check_launch, effective_batch_size, launch_from_env
from decoding.errors import DecodingLabError
from decoding.models import ADAPTER_META, load_model
from tests.tiny import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
PAIRS = 8          # 8 pairs, 2 per device, 2 processes: 2 optimizer steps in one epoch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_launch_reads_the_launcher_environment():
    assert launch_from_env({}) == Launch(0, 1) and launch_from_env({}).main
    worker = launch_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert worker == Launch(rank=1, world_size=2, local_rank=1) and worker.distributed and not worker.main
    assert effective_batch_size(8, 4, 2) == 64
    assert batch_line(2, 2, 3).startswith("effective batch: 12 pairs per optimizer step (2 per device x 2")


ZERO3 = {"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}


@pytest.mark.parametrize("env, sharding", [
    ({"WORLD_SIZE": "2"}, None), (ZERO3, "deepspeed-zero3"),
    ({**ZERO3, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, None),
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"}, "fsdp")])
def test_sharding_is_read_from_accelerate_variables(env, sharding):
    assert launch_from_env(env).sharding == sharding


@pytest.mark.parametrize("knobs, name", [({"top_layers": 2}, "top_layers"), ({"share_prompt": True}, "share_prompt"),
                                         ({"load_in_4bit": True, "device": "cuda"}, "load_in_4bit")])
def test_sharded_launches_refuse_whole_weight_knobs(knobs, name):
    config = TrainConfig(**knobs)
    check_launch(config, launch_from_env({"WORLD_SIZE": "2"}))          # DDP: accepted
    check_launch(config, launch_from_env({**ZERO3, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}))
    for env in (ZERO3, {"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"}):
        with pytest.raises(DecodingLabError, match=rf"^{name}=.* is out of range; allowed: .* under "):
            check_launch(config, launch_from_env(env))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    base = root / "tiny-base"
    tiny_model().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    data = root / "pairs.json"
    data.write_text(json.dumps([{"id": i, "prompt": f"Is topic {i} good?", "support": f"Yes, topic {i} helps.",
                                 "oppose": f"No, topic {i} hurts."} for i in range(PAIRS)]))
    out = root / "adapters" / "ddp"
    log = root / "progress.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES"):
        env.pop(key, None)
    env["CUDA_VISIBLE_DEVICES"] = ""   # CPU processes even where a GPU exists
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()),
               "-m", "app.cli", "train", "--model", str(base), "--dataset", str(data), "--out", str(out),
               "--epochs", "1", "--batch-size", "2", "--max-length", "64", "--learning-rate", "1e-2",
               "--threads", "1", "--precision", "fp32", "--quiet", "--progress-log", str(log)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return {"done": done, "base": base, "out": out, "log": log}


def test_two_processes_write_one_adapter_that_loads(ddp_run):
    done, out = ddp_run["done"], ddp_run["out"]
    assert done.returncode == 0, done.stderr[-3000:]
    # one summary: the other process trained and printed nothing
    assert done.stdout.count("adapter written to") == 1, done.stdout
    assert "effective batch: 4 pairs per optimizer step (2 per device x 2 process(es) x 1" in done.stdout
    # exactly the adapter beside it: no second copy, no leftover partial directory
    assert [p.name for p in out.parent.iterdir()] == ["ddp"]
    assert not (out / ".rows").exists()
    meta = json.loads((out / ADAPTER_META).read_text())
    assert meta["processes"] == 2 and meta["effective_batch_size"] == 4
    assert meta["steps"] == PAIRS // 4           # the batch was split, not repeated per process
    lora_b = [t for k, t in load_file(out / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)   # LoRA B starts at zero: it trained
    # the progress log was written by one process only
    events = [json.loads(line) for line in ddp_run["log"].read_text().splitlines()]
    assert [e.get("event") for e in events].count("begin") == 1
    assert [e.get("event") for e in events].count("end") == 1

    base = load_model(str(ddp_run["base"]), device="cpu")
    adapted = load_model(str(ddp_run["base"]), adapter=str(out), device="cpu")
    assert adapted.adapter == str(out)
    ids = torch.tensor([tiny_tokenizer()("Is topic 1 good?")["input_ids"]])
    with torch.no_grad():
        assert not torch.equal(base.model(ids).logits, adapted.model(ids).logits)
