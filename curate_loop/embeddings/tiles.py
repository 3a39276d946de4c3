"""Thin a 2-D map for display without losing its rare regions.

Plain random thinning keeps points in proportion to density, so a sparse region of 30 points in a
1M-point map vanishes. Instead the map is cut into a grid of tiles and every non-empty tile keeps up
to the same quota of points (water-filling the budget), the way Superb Curate samples its map:
dense tiles are thinned, sparse tiles are kept whole.
"""

from __future__ import annotations

import numpy as np

from curate_loop.errors import InvalidInputError


def tile_sample(points: np.ndarray, max_points: int, *, grid: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of at most ``max_points`` rows of ``points (n, 2)``, spread evenly across tiles.

    The default grid has about ``max_points / 16`` tiles, so a tile that holds a small island can
    show a few dozen of its points.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise InvalidInputError(f"Expected 2-D map points of shape (n, 2), got {points.shape}")
    if max_points < 1:
        raise InvalidInputError(f"max_points must be at least 1, got {max_points}")
    n = len(points)
    if n <= max_points:
        return np.arange(n)
    grid = grid or int(np.clip(np.sqrt(max_points / 16), 4, 256))
    lo, hi = points.min(axis=0), points.max(axis=0)
    cells = np.floor((points - lo) / np.where(hi > lo, hi - lo, 1.0) * grid).clip(0, grid - 1).astype(np.int64)
    tile = cells[:, 0] * grid + cells[:, 1]
    _, tile_of, counts = np.unique(tile, return_inverse=True, return_counts=True)
    quota = _water_fill(counts, max_points)
    # a random rank inside each tile: keep the points ranked below the tile's quota
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(n), tile_of))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[tile_of[order]]
    return np.flatnonzero(rank < quota[tile_of])


def _water_fill(counts: np.ndarray, budget: int) -> np.ndarray:
    """Per-tile quotas ``min(count, q)`` summing to at most ``budget``, q as large as possible."""
    sorted_counts = np.sort(counts)
    filled = np.cumsum(sorted_counts)  # points used if tiles up to k are kept whole
    remaining = len(counts) - np.arange(1, len(counts) + 1)
    # largest k whose tiles fit whole, with the rest getting at least that many each
    fits = filled + remaining * sorted_counts <= budget
    k = int(np.flatnonzero(fits)[-1]) + 1 if fits.any() else 0
    used = int(filled[k - 1]) if k else 0
    q = (budget - used) // max(len(counts) - k, 1)
    quota = np.minimum(counts, q)
    # hand the leftover budget to the largest tiles, one point each
    leftover = budget - int(quota.sum())
    if leftover > 0:
        room = np.flatnonzero(counts > quota)
        quota[room[np.argsort(-counts[room])][:leftover]] += 1
    return quota
