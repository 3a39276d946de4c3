"""Bring your own embeddings: an array, a ``.npy`` file, or a Python callable ``images -> vectors``.

Whatever the source, vectors land in the same :class:`EmbeddingStore` as model embeddings (checked
for shape and NaNs, L2-normalised), so similarity, maps and curation never care where they came from.
Vectors stored in a FiftyOne field are read by the run layer and arrive here as an array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from curate_loop.embeddings.images import open_rgb
from curate_loop.embeddings.loop import DEFAULT_FLUSH_EVERY, EmbedReport, checked_vectors, run_embedding_loop
from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.errors import InvalidInputError
from curate_loop.vectors import normalize_rows


def load_npy(path: str | Path, n_rows: int) -> np.ndarray:
    """Read a ``.npy`` of shape ``(n_rows, dim)`` (rows in the order of the samples it belongs to)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"No such .npy file: {path}")
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not a plain numeric .npy array ({exc}); save it with np.save.") from exc
    return checked_vectors(vectors, n_rows, str(path))


def store_vectors(ids: list[str], vectors, store: EmbeddingStore, *, source: str = "the array",
                  flush_every: int = DEFAULT_FLUSH_EVERY) -> EmbedReport:
    """Store given vectors, skipping ids already stored (so re-importing is idempotent).

    Written in chunks of ``flush_every`` rows, as computed vectors are, so a view's vectors later load from only
    the chunks that hold them; no copy of the array when nothing was stored before (1M x 512: 2 GB saved).
    """
    vectors = checked_vectors(vectors, len(ids), source)
    ids = np.asarray(ids, dtype=str)
    done = np.isin(ids, store.stored_ids())
    todo = np.flatnonzero(~done)
    everything = len(todo) == len(ids)
    zero = ~vectors.any(axis=1) & ~done  # refused before the first chunk is written, as a whole-array import is
    if zero.any():
        raise InvalidInputError(f"{source} have {int(zero.sum())} row(s) of all zeros (first at row "
                                f"{int(np.argmax(zero))}): they have no direction, so cosine similarity is undefined "
                                "for them; leave those items out.")
    for start in range(0, len(todo), flush_every):
        rows = slice(start, start + flush_every) if everything else todo[start:start + flush_every]
        store.append(ids[rows], normalize_rows(vectors[rows], zero_rows="raise", what=source))
    return EmbedReport(computed=len(todo), skipped=int(done.sum()), failed={})


class _PilImages:
    """Item i -> (i, PIL RGB image or None, error or None); the user's callable does its own preprocessing."""

    def __init__(self, filepaths: list[str]):
        self.filepaths = filepaths

    def __len__(self) -> int:
        return len(self.filepaths)

    def __getitem__(self, i: int):
        try:
            return i, open_rgb(self.filepaths[i]), None
        except Exception as exc:
            return i, None, f"{type(exc).__name__}: {exc}"


def _collate_pil(items):
    good = [(i, img) for i, img, err in items if err is None]
    return [i for i, _ in good], [img for _, img in good], [(i, err) for i, _, err in items if err is not None]


def embed_with_callable(fn: Callable[[list], np.ndarray], ids: list[str], filepaths: list[str],
                        store: EmbeddingStore, *, batch_size: int = 32, num_workers: int = 1,
                        progress: Callable[[int, int], None] | None = None) -> EmbedReport:
    """Call ``fn(list of PIL RGB images) -> (n, dim)`` on images not stored yet, decoding in workers."""
    from torch.utils.data import DataLoader

    if not callable(fn):
        raise InvalidInputError(f"Expected a callable images -> vectors, got {type(fn).__name__}")
    done = set(store.stored_ids().tolist())
    todo = [k for k, item_id in enumerate(ids) if item_id not in done]
    loader = DataLoader(_PilImages([filepaths[k] for k in todo]), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate_pil)
    name = getattr(fn, "__name__", type(fn).__name__)
    return run_embedding_loop(loader, [ids[k] for k in todo], fn, store, total=len(todo), skipped=len(ids) - len(todo),
                              progress=progress, source=f"Your embedding function {name!r}")
