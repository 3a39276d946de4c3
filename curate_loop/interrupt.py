"""Wait in the foreground until Ctrl-C or SIGTERM, for commands that keep servers up."""

from __future__ import annotations

import signal
import threading
from typing import Callable

POLL_S = 0.5


def wait_until_interrupted(still_running: Callable[[], bool] = lambda: True) -> bool:
    """Block until SIGINT/SIGTERM (returns True) or until ``still_running()`` turns False (returns False)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(POLL_S):
        if not still_running():
            return False
    return True
