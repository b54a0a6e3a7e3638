"""Open one page of the lab in AppTest.

The lab's pages are callables registered with ``st.Page(..., url_path=...)``; AppTest's
``switch_page`` only takes page *files*. After one run, AppTest knows the pages that
``st.navigation`` registered (``_registered_pages``: page hash → info with ``url_pathname``), so
we request a page by its url_path through ``_page_hash`` (private to Streamlit 1.67's AppTest:
this is the one place to adapt if it changes).

The entrypoint is a two-line script that runs ``app/lab.py`` with ``runpy`` rather than
``AppTest.from_file(app/lab.py)``: AppTest builds a fresh ``PagesManager`` on every run, and
with the page modules in a ``pages/`` folder beside ``lab.py`` (their first home, now
``app/views/`` for this reason) it took them for a legacy ``pages/`` directory and never
resolved a requested ``st.navigation`` page other than the default. From a temporary script no
such folder can interfere, and ``lab.py`` runs unchanged.
"""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from app import lab_state

LAB = str(Path(__file__).resolve().parents[1] / "app" / "lab.py")
ENTRY = f"import runpy\nrunpy.run_path({LAB!r}, run_name='__main__')\n"


def open_page(url_path: str, monkeypatch, tiny: bool = True, timeout: float = 60) -> AppTest:
    """A fresh AppTest of the lab showing the page registered under ``url_path``."""
    if tiny:
        monkeypatch.setenv(lab_state.TINY_MODEL_ENV, "1")
    else:
        monkeypatch.delenv(lab_state.TINY_MODEL_ENV, raising=False)
    at = AppTest.from_string(ENTRY, default_timeout=timeout).run()
    return switch_page(at, url_path)


def page_urls(at: AppTest) -> dict[str, str]:
    """url_path → page hash of every page ``st.navigation`` registered."""
    return {info.get("url_pathname"): page_hash for page_hash, info in at._registered_pages.items()}


def switch_page(at: AppTest, url_path: str) -> AppTest:
    """The same session (its session state) moved to the page under ``url_path``."""
    pages = page_urls(at)
    assert url_path in pages, f"no page {url_path!r} in {sorted(map(str, pages))}"
    at._page_hash = pages[url_path]
    return at.run()
