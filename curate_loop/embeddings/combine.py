"""Several models combined: each model's vectors L2-normalised, then concatenated.

Normalising per model first gives every model the same weight whatever its dimension or scale;
dividing by sqrt(#models) keeps the result unit-length, so cosine similarity stays a dot product and
equals the mean of the per-model cosine similarities.

``normalize_rows`` (all-zero rows stay zero) is :func:`curate_loop.vectors.normalize_rows`, the one row normaliser
of the array packages, re-exported here for the embedding code that imports it from this module.
"""

from __future__ import annotations

import numpy as np

from curate_loop.errors import InvalidInputError
from curate_loop.vectors import normalize_rows

__all__ = ["concat_normalized", "normalize_rows"]


def concat_normalized(blocks: list[np.ndarray]) -> np.ndarray:
    """``(n, d1), (n, d2), ... -> (n, d1 + d2 + ...)``, unit-length rows, each model weighted equally.

    An all-zero row of one model stays zero in its part (no NaN); n may be 0 (an empty view).
    """
    if not blocks:
        raise InvalidInputError("No embeddings to combine: give at least one model.")
    rows = {len(b) for b in blocks}
    if len(rows) != 1:
        raise InvalidInputError(f"Every model must embed the same items; got row counts {sorted(rows)}")
    unit = [normalize_rows(b, zero_rows="keep", min_rows=0, what="vectors") for b in blocks]
    return np.concatenate(unit, axis=1) / np.float32(np.sqrt(len(blocks)))
