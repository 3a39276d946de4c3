"""A FiftyOne database of a bench's own, never the user's, on a mongod of the bench's own: the one way every bench
gets FiftyOne.

Why its own mongod and not FiftyOne's database service: that service attaches to any service already running on the
machine, whatever its folder (a test run's, which then goes away mid-bench), and gives up when mongod takes more than
60 s to listen, which a loaded 2-core machine exceeds. The mongod is stopped when the process exits; its folder
stays (deleting it under a mongod that is still shutting down aborts it).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import subprocess
import sys
import time

__all__ = ["start_mongod", "use_throwaway_database"]


def start_mongod(db_dir: str, timeout_s: float = 600) -> subprocess.Popen:
    """A mongod on ``db_dir`` (FiftyOne's binary), waited for patiently, with FiftyOne pointed at it
    (``FIFTYONE_DATABASE_URI``); call before FiftyOne is imported."""
    # the binary FiftyOne would start, found without importing fiftyone (its config is read once, at import)
    binary = os.path.join(importlib.util.find_spec("fiftyone").submodule_search_locations[0], "db", "bin", "mongod")
    os.makedirs(db_dir, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mongod = subprocess.Popen([binary, "--dbpath", db_dir, "--port", str(port), "--bind_ip", "127.0.0.1",
                               "--nounixsocket", "--logpath", os.path.join(db_dir, "mongod.log")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        if mongod.poll() is not None or time.monotonic() > deadline:
            mongod.kill()
            raise RuntimeError(f"mongod on {db_dir} did not start (exit {mongod.poll()}); see its mongod.log (another "
                               "bench of the same name running?)")
        time.sleep(0.5)
    os.environ["FIFTYONE_DATABASE_URI"] = f"mongodb://127.0.0.1:{port}"
    return mongod


def _stop(mongod: subprocess.Popen) -> None:
    if mongod.poll() is None:
        mongod.terminate()
        try:
            mongod.wait(timeout=60)
        except subprocess.TimeoutExpired:
            mongod.kill()


def use_throwaway_database(label: str, db_dir: str | None = None) -> tuple[str, subprocess.Popen]:
    """Point FiftyOne (not imported yet) at a database ``curate-loop-bench-<label>-<pid>`` on a mongod of its own
    (folder ``<curate-loop home>/bench/mongodb-<label>`` unless ``db_dir``); returns ``(database name, mongod)``."""
    if "fiftyone" in sys.modules:
        raise RuntimeError("FiftyOne was imported before the bench set its database: run each bench in its own "
                           "process (`python -m bench NAME`)")
    from curate_loop.paths import curate_loop_home

    db_name = f"curate-loop-bench-{label}-{os.getpid()}"
    db_dir = db_dir or str(curate_loop_home() / "bench" / f"mongodb-{label}")
    os.environ.update(FIFTYONE_DATABASE_NAME=db_name, FIFTYONE_DATABASE_DIR=db_dir, FIFTYONE_DO_NOT_TRACK="true",
                      FIFTYONE_DATABASE_VALIDATION="false")
    mongod = start_mongod(db_dir)
    atexit.register(_stop, mongod)
    import fiftyone as fo  # reads the settings above, once

    if fo.config.database_name != db_name or fo.config.database_uri != os.environ["FIFTYONE_DATABASE_URI"]:
        raise RuntimeError(f"FiftyOne did not take the bench's database ({fo.config.database_name} at "
                           f"{fo.config.database_uri}): check FIFTYONE_* settings in the environment")
    return db_name, mongod
