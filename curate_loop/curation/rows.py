"""Row-number arguments (``labeled_idx``, ``picked_idx``, ...) checked once, the same way everywhere.

Every algorithm here takes rows of the vectors it was given; a wrong index (a float, a sample id, a row past the
end) must fail with a message that names the argument, not deep inside numpy.
"""

from __future__ import annotations

import numpy as np

from curate_loop.errors import InvalidInputError


def row_indices(idx, n: int, name: str, *, unique: bool = False) -> np.ndarray:
    """(k,) int64 copy of ``idx`` (None: empty), checked: 1-D integers in [0, n); with ``unique``, no repeats."""
    arr = np.asarray([] if idx is None else idx)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{name} must be a 1-D sequence of integer row numbers, got dtype {arr.dtype} and "
                                f"shape {arr.shape}.")
    if arr.min() < 0 or arr.max() >= n:
        raise InvalidInputError(f"{name} holds row numbers outside [0, {n}) (min {arr.min()}, max {arr.max()}); "
                                "indices refer to rows of the vectors passed.")
    if unique:
        values, counts = np.unique(arr, return_counts=True)
        if (counts > 1).any():
            raise InvalidInputError(f"{name} repeats {int((counts > 1).sum())} row numbers (first "
                                    f"{values[counts > 1][0]}); each row can be in it once.")
    return arr.astype(np.int64)


def row_mask(idx, n: int, name: str) -> np.ndarray:
    """(n,) bool mask of the rows in ``idx`` (None: none), checked as :func:`row_indices` does."""
    mask = np.zeros(n, dtype=bool)
    mask[row_indices(idx, n, name)] = True
    return mask
