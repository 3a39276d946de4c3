"""Compute image embeddings into an :class:`EmbeddingStore`: resumable, incremental, batched.

Vectors are L2-normalised (cosine geometry) and flushed to the store every ``flush_every`` vectors.

Where decoding runs depends on the device. On a GPU the model outruns decoding, so DataLoader worker
processes (all cores but one) decode ahead while it runs. On CPU the model's threads use every core in
lock-step: a worker decoding at the same time pre-empts one of them and stalls them all (we measured a
~10% slower forward pass for ~4% of CPU spent decoding). So on CPU a batch is decoded between forward
passes, by as many threads as the model uses (PIL releases the GIL), and costs only its share of the CPU.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Callable

from curate_loop.embeddings.images import ImageFiles, collate
from curate_loop.embeddings.loop import DEFAULT_FLUSH_EVERY, EmbedReport, model_encoder, run_embedding_loop
from curate_loop.embeddings.models import LoadedModel
from curate_loop.embeddings.store import EmbeddingStore

DEFAULT_BATCH_SIZE = 32
PREFETCH_BATCHES = 2  # per worker (GPU): enough to ride out a slow file, little shared memory

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_FLUSH_EVERY", "EmbedReport", "default_num_workers", "embed_images"]


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
    quality: bool = False,
) -> EmbedReport:
    """Embed the images whose ids are not in ``store`` yet; failures are recorded, not raised.

    ``quality``: measure the data-quality metrics of each image from the same decode (``EmbedReport.quality``).
    """
    import torch
    from torch.utils.data import DataLoader

    if len(ids) != len(filepaths):
        raise ValueError(f"ids ({len(ids)}) and filepaths ({len(filepaths)}) must have the same length")
    done = set(store.stored_ids().tolist())
    todo = [k for k, sample_id in enumerate(ids) if sample_id not in done]
    on_gpu = str(model.device).startswith("cuda")
    if num_workers is None:
        num_workers = default_num_workers(on_gpu)
    # decoding in this process: as many threads as the model uses, between its forward passes
    decoders = ThreadPoolExecutor(torch.get_num_threads()) if num_workers == 0 else None
    images = ImageFiles([filepaths[k] for k in todo], model.preprocess, executor=decoders, uint8=True, quality=quality)
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                        pin_memory=on_gpu, prefetch_factor=PREFETCH_BATCHES if num_workers else None)
    with decoders or nullcontext():
        return run_embedding_loop(loader, [ids[k] for k in todo], model_encoder(model, images.model_input), store,
                                  total=len(todo), skipped=len(ids) - len(todo), flush_every=flush_every,
                                  progress=progress)


def default_num_workers(on_gpu: bool) -> int:
    """Decoding worker processes: all cores but one on a GPU; none on CPU (see the module docstring)."""
    return max(1, (os.cpu_count() or 2) - 1) if on_gpu else 0
