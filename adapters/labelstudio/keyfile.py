"""The Label Studio key file: the URL and API key of the server last started for this user, for any terminal.

``make demo`` and ``curate-loop labelstudio serve`` write ``<curate_loop_home()>/labelstudio.env`` (mode 0600)::

    export LABEL_STUDIO_URL=http://127.0.0.1:8080
    export LABEL_STUDIO_API_KEY=...

A user can ``source`` it; every command that talks to Label Studio also reads it when the environment has no key
(:func:`resolve_credentials`), and only for the server it names: a key is never sent to another URL.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from curate_loop.paths import curate_loop_home

URL_ENV, KEY_ENV = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"
ENV_FILE_NAME = "labelstudio.env"


def default_env_file() -> Path:
    """``<curate_loop_home()>/labelstudio.env``."""
    return curate_loop_home() / ENV_FILE_NAME


def write_env_file(url: str, api_key: str, path: str | os.PathLike | None = None) -> Path:
    """Write ``export LABEL_STUDIO_URL=...`` / ``export LABEL_STUDIO_API_KEY=...`` to ``path`` (default
    :func:`default_env_file`), readable by its owner only; returns the path. ``source`` it in any terminal."""
    path = Path(path or default_env_file()).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"export {URL_ENV}={shlex.quote(url.rstrip('/'))}\nexport {KEY_ENV}={shlex.quote(api_key)}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)  # an older file keeps its mode through O_CREAT
    return path


@dataclass(frozen=True)
class EnvFile:
    path: Path
    url: str | None
    api_key: str | None = field(repr=False)


def read_env_file(path: str | os.PathLike | None = None) -> EnvFile | None:
    """The URL and key in the key file, or None when there is no (readable) file."""
    path = Path(path or default_env_file()).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    values = {}
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if words[:1] == ["export"]:
            words = words[1:]
        if len(words) == 1 and "=" in words[0]:
            name, value = words[0].split("=", 1)
            values[name] = value
    return EnvFile(path, (values.get(URL_ENV) or "").rstrip("/") or None, values.get(KEY_ENV) or None)


@dataclass(frozen=True)
class Credentials:
    """The URL and key to use, and where the key came from (``None``: no key anywhere)."""

    url: str | None
    api_key: str | None = field(repr=False)
    key_source: str | None  # "argument", "$LABEL_STUDIO_API_KEY" or the key file's path
    from_file: bool = False


def resolve_credentials(url: str | None = None, api_key: str | None = None, *,
                        env_file: str | os.PathLike | None = None) -> Credentials:
    """``url``/``api_key`` when given, else ``$LABEL_STUDIO_URL``/``$LABEL_STUDIO_API_KEY``, else the key file's
    (its key only when it names the same server as the URL in use, or when no URL is given at all)."""
    url = url or os.environ.get(URL_ENV) or None
    if api_key:
        return Credentials(url, api_key, "argument")
    if os.environ.get(KEY_ENV):
        return Credentials(url, os.environ[KEY_ENV], f"${KEY_ENV}")
    stored = read_env_file(env_file)
    if stored is None or not stored.api_key:
        return Credentials(url, None, None)
    if url and stored.url and url.rstrip("/") != stored.url:
        return Credentials(url, None, None)  # the file's key belongs to another server
    return Credentials(url or stored.url, stored.api_key, str(stored.path), from_file=True)
