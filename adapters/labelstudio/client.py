"""One connection to a Label Studio server: the SDK client for writes, paged JSON reads, errors translated once.

Writes go through label-studio-sdk with ``max_retries=0``, and task imports (the one large write) through plain
httpx, which never retries: the SDK would otherwise re-send a POST after a timeout or a 5xx, and an import that
reached the server would then create its tasks twice. Callers make writes safe to repeat themselves (see
:mod:`.tasks`). Reads are idempotent, so :meth:`Connection.get_json` retries them.

The API key lives in the SDK client's headers only: never in ``repr``, messages or logs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from .auth import check_key, rejected
from .errors import LabelStudioAPIError, LabelStudioKeyMissing, LabelStudioUnreachable
from .keyfile import KEY_ENV, URL_ENV, default_env_file, resolve_credentials

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 120.0  # an import of a few thousand tasks takes seconds on 2 cores; keep it finite
READ_RETRIES = 2  # idempotent GETs only
READ_RETRY_DELAY_S = 1.0
PAGE_SIZE = 1000
SETUP_HINT = (f"Set {URL_ENV} and {KEY_ENV} (or the plugin secrets of the same names), or `source` the key file "
              "that `curate-loop labelstudio serve` and `make demo` write.")


def connect(url: str | None = None, api_key: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> "Connection":
    """A connection from explicit values, else ``$LABEL_STUDIO_URL`` / ``$LABEL_STUDIO_API_KEY``, else the key file
    (see :mod:`.keyfile`; its key is used only for the server it names)."""
    creds = resolve_credentials(url, api_key)
    if not creds.url or not creds.api_key:
        missing = [name for name, value in ((URL_ENV, creds.url), (KEY_ENV, creds.api_key)) if not value]
        raise LabelStudioKeyMissing(f"No Label Studio {' and '.join(missing)} given, and no key file at "
                                    f"{default_env_file()} for {creds.url or 'any server'}. {SETUP_HINT}")
    if creds.from_file:
        logger.info("Label Studio key from %s", creds.key_source)
    return Connection(creds.url, creds.api_key, timeout=timeout)


class Connection:
    """The SDK client (no automatic retries) plus paged reads; every error becomes one of ours."""

    def __init__(self, url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT_S):
        from label_studio_sdk import LabelStudio
        from label_studio_sdk.core.api_error import ApiError

        self.url = url.rstrip("/")
        self._secret = check_key(api_key)  # whitespace, non-ASCII, malformed or expired: one clear line, no request
        try:  # the SDK decodes a PAT here and raises ApiError for one it cannot use
            self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout, max_retries=0)
        except ApiError as exc:
            raise rejected(self.url, api_key, exc.status_code or 401, "reading the key") from None
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def __repr__(self) -> str:
        return f"Connection({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- error translation ---------------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def translate(self, exc: Exception, what: str) -> Exception:
        """Our error for an SDK or httpx error raised while doing ``what``."""
        from label_studio_sdk.core.api_error import ApiError

        if isinstance(exc, httpx.TransportError):
            return LabelStudioUnreachable(f"Label Studio at {self.url} did not answer while {what} "
                                          f"({type(exc).__name__}).")
        if isinstance(exc, ApiError):
            code = exc.status_code
            if code in (401, 403):
                return rejected(self.url, self._secret, code, what)
            body = exc.body if isinstance(exc.body, str) else json.dumps(exc.body, default=str)
            return LabelStudioAPIError(f"Label Studio at {self.url} answered HTTP {code} while {what}: "
                                       f"{self._scrub(body)[:400]}", status_code=code)
        return exc

    def call(self, what: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        """``fn(*args, **kwargs)`` (an SDK call) with its errors translated."""
        from label_studio_sdk.core.api_error import ApiError

        try:
            return fn(*args, **kwargs)
        except (httpx.TransportError, ApiError) as exc:
            raise self.translate(exc, what) from exc

    # -- reads ---------------------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        """The SDK's own auth headers: legacy token, or a PAT exchanged (and refreshed) for an access token; the
        exchange's errors (a revoked PAT: ApiError, a server gone: transport errors) become ours."""
        from label_studio_sdk.core.api_error import ApiError

        try:
            return self.sdk._client_wrapper.get_headers()
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise rejected(self.url, self._secret, exc.status_code, "exchanging the key for an access token") \
                    from None
            raise self.translate(exc, "exchanging the key for an access token") from None
        except httpx.TransportError as exc:
            raise self.translate(exc, "exchanging the key for an access token") from exc
        except ValueError:  # a refresh answer that is not JSON (a proxy's error page)
            raise LabelStudioAPIError(f"Label Studio at {self.url} gave an unreadable answer to the key exchange "
                                      "(not JSON): check LABEL_STUDIO_URL points at Label Studio.") from None

    def get_json(self, path: str, params: dict | None = None, *, what: str) -> Any:
        """GET ``path`` as JSON; retried on connection errors and 5xx (reads are idempotent)."""
        for attempt in range(READ_RETRIES + 1):
            try:
                response = self._http.get(path, params=params, headers=self._headers())
            except httpx.TransportError as exc:
                if attempt == READ_RETRIES:
                    raise self.translate(exc, what) from exc
            else:
                if response.status_code < 500 or attempt == READ_RETRIES:
                    break
            time.sleep(READ_RETRY_DELAY_S * (attempt + 1))
        return self._json(response, what)

    def import_tasks(self, project_id: int, tasks: list[dict], *, what: str) -> list[int]:
        """POST ``tasks`` to the project's import, sent once (never retried); the created task ids in input order.

        Plain ``json.dumps`` through httpx: the SDK's generic request encoder walks every value of every task in
        Python (a third of a second per 1,000 tasks with pre-annotations, a fifth of the whole push)."""
        try:
            response = self._http.post(f"/api/projects/{project_id}/import", params={"return_task_ids": "true"},
                                       content=json.dumps(tasks),
                                       headers={**self._headers(), "Content-Type": "application/json"})
        except httpx.TransportError as exc:
            raise self.translate(exc, what) from exc
        return list(self._json(response, what).get("task_ids") or [])

    def _json(self, response: httpx.Response, what: str) -> Any:
        """The body of a finished request as JSON, or our error for its status."""
        if response.status_code in (401, 403):
            raise rejected(self.url, self._secret, response.status_code, what)
        if response.status_code >= 400:
            raise LabelStudioAPIError(f"Label Studio at {self.url} answered HTTP {response.status_code} while {what}: "
                                      f"{self._scrub(response.text)[:400]}", status_code=response.status_code)
        return response.json()

    def iter_task_pages(self, project_id: int, *, batch: str | None = None, fields: str | None = None,
                        include: str | None = None,
                        page_size: int = PAGE_SIZE) -> Iterator[tuple[list[dict], int]]:
        """Pages of a project's tasks (those of ``batch`` when given) as ``(tasks, total)``."""
        params: dict[str, Any] = {"project": project_id, "page_size": page_size}
        if fields:
            params["fields"] = fields
        if include:
            params["include"] = include
        items = []
        if batch is not None:
            items.append({"filter": f"filter:tasks:data.{BATCH_KEY}", "operator": "equal", "type": "String",
                          "value": batch})
        if items:
            params["query"] = json.dumps({"filters": {"conjunction": "and", "items": items}})
        seen, page = 0, 1
        while True:
            body = self.get_json("/api/tasks", {**params, "page": page},
                                 what=f"reading tasks of project {project_id} (page {page})")
            tasks = body.get("tasks", [])
            total = int(body.get("total", 0))
            seen += len(tasks)
            if tasks:
                yield tasks, total
            if not tasks or seen >= total:
                return
            page += 1


# Keys every task of ours carries in its data (the identity a re-run looks tasks up by).
SAMPLE_KEY, BATCH_KEY, DATASET_KEY = "fo_sample_id", "fo_batch", "fo_dataset"
