"""How well a batch covers the data distribution, next to random batches of the same size from the same pool.

``selection_metrics`` takes arrays and returns a JSON-serialisable dict (plain floats, ints, lists, None) that
``report_html.render_report`` turns into a page. No FiftyOne here.

The *covered* set is the batch plus the rows labeled already; the random baseline draws, for each of ``n_random``
seeds (``seed``, ``seed + 1``, ...), as many rows as the batch holds from the pool (rows not labeled) with
``select_random``, adds the same labeled rows, and scores the result with the same code as the batch.

Metrics (higher is better unless said):

- ``cluster_coverage``: share of natural clusters (noise excluded) holding a covered row.
- ``small_cluster_coverage``: the same over small clusters: kind "sparse", or size <= ``small_cluster_size``.
- ``delta_coverage``: share of rows within cosine distance δ of a covered row. δ defaults to the median distance
  of a row to its 10th nearest neighbour among ``DELTA_SAMPLE`` rows sampled from the pool: the radius of a
  neighbourhood holding about 0.2% of the pool, whatever its size (all of the pool below that size).
- ``kcenter_radius`` (lower is better): the largest distance of a row to its nearest covered row, the quantity
  k-center greedy minimises; ``kcenter_radius_p95`` is its 95th percentile, which one outlier does not decide.
- ``class_coverage`` (when class labels are given): share of the classes present with a covered row.
- ``edge_cases``: picks that are outliers (noise) or in sparse clusters, the rare samples a random batch misses.

Distances are cosine distances ``|a - b|`` between L2-normalised rows (``sqrt(2 - 2 cos)``). They are measured
from every row up to ``max_distance_rows`` rows, and above that from a seeded uniform sample of that many rows (the
same rows for the batch and every random draw): every row of a 1M pool against 11 batches of 10k costs 1e14
flops, ten minutes on two cores, while a 20k sample estimates a coverage share within +-0.7% (two standard
errors). A sampled radius can only be smaller than the exact one. Only the rows used are normalised and checked for
NaN, so a memory-mapped array is never read whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate_loop.curation.clustering import NOISE, ClusterResult
from curate_loop.curation.rows import row_indices
from curate_loop.curation.strategies import select_random
from curate_loop.errors import InvalidInputError
from curate_loop.similarity.knn import knn_graph
from curate_loop.vectors import normalize_rows

DELTA_NEIGHBORS = 10  # δ: the distance to this nearest neighbour, a local scale of the data
DELTA_SAMPLE = 5_000  # δ is measured among at most this many pool rows (~0.3 s for 512 dims)
DEFAULT_MAX_DISTANCE_ROWS = 20_000  # 1M x 512, k = 10k, 10 draws: 16-24 s on 2 shared cores
ROBUST_QUANTILE = 0.95  # kcenter_radius_p95
N_EXTREME_CLUSTERS = 3  # how many sparsest and densest clusters the report shows
BLOCK_ENTRIES = 1 << 24  # a similarity block holds at most this many floats (64 MB)

# name -> higher is better; the order of the summary
SUMMARY_METRICS = {"cluster_coverage": True, "small_cluster_coverage": True, "class_coverage": True,
                   "delta_coverage": True, "kcenter_radius": False, "kcenter_radius_p95": False, "edge_cases": True}


@dataclass(frozen=True)
class _Setting:
    """What scoring the batch and each random draw shares: computed once."""

    labels: np.ndarray  # (n,) natural cluster per row, NOISE for outliers
    small: np.ndarray  # (n_clusters,) bool, small clusters
    edge: np.ndarray  # (n,) bool, row is noise or in a sparse cluster
    class_codes: np.ndarray | None  # (n,) class number per row, -1 unknown
    n_classes: int
    labeled: np.ndarray  # (L,) labeled rows
    distance_points: np.ndarray  # (m, dim) unit rows distances are measured from
    to_labeled: np.ndarray  # (m,) their distance to the nearest labeled row (inf without any)
    delta: float
    vectors: np.ndarray  # the caller's (n, dim) array, rows normalised on demand


def selection_metrics(vectors, clusters: ClusterResult, picked_idx, *, labeled_idx=None, class_labels=None,
                      n_random: int = 10, seed: int = 0, small_cluster_size: int | None = None,
                      delta: float | None = None,
                      max_distance_rows: int | None = DEFAULT_MAX_DISTANCE_ROWS) -> dict:
    """Coverage of the batch ``picked_idx`` (plus ``labeled_idx``) against random batches of the same size.

    Parameters
    ----------
    vectors : (n, dim) array of embeddings, any scale (rows are L2-normalised).
    clusters : natural clusters of these same ``n`` rows (``cluster_embeddings``).
    picked_idx : (k,) distinct row numbers of the batch, none of them labeled.
    labeled_idx : (L,) distinct row numbers labeled already; they count as covered, and random draws avoid them.
    class_labels : (n,) class of each row (any hashable; None or NaN = unknown), for ``class_coverage``.
    n_random : number of random batches (seeds ``seed .. seed + n_random - 1``) the mean and std come from.
    small_cluster_size : clusters up to this size count as small; default: the clusters of kind "sparse".
    delta : cosine distance for ``delta_coverage``; default: see the module docstring.
    max_distance_rows : distance metrics are measured from at most this many rows (None: every row).

    Returns
    -------
    dict with keys ``counts``, ``delta``, ``cluster_coverage``, ``small_cluster_coverage``, ``delta_coverage``,
    ``kcenter_radius``, ``kcenter_radius_p95``, ``class_coverage`` (None without classes), ``classes`` (None
    without classes), ``edge_cases``, ``clusters`` (per-cluster rows, largest first), ``noise``,
    ``sparsest_clusters``, ``densest_clusters`` (cluster ids) and ``summary`` (metric -> ours, random mean and
    std, ratio (None when the mean is 0), difference, higher_is_better, better). A metric with nothing to measure
    (no small clusters, no known class) is None and left out of the summary.
    """
    vectors = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)  # a memmap stays one
    n = _check_vectors(vectors, clusters)
    picked = row_indices(picked_idx, n, "picked_idx", unique=True)
    labeled = row_indices(labeled_idx, n, "labeled_idx", unique=True)
    _check_options(picked, labeled, n_random, small_cluster_size, delta, max_distance_rows)
    class_codes, class_names = _class_codes(class_labels, n)
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(n), labeled, assume_unique=True)
    delta_given = delta is not None
    if not delta_given:
        delta = _default_delta(vectors, pool, rng)
    setting = _setting(vectors, clusters, labeled, class_codes, len(class_names), small_cluster_size, delta,
                       max_distance_rows, rng)

    ours = _scores(picked, setting)
    draws = [_scores(select_random(n, len(picked), seed=seed + s, labeled_idx=labeled), setting)
             for s in range(n_random)]
    return {
        "counts": {"n_rows": n, "n_pool": len(pool), "n_labeled": len(labeled), "n_picked": len(picked),
                   "n_clusters": clusters.n_clusters, "n_noise": int((clusters.labels == NOISE).sum()),
                   "n_small_clusters": int(setting.small.sum()), "n_random": n_random, "seed": seed,
                   "distance_rows": len(setting.distance_points), "clustering_method": clusters.method},
        "delta": {"value": float(delta), "given": delta_given, "neighbors": DELTA_NEIGHBORS,
                  "sample_size": None if delta_given else min(DELTA_SAMPLE, len(pool))},
        **{name: ours[name] for name in ("cluster_coverage", "small_cluster_coverage", "delta_coverage",
                                         "kcenter_radius", "kcenter_radius_p95", "class_coverage")},
        "classes": _class_table(class_codes, class_names, picked, labeled, len(pool)),
        "edge_cases": _edge_cases(picked, clusters),
        "clusters": _cluster_table(clusters, picked, labeled, len(pool)),
        "noise": _noise_row(clusters, picked, labeled, len(pool)),
        **_extreme_clusters(clusters),
        "summary": _summary(ours, draws),
    }


# -- scoring -------------------------------------------------------------------------------------------------------
def _scores(batch: np.ndarray, s: _Setting) -> dict[str, float | None]:
    """Every summary metric of one batch (rows), labeled rows counted as covered."""
    covered = np.concatenate([s.labeled, batch])
    reached = _reached(s.labels[covered], len(s.small))
    distance = np.minimum(s.to_labeled, min_distance(s.distance_points, _unit_rows(s.vectors, batch)))
    class_coverage = None
    if s.class_codes is not None and s.n_classes:
        codes = s.class_codes[covered]
        class_coverage = len(np.unique(codes[codes >= 0])) / s.n_classes
    return {"cluster_coverage": _share(reached), "small_cluster_coverage": _share(reached[s.small]),
            "class_coverage": class_coverage,
            "delta_coverage": float(np.mean(distance <= s.delta)),
            "kcenter_radius": float(distance.max()),
            "kcenter_radius_p95": float(np.quantile(distance, ROBUST_QUANTILE)),
            "edge_cases": int(s.edge[batch].sum())}


def _reached(cluster_labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """(n_clusters,) bool, clusters holding one of the rows whose cluster ``cluster_labels`` gives."""
    reached = np.zeros(n_clusters, dtype=bool)
    reached[cluster_labels[cluster_labels >= 0]] = True
    return reached


def _share(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if len(flags) else None


def min_distance(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(m,) cosine distance of each unit row of ``points`` (m, dim) to its nearest unit row of ``reference``.

    Blockwise matrix products, never an m x len(reference) matrix in memory (faiss's flat search measured no faster
    here: both are one BLAS product). inf for every point when ``reference`` is empty.
    """
    if len(reference) == 0:
        return np.full(len(points), np.inf, dtype=np.float32)
    best = np.concatenate([(points[block] @ reference.T).max(axis=1) for block in _blocks(len(points), len(reference))])
    return np.sqrt(np.maximum(2 - 2 * best, 0)).astype(np.float32)


