"""2-D maps of embeddings: PCA to a few dozen dimensions, then UMAP (or PCA/t-SNE-free fallbacks).

UMAP is fitted on at most ``fit_limit`` points and the rest are placed with ``transform``: fitting is
what grows super-linearly, placing is linear, so a 1M-point map stays feasible on a laptop.
"""

from __future__ import annotations

import numpy as np

from curate_loop.errors import InvalidInputError

METHODS = ("umap", "pca")


def project_2d(vectors: np.ndarray, *, method: str = "umap", seed: int = 0, fit_limit: int = 100_000,
               pca_dims: int = 50) -> np.ndarray:
    """``(n, dim) -> (n, 2)`` float32 map coordinates."""
    from sklearn.decomposition import PCA

    vectors = np.asarray(vectors, dtype=np.float32)
    if method not in METHODS:
        raise InvalidInputError(f"Unknown map method {method!r}; choose one of {METHODS}.")
    if vectors.ndim != 2 or len(vectors) < 3:
        raise InvalidInputError(f"A map needs at least 3 vectors of shape (n, dim), got {vectors.shape}")
    n_components = min(pca_dims if method == "umap" else 2, vectors.shape[1], len(vectors))
    reduced = PCA(n_components=n_components, random_state=seed).fit_transform(vectors).astype(np.float32)
    if method == "pca":
        return reduced[:, :2]
    import umap

    # n_jobs=1: a seeded UMAP runs single-threaded anyway, and says so in a warning unless asked for one thread
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(vectors) - 1), min_dist=0.1, random_state=seed,
                        init="spectral" if len(vectors) > 10 else "random", n_jobs=1)
    if len(reduced) <= fit_limit:
        return reducer.fit_transform(reduced).astype(np.float32)
    fit = np.random.default_rng(seed).choice(len(reduced), fit_limit, replace=False)
    points = np.empty((len(reduced), 2), dtype=np.float32)
    points[fit] = reducer.fit_transform(reduced[fit])
    rest = np.setdiff1d(np.arange(len(reduced)), fit)
    points[rest] = reducer.transform(reduced[rest])
    return points
