"""Projects, media storage, views and tasks on the server: each step safe to repeat.

Identity: a task is ``(data.fo_sample_id, data.fo_batch)`` inside the project of a dataset + label field (the
project's description carries that key, with the dataset's id: a dataset rebuilt under the same name is another
dataset and gets another project). :func:`import_missing` looks the batch's tasks up first and imports only
the samples without one, in chunks, each POST sent once (the SDK's automatic retries are off). When a chunk's POST
fails without an answer the server may or may not have created it, so the batch is listed again before going on;
at the end any sample holding several tasks (a killed run, a duplicate from elsewhere) keeps one (the annotated
one, else the oldest) and the rest are deleted. So a push can be killed anywhere and re-run: every sample ends
with exactly one task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .client import BATCH_KEY, SAMPLE_KEY, Connection
from .errors import LabelStudioAPIError, LabelStudioUnreachable, MediaNotServedError
from .labelconfig import config_classes, label_config, merged_classes

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1000  # tasks per import POST: far under the server's 250k tasks / 200 MB, small enough to resume
MAX_TITLE = 50  # Label Studio's limit on project titles
LOCAL_FILES_PREFIX = "/data/local-files/?d="
UPLOAD_MAX_FILES = 50  # images per upload POST: the server refuses more than 100 files in one request
UPLOAD_MAX_BYTES = 100 * 2**20  # bytes per upload POST: the server refuses more than 250 MB
UPLOAD_TIMEOUT_S = 300.0
CLOUD_SCHEMES = ("s3://", "gs://", "azure-blob://", "http://", "https://")
DOCUMENT_ROOT_ENV = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
Progress = Callable[[float, str], None]


def project_key(dataset_name: str, label_field: str, dataset_id: str | None = None) -> str:
    """The marker in a project's description that says which dataset and field it labels. It holds the dataset's
    id: a dataset deleted and rebuilt under the same name gets a new project, never the old one's tasks."""
    if dataset_id is None:  # how projects were marked before the id was part of the key
        return f"curate-loop: dataset={dataset_name} field={label_field}"
    return f"curate-loop: dataset={dataset_name} id={dataset_id} field={label_field}"


def project_title(dataset_name: str, label_field: str) -> str:
    title = f"{dataset_name} · {label_field}"
    if len(title) <= MAX_TITLE:
        return title.ljust(3, "_")
    digest = hashlib.sha1(title.encode()).hexdigest()[:6]
    return f"{title[:MAX_TITLE - 8]}… {digest}"


def find_project(conn: Connection, dataset_name: str, label_field: str, project_id: int | None = None, *,
                 dataset_id: str | None = None):
    """The project of this dataset + field: ``project_id`` (recorded by this very dataset) when it still exists,
    else the one whose description holds the dataset's key (:func:`project_key`, with its id when given)."""
    key = project_key(dataset_name, label_field, dataset_id)
    if project_id is not None:
        try:
            project = conn.call(f"reading project {project_id}", conn.sdk.projects.get, id=project_id)
            description = project.description or ""
            if description == key:
                return project
            if dataset_id is not None and description == project_key(dataset_name, label_field):
                # recorded by this dataset's own run before keys held the id: mark it with the id from now on
                return conn.call(f"marking project {project_id}", conn.sdk.projects.update, id=project_id,
                                 description=key)
        except LabelStudioAPIError as exc:
            if exc.status_code != 404:
                raise
    pager = conn.call("listing projects", conn.sdk.projects.list, search=project_title(dataset_name, label_field)[:20],
                      page_size=100)
    for project in conn.call("listing projects", list, pager):
        if (project.description or "") == key:
            return conn.call(f"reading project {project.id}", conn.sdk.projects.get, id=project.id)
    return None


def ensure_project(conn: Connection, dataset_name: str, label_field: str, kind: str, classes: list[str],
                   project_id: int | None = None, *, dataset_id: str | None = None):
    """``(project, fresh)``: the project, created on first use (``fresh``: created by this call, so it holds no
    storage, tab or task yet); its config grows to offer every class in ``classes``."""
    project = find_project(conn, dataset_name, label_field, project_id, dataset_id=dataset_id)
    if project is None:
        config = label_config(kind, classes)
        try:
            return conn.call("creating the project", conn.sdk.projects.create,
                             title=project_title(dataset_name, label_field),
                             description=project_key(dataset_name, label_field, dataset_id), label_config=config), True
        except LabelStudioUnreachable:
            # The POST may have landed: look before anyone creates a second one.
            project = find_project(conn, dataset_name, label_field, dataset_id=dataset_id)
            if project is None:
                raise
    current = config_classes(project.label_config)
    wanted = merged_classes(current, classes)
    if wanted != current:
        project = conn.call("adding classes to the label config", conn.sdk.projects.update, id=project.id,
                            label_config=label_config(kind, wanted))
    return project, False


