"""Label Studio API keys: legacy tokens (``Token``) and Personal Access Tokens (JWT, ``Bearer``).

The key is a secret: it is sent in headers only and never appears in messages we produce.
"""

from __future__ import annotations

import httpx

from curate_loop.errors import LabelStudioAuthError

HTTP_TIMEOUT_S = 10.0
NEW_KEY_HINT = (
    "Create a token under Account & Settings in Label Studio and export LABEL_STUDIO_API_KEY; legacy "
    "tokens also need LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true on the server."
)


def is_personal_access_token(key: str) -> bool:
    """PATs are JWT refresh tokens (three base64 parts, header starting ``eyJ``)."""
    return key.startswith("eyJ") and key.count(".") == 2


def key_kind(key: str) -> str:
    return "personal access token" if is_personal_access_token(key) else "legacy token"


def auth_headers(url: str, key: str) -> dict[str, str]:
    """Headers for one request; a PAT is exchanged for a short-lived access token first."""
    if not is_personal_access_token(key):
        return {"Authorization": f"Token {key}"}
    response = _request("POST", f"{url.rstrip('/')}/api/token/refresh", json={"refresh": key})
    if response.status_code != 200:
        raise LabelStudioAuthError(
            f"{url} rejected the personal access token (HTTP {response.status_code}). {NEW_KEY_HINT}"
        )
    return {"Authorization": f"Bearer {response.json()['access']}"}


def whoami(url: str, key: str) -> dict:
    """The user the key belongs to; raises :class:`LabelStudioAuthError` when it does not work."""
    response = _request("GET", f"{url.rstrip('/')}/api/current-user/whoami", headers=auth_headers(url, key))
    if response.status_code != 200:
        raise LabelStudioAuthError(f"{url} rejected the {key_kind(key)} (HTTP {response.status_code}). {NEW_KEY_HINT}")
    return response.json()


def _request(method: str, url: str, **kwargs) -> httpx.Response:
    try:
        return httpx.request(method, url, timeout=HTTP_TIMEOUT_S, **kwargs)
    except httpx.HTTPError as exc:
        raise LabelStudioAuthError(
            f"Label Studio at {url.split('/api/')[0]} is not reachable ({type(exc).__name__}). Start it "
            "(`curate-loop labelstudio serve`) or fix LABEL_STUDIO_URL."
        ) from exc
