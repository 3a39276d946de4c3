"""Object-level embeddings: box crops of each image, embedded into an :class:`EmbeddingStore` keyed by
label id. Resumable and incremental like image embeddings: labels already stored are skipped."""

from __future__ import annotations

from typing import Callable

import numpy as np

from curate_loop.embeddings.crops import DEFAULT_MARGIN, DEFAULT_MIN_CROP_PX, ImageCrops, collate_crops
from curate_loop.embeddings.loop import DEFAULT_FLUSH_EVERY, EmbedReport, model_encoder, run_embedding_loop
from curate_loop.embeddings.models import LoadedModel
from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.errors import InvalidInputError


def embed_objects(label_ids: list[list[str]], boxes: list[list], filepaths: list[str], model: LoadedModel,
                  store: EmbeddingStore, *, margin: float = DEFAULT_MARGIN, min_crop_px: int = DEFAULT_MIN_CROP_PX,
                  batch_size: int = 32, num_workers: int = 1, flush_every: int = DEFAULT_FLUSH_EVERY,
                  progress: Callable[[int, int], None] | None = None) -> EmbedReport:
    """Embed the crops of labels not stored yet; ``label_ids[i]``/``boxes[i]`` belong to ``filepaths[i]``.

    ``batch_size`` counts images (each contributes all its crops); failures are per label.
    """
    from torch.utils.data import DataLoader

    if not len(label_ids) == len(boxes) == len(filepaths):
        raise InvalidInputError(
            f"label_ids ({len(label_ids)}), boxes ({len(boxes)}) and filepaths ({len(filepaths)}) must have "
            "one entry per image"
        )
    flat_ids = [label_id for ids in label_ids for label_id in (ids or [])]
    counts = np.array([len(ids or []) for ids in label_ids])
    starts = np.concatenate([[0], np.cumsum(counts)])
    done = set(store.stored_ids().tolist())
    keep_image, crop_boxes, crop_index = [], [], []
    for i, ids in enumerate(label_ids):
        todo = [j for j, label_id in enumerate(ids or []) if label_id not in done]
        if todo:
            keep_image.append(i)
            crop_boxes.append(np.asarray([boxes[i][j] if boxes[i][j] is not None else [np.nan] * 4 for j in todo],
                                         dtype=np.float64))
            crop_index.append(starts[i] + np.asarray(todo))
    total = int(sum(len(c) for c in crop_index))
    dataset = ImageCrops([filepaths[i] for i in keep_image], crop_boxes, crop_index, model.preprocess,
                         margin=margin, min_crop_px=min_crop_px)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_crops,
                        prefetch_factor=4 if num_workers else None)
    return run_embedding_loop(loader, flat_ids, model_encoder(model), store, total=total, skipped=len(flat_ids) - total,
                              flush_every=flush_every, progress=progress)
