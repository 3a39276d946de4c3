"""Text prompts in the image embedding space, for CLIP-style models (text search, saved text searches)."""

from __future__ import annotations

import numpy as np

from curate_loop.embeddings.combine import concat_normalized, normalize_rows
from curate_loop.embeddings.models import LoadedModel
from curate_loop.errors import InvalidInputError


def embed_texts(models: list[LoadedModel], prompts: list[str]) -> np.ndarray:
    """``(len(prompts), dim)`` unit vectors; with several models, combined exactly like image vectors."""
    import open_clip
    import torch

    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise InvalidInputError("Give at least one non-empty text prompt.")
    blocks = []
    for loaded in models:
        if not hasattr(loaded.model, "encode_text"):
            raise InvalidInputError(f"{loaded.spec.key} has no text tower: text search needs CLIP-style models.")
        tokens = open_clip.get_tokenizer(loaded.spec.name)(prompts).to(loaded.device)
        with torch.inference_mode():
            blocks.append(loaded.model.encode_text(tokens).float().cpu().numpy())
    return normalize_rows(blocks[0]) if len(blocks) == 1 else concat_normalized(blocks)
