"""An on-disk store of (id, vector) pairs for one embedding run, built for 1M samples.

Why not MongoDB: one write per sample is the slow path FiftyOne users hit at scale. Here vectors go
to disk in chunks, each written to a temporary file and renamed into place, so an interrupted run
leaves only whole chunks behind: a resumed run skips every id already stored, and new samples are
added as new chunks without touching the rest. A run is complete only once ``complete.json`` exists.

Object vectors also keep the box each was cropped from (``boxes``), so a box moved or resized since (in Label
Studio, say) is recognised and embedded again; the latest vector of an id wins. Chunks written before boxes were
kept have none: their boxes read as NaN ("unknown").

Layout of ``root``::

    config.json        what computed the vectors (model, params): written first
    chunk-000000.npz   ids (str), vectors (float32, (n, dim)) and, for objects, boxes (float64, (n, 4)),
                       one chunk per flush
    failures.json      ids that could not be embedded, with the reason
    complete.json      counts; written last
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from curate_loop.errors import InvalidInputError

CHUNK_GLOB = "chunk-*.npz"


class EmbeddingStore:
    """Append-only chunks of vectors keyed by id; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- writing -------------------------------------------------------------------------------
    def open(self, config: dict) -> "EmbeddingStore":
        """Create the store, or reopen it when ``config`` matches what it was created with."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "config.json"
        if path.exists():
            existing = json.loads(path.read_text())
            if existing != config:
                raise InvalidInputError(
                    f"The embedding store {self.root} was made with {existing}, not {config}. Use another run "
                    "key, or delete the old run first."
                )
        else:
            _write_json_atomic(path, config)
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
        index = len(list(self.root.glob(CHUNK_GLOB)))
        final = self.root / f"chunk-{index:06d}.npz"
        tmp = self.root / f".tmp-{final.name}"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, final)

    def record_failures(self, failures: dict[str, str], succeeded=()) -> None:
        """Add new failures and forget earlier ones whose ids now have a vector (e.g. a fixed file)."""
        merged = {**self.failures(), **failures}
        for sample_id in succeeded:
            merged.pop(sample_id, None)
        _write_json_atomic(self.root / "failures.json", merged)

    def mark_complete(self, summary: dict) -> None:
        _write_json_atomic(self.root / "complete.json", summary)

    def mark_incomplete(self) -> None:
        """Called before adding vectors to a finished run, so a crash mid-add is visible."""
        (self.root / "complete.json").unlink(missing_ok=True)

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- reading -------------------------------------------------------------------------------
    @property
    def is_complete(self) -> bool:
        return (self.root / "complete.json").exists()

    def config(self) -> dict:
        return json.loads((self.root / "config.json").read_text())

    def failures(self) -> dict[str, str]:
        path = self.root / "failures.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def stored_ids(self) -> np.ndarray:
        """Every id with a vector, once each, sorted (chunks are small to read: ids only)."""
        chunks = [np.load(p)["ids"] for p in sorted(self.root.glob(CHUNK_GLOB))]
        return np.unique(np.concatenate(chunks)) if chunks else np.empty(0, dtype=str)

    def stored_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, boxes)``: each stored id once (sorted) with the box its latest vector was cropped from; NaN rows
        where that vector was stored without one (image vectors, or chunks written before boxes were kept)."""
        ids, boxes = [], []
        for path in sorted(self.root.glob(CHUNK_GLOB)):
            chunk = np.load(path)  # lazy: the vectors are not read
            ids.append(chunk["ids"])
            boxes.append(chunk["boxes"] if "boxes" in chunk.files else np.full((len(chunk["ids"]), 4), np.nan))
        if not ids:
            return np.empty(0, dtype=str), np.empty((0, 4))
        keep = _latest(np.concatenate(ids))
        return np.concatenate(ids)[keep], np.concatenate(boxes)[keep]

    def load(self, ids: list[str] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(ids, vectors)``; for a given ``ids`` the rows follow its order (missing ids raise).

        When an id was stored twice (a recomputed sample), the latest vector wins.
        """
        chunks = [np.load(p) for p in sorted(self.root.glob(CHUNK_GLOB))]
        if not chunks:
            raise InvalidInputError(f"The embedding store {self.root} holds no vectors yet.")
        all_ids = np.concatenate([c["ids"] for c in chunks])
        vectors = np.concatenate([c["vectors"] for c in chunks])
        keep = np.sort(_latest(all_ids))
        all_ids, vectors = all_ids[keep], vectors[keep]
        if ids is None:
            return all_ids, vectors
        ids = np.asarray(ids, dtype=str)
        order = np.argsort(all_ids)
        pos = np.searchsorted(all_ids, ids, sorter=order)
        pos = np.clip(pos, 0, len(all_ids) - 1)
        rows = order[pos]
        missing = all_ids[rows] != ids
        if missing.any():
            raise InvalidInputError(
                f"{int(missing.sum())} of {len(ids)} ids have no vector in {self.root} "
                f"(e.g. {ids[missing][:3].tolist()}): compute embeddings for them first."
            )
        return ids, vectors[rows]


def _latest(ids: np.ndarray) -> np.ndarray:
    """Row of the last occurrence of each distinct id, in the sorted order of the ids."""
    _, last_rev = np.unique(ids[::-1], return_index=True)
    return len(ids) - 1 - last_rev


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