# -- media ---------------------------------------------------------------------------------------------------------
def document_root(explicit: str | os.PathLike | None = None) -> Path | None:
    root = explicit or os.environ.get(DOCUMENT_ROOT_ENV)
    return Path(root).expanduser().resolve() if root else None


MEDIA_MODES = ("local_files", "upload", "cloud")


def media_urls(filepaths: list[str], root: Path | None, mode: str = "local_files") -> tuple[list[str | None], list[str]]:
    """``(URL per file, local folders to serve)``: cloud URLs pass through, local files under ``root`` become
    local-files URLs; a local file outside ``root`` (or with no root) gets ``None``: it has to be uploaded.

    ``mode`` (the manifest's ``labelstudio.media``): ``"upload"`` gives every local file ``None`` (uploaded even where
    the server could read it from disk); ``"cloud"`` refuses local files (:class:`MediaNotServedError`)."""
    if mode not in MEDIA_MODES:
        raise ValueError(f"media={mode!r}; choose one of {MEDIA_MODES}")
    if mode == "cloud":
        local_paths = [p for p in filepaths if not p.startswith(CLOUD_SCHEMES)]
        if local_paths:
            raise MediaNotServedError(
                f"labelstudio.media is 'cloud' but {len(local_paths)} of {len(filepaths)} samples are local files "
                f"(e.g. {local_paths[0]}); nothing was pushed. Point their filepaths at s3://, gs://, azure-blob:// or "
                "http(s):// URLs, or set labelstudio.media to 'local_files' or 'upload'.")
        return list(filepaths), []
    if mode == "upload":
        return [p if p.startswith(CLOUD_SCHEMES) else None for p in filepaths], []
    urls, local = [], []
    folders_resolved: dict[str, Path] = {}  # one resolve() per folder, not per file (10k files: 1.4 s -> 0.1 s)
    for path in filepaths:
        if path.startswith(CLOUD_SCHEMES):
            urls.append(path)
            continue
        folder, name = os.path.split(os.path.abspath(path))
        if folder not in folders_resolved:
            folders_resolved[folder] = Path(folder).resolve()
        resolved = folders_resolved[folder] / name
        if root is None or not resolved.is_relative_to(root):
            urls.append(None)
            continue
        urls.append(LOCAL_FILES_PREFIX + quote(str(resolved.relative_to(root)), safe="/"))
        local.append(str(resolved.parent))
    folders = [os.path.commonpath(local)] if local else []
    return urls, folders


