"""Box geometry on FiftyOne's relative ``[x, y, w, h]`` boxes, vectorised over whole datasets.

The one IoU of the package (:func:`box_iou` for every pair of two box lists, :func:`paired_iou` for aligned rows),
input checks that say what is wrong (:func:`check_boxes`), and the segment operations that group boxes by sample
without a Python loop over samples (:func:`pairs_within_samples`, :func:`best_per_group`).
"""

from __future__ import annotations

import numpy as np

from curate_loop.errors import InvalidInputError

OUTSIDE_TOLERANCE = 1e-6  # relative coordinates: rounding in exporters leaves boxes a hair past the border


def as_boxes(boxes, what: str) -> np.ndarray:
    """``boxes`` as a float64 (n, 4) array; raises :class:`InvalidInputError` on a wrong shape, NaN or a negative
    width or height (``what`` names the boxes in the message, e.g. "labels")."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise InvalidInputError(f"{what}: boxes must be an (n, 4) array of relative [x, y, w, h], got shape "
                                f"{array.shape}; pass one row per box.")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"{what}: {int(bad.sum())} boxes hold NaN or infinite coordinates (first at row "
                                f"{int(np.flatnonzero(bad)[0])}); fix or delete those labels before scoring.")
    negative = (array[:, 2] < 0) | (array[:, 3] < 0)
    if negative.any():
        row = int(np.flatnonzero(negative)[0])
        raise InvalidInputError(f"{what}: {int(negative.sum())} boxes have a negative width or height (first at row "
                                f"{row}: {array[row].tolist()}); boxes are [x, y, w, h] with w, h >= 0.")
    return array


def check_boxes(boxes, what: str) -> np.ndarray:
    """Validate ``boxes`` (see :func:`as_boxes`) and return the (n,) bool mask of boxes not inside the image.

    A box past the border is not fatal (it is still scored, on its overlap with the others): callers warn about it
    per label. Relative coordinates in [0, 1] are inside, with a tolerance of ``OUTSIDE_TOLERANCE``.
    """
    array = as_boxes(boxes, what)
    lo, hi = -OUTSIDE_TOLERANCE, 1 + OUTSIDE_TOLERANCE
    return ((array[:, 0] < lo) | (array[:, 1] < lo) | (array[:, 0] + array[:, 2] > hi)
            | (array[:, 1] + array[:, 3] > hi))


def box_iou(a, b) -> np.ndarray:
    """Intersection over union of every pair: ``a`` (n, 4), ``b`` (m, 4) relative xywh -> (n, m) in [0, 1].

    Empty boxes (zero area) overlap nothing: IoU 0, also with themselves.
    """
    a, b = as_boxes(a, "box_iou a"), as_boxes(b, "box_iou b")
    return _iou(a[:, None, :], b[None, :, :])


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of row i of ``a`` with row i of ``b``: (n, 4), (n, 4) -> (n,)."""
    return _iou(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of broadcast xywh boxes (last axis 4)."""
    x0 = np.maximum(a[..., 0], b[..., 0])
    y0 = np.maximum(a[..., 1], b[..., 1])
    x1 = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2])
    y1 = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return np.minimum(iou, 1.0)  # rounding can leave a box's IoU with itself a hair above 1


def pairs_within_samples(sample_a: np.ndarray, sample_b: np.ndarray, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j) with ``sample_a[i] == sample_b[j]``: two (n_pairs,) index arrays, grouped by i.

    Cost is the number of pairs (the sum over samples of a_s * b_s), never n_a * n_b: datasets hold a few boxes
    per sample, so this stays linear in the number of boxes.
    """
    sample_a, sample_b = np.asarray(sample_a, dtype=np.int64), np.asarray(sample_b, dtype=np.int64)
    order_b = np.argsort(sample_b, kind="stable")
    counts_b = np.bincount(sample_b, minlength=n_samples)
    starts_b = np.concatenate([[0], np.cumsum(counts_b)[:-1]])
    per_a = counts_b[sample_a]
    ia = np.repeat(np.arange(len(sample_a)), per_a)
    offset = np.arange(len(ia)) - np.repeat(np.cumsum(per_a) - per_a, per_a)
    ib = order_b[starts_b[sample_a[ia]] + offset] if len(ia) else np.zeros(0, dtype=np.int64)
    return ia, ib


def best_per_group(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """For each group g in 0..n_groups-1, the index of the largest of ``values[groups == g]`` (first on ties), or
    -1 for a group with no member: (n_groups,) int."""
    best = np.full(n_groups, -1, dtype=np.int64)
    if len(values) == 0:
        return best
    order = np.lexsort((-np.asarray(values, dtype=np.float64), groups))
    first = np.concatenate([[True], groups[order][1:] != groups[order][:-1]])
    best[groups[order][first]] = order[first]
    return best


def group_max(values: np.ndarray, groups: np.ndarray, n_groups: int, fill: float = 0.0) -> np.ndarray:
    """The largest value of each group, ``fill`` where a group has none: (n_groups,) float."""
    out = np.full(n_groups, fill, dtype=np.float64)
    best = best_per_group(values, groups, n_groups)
    has = best >= 0
    out[has] = np.asarray(values, dtype=np.float64)[best[has]]
    return out
