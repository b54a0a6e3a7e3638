"""CPU speed settings of a training run: the thread count, the precision, the LM head's scope and
quiet progress bars. Each is a context manager that restores what it changed."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Sequence

import torch


CPU_FLAGS = Path("/proc/cpuinfo")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively: the ``avx512_bf16`` (Cooper Lake, Zen 4 and
    later) or ``amx_bf16`` (Sapphire Rapids) flag in ``/proc/cpuinfo``. Without either, oneDNN
    emulates bfloat16 and a matmul runs slower than in float32 (measured 6x on an AVX2 CPU), so it
    is detected, not assumed. ``torch.backends.cpu.get_cpu_capability()`` says only "AVX512",
    which some CPUs without BF16 also report; other systems than Linux: False."""
    if cpuinfo is None:
        try:
            cpuinfo = CPU_FLAGS.read_text(errors="replace")
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device) -> str:
    """``TrainConfig.precision`` made concrete: "bf16" or "fp32". auto: bf16 on a CUDA GPU that
    supports it and on a CPU with native bfloat16 arithmetic (``cpu_has_bf16``), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def fastest_thread_count(candidates: Sequence[int] | None = None) -> int:
    """The thread count that runs a small stand-in for one transformer layer fastest.

    Why a probe: on a CPU shared with other busy processes every multi-threaded op waits for its
    slowest thread, and a thread whose core is taken waits a scheduler slice. Measured on the
    2-core development box with another process holding one core: a 1760x576 elementwise product
    took 8 ms with 2 threads and 0.23 ms with 1; a SmolLM2 forward over 16 x 110 tokens took
    15.5 s vs 6.4 s. Without such contention more threads should win (the matmuls split across
    cores); the probe decides rather than assumes. Median of 5 rounds per candidate (a lucky
    round under intermittent load does not decide), about 0.2 s in all.
    """
    default = torch.get_num_threads()
    candidates = sorted(set(candidates or (1, max(1, default // 2), default)))
    if len(candidates) == 1:
        return candidates[0]
    x, w = torch.randn(256, 576), torch.randn(1536, 576)
    timings = {}
    try:
        for n in candidates:
            torch.set_num_threads(n)
            rounds = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(2):
                    h = torch.nn.functional.linear(x, w)
                    h = torch.nn.functional.silu(h) * h + 1.0
                rounds.append(time.perf_counter() - start)
            timings[n] = sorted(rounds)[len(rounds) // 2]
    finally:
        torch.set_num_threads(default)
    return min(timings, key=timings.get)


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int | str):
    """Set torch's intra-op thread count for the run (CPU only) and restore it afterwards."""
    previous = torch.get_num_threads()
    if device.type != "cpu" or threads == "default":
        yield previous
        return
    chosen = fastest_thread_count() if threads == "auto" else int(threads)
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def completion_only_lm_head(device: torch.device):
    """Let TRL's fused LM head score only the completion tokens on CPU.

    ``add_fused_lm_head`` (``trainer/utils.py:1642``) projects only the positions that have a
    label when ``_use_triton(device)`` is true and every position otherwise, to keep tile shapes
    fixed for compiled devices (Neuron). On CPU nothing is compiled, so the compact path gives the
    same log-probs while skipping the prompt and padding positions: about half the LM-head work
    (49152 x 576 per position, forward and backward) for the stance pairs. The kernel's own
    ``_use_triton`` (``kernels/chunked_logprob.py:48``) is untouched: the tiles still run in torch.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if device.type != "cpu" or original is None:
        yield
        return
    trl_utils._use_triton = lambda dev: dev.type == "cpu" or original(dev)
    try:
        yield
    finally:
        trl_utils._use_triton = original


@contextlib.contextmanager
def quiet_progress(progress: bool):
    """Without ``progress``, silence the datasets ``map`` bars and TRL's precompute bar (which reads
    ``TQDM_DISABLE``, ``trainer/dpo_trainer.py:1210``); restore both afterwards."""
    if progress:
        yield
        return
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    previous = os.environ.get("TQDM_DISABLE")
    datasets.disable_progress_bars()
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
