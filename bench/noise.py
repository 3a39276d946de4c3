"""Label noise with known ground truth for the mislabel benchmark: symmetric, pair-flip and instance-dependent.

Every kind changes an exact number of rows and is deterministic per seed:
- ``symmetric`` r: round(r * n) rows chosen at random get a different class, uniformly among the other C - 1;
- ``pairflip`` r: in every class c, round(r * n_c) rows chosen at random become c + 1 (mod C);
- ``instance`` r: the round(r * n) rows nearest to another class flip to that class. "Nearest" is measured in a
  fixed space given by the caller (the bench passes the pixel PCA-32 space, the same for every feature set, so both
  feature sets see the same noisy labels): margin = d(nearest other class centroid) - d(own class centroid), with
  centroids of the true classes and Euclidean distances; the rows with the smallest margin flip to that nearest
  other class. A seeded Gaussian jitter of ``JITTER`` x the margins' standard deviation is added to the margins
  before ranking, so seeds differ while the flips stay among the rows closest to another class.
"""

from __future__ import annotations

import numpy as np

KINDS = ("symmetric", "pairflip", "instance")
JITTER = 0.25  # of the margins' standard deviation: about 80% of the flipped rows are shared between two seeds


def inject_noise(y: np.ndarray, kind: str, rate: float, seed: int, *, space: np.ndarray,
                 n_classes: int, jitter: float = JITTER) -> np.ndarray:
    """Noisy copy of ``y`` (n,) with classes 0..n_classes-1; ``space`` (n, d) is used by ``instance`` only."""
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    if kind == "symmetric":
        rows = rng.choice(len(y), round(rate * len(y)), replace=False)
        noisy[rows] = (y[rows] + rng.integers(1, n_classes, len(rows))) % n_classes
    elif kind == "pairflip":
        for c in range(n_classes):
            members = np.flatnonzero(y == c)
            rows = rng.choice(members, round(rate * len(members)), replace=False)
            noisy[rows] = (c + 1) % n_classes
    elif kind == "instance":
        margin, nearest_other = boundary_margin(y, space, n_classes)
        jittered = margin + rng.normal(0.0, jitter * margin.std(), len(y))
        for c in range(n_classes):
            members = np.flatnonzero(y == c)
            rows = members[np.argsort(jittered[members], kind="stable")[:round(rate * len(members))]]
            noisy[rows] = nearest_other[rows]
    else:
        raise ValueError(f"unknown noise kind {kind!r}; use one of {KINDS}")
    return noisy


def boundary_margin(y: np.ndarray, space: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: d(nearest other class centroid) - d(own centroid) (small = near another class), and that class."""
    centroids = np.stack([space[y == c].mean(axis=0) for c in range(n_classes)])
    dist = np.linalg.norm(space[:, None, :] - centroids[None, :, :], axis=2)
    rows = np.arange(len(y))
    own = dist[rows, y]
    dist[rows, y] = np.inf
    nearest_other = dist.argmin(axis=1)
    return dist[rows, nearest_other] - own, nearest_other


def noise_matrix(y: np.ndarray, noisy: np.ndarray, kind: str, rate: float, n_classes: int) -> np.ndarray:
    """P(given=i | true=j) (columns sum to 1): the matrix the noise was drawn from, or for ``instance`` (which has
    no class-level model) the realised one."""
    eye = np.eye(n_classes)
    if kind == "symmetric":
        return (1 - rate) * eye + rate / (n_classes - 1) * (1 - eye)
    if kind == "pairflip":
        return (1 - rate) * eye + rate * np.roll(eye, 1, axis=0)
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (noisy, y), 1)
    return counts / counts.sum(axis=0, keepdims=True)
