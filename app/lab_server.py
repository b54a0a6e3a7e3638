"""Run the lab as a real server and drive it from a headless browser (the end-to-end test and
the browser latency benchmark share this).

``serve_lab()`` starts ``streamlit run app/lab.py`` on a free 127.0.0.1 port, waits until
``/_stcore/health`` answers ``ok`` (the check Streamlit's own e2e fixture uses), and stops the
whole process group afterwards. ``open_browser()`` launches Debian's ``chromium`` through
Playwright without ``playwright install`` (no download). ``wait_idle()`` waits for the app's
``data-test-script-state`` to be ``notRunning``: every rerun, full or fragment, has finished;
``settle()`` first waits for the rerun an input has just asked for to start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "app" / "lab.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
BUSY = "[data-testid='stApp']:not([data-test-script-state='notRunning'])"   # a run asked for or on


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser_missing() -> str | None:
    """Why a browser test cannot run here (None when it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        return f"chromium is not installed ({CHROMIUM}; apt-get install chromium)"
    return None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().decode().strip() == "ok"
    except OSError:
        return False


@contextlib.contextmanager
def serve_lab(log_path: Path | None = None, env: dict[str, str] | None = None,
              unset: tuple[str, ...] = (), timeout: float = 120.0) -> Iterator[str]:
    """Serve the lab headless on a free local port; yields its URL. ``env`` is added to this
    process's environment and the variables in ``unset`` are left out (e.g. ``DECLAB_TINY_MODEL``
    for the embedded model). ``log_path`` receives the server's output. The server (its whole
    process group) is stopped on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamlit", "run", str(LAB), "--server.address", "127.0.0.1",
               "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    environment = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, env=environment, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if server.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {server.returncode} before it was "
                                   f"healthy (log: {log_path})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit was not healthy after {timeout:.0f} s (log: {log_path})")
            time.sleep(0.25)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if log_path:
            log.close()


@contextlib.contextmanager
def open_browser(width: int = 1500, height: int = 1000, evidence: Path | None = None):
    """A headless chromium page (Playwright, Debian's binary). With ``evidence``, an error inside
    the block first leaves ``evidence.png`` (the whole page) and ``evidence.txt`` (its script
    state and text) behind, so a failure seen once in CI can be read afterwards."""
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            try:
                yield page
            except BaseException:
                if evidence is not None:
                    keep_evidence(page, evidence)
                raise
        finally:
            browser.close()


def keep_evidence(page, stem: Path) -> None:
    """A screenshot and the text of ``page`` at ``stem``.png/.txt, the text also printed (pytest
    shows a failing test's output, so CI's log keeps it); never raises (it runs while another
    error is on its way)."""
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(stem.with_suffix(".png")), full_page=True, timeout=10_000)
        state = page.locator("[data-testid='stApp']").first.get_attribute("data-test-script-state", timeout=5_000)
        text = page.locator("body").inner_text(timeout=5_000)
        found = f"url: {page.url}\nscript state: {state}\n\n{text}"
        stem.with_suffix(".txt").write_text(found, encoding="utf-8")
        print(f"failure evidence: {stem}.png/.txt; the page's text:\n{found[:4000]}")   # into CI's log
    except Exception as exc:   # noqa: BLE001 - the original error matters more
        print(f"no failure evidence at {stem}: {exc}")


def wait_idle(page, timeout_ms: float = 120_000) -> None:
    """Wait until no script run (full or fragment) is in progress. Idle is not drawn: the
    frontend draws some components a few hundred ms after the run ends, so wait for the element
    you need as well."""
    page.wait_for_selector(IDLE, timeout=timeout_ms)


def settle(page, start_ms: float = 2_000) -> None:
    """Wait for the rerun an input just caused, then for idle. The rerun can start a moment
    after the key press, so a bare ``wait_idle`` may pass before it starts; a click in that gap
    can then be lost, or its run cut short by the late rerun (seen under load: a grid left at
    "1 of 4 cells done" after Ctrl+Enter in its specs and a click on "Run the grid"). No rerun
    costs ``start_ms``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    try:
        page.wait_for_selector(BUSY, timeout=start_ms)
    except PlaywrightTimeoutError:
        pass
    wait_idle(page)
