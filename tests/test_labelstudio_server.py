"""The local Label Studio server: real start, real API, clean stop, and clear errors."""

import os
import signal
import socket
import stat
import subprocess
import sys
import time

import httpx
import pytest

from curate_loop.adapters.labelstudio import server as ls_server
from curate_loop.adapters.labelstudio.auth import whoami
from curate_loop.errors import LabelStudioAuthError, LabelStudioNotInstalled, LabelStudioServerError


def test_real_server_answers_and_accepts_the_token(labelstudio):
    assert httpx.get(f"{labelstudio.url}/health").status_code == 200
    user = whoami(labelstudio.url, labelstudio.token)
    assert user["email"] == labelstudio.credentials.username
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=labelstudio.url, api_key=labelstudio.token)
    project = client.projects.create(title="harness check", label_config="<View><Image name='i' value='$image'/></View>")
    assert project.id in {p.id for p in client.projects.list()}


def test_wrong_token_is_rejected_without_echoing_it(labelstudio):
    with pytest.raises(LabelStudioAuthError) as info:
        whoami(labelstudio.url, "0" * 40)
    assert "rejected the legacy token (HTTP 401)" in str(info.value)
    assert "0" * 40 not in str(info.value)


def test_port_taken_gives_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(LabelStudioServerError, match=f"Port {port} on 127.0.0.1 is already in use"):
            ls_server.start_label_studio(port=port)


def test_not_installed_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv(ls_server.EXECUTABLE_ENV, str(tmp_path / "no-such-label-studio"))
    with pytest.raises(LabelStudioNotInstalled, match="curate-loop labelstudio install"):
        ls_server.start_label_studio()


def _fake_executable(tmp_path, body: str):
    exe = tmp_path / "label-studio"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_server_that_crashes_reports_its_log(tmp_path):
    exe = _fake_executable(tmp_path, "echo 'django.db.utils.OperationalError: disk I/O error'; exit 3")
    with pytest.raises(LabelStudioServerError) as info:
        ls_server.start_label_studio(executable=exe, data_dir=tmp_path / "data", document_root=tmp_path)
    assert "exited with code 3 before answering" in str(info.value)
    assert "disk I/O error" in str(info.value)


def test_server_that_never_answers_times_out_and_is_stopped(tmp_path):
    exe = _fake_executable(tmp_path, "exec sleep 60")
    t0 = time.monotonic()
    with pytest.raises(LabelStudioServerError, match=r"did not answer on .*/health within 2 s"):
        ls_server.start_label_studio(executable=exe, data_dir=tmp_path / "data", document_root=tmp_path, timeout_s=2)
    assert time.monotonic() - t0 < 30
    assert "sleep 60" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_credentials_are_reused_for_a_data_dir(tmp_path):
    first = ls_server.Credentials.load_or_create(tmp_path)
    second = ls_server.Credentials.load_or_create(tmp_path)
    assert first == second
    assert len(first.token) == 40
    assert stat.S_IMODE((tmp_path / ls_server.CREDENTIALS_FILE).stat().st_mode) == 0o600


def test_cli_serve_prints_url_and_stops_cleanly_on_ctrl_c(labelstudio, migrated_labelstudio_data, media_root):
    """`curate-loop labelstudio serve` on a copy of the (already migrated) session server's data."""
    cmd = [sys.executable, "-m", "curate_loop.cli", "labelstudio", "serve", "--data-dir", str(migrated_labelstudio_data),
           "--media-root", str(media_root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        url = next(line.split("=", 1)[1].strip() for line in lines if "LABEL_STUDIO_URL=" in line)
        token = next(line.split("=", 1)[1].strip() for line in lines if "LABEL_STUDIO_API_KEY=" in line)
        assert token == labelstudio.token
        assert whoami(url, token)["email"] == labelstudio.credentials.username
        os.killpg(proc.pid, signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, "".join(lines) + rest
    assert "Label Studio stopped." in rest
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
