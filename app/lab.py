"""Decoding Lab, the Streamlit app: navigation and the shared sidebar.

Run with ``streamlit run app/lab.py --server.address 127.0.0.1`` (``make app``). Each page is a
``render()`` function in ``app/views/``; adding a page is one line in ``PAGES``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``streamlit run app/lab.py`` puts app/ on sys.path, not the repository root that holds the
# ``app`` and ``decoding`` packages (needed when the project is not pip-installed).
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import streamlit as st  # noqa: E402

from app import lab_state  # noqa: E402
from app.views import step_inspector  # noqa: E402
from app.views import compare  # noqa: E402
from app.views import repetition  # noqa: E402
from app.views import beam_explorer  # noqa: E402
from app.views import preference_math  # noqa: E402
from app.views import studies  # noqa: E402
from app.views import train_adapter  # noqa: E402
from app.views import alignment_decoding  # noqa: E402
from decoding import help_text  # noqa: E402

STEP_INSPECTOR = st.Page(step_inspector.render, title="Step inspector", icon=":material/footprint:",
                         url_path="step-inspector")


def open_first_page() -> None:
    """The root URL: go to the Step inspector under its own address. (``st.navigation`` serves
    its default page at "/" only, so a default Step inspector did not open at /step-inspector.)"""
    st.switch_page(STEP_INSPECTOR)


PAGES = [
    st.Page(open_first_page, title="Decoding Lab", url_path="start", default=True,
            visibility="hidden"),
    STEP_INSPECTOR,
    st.Page(compare.render, title="Compare decodings", icon=":material/compare:", url_path="compare"),
    st.Page(repetition.render, title="Repetition lab", icon=":material/repeat:", url_path="repetition"),
    st.Page(beam_explorer.render, title="Beam explorer", icon=":material/account_tree:", url_path="beam-explorer"),
    st.Page(preference_math.render, title="Preference math", icon=":material/functions:", url_path="preference-math"),
    st.Page(studies.render, title="Studies", icon=":material/science:", url_path="studies"),
    st.Page(alignment_decoding.render, title="Alignment × decoding", icon=":material/balance:",
            url_path="alignment"),
    st.Page(train_adapter.render, title="Train an adapter", icon=":material/model_training:",
            url_path="train"),
]


def draw_sidebar() -> None:
    """Model, adapter, chat/raw and seed: shared by every page through ``lab_state.settings()``."""
    with st.sidebar:
        st.subheader("Model")
        st.text_input("Model", key=lab_state.MODEL_KEY,
                      placeholder=lab_state.EMBEDDED_LABEL,
                      help="Empty: the embedded SmolLM2-135M-Instruct (offline). Otherwise a "
                           "local transformers directory, a .gguf file, or a hub id where a hub "
                           "is reachable.")
        st.selectbox("Trained adapters", lab_state.adapter_options(), key=lab_state.ADAPTER_PICK_KEY,
                     on_change=lab_state.use_picked_adapter, format_func=lab_state.adapter_label,
                     help="Adapters under adapters/ (the Train page writes them there), by name; "
                          "picking one fills the Adapter field with its path.")
        st.text_input("Adapter", key=lab_state.ADAPTER_KEY, placeholder="none",
                      help="Optional: a PEFT (LoRA) adapter directory trained on this model.")
        st.toggle("Chat template", value=True, key=lab_state.CHAT_KEY,
                  help="On: the prompt is the user turn of the model's chat template. Off: raw "
                       "text completion (base-model behaviour, where degeneration shows best).")
        st.number_input("Seed", min_value=0, value=0, step=1, key=lab_state.SEED_KEY,
                        help=help_text("seed"))
        st.caption(f"Using: {lab_state.model_label()}")


st.set_page_config(page_title="Decoding Lab", layout="wide")
page = st.navigation(PAGES)
draw_sidebar()
page.run()
