"""Several models combined: each model's vectors L2-normalised, then concatenated.

Normalising per model first gives every model the same weight whatever its dimension or scale;
dividing by sqrt(#models) keeps the result unit-length, so cosine similarity stays a dot product and
equals the mean of the per-model cosine similarities.
"""

from __future__ import annotations

import numpy as np

from curate_loop.errors import InvalidInputError


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit-length rows (float32); all-zero rows stay zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def concat_normalized(blocks: list[np.ndarray]) -> np.ndarray:
    """``(n, d1), (n, d2), ... -> (n, d1 + d2 + ...)``, unit-length rows, each model weighted equally."""
    if not blocks:
        raise InvalidInputError("No embeddings to combine: give at least one model.")
    rows = {len(b) for b in blocks}
    if len(rows) != 1:
        raise InvalidInputError(f"Every model must embed the same items; got row counts {sorted(rows)}")
    return np.concatenate([normalize_rows(b) for b in blocks], axis=1) / np.float32(np.sqrt(len(blocks)))
