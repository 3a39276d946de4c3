"""Object-level embeddings: box crops of each image, embedded into an :class:`EmbeddingStore` keyed by
label id. Resumable and incremental like image embeddings: labels already stored are skipped, unless their box
moved or was resized since their vector was cropped (a relabeled box keeps its vector: the crop is the same).

Each vector is stored with its box. Stores written before boxes were kept know no box for their vectors: those
labels are embedded once more (a moved box cannot be told from an unmoved one there), then compared as usual.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from curate_loop.embeddings.crops import DEFAULT_MARGIN, DEFAULT_MIN_CROP_PX, ImageCrops, collate_crops
from curate_loop.embeddings.loop import DEFAULT_FLUSH_EVERY, EmbedReport, model_encoder, run_embedding_loop
from curate_loop.embeddings.models import LoadedModel
from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.errors import InvalidInputError

BOX_TOLERANCE = 1e-6  # relative units: far below a pixel, above float noise from a round trip


def embed_objects(label_ids: list[list[str]], boxes: list[list], filepaths: list[str], model: LoadedModel,
                  store: EmbeddingStore, *, margin: float = DEFAULT_MARGIN, min_crop_px: int = DEFAULT_MIN_CROP_PX,
                  batch_size: int = 32, num_workers: int = 1, flush_every: int = DEFAULT_FLUSH_EVERY,
                  progress: Callable[[int, int], None] | None = None) -> EmbedReport:
    """Embed the crops of labels not stored yet or whose box changed; ``label_ids[i]``/``boxes[i]`` belong to
    ``filepaths[i]``.

    ``batch_size`` counts images (each contributes all its crops); failures are per label.
    """
    from torch.utils.data import DataLoader

    if not len(label_ids) == len(boxes) == len(filepaths):
        raise InvalidInputError(
            f"label_ids ({len(label_ids)}), boxes ({len(boxes)}) and filepaths ({len(filepaths)}) must have "
            "one entry per image"
        )
    flat_ids = np.asarray([label_id for ids in label_ids for label_id in (ids or [])], dtype=str)
    flat_boxes = flat_box_array(boxes, [len(ids or []) for ids in label_ids])
    todo = needs_embedding(flat_ids, flat_boxes, *store.stored_boxes())
    counts = np.array([len(ids or []) for ids in label_ids], dtype=np.int64)
    image_of = np.repeat(np.arange(len(label_ids)), counts)
    keep_image = np.unique(image_of[todo])
    rows = np.flatnonzero(todo)
    crop_index = np.split(rows, np.searchsorted(image_of[rows], keep_image[1:]))
    crop_boxes = [flat_boxes[index] for index in crop_index] if len(rows) else []
    total = len(rows)
    dataset = ImageCrops([filepaths[i] for i in keep_image], crop_boxes, crop_index if len(rows) else [],
                         model.preprocess, margin=margin, min_crop_px=min_crop_px)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_crops,
                        prefetch_factor=4 if num_workers else None)
    return run_embedding_loop(loader, flat_ids.tolist(), model_encoder(model), BoxRecordingStore(store, flat_ids,
                                                                                                  flat_boxes),
                              total=total, skipped=len(flat_ids) - total, flush_every=flush_every, progress=progress)


def flat_box_array(boxes: list[list], counts: list[int]) -> np.ndarray:
    """The boxes of every image, one (n, 4) float array (NaN rows for missing boxes)."""
    rows = [box if box is not None else [np.nan] * 4
            for image_boxes, n in zip(boxes, counts) for box in (image_boxes or [])[:n]]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def needs_embedding(ids: np.ndarray, boxes: np.ndarray, stored_ids: np.ndarray, stored_boxes: np.ndarray,
                    tolerance: float = BOX_TOLERANCE) -> np.ndarray:
    """Which labels to (re-)embed: not stored, stored without a box (an older store), or stored with another box.

    ``stored_ids`` is sorted (as :meth:`EmbeddingStore.stored_boxes` gives it)."""
    ids = np.asarray(ids, dtype=str)
    if not len(stored_ids):
        return np.ones(len(ids), dtype=bool)
    pos = np.clip(np.searchsorted(stored_ids, ids), 0, len(stored_ids) - 1)
    stored = stored_ids[pos] == ids
    before = stored_boxes[pos]
    with np.errstate(invalid="ignore"):
        same = (np.abs(before - boxes) <= tolerance).all(axis=1)
    return ~(stored & same)


class BoxRecordingStore:
    """The store as the embedding loop sees it, with each appended vector's box attached (looked up by id)."""

    def __init__(self, store: EmbeddingStore, ids: np.ndarray, boxes: np.ndarray):
        self._store = store
        self._row_of = {label_id: row for row, label_id in enumerate(ids.tolist())}
        self._boxes = boxes

    def append(self, ids, vectors) -> None:
        rows = np.fromiter((self._row_of[i] for i in ids), dtype=np.int64, count=len(ids))
        self._store.append(ids, vectors, boxes=self._boxes[rows])

    def __getattr__(self, name):
        return getattr(self._store, name)
