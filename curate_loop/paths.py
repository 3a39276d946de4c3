"""Where curate-loop keeps its own files, and where a git checkout keeps its virtualenvs."""

from __future__ import annotations

import os
from pathlib import Path

import curate_loop

HOME_ENV = "CURATE_LOOP_HOME"


def curate_loop_home() -> Path:
    """The per-user state folder (``$CURATE_LOOP_HOME``, default ``~/.curate-loop``)."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".curate-loop").expanduser()


def checkout_root() -> Path | None:
    """The git checkout curate-loop runs from, or None for a plain pip install."""
    root = Path(curate_loop.__file__).resolve().parent.parent
    return root if (root / "Makefile").is_file() and (root / "plugin").is_dir() else None