def upload_chunks(paths: list[str], *, max_files: int = UPLOAD_MAX_FILES,
                  max_bytes: int = UPLOAD_MAX_BYTES) -> list[list[str]]:
    """``paths`` in request-sized groups: at most ``max_files`` files and ``max_bytes`` bytes each (one larger file
    alone), under the server's limits of 100 files and 250 MB per request."""
    chunks, current, size = [], [], 0
    for path in paths:
        try:
            n_bytes = os.path.getsize(path)
        except OSError as exc:
            raise MediaNotServedError(f"Cannot upload {path} to Label Studio: {exc.strerror}. Restore the file or "
                                      "leave its sample out of the batch.") from None
        if current and (len(current) == max_files or size + n_bytes > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(path)
        size += n_bytes
    if current:
        chunks.append(current)
    return chunks


def upload_files(conn: Connection, project_id: int, paths: list[str], *,
                 progress: Progress | None = None) -> dict[str, str]:
    """Upload ``paths`` to the project's storage without creating tasks; returns path -> the URL the server serves
    the copy from. The fallback for media the server cannot read from disk or the cloud; each POST is sent once
    (a failed one is reported, and a re-run uploads what is still missing)."""
    urls: dict[str, str] = {}
    chunks = upload_chunks(paths)
    for n, chunk in enumerate(chunks):
        handles = [open(path, "rb") for path in chunk]
        try:
            # one form field per file: the server keeps one file per field name, in the order sent
            files = [(f"file{k}", (Path(path).name, handle)) for k, (path, handle) in enumerate(zip(chunk, handles))]
            try:
                response = conn._http.post(f"/api/projects/{project_id}/import", params={"commit_to_project": "false"},
                                           files=files, headers=conn._headers(), timeout=UPLOAD_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 (httpx transport errors; translated with the key scrubbed)
                raise conn.translate(exc, f"uploading {len(chunk)} images") from exc
        finally:
            for handle in handles:
                handle.close()
        if response.status_code >= 400:
            raise LabelStudioAPIError(f"Label Studio at {conn.url} refused an upload of {len(chunk)} images (HTTP "
                                      f"{response.status_code}): {conn._scrub(response.text)[:300]}",
                                      status_code=response.status_code)
        upload_ids = response.json().get("file_upload_ids") or []
        stored = {u["id"]: u["file"] for u in conn.get_json(f"/api/projects/{project_id}/file-uploads",
                                                             {"ids": json.dumps(upload_ids)}, what="reading uploads")}
        if len(upload_ids) != len(chunk) or any(i not in stored for i in upload_ids):
            raise LabelStudioAPIError(f"Label Studio at {conn.url} stored {len(stored)} of {len(chunk)} uploaded "
                                      "images; push again to upload the rest.")
        for path, upload_id in zip(chunk, upload_ids):  # the server keeps the order of the request's files
            urls[path] = "/data/" + stored[upload_id].lstrip("/")
        if progress:
            progress((n + 1) / len(chunks), f"uploaded {len(urls)}/{len(paths)} images")
    return urls


def ensure_local_storage(conn: Connection, project_id: int, folder: str, sample_url: str, *,
                         fresh: bool = False) -> None:
    """A local-files storage on the project covering ``folder`` (Label Studio serves local files only from such
    storages), and a check that the server really sees ``sample_url`` (same filesystem). ``fresh``: the project was
    just created, so there is no storage to look for."""
    storages = [] if fresh else conn.call("listing local storages", conn.sdk.import_storage.local.list,
                                          project=project_id)
    if not any(folder == s.path or folder.startswith((s.path or "").rstrip("/") + "/") for s in storages):
        conn.call(f"adding local-files storage {folder}", conn.sdk.import_storage.local.create, project=project_id,
                  path=folder, title="curate-loop media", use_blob_urls=True)
    response = conn._http.get(sample_url, headers=conn._headers())
    if response.status_code != 200:
        raise MediaNotServedError(
            f"Label Studio at {conn.url} cannot read {sample_url} (HTTP {response.status_code}): the server does not "
            f"see the same files. Start it with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (or --media-root) set to the "
            "same folder as the client's.")


def ensure_view(conn: Connection, project_id: int, batch: str, *, fresh: bool = False) -> int:
    """The Data Manager tab of ``batch`` (its tasks, highest priority first); created once (``fresh``: the project
    was just created, so there is none to look for)."""
    views = [] if fresh else conn.call("listing Data Manager tabs", conn.sdk.views.list, project=project_id)
    for view in views:
        if (view.data or {}).get("title") == batch:
            return view.id
    data = {"title": batch, "ordering": ["-tasks:predictions_score"],
            "filters": {"conjunction": "and", "items": [
                {"filter": f"filter:tasks:data.{BATCH_KEY}", "operator": "equal", "type": "String", "value": batch}]}}
    return conn.call(f"creating the tab {batch!r}", conn.sdk.views.create, project=project_id, data=data).id


# -- tasks ---------------------------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    task_ids: dict[str, int]  # sample id -> task id
    created: int = 0
    already_there: int = 0
    duplicates_deleted: int = 0
    ambiguous_chunks: int = 0  # POSTs that failed without an answer (re-listed before going on)


def batch_tasks(conn: Connection, project_id: int, batch: str, include: str = "id,data,total_annotations",
                progress: Progress | None = None) -> list[dict]:
    """Every task of ``batch`` in the project (few fields: listing thousands with all fields is slow)."""
    tasks = []
    for page, total in conn.iter_task_pages(project_id, batch=batch, include=include):
        tasks.extend(page)
        if progress:
            progress(len(tasks) / max(total, 1), f"read {len(tasks)}/{total} tasks")
    return tasks


def _index(tasks: list[dict]) -> dict[str, list[dict]]:
    index: dict[str, list[dict]] = {}
    for task in tasks:
        index.setdefault(str(task["data"].get(SAMPLE_KEY)), []).append(task)
    return index


def import_missing(conn: Connection, project_id: int, batch: str, tasks: list[dict], *,
                   chunk_size: int = CHUNK_SIZE, progress: Progress | None = None,
                   max_rounds: int = 3, fresh: bool = False) -> ImportReport:
    """Import the ``tasks`` (each with ``data[SAMPLE_KEY]`` and ``data[BATCH_KEY] == batch``) that the project does
    not hold yet, then make sure each sample has exactly one task of this batch. ``fresh``: the project was just
    created, so it holds no task to look up."""
    step = progress or (lambda fraction, label: None)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    existing = {} if fresh else _index(batch_tasks(conn, project_id, batch))
    had_duplicates = any(len(v) > 1 for v in existing.values())
    already = sum(1 for t in tasks if str(t["data"][SAMPLE_KEY]) in existing)
    created, ambiguous = 0, 0
    for _round in range(max_rounds):
        missing = [t for t in tasks if str(t["data"][SAMPLE_KEY]) not in existing]
        if not missing:
            break
        uncertain = False
        for start in range(0, len(missing), chunk_size):
            chunk = missing[start:start + chunk_size]
            try:
                ids = conn.import_tasks(project_id, chunk,
                                        what=f"importing tasks {start + 1}-{start + len(chunk)} of {len(missing)}")
            except LabelStudioUnreachable:
                ambiguous += 1
                uncertain = True  # it may have landed: list again before importing anything else
                logger.warning("An import POST got no answer; listing the batch again before going on")
                break
            if len(ids) != len(chunk):  # an asynchronous import (non-Community editions) answers without ids
                uncertain = True
                logger.warning("The server did not return the new task ids; listing the batch again before going on")
                break
            for task, task_id in zip(chunk, ids):
                existing.setdefault(str(task["data"][SAMPLE_KEY]), []).append({"id": task_id, "data": task["data"],
                                                                               "total_annotations": 0})
            created += len(ids)
            step((already + created) / max(len(tasks), 1), f"imported {already + created}/{len(tasks)} tasks")
        if uncertain:
            existing = _index(batch_tasks(conn, project_id, batch))
            had_duplicates = True
    else:
        missing = [t for t in tasks if str(t["data"][SAMPLE_KEY]) not in existing]
        if missing:
            raise LabelStudioUnreachable(f"Label Studio at {conn.url} did not take {len(missing)} tasks of batch "
                                         f"{batch!r} after {max_rounds} tries; re-run the push (it is safe to).")
    deleted = 0
    if had_duplicates:
        existing = _index(batch_tasks(conn, project_id, batch))
        extra = []
        for copies in existing.values():
            if len(copies) > 1:
                keep = max(copies, key=lambda t: (t.get("total_annotations") or 0, -t["id"]))
                extra += [t["id"] for t in copies if t["id"] != keep["id"]]
        if extra:
            delete_tasks(conn, project_id, extra)
            deleted = len(extra)
            existing = _index(batch_tasks(conn, project_id, batch))
    task_ids = {sid: copies[0]["id"] for sid, copies in existing.items()}
    return ImportReport(task_ids=task_ids, created=created, already_there=already, duplicates_deleted=deleted,
                        ambiguous_chunks=ambiguous)


def delete_tasks(conn: Connection, project_id: int, task_ids: list[int]) -> None:
    """Delete tasks in one Data Manager action (idempotent: deleting twice deletes nothing more)."""
    conn.call(f"deleting {len(task_ids)} duplicate tasks", conn.sdk.actions.create, id="delete_tasks",
              project=project_id, selected_items={"all": False, "included": list(task_ids)})


EXPORT_CHUNK = 300  # task ids per export request: ~3 KB of query string, well under proxies' usual 8 KB line limit


def annotated_tasks(conn: Connection, project_id: int, task_ids, *, chunk_size: int = EXPORT_CHUNK,
                    progress: Progress | None = None) -> list[dict]:
    """Those of ``task_ids`` that have annotations (cancelled ones included), with their annotations, all read
    before anything is applied. Read through the project's JSON export filtered to the ids: it serialises a
    1,000-task batch in a third of the time the task list takes."""
    ids = sorted(int(i) for i in task_ids)
    tasks = []
    for start in range(0, len(ids), chunk_size):
        chunk = ids[start:start + chunk_size]
        body = conn.get_json(f"/api/projects/{project_id}/export",
                             {"exportType": "JSON", "download_all_tasks": "true", "ids[]": chunk},
                             what=f"reading annotations of project {project_id} (tasks {start + 1}-{start + len(chunk)})")
        tasks.extend({"id": t["id"], "data": t["data"], "annotations": t["annotations"]}
                     for t in body if t.get("annotations"))
        if progress:
            progress(min(start + chunk_size, len(ids)) / max(len(ids), 1),
                     f"read {min(start + chunk_size, len(ids))}/{len(ids)} tasks")
    return tasks


def annotator_id(annotation: dict):
    """``completed_by`` is a user id in the export (a dict with one in some server versions)."""
    who = annotation.get("completed_by")
    return who.get("id") if isinstance(who, dict) else who


def user_names(conn: Connection) -> dict[int, str]:
    """Annotator names (email, else username) by user id."""
    users = conn.call("listing users", conn.sdk.users.list)
    return {u.id: (u.email or u.username or str(u.id)) for u in users}

