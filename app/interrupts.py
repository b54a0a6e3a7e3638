"""Ctrl-C and the lab's Stop button reach ``declab`` as ``KeyboardInterrupt``.

A process started in the background by a shell without job control (``cmd &`` in a script, a CI
runner) inherits SIGINT *ignored* (POSIX: asynchronous lists ignore SIGINT and SIGQUIT), and
CPython then leaves it ignored instead of installing ``signal.default_int_handler``. Then neither
Ctrl-C nor ``train_runs.stop`` (SIGINT to the run's process group) would stop a training run, and
``train`` would never remove its partial output. ``accept_interrupts`` puts Python's own handler
back in that one case.
"""

from __future__ import annotations

import signal
import threading


def accept_interrupts() -> bool:
    """Install ``signal.default_int_handler`` for SIGINT if SIGINT is ignored; True if it did.
    Only the main thread may set handlers: elsewhere (a Streamlit script thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return True
