"""A training run started by ``accelerate launch`` (or ``torchrun``): which process this is, the
effective batch size, and the one directory every process shares.

The launchers start one copy of the program per device and tell each its place through
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``: torch's ``torchrun`` and
accelerate's launchers set them, ``accelerate/commands/launch.py``). The transformers ``Trainer``
then wraps the model in DDP (DeepSpeed or FSDP when the accelerate config says so) and gives each
process its share of every batch. What is ours to do:

- only the main process (rank 0) writes the adapter, its metadata and the progress log; the
  others train in lockstep and write nothing;
- the preference rows live in one file-backed dataset in the shared ``.NAME.*.partial``
  directory, because TRL's DPO caches the reference log-probs next to the dataset's files on the
  main process and reads them back on every process (``trainer/dpo_trainer.py``
  ``_precompute_ref_logps``); an in-memory dataset has a private temporary directory per process.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from decoding.errors import out_of_range

from .train_output import partial_dir

ROWS_DIR = ".rows"   # the shared dataset inside the partial directory, removed before publishing


@dataclass(frozen=True)
class Launch:
    """This process's place in the run: ``rank`` 0 .. ``world_size`` - 1 (1 without a launcher)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    sharding: str | None = None   # "deepspeed-zero3" or "fsdp": parameters split across processes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def launch_from_env(env: Mapping[str, str] | None = None) -> Launch:
    """The ``Launch`` the launcher's environment variables describe (none: one process)."""
    env = os.environ if env is None else env
    return Launch(rank=int(env.get("RANK", 0)), world_size=int(env.get("WORLD_SIZE", 1)),
                  local_rank=int(env.get("LOCAL_RANK", 0)), sharding=_sharding(env))


def _sharding(env: Mapping[str, str]) -> str | None:
    """Whether the launcher splits the parameters themselves: accelerate passes its config to the
    processes as ``ACCELERATE_*`` variables (``accelerate/utils/launch.py``:
    ``ACCELERATE_USE_FSDP``, ``ACCELERATE_USE_DEEPSPEED``, ``ACCELERATE_DEEPSPEED_ZERO_STAGE``)."""
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and \
            env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3":
        return "deepspeed-zero3"
    return None


def check_launch(config, launch: Launch) -> None:
    """Refuse the knobs that read whole weights outside the model's forward when the launcher
    shards the parameters (ZeRO-3, FSDP): each process then holds only a slice of every weight.

    - ``load_in_4bit``: bitsandbytes' packed NF4 weights are placed whole on one device
      (QLoRA with FSDP needs a matching quant-storage dtype, which ``load_model_4bit`` does not set);
    - ``top_layers``: the lower-layer cache runs the frozen layers itself, outside the wrapper that
      gathers their shards;
    - ``share_prompt``: the prompt-sharing forward calls the decoder layers directly, likewise.
    DDP and DeepSpeed ZeRO-1/2 keep whole weights on every process and accept all of them.
    """
    if launch.sharding is None:
        return
    for name, value, off in (("load_in_4bit", config.load_in_4bit, False),
                             ("top_layers", config.top_layers, None),
                             ("share_prompt", config.share_prompt, False)):
        if value != off:
            raise out_of_range(name, value, f"{off} under {launch.sharding}, which splits every weight "
                               "across processes (DDP or DeepSpeed ZeRO-1/2 accept it)")


def use_local_device(launch: Launch) -> None:
    """Under a launcher on GPUs, make this process's GPU the current one before the model is
    loaded, so that ``load_model`` (``.to("cuda")``) and ``load_model_4bit`` (the current device)
    put each copy on its own GPU rather than all on GPU 0."""
    if launch.distributed and torch.cuda.is_available():
        torch.cuda.set_device(launch.local_rank)


def effective_batch_size(per_device: int, processes: int, grad_accum: int) -> int:
    """Preference pairs per optimizer step: each process takes ``per_device`` pairs per
    micro-batch, DDP averages the gradients of all processes, and ``grad_accum`` micro-batches
    make one step (transformers' ``Trainer``: total_train_batch_size)."""
    return per_device * processes * grad_accum


def batch_line(per_device: int, processes: int, grad_accum: int) -> str:
    """The effective batch size, in words, as the CLI prints it."""
    total = effective_batch_size(per_device, processes, grad_accum)
    return (f"effective batch: {total} pairs per optimizer step ({per_device} per device x "
            f"{processes} process(es) x {grad_accum} accumulation step(s))")


def _shared_state(device: torch.device):
    """accelerate's process state, set up as the Trainer will set it up (``use_cpu`` on CPU;
    ``transformers/training_args.py`` ``_setup_devices``); it opens the process group."""
    from accelerate import PartialState

    return PartialState(cpu=device.type == "cpu")


def shared_partial_dir(out_dir: Path, launch: Launch, device: torch.device) -> Path:
    """The hidden directory the run writes into: created by the main process, its name sent to
    the others (``broadcast_object_list``), so that all of them share one."""
    if not launch.distributed:
        return partial_dir(out_dir)
    from accelerate.utils import broadcast_object_list

    _shared_state(device)
    name = [str(partial_dir(out_dir)) if launch.main else None]
    broadcast_object_list(name, from_process=0)
    return Path(name[0])


def wait_for_everyone(launch: Launch) -> None:
    if launch.distributed:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def shared_rows(rows: Sequence[dict[str, Any]], partial: Path, launch: Launch):
    """The rows as a ``datasets.Dataset``: in memory for one process; with several, written once
    by the main process under ``partial / ROWS_DIR`` and opened from there by every process."""
    from datasets import Dataset, load_from_disk

    if not launch.distributed:
        return Dataset.from_list(list(rows))
    target = partial / ROWS_DIR
    if launch.main:
        Dataset.from_list(list(rows)).save_to_disk(str(target))
    wait_for_everyone(launch)
    return load_from_disk(str(target))


def drop_shared_rows(partial: Path) -> None:
    shutil.rmtree(partial / ROWS_DIR, ignore_errors=True)
