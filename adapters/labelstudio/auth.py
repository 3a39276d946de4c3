"""Label Studio API keys: legacy tokens (``Token``) and Personal Access Tokens (JWT refresh tokens, ``Bearer``).

Every key problem is one :class:`LabelStudioAuthError` line that names the kind of key and the fix, found before
any request where it can be (:func:`check_key`: surrounding whitespace, a non-ASCII character, a malformed or expired
token) and from the server's answer otherwise (:func:`rejected`: revoked, wrong server, legacy tokens switched off).

The key is a secret: it is sent in headers only and never appears in messages we produce (not even in part).
"""

from __future__ import annotations

import base64
import json
import string
import time

import httpx

from curate_loop.errors import LabelStudioAuthError

HTTP_TIMEOUT_S = 10.0
PAT, LEGACY = "personal access token", "legacy token"
PAT_HINT = ("Create a new Personal Access Token in Label Studio (Account & Settings > Personal Access Token) and "
            "export LABEL_STUDIO_API_KEY=<it>.")
LEGACY_HINT = ("Copy the legacy token again from Account & Settings in Label Studio and export LABEL_STUDIO_API_KEY=<it> "
               "(legacy tokens also need LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true on the server), or use a Personal "
               "Access Token.")
# What a key may hold: JWTs are base64url parts joined by dots; legacy tokens are hex (any of these characters).
KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.")


def is_personal_access_token(key: str) -> bool:
    """PATs are JWT refresh tokens (three base64url parts, the header starting ``eyJ``)."""
    return key.startswith("eyJ") and key.count(".") == 2


def key_kind(key: str) -> str:
    return PAT if key.strip().startswith("eyJ") else LEGACY


def fix_for(key: str) -> str:
    """What to do about a bad key of this kind."""
    return PAT_HINT if key_kind(key) == PAT else LEGACY_HINT


def check_key(key: str) -> str:
    """``key`` when it can be sent as it is; else :class:`LabelStudioAuthError` saying what is wrong with it.

    Surrounding whitespace (a trailing newline from ``$(cat key.txt)``) is refused, not stripped: a key is a secret
    copied by hand, and a silently edited one would hide where the copy went wrong."""
    kind = key_kind(key)
    if key != key.strip():
        where = "a trailing newline" if key.endswith(("\n", "\r")) else "surrounding whitespace"
        raise LabelStudioAuthError(
            f"The Label Studio API key ({kind}) has {where}; it was refused, not stripped. Export it without: "
            "export LABEL_STUDIO_API_KEY=\"$(tr -d '[:space:]' < KEYFILE)\" (or copy it again).")
    if not key.isascii():
        position = next(i for i, c in enumerate(key) if not c.isascii())
        raise LabelStudioAuthError(
            f"The Label Studio API key ({kind}) has a non-ASCII character at position {position + 1} of {len(key)} "
            f"(a typographic quote or dash from copying?); keys are plain ASCII. {fix_for(key)}")
    bad = sorted({c for c in key if c not in KEY_CHARACTERS})
    if not key or bad:
        what = "is empty" if not key else "holds characters no key has (spaces, quotes or other punctuation)"
        raise LabelStudioAuthError(f"The Label Studio API key ({kind}) {what}: it is malformed. {fix_for(key)}")
    if kind == PAT:
        _check_personal_access_token(key)
    return key


def _check_personal_access_token(key: str) -> None:
    parts = key.split(".")
    if len(parts) != 3 or not all(parts):
        raise LabelStudioAuthError(
            f"The Label Studio API key looks like a {PAT} (it starts with eyJ) but has {len(parts)} of its 3 "
            f"dot-separated parts: it is malformed (cut short when copied?). {PAT_HINT}")
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        raise LabelStudioAuthError(f"The Label Studio {PAT} is malformed (its middle part is not base64 JSON). "
                                   f"{PAT_HINT}") from None
    expires = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(expires, (int, float)):
        raise LabelStudioAuthError(f"The Label Studio {PAT} has no expiry date, so Label Studio cannot accept it: "
                                   f"it is malformed. {PAT_HINT}")
    if expires < time.time():
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
        raise LabelStudioAuthError(f"The Label Studio {PAT} expired on {when}. {PAT_HINT}")


def rejected(url: str, key: str, status: int, what: str | None = None) -> LabelStudioAuthError:
    """The error for a server that answered ``status`` (401/403) to ``key``."""
    doing = f" while {what}" if what else ""
    if key_kind(key) == PAT:
        why = "it was revoked, has expired, or belongs to another server"
    else:
        why = "it is wrong, belongs to another server, or legacy tokens are switched off there"
    return LabelStudioAuthError(f"Label Studio at {url} rejected the {key_kind(key)} (HTTP {status}){doing}: {why}. "
                                f"{fix_for(key)}")


def auth_headers(url: str, key: str) -> dict[str, str]:
    """Headers for one request; a PAT is exchanged for a short-lived access token first."""
    check_key(key)
    if not is_personal_access_token(key):
        return {"Authorization": f"Token {key}"}
    response = _request("POST", f"{url.rstrip('/')}/api/token/refresh", json={"refresh": key})
    if response.status_code != 200:
        raise rejected(url, key, response.status_code)
    return {"Authorization": f"Bearer {response.json()['access']}"}


def whoami(url: str, key: str) -> dict:
    """The user the key belongs to; raises :class:`LabelStudioAuthError` when it does not work."""
    response = _request("GET", f"{url.rstrip('/')}/api/current-user/whoami", headers=auth_headers(url, key))
    if response.status_code != 200:
        raise rejected(url, key, response.status_code)
    return response.json()


def _request(method: str, url: str, **kwargs) -> httpx.Response:
    try:
        return httpx.request(method, url, timeout=HTTP_TIMEOUT_S, **kwargs)
    except httpx.HTTPError as exc:
        raise LabelStudioAuthError(
            f"Label Studio at {url.split('/api/')[0]} is not reachable ({type(exc).__name__}). Start it "
            "(`curate-loop labelstudio serve`) or fix LABEL_STUDIO_URL."
        ) from exc