def _blocks(n_rows: int, n_reference: int) -> list[slice]:
    size = max(1, BLOCK_ENTRIES // max(n_reference, 1))
    return [slice(i, i + size) for i in range(0, n_rows, size)]


def _summary(ours: dict, draws: list[dict]) -> dict[str, dict]:
    """Per metric: ours, the random mean and std, ours / mean, ours - mean, and whether ours is better."""
    summary = {}
    for name, higher_is_better in SUMMARY_METRICS.items():
        values = [d[name] for d in draws if d[name] is not None]
        mine = ours[name]
        if mine is None or not values:
            continue
        mean, std = float(np.mean(values)), float(np.std(values))
        summary[name] = {"ours": mine, "random_mean": mean, "random_std": std,
                         "ratio": mine / mean if mean else None, "difference": mine - mean,
                         "higher_is_better": higher_is_better,
                         "better": bool(mine > mean if higher_is_better else mine < mean)}
    return summary


# -- what scoring shares -------------------------------------------------------------------------------------------
def _setting(vectors: np.ndarray, clusters: ClusterResult, labeled: np.ndarray, class_codes: np.ndarray | None,
             n_classes: int, small_cluster_size: int | None, delta: float, max_distance_rows: int | None,
             rng: np.random.Generator) -> _Setting:
    n = len(clusters.labels)
    small = clusters.kinds == "sparse" if small_cluster_size is None else clusters.sizes <= small_cluster_size
    rows = np.arange(n)
    if max_distance_rows is not None and n > max_distance_rows:
        rows = np.sort(rng.choice(n, max_distance_rows, replace=False))
    points = _unit_rows(vectors, rows)
    return _Setting(labels=clusters.labels, small=np.asarray(small, dtype=bool), edge=_edge_rows(clusters),
                    class_codes=class_codes, n_classes=n_classes, labeled=labeled, distance_points=points,
                    to_labeled=min_distance(points, _unit_rows(vectors, labeled)), delta=float(delta),
                    vectors=vectors)


def _default_delta(vectors: np.ndarray, pool: np.ndarray, rng: np.random.Generator) -> float:
    """Median distance of a pool row to its ``DELTA_NEIGHBORS``-th nearest among ``DELTA_SAMPLE`` sampled pool rows."""
    sample = pool if len(pool) <= DELTA_SAMPLE else np.sort(rng.choice(pool, DELTA_SAMPLE, replace=False))
    k = min(DELTA_NEIGHBORS, len(sample) - 1)
    if k < 1:
        raise InvalidInputError(f"The pool holds {len(pool)} row, too few to derive delta from neighbour "
                                "distances; pass delta (a cosine distance, e.g. 0.3).")
    _, similarities = knn_graph(_unit_rows(vectors, sample), k)
    return float(np.median(np.sqrt(np.maximum(2 - 2 * similarities[:, -1], 0))))


def _edge_rows(clusters: ClusterResult) -> np.ndarray:
    """(n,) bool, rows that are noise or in a sparse cluster."""
    sparse = np.append(clusters.kinds == "sparse", True)  # index -1 (NOISE) reads the appended True
    return sparse[clusters.labels]


def _unit_rows(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """L2-normalised float32 copies of ``rows`` only (validated: finite, non-zero): a memory map is not read whole."""
    return normalize_rows(vectors[rows], zero_rows="raise", min_rows=0)


# -- tables --------------------------------------------------------------------------------------------------------
def _cluster_table(clusters: ClusterResult, picked: np.ndarray, labeled: np.ndarray, n_pool: int) -> list[dict]:
    """One row per natural cluster, largest first; ``expected_random``: picks a random batch puts there on average
    (batch size x the cluster's pool rows / pool size)."""
    m = clusters.n_clusters
    picks = np.bincount(clusters.labels[picked][clusters.labels[picked] >= 0], minlength=m)
    done = np.bincount(clusters.labels[labeled][clusters.labels[labeled] >= 0], minlength=m)
    expected = len(picked) * (clusters.sizes - done) / n_pool
    order = np.lexsort((np.arange(m), -clusters.sizes))
    return [{"id": int(c), "size": int(clusters.sizes[c]), "kind": str(clusters.kinds[c]),
             "density": float(clusters.density[c]), "picked": int(picks[c]), "labeled": int(done[c]),
             "expected_random": float(expected[c])} for c in order]


def _noise_row(clusters: ClusterResult, picked: np.ndarray, labeled: np.ndarray, n_pool: int) -> dict:
    noise = clusters.labels == NOISE
    in_pool = int(noise.sum() - noise[labeled].sum())
    return {"size": int(noise.sum()), "picked": int(noise[picked].sum()), "labeled": int(noise[labeled].sum()),
            "expected_random": len(picked) * in_pool / n_pool}


def _edge_cases(picked: np.ndarray, clusters: ClusterResult) -> dict:
    """Picks that are outliers or in sparse clusters, with their rows so the report can show them."""
    edge = _edge_rows(clusters)[picked]
    noise = clusters.labels[picked] == NOISE
    return {"count": int(edge.sum()), "noise": int(noise.sum()), "in_sparse_clusters": int((edge & ~noise).sum()),
            "rows": picked[edge].tolist()}


def _extreme_clusters(clusters: ClusterResult) -> dict[str, list[int]]:
    """Ids of the ``N_EXTREME_CLUSTERS`` sparsest and densest clusters (by density), for thumbnails."""
    order = np.argsort(clusters.density, kind="stable")
    few = min(N_EXTREME_CLUSTERS, len(order))
    return {"sparsest_clusters": order[:few].tolist(), "densest_clusters": order[::-1][:few].tolist()}


def _class_codes(class_labels, n: int) -> tuple[np.ndarray | None, list[str]]:
    """(n,) class number per row (-1 for None/NaN) and the class names (str), sorted; (None, []) without labels."""
    if class_labels is None:
        return None, []
    values = list(class_labels)
    if len(values) != n:
        raise InvalidInputError(f"class_labels has {len(values)} entries but there are {n} vectors; pass one class "
                                "(or None) per row.")
    known = np.array([not (v is None or (isinstance(v, float) and v != v)) for v in values], dtype=bool)
    names, codes = np.unique(np.array([str(v) for v, k in zip(values, known) if k], dtype=str), return_inverse=True)
    all_codes = np.full(n, -1, dtype=np.int64)
    all_codes[known] = codes
    return all_codes, names.tolist()


def _class_table(codes: np.ndarray | None, names: list[str], picked: np.ndarray, labeled: np.ndarray,
                 n_pool: int) -> dict | None:
    if codes is None:
        return None
    m = len(names)
    rows = np.bincount(codes[codes >= 0], minlength=m)
    done = np.bincount(codes[labeled][codes[labeled] >= 0], minlength=m)
    picks = np.bincount(codes[picked][codes[picked] >= 0], minlength=m)
    expected = len(picked) * (rows - done) / n_pool
    return {"n_classes": m, "unknown_rows": int((codes < 0).sum()), "unknown_in_batch": int((codes[picked] < 0).sum()),
            "table": [{"class": names[c], "rows": int(rows[c]), "labeled": int(done[c]), "picked": int(picks[c]),
                       "expected_random": float(expected[c])} for c in np.argsort(-rows, kind="stable")]}


# -- validation ----------------------------------------------------------------------------------------------------
def _check_vectors(vectors: np.ndarray, clusters: ClusterResult) -> int:
    shape = vectors.shape
    if len(shape) != 2 or shape[0] == 0 or shape[1] == 0:
        raise InvalidInputError(f"Expected embeddings of shape (n, dim), got shape {shape}; pass one row per sample.")
    if len(clusters.labels) != shape[0]:
        raise InvalidInputError(f"clusters has labels for {len(clusters.labels)} samples but there are {shape[0]} "
                                "vectors; cluster these same vectors (cluster_embeddings).")
    return shape[0]


def _check_options(picked: np.ndarray, labeled: np.ndarray, n_random, small_cluster_size, delta,
                   max_distance_rows) -> None:
    if len(picked) == 0:
        raise InvalidInputError("picked_idx is empty; pass the rows of the batch to measure.")
    overlap = np.intersect1d(picked, labeled)
    if len(overlap):
        raise InvalidInputError(f"{len(overlap)} picked rows are labeled already (first {overlap[0]}); a batch holds "
                                "rows to label next, so drop them from picked_idx or from labeled_idx.")
    for name, value in (("n_random", n_random), ("small_cluster_size", small_cluster_size),
                        ("max_distance_rows", max_distance_rows)):
        if value is None and name != "n_random":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}.")
    if delta is not None and not (np.isfinite(delta) and 0 < delta <= 2):
        raise InvalidInputError(f"delta is a cosine distance in (0, 2], got {delta!r}.")
