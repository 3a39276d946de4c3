"""The natural clusters of a pool of embeddings, each with a size, a density and a kind (dense/regular/sparse).

Selection needs them to know what "covering the distribution" means: every cluster reached, dense clusters
not over-sampled, sparse clusters (rare kinds of samples, edge cases) not forgotten.

Geometry is cosine: vectors are L2-normalised first. Up to ``HDBSCAN_MAX_POINTS`` vectors, HDBSCAN (leaf
selection) runs on a 16-dim PCA reduction (HDBSCAN finds clusters of any shape and size and leaves outliers out,
but slows down badly with the number of dimensions); above that, a faiss k-means partition (linear in n, nothing
O(n^2)) replaces it.

Noise: HDBSCAN's outliers keep the label ``NOISE`` (-1) and belong to no cluster. Making each one a singleton
cluster would turn "reach every cluster" into "label every outlier"; kept apart, they are reported as edge
cases and remain selectable like any other sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate_loop.errors import InvalidInputError
from curate_loop.similarity.knn import knn_graph
from curate_loop.vectors import normalize_rows

NOISE = -1
METHODS = ("auto", "hdbscan", "kmeans")
HDBSCAN_MAX_POINTS = 200_000  # 100k points in 16 dims took ~1 min on 2 cores here; k-means above
HDBSCAN_DIMS = 16  # digits: 16 PCA dims separate the classes (cluster purity .99), 8 do not (.88)
DENSITY_NEIGHBORS = 10
KNN_MAX_REFERENCE = 10_000  # neighbours are searched among at most this many members, so a cluster costs O(size)
SMALL_KMEANS_WORK = 100_000_000  # points x clusters x dims up to which scikit-learn's k-means is used (~1 s)
# Above this (e.g. 1M x 10k clusters x 512 dims: ~30 min on 2 cores), k-means runs on a PCA projection to
# KMEANS_REDUCED_DIMS, trained on at most KMEANS_LARGE_POINTS_PER_CENTROID points per centroid: ~1 min. Projecting
# costs coverage: 1,000 Zipf-sized planted clusters in 100k x 512, a 1,000-pick batch reached 43% of them at full
# width, 25% at 64 dims (random: 22%); so the full width is kept up to 100k x 1,000 clusters x 512 dims and more.
LARGE_KMEANS_WORK = 200_000_000_000
KMEANS_REDUCED_DIMS = 64
KMEANS_LARGE_POINTS_PER_CENTROID = 32


@dataclass(frozen=True)
class ClusterResult:
    """Cluster ids per vector and, per cluster, its size, density and kind.

    labels: (n,) int64, a cluster id in ``0..n_clusters-1`` or ``NOISE`` (-1) for an outlier in no cluster.
    sizes: (n_clusters,) int64 member counts.
    density: (n_clusters,) float32 mean cosine similarity of a member to its nearest fellow members (0 for a
        singleton).
    kinds: (n_clusters,) str, "sparse" (under twice ``min_cluster_size``, or at most median size with density in the
        bottom quartile), "dense" (density in the top quartile) or "regular".
    method: "hdbscan" or "kmeans", the algorithm that made the partition.
    """

    labels: np.ndarray
    sizes: np.ndarray
    density: np.ndarray
    kinds: np.ndarray
    method: str

    @property
    def n_clusters(self) -> int:
        return len(self.sizes)

    @property
    def noise_idx(self) -> np.ndarray:
        return np.flatnonzero(self.labels == NOISE)

    def clusters_of_kind(self, kind: str) -> np.ndarray:
        return np.flatnonzero(self.kinds == kind)


def mean_knn_sq_dist(points: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """(m,) mean squared cosine distance (``|a - b|² = 2 - 2 cos`` for unit rows) of each of ``points`` to its ``k``
    nearest other points; ``k`` is capped at m - 1, and every point gets 0 when there is no other point.

    Up to ``KNN_MAX_REFERENCE`` points the neighbours come from the array packages' kNN graph (exact there). Above,
    they are searched among a random reference subset of that size (a search of one set against another, not a
    graph): that keeps a cluster's cost linear in its size (a whole graph over a 231k-row cluster of the 1M bench
    took minutes) and still ranks points by local density, which is all typicality needs.
    """
    m = len(points)
    k = min(k, m - 1)
    if k < 1:
        return np.zeros(m, dtype=np.float32)
    if m <= KNN_MAX_REFERENCE:
        _, similarities = knn_graph(points, k, seed=seed)
    else:
        import faiss

        unit = normalize_rows(points, zero_rows="raise")
        in_ref = np.zeros(m, dtype=bool)
        in_ref[np.random.default_rng(seed).choice(m, KNN_MAX_REFERENCE, replace=False)] = True
        similarities, _ = faiss.knn(unit, unit[in_ref], k + 1, metric=faiss.METRIC_INNER_PRODUCT)
        # A reference point finds itself first: drop that column for it, the surplus last one otherwise.
        similarities = np.where(in_ref[:, None], similarities[:, 1:], similarities[:, :-1])
    return np.maximum(2 - 2 * similarities, 0).mean(axis=1)


def cluster_embeddings(vectors, *, method: str = "auto", min_cluster_size: int | None = None,
                       n_clusters: int | None = None, seed: int = 0) -> ClusterResult:
    """Natural clusters of ``vectors`` (n, dim).

    method: "hdbscan", "kmeans", or "auto" (HDBSCAN up to ``HDBSCAN_MAX_POINTS`` vectors, k-means above).
    min_cluster_size: the smallest group HDBSCAN calls a cluster, and the size under twice which a cluster is
        "sparse"; default ``max(5, sqrt(n) / 3)`` (11 for 1,250 samples, 105 for 100k).
    n_clusters: for k-means only; default ``sqrt(n) / 2`` clamped to [2, 1000].
    """
    unit = normalize_rows(vectors, zero_rows="raise", min_rows=2)
    n = len(unit)
    if method not in METHODS:
        raise InvalidInputError(f"Unknown clustering method {method!r}; choose one of {METHODS}.")
    if min_cluster_size is None:
        min_cluster_size = max(5, int(np.sqrt(n) / 3))
    if min_cluster_size < 2:
        raise InvalidInputError(f"min_cluster_size must be at least 2, got {min_cluster_size}.")
    if method == "auto":
        method = "hdbscan" if n <= HDBSCAN_MAX_POINTS else "kmeans"
    if method == "hdbscan":
        labels = _hdbscan_labels(unit, min_cluster_size, seed)
    else:
        if n_clusters is None:
            n_clusters = int(np.clip(np.sqrt(n) / 2, 2, 1000))
        if not 1 <= n_clusters <= n:
            raise InvalidInputError(f"n_clusters must be between 1 and the number of vectors ({n}), got {n_clusters}.")
        labels = kmeans_labels(unit, n_clusters, seed=seed)
    return _describe(unit, labels, min_cluster_size, method, seed)


def kmeans_labels(unit: np.ndarray, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """(n,) k-means cluster ids, relabelled so every id in ``0..used-1`` has members.

    scikit-learn's k-means with 10 restarts while n x clusters x dims is small (its better optimum is cheap there,
    and it runs single-threaded: on a busy machine, OpenMP threads waiting for cores cost 10x); faiss's above.
    """
    if n_clusters >= len(unit):
        return np.arange(len(unit), dtype=np.int64)
    if unit.size * n_clusters <= SMALL_KMEANS_WORK:
        from sklearn.cluster import KMeans

        from curate_loop.threads import one_blas_thread

        with one_blas_thread():
            labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(unit)
    else:
        import faiss

        data = np.ascontiguousarray(unit, dtype=np.float32)
        niter, per_centroid = 20, 256
        dims = kmeans_dims(*data.shape, n_clusters)
        if dims < data.shape[1]:
            data = _pca_project(data, dims, seed)
            niter, per_centroid = 10, KMEANS_LARGE_POINTS_PER_CENTROID
        km = faiss.Kmeans(data.shape[1], n_clusters, niter=niter, seed=seed, max_points_per_centroid=per_centroid,
                          min_points_per_centroid=1, verbose=False)
        km.train(data)
        labels = km.index.search(data, 1)[1][:, 0]
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def kmeans_dims(n: int, dim: int, n_clusters: int) -> int:
    """The width k-means works at: the full ``dim`` while n x clusters x dim stays under ``LARGE_KMEANS_WORK``,
    else ``KMEANS_REDUCED_DIMS`` PCA dims (a wider projection is a copy of the data almost as large as the data:
    at 1M x 512, 400 dims took the peak memory from 6.3 to 7.5 GB)."""
    if n * dim * n_clusters <= LARGE_KMEANS_WORK:
        return dim
    return min(dim, KMEANS_REDUCED_DIMS)


def _pca_project(data: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """``data`` projected on its top ``dims`` principal axes (fitted on a 100k sample): k-means' distances are
    dominated by those axes, and the assignment costs ``dims`` instead of the full width per centroid."""
    import faiss

    rng = np.random.default_rng(seed)
    sample = data if len(data) <= 100_000 else data[np.sort(rng.choice(len(data), 100_000, replace=False))]
    pca = faiss.PCAMatrix(data.shape[1], dims)
    pca.train(np.ascontiguousarray(sample))
    return np.concatenate([pca.apply(np.ascontiguousarray(data[i:i + 200_000])) for i in range(0, len(data), 200_000)])


def group_rows(labels: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Row numbers of each group ``0..n_groups-1`` (labels outside are ignored), in one sort instead of a scan
    per group."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_groups + 1))
    return [order[bounds[g]:bounds[g + 1]] for g in range(n_groups)]


def _hdbscan_labels(unit: np.ndarray, min_cluster_size: int, seed: int) -> np.ndarray:
    import hdbscan
    from sklearn.decomposition import PCA

    n = len(unit)
    if n < min_cluster_size:
        return np.full(n, NOISE, dtype=np.int64)
    dims = min(HDBSCAN_DIMS, unit.shape[1], n)
    reduced = unit if dims == unit.shape[1] else PCA(dims, random_state=seed).fit_transform(unit)
    reduced = reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
    # "leaf" keeps the finest stable clusters: "eom" (the default) merges whole groups into one blob (on digits,
    # one cluster holding 3, 5 and 9 while 1 is split in three), and selection treats a cluster as one kind.
    # min_samples below min_cluster_size: fewer points are called noise.
    clusterer = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min(5, min_cluster_size),
                                cluster_selection_method="leaf")
    return clusterer.fit_predict(reduced.astype(np.float64)).astype(np.int64)


def _describe(unit: np.ndarray, labels: np.ndarray, min_cluster_size: int, method: str, seed: int) -> ClusterResult:
    n_clusters = int(labels.max()) + 1 if (labels >= 0).any() else 0
    sizes = np.bincount(labels[labels >= 0], minlength=n_clusters).astype(np.int64)
    density = np.zeros(n_clusters, dtype=np.float32)
    for c, rows in enumerate(group_rows(labels, n_clusters)):
        sq = mean_knn_sq_dist(unit[rows], DENSITY_NEIGHBORS, seed=seed)
        density[c] = 0.0 if sizes[c] < 2 else float(np.mean(1 - sq / 2))  # |a-b|² = 2 - 2cos for unit vectors
    kinds = np.full(n_clusters, "regular", dtype=object)
    if n_clusters >= 4:  # quartiles of fewer clusters say nothing
        low, high = np.quantile(density, [0.25, 0.75])
        kinds[density >= high] = "dense"
        # A large diffuse cluster is a varied kind of sample, not a rare one: low density makes sparse only the
        # clusters no larger than the median.
        kinds[(density <= low) & (sizes <= np.median(sizes))] = "sparse"
    kinds[sizes < 2 * min_cluster_size] = "sparse"
    return ClusterResult(labels=labels, sizes=sizes, density=density, kinds=kinds.astype(str), method=method)
