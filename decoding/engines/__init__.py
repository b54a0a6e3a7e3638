"""Inference engines other than our own loop: generation without traces, for throughput.

``vllm_params`` maps a ``DecodingConfig`` onto vLLM's ``SamplingParams`` (pure, no vLLM import);
``vllm_engine`` runs vLLM in its separate environment (``make engines``) through
``vllm_bridge``. Only what an engine can reproduce is accepted: a knob it cannot express is
refused by name, never silently dropped.
"""

from .vllm_params import ENGINES, check_engine_name, sampling_params
from .vllm_engine import VllmSettings, decode_vllm, engine_available, generate_vllm, generate_with

__all__ = ["ENGINES", "VllmSettings", "check_engine_name", "decode_vllm", "engine_available", "generate_vllm",
           "generate_with", "sampling_params"]
