"""Compute image embeddings into an :class:`EmbeddingStore`: resumable, incremental, batched.

Decoding runs in DataLoader worker processes while the model runs in this one; vectors are
L2-normalised (cosine geometry) and flushed to the store every ``flush_every`` vectors.

On CPU the model needs every core and decoding is cheap next to it (~4 ms of CPU per ~1 MP photo
decoded at reduced scale, vs ~120 ms for a ViT-B/32 forward pass), so one worker decodes, at a lower
scheduling priority: it fills the model's idle moments instead of pre-empting its threads. On a GPU
decoding is the bottleneck, so all cores but one decode.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from curate_loop.embeddings.images import ImageFiles, collate
from curate_loop.embeddings.models import LoadedModel
from curate_loop.embeddings.store import EmbeddingStore

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_FLUSH_EVERY = 4096  # vectors per chunk: lose at most this much work on a crash
CPU_WORKER_NICENESS = 10  # how much lower the decoding worker's priority is than the model's, on CPU
PREFETCH_BATCHES = 4  # per worker: rides out a slow file without stalling the model


@dataclass
class EmbedReport:
    computed: int
    skipped: int  # already in the store (resume / incremental add)
    failed: dict[str, str]


def embed_images(
    ids: list[str],
    filepaths: list[str],
    model: LoadedModel,
    store: EmbeddingStore,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    flush_every: int = DEFAULT_FLUSH_EVERY,
    progress: Callable[[int, int], None] | None = None,
) -> EmbedReport:
    """Embed the images whose ids are not in ``store`` yet; failures are recorded, not raised."""
    import torch
    from torch.utils.data import DataLoader

    if len(ids) != len(filepaths):
        raise ValueError(f"ids ({len(ids)}) and filepaths ({len(filepaths)}) must have the same length")
    done = set(store.stored_ids().tolist())
    todo = [k for k, sample_id in enumerate(ids) if sample_id not in done]
    todo_ids = [ids[k] for k in todo]
    on_gpu = str(model.device).startswith("cuda")
    if num_workers is None:
        num_workers = default_num_workers(on_gpu)
    loader = DataLoader(ImageFiles([filepaths[k] for k in todo], model.preprocess), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=collate, pin_memory=on_gpu,
                        prefetch_factor=PREFETCH_BATCHES if num_workers else None,
                        worker_init_fn=None if on_gpu else _lower_priority)
    succeeded: list[str] = []
    buffer_ids: list[str] = []
    buffer_vecs: list[np.ndarray] = []
    failed: dict[str, str] = {}
    processed = 0
    with torch.inference_mode():
        for good, tensors, bad in loader:
            for i, err in bad:
                failed[todo_ids[i]] = err
            if tensors is not None:
                feats = model.model.encode_image(tensors.to(model.device, dtype=model.dtype, non_blocking=True))
                feats = torch.nn.functional.normalize(feats.float(), dim=-1)
                buffer_vecs.append(feats.cpu().numpy())
                buffer_ids.extend(todo_ids[i] for i in good)
            processed += len(good) + len(bad)
            if len(buffer_ids) >= flush_every:
                store.append(buffer_ids, np.concatenate(buffer_vecs))
                succeeded.extend(buffer_ids)
                buffer_ids, buffer_vecs = [], []
            if progress:
                progress(processed, len(todo))
    if buffer_ids:
        store.append(buffer_ids, np.concatenate(buffer_vecs))
        succeeded.extend(buffer_ids)
    if failed or store.failures():
        store.record_failures(failed, succeeded=succeeded)
    if failed:
        logger.warning("%d image(s) could not be embedded, e.g. %s", len(failed), next(iter(failed.items())))
    return EmbedReport(computed=len(todo) - len(failed), skipped=len(ids) - len(todo), failed=failed)


def default_num_workers(on_gpu: bool) -> int:
    """Decoding workers: one on CPU (more would take cores from the model), all cores but one on a GPU."""
    return max(1, (os.cpu_count() or 2) - 1) if on_gpu else 1


def _lower_priority(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` on CPU: decode in the model's idle moments, don't pre-empt it."""
    try:
        os.nice(CPU_WORKER_NICENESS)
    except OSError:  # not permitted here: decoding still works, just at normal priority
        pass
