"""The inference loop shared by image and object embeddings: batches in, normalised vectors to the store.

A loader yields ``(good item indices, inputs, [(item index, reason), ...])``, plus, when the decode also measured
data quality, a 4th element: one ``(metrics, content hash)`` per good item (kept in ``EmbedReport.quality``,
keyed by id, for the caller to store once at the end); the item index maps to
an id through ``item_ids`` and ``encode(inputs)`` gives one vector per good item (an open_clip model
on stacked tensors, or a user's callable on PIL images). Vectors are L2-normalised (cosine geometry
everywhere) and flushed to the store every ``flush_every`` vectors, so a crash loses at most one
chunk of work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from curate_loop.embeddings.combine import normalize_rows
from curate_loop.embeddings.models import LoadedModel
from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.errors import InvalidInputError

logger = logging.getLogger(__name__)

DEFAULT_FLUSH_EVERY = 4096


@dataclass
class EmbedReport:
    computed: int
    skipped: int  # already in the store (resume / incremental add)
    failed: dict[str, str]
    quality: dict[str, tuple[dict, str]] = field(default_factory=dict)  # id -> (metrics, hash), when measured


def model_encoder(model: LoadedModel, to_input: Callable | None = None) -> Callable:
    """``encode`` for an open_clip model: a collated batch -> float32 vectors.

    ``to_input(batch, device, dtype)`` turns the batch into the model's input; by default the batch is
    already preprocessed tensors and is only moved (images decoded as uint8 normalise on the device).
    """
    import torch

    def encode(batch):
        with torch.inference_mode():
            x = to_input(batch, model.device, model.dtype) if to_input else batch.to(model.device, dtype=model.dtype)
            return model.model.encode_image(x).float().cpu().numpy()

    return encode


def run_embedding_loop(batches: Iterable, item_ids: list[str], encode: Callable, store: EmbeddingStore, *,
                       total: int, skipped: int = 0, flush_every: int = DEFAULT_FLUSH_EVERY,
                       progress: Callable[[int, int], None] | None = None,
                       source: str = "The model") -> EmbedReport:
    """Encode every batch and append the normalised vectors to ``store``; failures are recorded."""
    succeeded: list[str] = []
    buffer_ids: list[str] = []
    buffer_vecs: list[np.ndarray] = []
    failed: dict[str, str] = {}
    processed = 0
    quality: dict[str, tuple[dict, str]] = {}
    for good, inputs, bad, *measured in batches:
        for i, err in bad:
            failed[item_ids[i]] = err
        if measured:
            quality.update(zip((item_ids[i] for i in good), measured[0]))
        if len(good):
            vectors = checked_vectors(encode(inputs), len(good), source)
            buffer_vecs.append(normalize_rows(vectors))
            buffer_ids.extend(item_ids[i] for i in good)
        processed += len(good) + len(bad)
        if len(buffer_ids) >= flush_every:
            store.append(buffer_ids, np.concatenate(buffer_vecs))
            succeeded.extend(buffer_ids)
            buffer_ids, buffer_vecs = [], []
        if progress:
            progress(processed, total)
    if buffer_ids:
        store.append(buffer_ids, np.concatenate(buffer_vecs))
        succeeded.extend(buffer_ids)
    if failed or store.failures():
        store.record_failures(failed, succeeded=succeeded)
    if failed:
        logger.warning("%d item(s) could not be embedded, e.g. %s", len(failed), next(iter(failed.items())))
    return EmbedReport(computed=len(succeeded), skipped=skipped, failed=failed, quality=quality)


def checked_vectors(vectors, n_rows: int, source: str) -> np.ndarray:
    """``vectors`` as float32 ``(n_rows, dim)`` with finite values, or a clear error naming ``source``."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != n_rows:
        raise InvalidInputError(f"{source} gave vectors of shape {vectors.shape}; expected ({n_rows}, dim).")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"{source} gave {int(bad.sum())} vector(s) with NaN or inf values (rows "
                                f"{np.flatnonzero(bad)[:5].tolist()}); fix them before storing.")
    return vectors
