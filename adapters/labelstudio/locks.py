"""One push per batch at a time: an ``fcntl`` lock file per dataset id and batch.

Two pushes of one batch that run at once both list the batch before either imports, so both import every sample
(duplicates until a third push cleans them up). The lock makes the second one stop before it reads anything and
say so (:class:`BatchBusyError`); the first finishes as usual. ``flock`` locks belong to the open file, so they work
between processes and between threads alike, and the kernel drops them when a holder dies: a killed push never
leaves a stale lock. Lock files are kept (deleting one while another process waits on it would split the lock).
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from curate_loop.paths import curate_loop_home

from .errors import BatchBusyError

LOCKS_DIR = "locks"


def lock_path(dataset_id: str, batch: str) -> Path:
    """``<curate_loop_home()>/locks/labelstudio-<dataset id>-<batch>.lock`` (odd characters of the name replaced)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", batch)
    return curate_loop_home() / LOCKS_DIR / f"labelstudio-{dataset_id}-{safe}.lock"


@contextmanager
def batch_lock(dataset_id: str, batch: str, *, dataset_name: str | None = None) -> Iterator[Path]:
    """Hold the push lock of ``batch`` of the dataset ``dataset_id`` for the ``with`` block; raises
    :class:`BatchBusyError` at once (never waits) when another push holds it."""
    path = lock_path(dataset_id, batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise BatchBusyError(
                f"Another push of batch {batch!r} of {dataset_name or dataset_id!r} is running ({holder}); this one "
                f"pushed nothing. Wait for it to finish (it pushes every sample), then check with `curate-loop "
                f"labelstudio status {dataset_name or '<dataset>'}`; lock: {path}.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%H:%M:%S')}".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
