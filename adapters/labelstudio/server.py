"""Start and stop a local Label Studio server: the embedded default for the demo and the tests.

Label Studio pins packages that clash with FiftyOne's, so it lives in its own virtualenv and we
only ever talk to it over HTTP. It is started on a loopback port we checked is free (Label Studio
silently moves to another port when its port is busy), with local-files serving rooted where the
media lives and a legacy API token, and we wait for ``/health`` before handing it out.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from curate_loop.errors import InvalidInputError, LabelStudioNotInstalled, LabelStudioServerError
from curate_loop.installer import pip_install
from curate_loop.paths import checkout_root, curate_loop_home

logger = logging.getLogger(__name__)

LABEL_STUDIO_VERSION = "1.23.2"
EXECUTABLE_ENV = "CURATE_LOOP_LABEL_STUDIO_BIN"
LOOPBACK = "127.0.0.1"
DEFAULT_START_TIMEOUT_S = 240  # first start runs ~30 s of migrations on 2 cores; keep slack
STOP_GRACE_S = 15
CREDENTIALS_FILE = "curate-loop-credentials.json"
INSTALL_HINT = (
    "Install it with `curate-loop labelstudio install` (its own virtualenv under ~/.curate-loop), "
    "or `make setup` in a curate-loop checkout, or set "
    f"{EXECUTABLE_ENV} to a `label-studio` executable."
)


def default_venv() -> Path:
    """Where `curate-loop labelstudio install` puts Label Studio's own virtualenv."""
    root = checkout_root()
    return root / ".venv-labelstudio" if root else curate_loop_home() / "labelstudio-venv"


def find_label_studio_executable(explicit: str | os.PathLike | None = None) -> Path:
    """Locate a ``label-studio`` executable: argument, ``$CURATE_LOOP_LABEL_STUDIO_BIN``, our venv, PATH."""
    candidates: list[tuple[str, Path | None]] = []
    if explicit:
        candidates.append(("--executable", Path(explicit)))
    elif os.environ.get(EXECUTABLE_ENV):
        candidates.append((EXECUTABLE_ENV, Path(os.environ[EXECUTABLE_ENV])))
    else:
        candidates.append(("curate-loop's virtualenv", default_venv() / "bin" / "label-studio"))
        on_path = shutil.which("label-studio")
        candidates.append(("PATH", Path(on_path) if on_path else None))
    for _source, path in candidates:
        if path is not None and path.is_file() and os.access(path, os.X_OK):
            return path
    tried = ", ".join(f"{source}: {path or 'not found'}" for source, path in candidates)
    raise LabelStudioNotInstalled(f"No Label Studio server executable found ({tried}). {INSTALL_HINT}")


def install_label_studio(venv: Path | None = None) -> Path:
    """Create Label Studio's own virtualenv (idempotent) and return its ``label-studio`` executable."""
    venv = Path(venv or default_venv())
    exe = venv / "bin" / "label-studio"
    if exe.is_file() and _installed_version(venv) == LABEL_STUDIO_VERSION:
        return exe
    if not (venv / "bin" / "python").exists():
        proc = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabelStudioNotInstalled(f"Could not create a virtualenv at {venv}: {proc.stderr.strip()[-800:]}")
    proc = pip_install(venv / "bin" / "python", [f"label-studio=={LABEL_STUDIO_VERSION}"])
    if proc.returncode != 0:
        raise LabelStudioNotInstalled(
            f"Could not install Label Studio (exit {proc.returncode}): {proc.stderr.strip()[-800:]}"
        )
    return exe


def _installed_version(venv: Path) -> str | None:
    metas = list((venv / "lib").glob("python*/site-packages/label_studio-*.dist-info"))
    return metas[0].name.split("-")[1].removesuffix(".dist-info") if metas else None


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port the OS says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class Credentials:
    """The login and API token of the server's first user, kept with its data dir."""

    username: str
    password: str
    token: str

    @classmethod
    def load_or_create(cls, data_dir: Path) -> "Credentials":
        """Reuse the credentials a data dir was created with (Label Studio only sets them once)."""
        path = data_dir / CREDENTIALS_FILE
        if path.is_file():
            return cls(**json.loads(path.read_text()))
        creds = cls(
            username="curator@localhost.localdomain",
            password=secrets.token_urlsafe(12),
            token=secrets.token_hex(20),  # legacy tokens are 40 hex characters
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(creds.__dict__))
        path.chmod(0o600)
        return creds


