"""The faces of Decoding Lab: the ``declab`` CLI and the Streamlit lab (presentation only)."""
