"""A store of (id, vector) pairs for one embedding run, built for 1M samples and for several writers at once.

Why not MongoDB: one write per sample is the slow path FiftyOne users hit at scale. Here vectors go
to storage in chunks, each written whole (a temporary file renamed into place on a local disk, one PUT on an
object store), so an interrupted run leaves only whole chunks behind: a resumed run skips every id already stored,
and new samples are added as new chunks without touching the rest. A run is complete only once ``complete.json``
exists.

Where: ``root`` is a local folder or any fsspec URL (``s3://bucket/prefix`` with s3fs, ``file:///shared/mount``,
``memory://...``), so workers on several machines can write one run. Each store object is one *writer*: its chunk
names carry a sortable time, the host, the pid and a counter, so concurrent writers never pick the same name, and
reading chunks in name order keeps "the latest vector of an id wins". Failures go to one file per writer, merged on
read (the newest word on an id wins, so a later success clears an older failure).

Object vectors also keep the box each was cropped from (``boxes``), so a box moved or resized since (in Label
Studio, say) is recognised and embedded again. Chunks written before boxes were kept have none: their boxes read
as NaN ("unknown").

Layout of ``root``::

    config.json                      what computed the vectors (model, params): written first
    chunk-<time>-<writer>-<n>.npz    ids (str), vectors (float32, (n, dim)) and, for objects, boxes (float64, (n, 4))
    chunk-<time>-<writer>-<n>.ids.npz  the same ids alone, compressed (~0.1% of a 512-d chunk), written just before
                                     the chunk, so finding ids never reads vectors; older stores' chunks
                                     (``chunk-000000.npz``) have none
    failures-<writer>.json           {id: [time, reason or null]} from one writer (``failures.json``: older stores)
    complete.json                    counts; written last
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import socket
import time
from pathlib import Path

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from curate_loop.errors import InvalidInputError

CHUNK_NAME = re.compile(r"chunk-[A-Za-z0-9-]+\.npz")
OLD_CHUNK_NAME = re.compile(r"chunk-(\d+)\.npz")  # chunk-000000.npz: stores written by one process at a time
IDS_SUFFIX = ".ids.npz"
FAILURES_NAME = re.compile(r"failures(-[A-Za-z0-9-]+)?\.json")


class EmbeddingStore:
    """Append-only chunks of vectors keyed by id; see the module docstring for the layout.

    ``root``: a local path or an fsspec URL. ``url`` is it as a string; ``root`` the local folder (local stores).
    """

    def __init__(self, root: str | os.PathLike):
        self.url = os.fspath(root)
        try:
            self.fs, self._path = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise InvalidInputError(f"Cannot open the embedding store {self.url!r}: {exc} (for s3:// pip install "
                                    "'curate-loop[storage]').") from exc
        self._path = self._path.rstrip("/")
        self._local = isinstance(self.fs, LocalFileSystem)
        self._writer = _writer_name()
        self._last_time = 0
        self._counter = 0
        self._ids_cache: dict[str, np.ndarray] = {}  # chunk name -> its ids (chunks never change once written)
        self._own_failures: dict[str, list] | None = None

    @property
    def root(self) -> Path:
        if not self._local:
            raise InvalidInputError(f"The embedding store {self.url} is not on a local disk; this step needs a local "
                                    "one (unset CURATE_LOOP_STORE_URL / embeddings.store_url for this run).")
        return Path(self._path)

    def __repr__(self) -> str:
        return f"EmbeddingStore({self.url!r})"

    # -- writing -------------------------------------------------------------------------------
    def open(self, config: dict) -> "EmbeddingStore":
        """Create the store, or reopen it when ``config`` matches what it was created with.

        Safe when several processes open one store at once: with the same config all proceed, with another one
        every process but the first gets a clear error (on object stores: the config read back after writing).
        """
        self.fs.makedirs(self._path, exist_ok=True)
        data = _json_bytes(config)
        if self._local:
            self._link_once("config.json", data)
        elif not self._exists("config.json"):
            self.put_bytes("config.json", data)
        existing = self.config()
        if existing != json.loads(data):  # compared as stored (tuples read back as lists)
            raise InvalidInputError(
                f"The embedding store {self.url} was made with {existing}, not {config}. Use another run "
                "key, or delete the old run first."
            )
        return self

    def append(self, ids: list[str] | np.ndarray, vectors: np.ndarray, boxes: np.ndarray | None = None) -> None:
        """Store one chunk atomically; ``vectors`` has shape (len(ids), dim), ``boxes`` (objects only) the
        (len(ids), 4) relative boxes the vectors were cropped from."""
        vectors = np.asarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=str)
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise InvalidInputError(f"Expected vectors of shape ({len(ids)}, dim), got {vectors.shape}")
        arrays = {"ids": ids, "vectors": vectors}
        if boxes is not None:
            arrays["boxes"] = np.asarray(boxes, dtype=np.float64)
            if arrays["boxes"].shape != (len(ids), 4):
                raise InvalidInputError(f"Expected boxes of shape ({len(ids)}, 4), got {arrays['boxes'].shape}")
        if len(ids) == 0:
            return
        name = self._next_chunk_name()
        self.put_bytes(name.removesuffix(".npz") + IDS_SUFFIX, _npz_bytes(np.savez_compressed, ids=ids))
        self.put_bytes(name, _npz_bytes(np.savez, **arrays))  # the chunk exists from here on, whole
        self._ids_cache[name] = ids

    def record_failures(self, failures: dict[str, str], succeeded=()) -> None:
        """Add new failures and forget earlier ones whose ids now have a vector (e.g. a fixed file).

        Written to this writer's own file, so concurrent writers never overwrite each other's failures.
        """
        if self._own_failures is None:
            self._own_failures = {}
        stamp = self._now()
        known = self.failures()
        changed = False
        for sample_id, reason in failures.items():
            self._own_failures[str(sample_id)] = [stamp, str(reason)]
            changed = True
        for sample_id in succeeded:
            if sample_id in known or sample_id in failures:
                self._own_failures[str(sample_id)] = [stamp, None]  # newer than the failure: clears it
                changed = True
        if changed:
            self.put_bytes(f"failures-{self._writer}.json", _json_bytes(self._own_failures))

    def mark_complete(self, summary: dict) -> None:
        self.put_bytes("complete.json", _json_bytes(summary))

    def mark_incomplete(self) -> None:
        """Called before adding vectors to a finished run, so a crash mid-add is visible."""
        try:
            self.fs.rm_file(self._join("complete.json"))
        except FileNotFoundError:
            pass

    def delete(self) -> None:
        try:
            self.fs.rm(self._path, recursive=True)
        except FileNotFoundError:
            pass
        self._ids_cache.clear()

    def put_bytes(self, name: str, data: bytes) -> None:
        """Write the file ``name`` whole or not at all: tmp + rename on a local disk, one PUT on an object store."""
        if not self._local:
            self.fs.pipe_file(self._join(name), data)
            return
        final = Path(self._join(name))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".tmp-{final.name}-{self._writer}")
        tmp.write_bytes(data)
        os.replace(tmp, final)

    def get_bytes(self, name: str) -> bytes | None:
        """The file ``name`` of the store, or None when there is none."""
        try:
            return self.fs.cat_file(self._join(name))
        except FileNotFoundError:
            return None

    # -- reading -------------------------------------------------------------------------------
    @property
    def is_complete(self) -> bool:
        return self._exists("complete.json")

    def config(self) -> dict:
        data = self.get_bytes("config.json")
        if data is None:
            raise InvalidInputError(f"The embedding store {self.url} has no config.json: it was never opened.")
        return json.loads(data)

    def failures(self) -> dict[str, str]:
        """Every id whose newest word, over all writers, is a failure: ``{id: reason}``."""
        newest: dict[str, list] = {}
        for name in self._names():
            if not FAILURES_NAME.fullmatch(name):
                continue
            data = json.loads(self.get_bytes(name) or b"{}")
            if name == "failures.json":  # older stores: {id: reason}, older than any writer's file
                data = {k: [0, v] for k, v in data.items()}
            for sample_id, (stamp, reason) in data.items():
                if sample_id not in newest or stamp >= newest[sample_id][0]:
                    newest[sample_id] = [stamp, reason]
        return {k: reason for k, (_, reason) in newest.items() if reason is not None}

    def chunk_names(self) -> list[str]:
        """The whole chunks, oldest first (the order in which a later vector of an id replaces an earlier one)."""
        return sorted((n for n in self._names() if CHUNK_NAME.fullmatch(n)), key=_chunk_order)

    def stored_ids(self) -> np.ndarray:
        """Every id with a vector, once each, sorted (reads ids only, never vectors)."""
        chunks = [self._chunk_ids(name) for name in self.chunk_names()]
        return np.unique(np.concatenate(chunks)) if chunks else np.empty(0, dtype=str)

    def stored_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, boxes)``: each stored id once (sorted) with the box its latest vector was cropped from; NaN rows
        where that vector was stored without one (image vectors, or chunks written before boxes were kept)."""
        ids, boxes = [], []
        for name in self.chunk_names():
            with self.fs.open(self._join(name), "rb") as fh:
                chunk = np.load(fh)  # lazy: only the members read here are read, never the vectors
                ids.append(chunk["ids"])
                boxes.append(chunk["boxes"] if "boxes" in chunk.files else np.full((len(ids[-1]), 4), np.nan))
        if not ids:
            return np.empty(0, dtype=str), np.empty((0, 4))
        keep = _latest(np.concatenate(ids))
        return np.concatenate(ids)[keep], np.concatenate(boxes)[keep]

    def load(self, ids: list[str] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(ids, vectors)``; for a given ``ids`` the rows follow its order (missing ids raise).

        When an id was stored twice (a recomputed sample), the latest vector wins. Only the chunks holding the
        latest vector of a requested id are read, and only the requested rows are kept in memory.
        """
        names = self.chunk_names()
        if not names:
            raise InvalidInputError(f"The embedding store {self.url} holds no vectors yet.")
        per_chunk = [self._chunk_ids(name) for name in names]
        all_ids = np.concatenate(per_chunk)
        chunk_of = np.repeat(np.arange(len(names)), [len(c) for c in per_chunk])
        row_in_chunk = np.arange(len(all_ids)) - np.repeat(np.cumsum([0] + [len(c) for c in per_chunk])[:-1],
                                                            [len(c) for c in per_chunk])
        latest = _latest(all_ids)  # in the sorted order of the distinct ids
        if ids is None:
            rows = np.sort(latest)
            ids = all_ids[rows]
        else:
            ids = np.asarray(ids, dtype=str)
            distinct = all_ids[latest]
            pos = np.clip(np.searchsorted(distinct, ids), 0, len(distinct) - 1)
            missing = distinct[pos] != ids
            if missing.any():
                raise InvalidInputError(
                    f"{int(missing.sum())} of {len(ids)} ids have no vector in {self.url} "
                    f"(e.g. {ids[missing][:3].tolist()}): compute embeddings for them first."
                )
            rows = latest[pos]
        return ids, self._gather(names, chunk_of[rows], row_in_chunk[rows])

    # -- internals -----------------------------------------------------------------------------
    def _gather(self, names: list[str], chunks: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Vectors of (chunk, row) pairs, read chunk by chunk into one preallocated array."""
        out = None
        order = np.argsort(chunks, kind="stable")
        wanted = np.unique(chunks)
        bounds = np.searchsorted(chunks[order], wanted, side="left"), np.searchsorted(chunks[order], wanted, "right")
        for c, start, stop in zip(wanted, *bounds):
            with np.load(io.BytesIO(self.fs.cat_file(self._join(names[c])))) as chunk:
                vectors = chunk["vectors"]
            if out is None:
                out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
            elif vectors.shape[1] != out.shape[1]:
                raise InvalidInputError(f"The chunks of {self.url} hold vectors of {out.shape[1]} and "
                                        f"{vectors.shape[1]} dimensions: delete the run and compute it again.")
            take = order[start:stop]
            out[take] = vectors[rows[take]]
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    def _chunk_ids(self, name: str) -> np.ndarray:
        if name not in self._ids_cache:
            index = self.get_bytes(name.removesuffix(".npz") + IDS_SUFFIX)
            if index is not None:
                with np.load(io.BytesIO(index)) as saved:
                    ids = saved["ids"]
            else:  # a chunk from an older store: read its ids member only
                with self.fs.open(self._join(name), "rb") as fh, np.load(fh) as chunk:
                    ids = chunk["ids"]
            self._ids_cache[name] = np.asarray(ids, dtype=str)
        return self._ids_cache[name]

    def _names(self) -> list[str]:
        """File names in the store, fresh (other writers add files while we run)."""
        self.fs.invalidate_cache(self._path)
        try:
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._path, detail=False)]
        except FileNotFoundError:
            return []

    def _exists(self, name: str) -> bool:
        self.fs.invalidate_cache(self._path)
        return self.fs.exists(self._join(name))

    def _join(self, name: str) -> str:
        return f"{self._path}/{name}"

    def _link_once(self, name: str, data: bytes) -> None:
        """Create the local file ``name`` with ``data`` unless it exists, atomically (a hard link never replaces)."""
        final = Path(self._join(name))
        tmp = final.with_name(f".tmp-{name}-{self._writer}")
        tmp.write_bytes(data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)

    def _now(self) -> int:
        """Nanoseconds since the epoch, strictly increasing for this writer (so its own order never ties)."""
        self._last_time = max(time.time_ns(), self._last_time + 1)
        return self._last_time

    def _next_chunk_name(self) -> str:
        self._counter += 1
        return f"chunk-{self._now():020d}-{self._writer}-{self._counter:06d}.npz"


def _writer_name() -> str:
    """Unique per store object: host and pid say who wrote a file, the random part covers containers (pid 1)."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _chunk_order(name: str) -> tuple:
    """Older single-writer chunks first (by their number), then by name: time, writer, counter."""
    old = OLD_CHUNK_NAME.fullmatch(name)
    return (0, int(old.group(1)), "") if old else (1, 0, name)


def _latest(ids: np.ndarray) -> np.ndarray:
    """Row of the last occurrence of each distinct id, in the sorted order of the ids."""
    _, last_rev = np.unique(ids[::-1], return_index=True)
    return len(ids) - 1 - last_rev


def _json_bytes(data: dict) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True).encode()


def _npz_bytes(save, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    save(buffer, **arrays)
    return buffer.getvalue()
