"""The accelerate configs under ``configs/accelerate/``: each loads as accelerate's own launcher
loads it, names the distributed type its file name says, and the environment accelerate then gives
the training processes is classified the way ``declab train`` refuses knobs (ZeRO-3 and FSDP shard
the weights; DDP and ZeRO-2 do not)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from alignment.train_launch import launch_from_env

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "accelerate"
EXPECTED = {  # file -> (distributed_type, ZeRO stage, sharding as alignment.train_launch reads it)
    "multi_gpu_ddp.yaml": ("MULTI_GPU", None, None),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 2, None),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 3, "deepspeed-zero3"),
    "fsdp.yaml": ("FSDP", None, "fsdp"),
}


def test_every_config_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_known_keys_only(name):
    raw = yaml.safe_load((CONFIGS / name).read_text())
    known = {f.name for f in dataclasses.fields(ClusterConfig)}
    assert set(raw) <= known, set(raw) - known
    config = load_config_from_file(str(CONFIGS / name))
    kind, stage, _ = EXPECTED[name]
    assert config.distributed_type.name == kind
    assert config.num_machines == 1 and config.num_processes >= 2 and not config.use_cpu
    if stage is not None:
        assert config.deepspeed_config["zero_stage"] == stage
        assert "gradient_accumulation_steps" not in config.deepspeed_config  # the trainer's --grad-accum
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # whole adapter on main


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launcher_environment_is_classified_as_declab_train_expects(name):
    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), "-m", "app.cli", "train"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    assert launch_from_env({**env, "WORLD_SIZE": "2"}).sharding == EXPECTED[name][2]
