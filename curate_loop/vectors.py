"""Rows of vectors made unit length, validated once, the same way for every array package (no FiftyOne).

Cosine geometry everywhere in curate-loop (kNN graphs, clustering, selection, edge scores, near-duplicates,
mislabel votes, the embedding store) starts here, so the checks and their messages are the same everywhere.

All-zero rows have no direction. What to do with them is the caller's choice, made explicitly:

- ``zero_rows="keep"`` (the default, as ``sklearn.preprocessing.normalize``): they stay all zeros, never NaN;
  right for storing vectors and for a query that may average to nothing;
- ``zero_rows="raise"``: :class:`~curate_loop.errors.InvalidInputError` naming the first such row; right for
  cosine similarity, which is undefined for them.

Memory: one float32 copy of the input, filled and normalised block by block, so the temporaries (squares, masks)
stay bounded whatever the size (at 1M x 512 a whole-array chain of astype / isfinite / norm / divide made four
2 GB copies) and a memory-mapped input is read once, block by block.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from curate_loop.errors import InvalidInputError

ZERO_ROWS = ("keep", "raise")
BLOCK_ROWS = 65_536  # rows checked and normalised at once: 128 MB of float32 temporaries at 512 dims


def normalize_rows(vectors, *, zero_rows: Literal["keep", "raise"] = "keep", min_rows: int = 1,
                   what: str = "embeddings", centre: bool = False) -> np.ndarray:
    """``vectors`` (n, dim) as a new C-contiguous float32 array whose rows have length 1.

    Parameters
    ----------
    vectors : (n, dim) array of real numbers (any float or int dtype, or a memory map).
    zero_rows : "keep" (all-zero rows stay zero) or "raise" (refuse them); see the module docstring.
    min_rows : the fewest rows accepted (0 accepts an empty (0, dim) array).
    what : how error messages name ``vectors`` ("embeddings", "queries", ...).
    centre : subtract the rows' mean first (summed in float64, block by block), so that cosine compares how rows
        differ rather than the direction they share: embeddings often sit in a narrow cone around a common
        direction (CLIP's, or any non-negative features such as HOG), which then dominates every similarity. A row
        at the mean becomes all zeros, and ``zero_rows`` applies to it.

    Raises
    ------
    InvalidInputError : not 2-D, fewer than ``min_rows`` rows, not real numbers, a row with NaN or inf, or (with
        ``zero_rows="raise"``) an all-zero row; the message gives the shape, count or first row, and the fix.
    """
    if zero_rows not in ZERO_ROWS:
        raise InvalidInputError(f"zero_rows must be one of {ZERO_ROWS}, got {zero_rows!r}.")
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise InvalidInputError(f"{what} must be a 2-D array of shape (n, dim), got shape {arr.shape}; pass one row "
                                "per item (reshape a single vector with vector[None, :]).")
    if len(arr) < min_rows:
        raise InvalidInputError(f"need at least {min_rows} {what} (rows), got {len(arr)}; add items.")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InvalidInputError(f"{what} must be real numbers, got dtype {arr.dtype}.")
    mean = _finite_mean(arr) if centre else None
    unit = np.empty(arr.shape, dtype=np.float32)
    bad = np.zeros(len(arr), dtype=bool)
    zero = np.zeros(len(arr), dtype=bool)
    for start in range(0, len(arr), BLOCK_ROWS):  # NaN rows are refused below; no warnings while dividing them
        block = unit[start:start + BLOCK_ROWS]
        block[...] = arr[start:start + BLOCK_ROWS]
        if mean is not None:
            block -= mean
        bad[start:start + len(block)] = ~np.isfinite(block).all(axis=1)
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        zero[start:start + len(block)] = norms == 0
        with np.errstate(invalid="ignore"):
            block /= np.where(norms == 0, np.float32(1), norms)[:, None]
    if bad.any():
        raise InvalidInputError(f"{what} have {int(bad.sum())} row(s) with NaN or inf (first at row "
                                f"{int(np.argmax(bad))}); recompute those items or leave them out.")
    if zero_rows == "raise" and zero.any():
        where = "equal to the mean of all rows" if centre else "of all zeros"
        raise InvalidInputError(f"{what} have {int(zero.sum())} row(s) {where} (first at row "
                                f"{int(np.argmax(zero))}): they have no direction, so cosine similarity is undefined "
                                "for them; leave those items out.")
    return unit


def _finite_mean(arr: np.ndarray) -> np.ndarray:
    """(dim,) float32 mean of the rows without NaN or inf (those are refused afterwards), block by block."""
    total = np.zeros(arr.shape[1], dtype=np.float64)
    count = 0
    for start in range(0, len(arr), BLOCK_ROWS):
        block = np.asarray(arr[start:start + BLOCK_ROWS], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        total += (block if finite.all() else block[finite]).sum(axis=0, dtype=np.float64)
        count += int(finite.sum())
    return (total / max(count, 1)).astype(np.float32)