@dataclass
class LabelStudioServer:
    """A running local Label Studio server; stop it with :meth:`stop` or use it as a context manager."""

    url: str
    port: int
    data_dir: Path
    document_root: Path
    credentials: Credentials = field(repr=False)
    process: subprocess.Popen = field(repr=False)
    log_path: Path = field(repr=False)

    @property
    def token(self) -> str:
        return self.credentials.token

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Terminate the server and its children; wait for them, then kill if they linger."""
        if not self.is_running():
            return
        _signal_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait(STOP_GRACE_S)

    def __enter__(self) -> "LabelStudioServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def start_label_studio(
    *,
    port: int | None = None,
    data_dir: str | os.PathLike | None = None,
    document_root: str | os.PathLike | None = None,
    executable: str | os.PathLike | None = None,
    timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> LabelStudioServer:
    """Start a local Label Studio server on a loopback port and wait until it answers.

    Parameters
    ----------
    port : int, optional
        Loopback port; must be free. Default: a free port chosen now.
    data_dir : path, optional
        Label Studio's data folder (SQLite database, uploads). Default ``~/.curate-loop/labelstudio``.
    document_root : path, optional
        Root for local-files serving: media under it can be shown without uploading. Default: cwd.
    executable : path, optional
        The ``label-studio`` executable. Default: see :func:`find_label_studio_executable`.
    timeout_s : float
        How long to wait for ``/health``.
    """
    exe = find_label_studio_executable(executable)
    if port is None:
        port = free_port()
    elif not 0 < port < 65536:
        raise InvalidInputError(f"port={port} is not a TCP port; use 1-65535, or omit it to pick a free one.")
    elif not port_is_free(port):
        raise LabelStudioServerError(
            f"Port {port} on {LOOPBACK} is already in use. Choose another port, or omit the port to let "
            "curate-loop pick a free one."
        )
    data_dir = Path(data_dir or curate_loop_home() / "labelstudio").expanduser().resolve()
    document_root = Path(document_root or Path.cwd()).expanduser().resolve()
    if not document_root.is_dir():
        raise InvalidInputError(f"document_root={document_root} is not a folder; pass the folder your media lives in.")
    creds = Credentials.load_or_create(data_dir)
    url = f"http://{LOOPBACK}:{port}"
    env = _server_environment(url, document_root, creds)
    log_path = data_dir / "label-studio.log"
    cmd = [str(exe), "start", "--no-browser", "--port", str(port), "--data-dir", str(data_dir),
           "--internal-host", LOOPBACK]
    logger.info("Starting Label Studio at %s (data in %s, log %s)", url, data_dir, log_path)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    server = LabelStudioServer(url, port, data_dir, document_root, creds, process, log_path)
    try:
        _wait_until_ready(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def _server_environment(url: str, document_root: Path, creds: Credentials) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LABEL_STUDIO_USERNAME=creds.username,
        LABEL_STUDIO_PASSWORD=creds.password,
        LABEL_STUDIO_USER_TOKEN=creds.token,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LABEL_STUDIO_HOST=url,
        LATEST_VERSION_CHECK="0",
        COLLECT_ANALYTICS="0",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
    )
    return env


def _wait_until_ready(server: LabelStudioServer, timeout_s: float) -> None:
    """Poll ``/health`` and then check the token works; fail fast when the process dies."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if not server.is_running():
                raise LabelStudioServerError(
                    f"Label Studio exited with code {server.process.returncode} before answering on "
                    f"{server.url}. Last log lines ({server.log_path}):\n{_log_tail(server.log_path)}"
                )
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise LabelStudioServerError(
                f"Label Studio did not answer on {server.url}/health within {timeout_s:.0f} s. "
                f"Last log lines ({server.log_path}):\n{_log_tail(server.log_path)}"
            )
        whoami = client.get("/api/current-user/whoami", headers={"Authorization": f"Token {server.token}"})
        if whoami.status_code != 200:
            raise LabelStudioServerError(
                f"Label Studio at {server.url} answers but rejects curate-loop's API token "
                f"(HTTP {whoami.status_code}). The data dir {server.data_dir} was probably created by "
                "another tool: use a fresh --data-dir."
            )


def _log_tail(path: Path, n_lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n_lines:])
    except OSError:
        return "(no log)"
