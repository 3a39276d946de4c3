"""Label Studio keys against the real server: every bad key is one LabelStudioAuthError line naming the kind of key
and the fix, never the key; the key file lets any terminal talk to the server it names, and only to that one."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import time

import pytest
from click.testing import CliRunner

from curate_loop.adapters.labelstudio.client import Connection, connect
from curate_loop.adapters.labelstudio.errors import LabelStudioKeyMissing
from curate_loop.adapters.labelstudio.keyfile import read_env_file, resolve_credentials, write_env_file
from curate_loop.cli import cli
from curate_loop.errors import LabelStudioAuthError
from curate_loop.runs import labelstudio as sync

pytestmark = pytest.mark.labelstudio


def _forged_pat(claims: dict) -> str:
    """A JWT of the right shape that no server signed (for the shapes the client must catch before sending it)."""
    import jwt

    return jwt.encode({"token_type": "refresh", **claims}, "not-the-servers-secret-" + "x" * 32, algorithm="HS256")


@pytest.fixture(scope="module")
def pat_enabled(labelstudio):
    conn = Connection(labelstudio.url, labelstudio.token)
    conn.sdk.jwt_settings.update(api_tokens_enabled=True, legacy_api_tokens_enabled=True, api_token_ttl_days=30)
    return conn


@pytest.fixture
def pushed(example_dataset, labelstudio, monkeypatch, tmp_path):
    """A clone with batch b1 (2 samples) pushed with the good legacy token; no key in the environment after."""
    from fiftyone import ViewField as F

    monkeypatch.setenv("CURATE_LOOP_HOME", str(tmp_path / "home"))  # no key file unless a test writes one
    ds = example_dataset.clone(f"ls-keys-{random.randrange(10**9)}")
    ids = ds.match(F("ground_truth.detections").length() > 0).limit(2).values("id")
    ds.set_values("curate_batch", {i: "b1" for i in ids}, key_field="id")
    sync.push_batch(ds, "b1", "ground_truth", url=labelstudio.url, api_key=labelstudio.token,
                    document_root=labelstudio.document_root)
    return ds


def _bad_keys(labelstudio, pat_enabled) -> dict[str, tuple[str, str, str]]:
    """name -> (key, kind named in the message, words the message must hold)."""
    revoked = pat_enabled.sdk.tokens.create().token
    pat_enabled.sdk.tokens.blacklist(refresh=revoked)
    return {
        "trailing newline": (labelstudio.token + "\n", "legacy token", "trailing newline"),
        "surrounding spaces": ("  " + labelstudio.token, "legacy token", "surrounding whitespace"),
        "non-ASCII": (labelstudio.token[:10] + "’" + labelstudio.token[11:], "legacy token", "non-ASCII"),
        "wrong legacy": ("0" * 40, "legacy token", "rejected the legacy token (HTTP 401)"),
        "PAT cut short": (revoked.rsplit(".", 1)[0], "personal access token", "malformed"),
        "expired PAT": (_forged_pat({"exp": int(time.time()) - 3600}), "personal access token", "expired on"),
        "PAT without expiry": (_forged_pat({}), "personal access token", "malformed"),
        "revoked PAT": (revoked, "personal access token", "rejected the personal access token (HTTP 401)"),
        "forged PAT": (_forged_pat({"exp": int(time.time()) + 3600}), "personal access token",
                       "rejected the personal access token"),
    }


def test_every_bad_key_is_one_line_naming_its_kind_and_the_fix_never_the_key(labelstudio, pat_enabled, pushed):
    """Push, pull and status (library calls) raise LabelStudioAuthError, not the SDK's ApiError, UnicodeEncodeError
    or an "unreachable" error, and nothing changes on the server or in the dataset."""
    before = sync.batch_status(pushed, "b1", url=labelstudio.url, api_key=labelstudio.token)
    for name, (key, kind, words) in _bad_keys(labelstudio, pat_enabled).items():
        calls = {
            "push": lambda: sync.push_batch(pushed, "b1", "ground_truth", url=labelstudio.url, api_key=key,
                                            document_root=labelstudio.document_root),
            "pull": lambda: sync.pull_batch(pushed, "b1", url=labelstudio.url, api_key=key),
            "status": lambda: sync.batch_status(pushed, "b1", url=labelstudio.url, api_key=key),
        }
        for what, call in calls.items():
            with pytest.raises(LabelStudioAuthError) as info:
                call()
            message = str(info.value)
            assert "\n" not in message, (name, what, message)
            assert kind in message and words in message, (name, what, message)
            assert "export LABEL_STUDIO_API_KEY" in message, (name, what, message)  # the fix
            secret = key.strip()
            assert secret not in message and secret[-12:] not in message, (name, what)
    after = sync.batch_status(pushed, "b1", url=labelstudio.url, api_key=labelstudio.token)
    assert (after["tasks"], after["state"]) == (before["tasks"], before["state"]) == (2, "pushed")


def test_revoked_pat_worked_before_it_was_revoked(labelstudio, pat_enabled):
    """The revoked-key case is real: the same token is accepted until the server blacklists it."""
    pat = pat_enabled.sdk.tokens.create().token
    with connect(labelstudio.url, pat) as conn:
        assert conn.get_json("/api/current-user/whoami", what="who am I")["email"] == labelstudio.credentials.username
    pat_enabled.sdk.tokens.blacklist(refresh=pat)
    with pytest.raises(LabelStudioAuthError, match="rejected the personal access token .*revoked"):
        with connect(labelstudio.url, pat) as conn:
            conn.get_json("/api/current-user/whoami", what="who am I")


def test_cli_auth_problems_exit_1_at_once_and_a_missing_key_shows_the_recorded_state(labelstudio, pushed,
                                                                                      monkeypatch):
    runner = CliRunner()
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    missing = runner.invoke(cli, ["labelstudio", "status", pushed.name])
    assert missing.exit_code == 0, missing.output
    lines = missing.output.splitlines()
    assert sum("showing the last recorded state" in line for line in lines) == 1
    assert any(line.split()[:2] == ["b1", "pushed"] and "(recorded)" in line for line in lines)

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token + "\n")
    for args in (["labelstudio", "status", pushed.name], ["pull", pushed.name, "b1"],
                 ["push", pushed.name, "b1", "--label-field", "ground_truth"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        assert "LabelStudioAuthError" in result.output and "trailing newline" in result.output
        assert "unreachable" not in result.output and "does not answer" not in result.output
        assert labelstudio.token not in result.output


def test_key_file_is_private_sourceable_and_used_by_every_command(labelstudio, pushed, monkeypatch, tmp_path):
    path = write_env_file(labelstudio.url + "/", labelstudio.token)
    assert path == tmp_path / "home" / "labelstudio.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"export LABEL_STUDIO_URL={labelstudio.url}\nexport LABEL_STUDIO_API_KEY={labelstudio.token}\n"
    shell = subprocess.run(["bash", "-c", f"source {path} && echo \"$LABEL_STUDIO_URL|$LABEL_STUDIO_API_KEY\""],
                           capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, check=True)
    assert shell.stdout.strip() == f"{labelstudio.url}|{labelstudio.token}"
    stored = read_env_file()
    assert (stored.url, stored.api_key) == (labelstudio.url, labelstudio.token)
    assert labelstudio.token not in repr(stored)

    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    runner = CliRunner()  # click 8.2+: result.stdout and result.stderr apart, result.output both
    status = runner.invoke(cli, ["labelstudio", "status", pushed.name])
    assert status.exit_code == 0, status.output
    assert f"key for {labelstudio.url} from {path}" in status.stderr
    assert any(line.split()[:2] == ["b1", "pushed"] and "(recorded)" not in line
               for line in status.stdout.splitlines())
    push = runner.invoke(cli, ["push", pushed.name, "b1", "--label-field", "ground_truth"])
    assert push.exit_code == 0, push.output
    assert "2 tasks" in push.stdout and "0 new, 2 already there" in push.stdout
    for result in (status, push):
        assert labelstudio.token not in result.stdout + result.stderr


def test_key_file_key_never_goes_to_another_server(labelstudio, monkeypatch, tmp_path):
    monkeypatch.setenv("CURATE_LOOP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    write_env_file(labelstudio.url, labelstudio.token)
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    assert resolve_credentials().api_key is None
    with pytest.raises(LabelStudioKeyMissing, match="no key file at .* for http://127.0.0.1:9"):
        connect()
    monkeypatch.delenv("LABEL_STUDIO_URL")
    creds = resolve_credentials()
    assert (creds.url, creds.api_key, creds.from_file) == (labelstudio.url, labelstudio.token, True)
    with connect() as conn:
        assert conn.get_json("/api/current-user/whoami", what="who am I")["email"]


def test_no_key_status_falls_back_and_names_the_key_file(labelstudio, pushed):
    status = sync.batch_status(pushed, "b1", url=labelstudio.url)
    assert status["server"] == "no key" and status["state"] == "pushed" and status["tasks"] == 2
    assert json.dumps(status, default=str).count(labelstudio.token) == 0
