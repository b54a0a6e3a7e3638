"""What the lab's pages share: the sidebar settings and the cached model loader.

The model lives in ``st.cache_resource`` (one global copy, never mutated: generation runs under
``torch.inference_mode``); traces live in ``st.session_state`` (per user). Setting the
environment variable ``DECLAB_TINY_MODEL=1`` swaps the model for the tiny random Llama of
``decoding/toy.py``, so app tests run in seconds without the embedded model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import streamlit as st

from decoding import LM, DecodingLabError, load_model

TINY_MODEL_ENV = "DECLAB_TINY_MODEL"

# Session-state keys of the shared sidebar widgets (drawn by ``app/lab.py``).
MODEL_KEY = "lab.model"
ADAPTER_KEY = "lab.adapter"
CHAT_KEY = "lab.chat"
SEED_KEY = "lab.seed"
ADAPTER_PICK_KEY = "lab.adapter_pick"
NO_ADAPTER = "(none)"

EMBEDDED_LABEL = "embedded SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class LabSettings:
    """The sidebar's choices: which model, which adapter, chat template or raw text, seed."""

    model: str | None = None     # None: the embedded model
    adapter: str | None = None
    chat: bool = True
    seed: int = 0


def _blank_to_none(text: str | None) -> str | None:
    text = (text or "").strip()
    return text or None


def settings() -> LabSettings:
    """The current sidebar settings (defaults before the sidebar was first drawn)."""
    state = st.session_state
    return LabSettings(model=_blank_to_none(state.get(MODEL_KEY)),
                       adapter=_blank_to_none(state.get(ADAPTER_KEY)),
                       chat=bool(state.get(CHAT_KEY, True)),
                       seed=int(state.get(SEED_KEY, 0)))


def tiny_model_requested() -> bool:
    return os.environ.get(TINY_MODEL_ENV, "") not in ("", "0")


@st.cache_resource(show_spinner=False, max_entries=2)
def _cached_lm(name: str | None, adapter: str | None, tiny: bool) -> LM:
    # ``tiny`` is part of the cache key so that a test flipping the environment variable never
    # gets the other model back.
    if tiny:
        from decoding.models import attach_adapter
        from decoding.toy import tiny_lm

        lm = tiny_lm()
        return attach_adapter(lm, adapter) if adapter else lm
    return load_model(name, adapter=adapter)


def get_lm(name: str | None = None, adapter: str | None = None) -> LM:
    """The model ``name`` (None: embedded) with ``adapter``, loaded once per process.

    Raises ``DecodingLabError`` for a model or adapter that cannot be loaded (not cached, so a
    corrected path is tried again).
    """
    return _cached_lm(_blank_to_none(name), _blank_to_none(adapter), tiny_model_requested())


def load_lm(current: LabSettings | None = None) -> LM | None:
    """``get_lm`` for the sidebar's choice, behind a spinner; an error box instead of a
    traceback when it cannot be loaded."""
    current = current or settings()
    try:
        with st.spinner("Loading model…"):
            return get_lm(current.model, current.adapter)
    except DecodingLabError as exc:
        st.error(str(exc))
        return None


def model_label(current: LabSettings | None = None) -> str:
    current = current or settings()
    if tiny_model_requested():
        return f"tiny random Llama ({TINY_MODEL_ENV}=1)"
    label = current.model or EMBEDDED_LABEL
    return f"{label} + adapter {current.adapter}" if current.adapter else label


def adapter_options() -> list[str]:
    """The sidebar's "Trained adapters" choices: ``NO_ADAPTER``, then the adapters under
    ``adapters/`` (newest first, as repository-relative paths)."""
    from app.train_runs import display_path, list_adapters

    return [NO_ADAPTER] + [display_path(p) for p in list_adapters()]


def use_picked_adapter() -> None:
    """Callback of the "Trained adapters" box: copy the pick into the Adapter field."""
    picked = st.session_state.get(ADAPTER_PICK_KEY)
    st.session_state[ADAPTER_KEY] = "" if picked in (None, NO_ADAPTER) else picked


def traced_generation(prompt: str, knobs: dict, spinner: str = "Generating…",
                      trace_top: int | None = None):
    """The pages' common path to one traced generation: refuse an empty prompt, build the
    ``DecodingConfig`` from ``knobs`` and the sidebar's seed, load the sidebar's model, generate.
    Every failure is an error box with the library's message; returns ``(lm, Generation)`` or
    None."""
    from decoding import DecodingConfig, GenerationError, generate

    if not prompt.strip():
        st.error("The prompt is empty: type a prompt to continue.")
        return None
    current = settings()
    try:
        config = DecodingConfig(**{"seed": current.seed, **knobs})
    except DecodingLabError as exc:
        st.error(str(exc))
        return None
    lm = load_lm(current)
    if lm is None:
        return None
    extra = {} if trace_top is None else {"trace_top": trace_top}
    try:
        with st.spinner(spinner):
            return lm, generate(lm, prompt, config, chat=current.chat, trace=True, **extra)
    except (DecodingLabError, GenerationError) as exc:
        st.error(str(exc))
        return None
