"""Decoding Lab's decoding core: model loading, the processor chain, our own generation loop,
per-step traces and repetition diagnostics. Imports neither TRL nor Streamlit."""

from .batch import generate_batch, generate_mixed
from .config import DecodingConfig, help_text
from .errors import ConfigError, DecodingLabError, GenerationError, ModelLoadError
from .loop import generate, generate_ids
from .models import LM, from_model, load_model
from .trace import Generation, SequenceResult, StepTrace

__all__ = [
    "ConfigError", "DecodingConfig", "DecodingLabError", "Generation", "GenerationError", "LM",
    "ModelLoadError", "SequenceResult", "StepTrace", "from_model", "generate", "generate_batch",
    "generate_ids", "generate_mixed", "help_text", "load_model",
]
