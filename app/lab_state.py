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
# What a table shows in an empty cell (st.dataframe's default is the word "None").
EMPTY_CELL = "–"

# The prompt last typed on any page (not a widget key: Streamlit drops the state of widgets a
# run does not draw, and each page draws its own prompt box).
SHARED_PROMPT_KEY = "lab.prompt"


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


def adapter_label(option: str) -> str:
    """An adapter as the sidebar lists it: its name, not its path (the sidebar's narrow box cut
    every path to the same "adapters/dpo-stance-…")."""
    return option if option == NO_ADAPTER else option.rstrip("/").rsplit("/", 1)[-1]


def use_picked_adapter() -> None:
    """Callback of the "Trained adapters" box: copy the pick into the Adapter field."""
    picked = st.session_state.get(ADAPTER_PICK_KEY)
    st.session_state[ADAPTER_KEY] = "" if picked in (None, NO_ADAPTER) else picked


# ---------------------------------------------------------------------- state across pages

def prompt_box(key: str, label: str = "Prompt", **kwargs) -> str:
    """A page's prompt box, shared by every page: it opens with the prompt last typed on any
    page, and typing in it updates that prompt (``persist_state``: its own value also survives
    leaving the page)."""
    shared = st.session_state.get(SHARED_PROMPT_KEY)
    if shared is not None and st.session_state.get(key) != shared:
        st.session_state[key] = shared
    return st.text_area(label, key=key, on_change=_share_prompt, args=(key,),
                        persist_state="session", **kwargs)


def _share_prompt(key: str) -> None:
    st.session_state[SHARED_PROMPT_KEY] = st.session_state[key]


def run_inputs(prompt: str, knobs: dict) -> dict:
    """What a page's result depends on: its prompt and knobs, and the sidebar's settings."""
    current = settings()
    return {"prompt": prompt, **knobs, "model": current.model, "adapter": current.adapter,
            "chat": current.chat, "seed": current.seed}


def changed_inputs(produced: dict | None, now: dict) -> list[str]:
    """The inputs whose value differs between the run that produced a result and the page's
    current settings (all of them when the result's inputs are unknown)."""
    if produced is None:
        return sorted(now)
    return [name for name in dict.fromkeys([*produced, *now]) if produced.get(name) != now.get(name)]


def stale_warning(produced: dict | None, now: dict, action: str = "Generate") -> bool:
    """A warning above a result that other settings produced (naming what changed); True when
    the result is stale. A page never shows a result as if the current settings made it."""
    changed = changed_inputs(produced, now)
    if changed:
        st.warning(f"The result below was produced with other settings ({', '.join(changed)} "
                   f"changed since). {action} again to update it.")
    return bool(changed)


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
    stream = st.empty()
    try:
        with st.spinner(spinner):
            return lm, generate(lm, prompt, config, chat=current.chat, trace=True,
                                on_step=token_stream(stream, lm, config.max_new_tokens), **extra)
    except (DecodingLabError, GenerationError) as exc:
        st.error(str(exc))
        return None
    finally:
        stream.empty()


STREAM_CAPTION = "Generating: {n} of at most {limit} tokens"


def token_stream(box, lm, limit: int):
    """An ``on_step`` for ``decoding.generate`` that writes the first sequence's text into
    ``box`` (an ``st.empty``) as each token arrives, as chat UIs stream (issue 17); the page
    draws the traced result in its place once the generation is done."""
    def show(index: int, generated: list[list[int]]) -> None:
        tokens = generated[0]
        with box.container():
            st.caption(STREAM_CAPTION.format(n=len(tokens), limit=limit))
            st.text(lm.decode(tokens) + " ▌")
    return show
