"""Edge cases in a pool of embeddings: how far off the beaten track each sample lies, and how much of that sparse
region the labeled set already covers (edge-case saturation).

Edge score: the larger of two scores in [0, 1], each a ratio of distances (so neither drifts with the pool's size):

- *local*: the Local Outlier Factor (LOF, Breunig et al. 2000) on cosine distances (1 - cos), below;
- *global*: ``clip(1 - typical / own, 0, 1)`` of a row's mean distance to its k nearest neighbours against the
  pool's median of it. LOF compares a row only with its neighbours, so in a pool where everything is spread out
  (the example's photos: every background differs) an odd image among odd images scores ~0; its distance to
  anything at all is what gives it away (example, colour statistics: inverted and flat-colour outliers rank in
  the top 2-10% with this score, at 0.4-0.7 with LOF alone).

LOF in detail:
A row's *reachability distance* to a neighbour o is max(d(row, o), o's distance to its own k-th neighbour); its
*local density* is 1 / the mean reachability distance to its ``k`` nearest neighbours; LOF is the neighbours' mean
local density over the row's own. The score is ``clip(1 - 1/LOF, 0, 1)``:

- 0: the row is at least as dense as its neighbours (inside a cluster, whatever the cluster's own density);
- 0.5: half as dense as its neighbours (LOF 2), e.g. a member of a group of a few rows far from the rest;
- towards 1: an isolated outlier.

Reachability is what makes a small group stand out as a whole: its members' mates reach the rest of the pool
only at a long k-th distance, so they count as sparse too (on a 3-cluster mixture with a far group of 6, k = 10,
the plain distance ratio gave the group 0 to 0.36, like a cluster's tail; LOF gives it 0.53 to 0.8, tails < 0.3).
The score compares a row with its own neighbours, so it does not drift with the size of the pool (doubling the
pool shrinks all distances alike) and it is not a rank: the same row scores alike in a pool of 1k or 1M.

Neighbours are exact up to ``knn.EXACT_MAX_SIZE`` rows: the array packages' one kNN graph
(:func:`curate_loop.similarity.knn.knn_graph`). Above, a density ranking needs no recall@10 of .97, and the graph's
IVF path tuned to it took 545 s for 200k x 512 rows of the scale bench's mixture: neighbours are searched SemDeDup
style instead, in k-means cells of about ``duplicates.CELL_ROWS`` rows
(:func:`curate_loop.curation.duplicates.nearest_cells`), each row compared with the rows of its ``CELL_PROBES``
nearest cells, one matrix product per cell; cost O(n x cells probed x cell size), memory O(n k). A neighbour beyond
the probed cells is missed, and a farther one takes its place: distances, and with them scores, can come out a
little off (checked against brute force in the tests).

Saturation: the *edge region* is a set of rows (by default the top ``DEFAULT_EDGE_FRACTION`` of edge scores, or
any mask, e.g. sparse-cluster members and noise). An edge row is *covered* when it is labeled or one of its ``k``
nearest neighbours is, i.e. a labeled sample lies within its k-NN radius. A batch's *gain* is the share of edge
rows it newly covers; when gains stay small, labeling more edge cases has stopped paying (:func:`saturated`).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from curate_loop.curation.clustering import group_rows
from curate_loop.curation.duplicates import default_partitions, nearest_cells
from curate_loop.curation.rows import row_mask
from curate_loop.errors import InvalidInputError
from curate_loop.similarity.knn import EXACT_MAX_SIZE, drop_self_pairs, knn_graph
from curate_loop.vectors import normalize_rows

DEFAULT_K = 10  # groups of fewer than ~k rows stand out as a whole; larger groups count as clusters
# Own cell + 2 nearest. Worst case checked (isotropic 512-d gaussians, 5 cells per cluster): recall@10 0.81, yet 99% of
# scores within 0.016 of brute force, same top 1%; 5 probes: recall 0.95 for 1.5x the search time.
CELL_PROBES = 3
DISTANCE_EPS = 1e-6  # cosine distances below float32 resolution: a pile of exact copies has LOF 1, not 0/0
DEFAULT_EDGE_FRACTION = 0.1  # the edge region: the top 10% of edge scores
DEFAULT_MIN_GAIN = 0.02  # a batch covering under 2% more of the edge region adds little
DEFAULT_PATIENCE = 2  # two such batches in a row: one could be bad luck


@dataclass(frozen=True)
class EdgeSaturation:
    """How much of the edge region labeled samples cover, before and after a batch.

    n_edge: rows in the edge region.
    covered_before: share of them covered by the labeled rows (1.0 when the region is empty: nothing to cover).
    covered_after: share covered by the labeled rows plus the batch.
    """

    n_edge: int
    covered_before: float
    covered_after: float

    @property
    def gain(self) -> float:
        """Share of the edge region the batch newly covers."""
        return self.covered_after - self.covered_before

    def to_dict(self) -> dict:
        """JSON-ready, gain included."""
        return {"n_edge": self.n_edge, "covered_before": self.covered_before, "covered_after": self.covered_after,
                "gain": self.gain}


@dataclass(frozen=True)
class EdgeNeighborhoods:
    """Each row's ``k`` nearest neighbours and its edge score: compute once, then score, pick a region and measure
    saturation batch after batch without searching again.

    neighbors: (n, k) int64 rows, nearest first, self excluded.
    distances: (n, k) float32 cosine distances (1 - cos) to them, ascending.
    scores: (n,) float32 edge scores in [0, 1], higher = more of an edge case (see the module docstring).
    """

    neighbors: np.ndarray
    distances: np.ndarray
    scores: np.ndarray

    @property
    def k(self) -> int:
        return self.neighbors.shape[1]

    @property
    def radius(self) -> np.ndarray:
        """(n,) cosine distance to the k-th nearest neighbour: the reach within which a labeled row covers a row."""
        return self.distances[:, -1]

    def edge_region(self, top_fraction: float = DEFAULT_EDGE_FRACTION) -> np.ndarray:
        """(n,) bool: the ``top_fraction`` highest-scoring rows (ties at the cut included), never a row scoring 0."""
        if not 0.0 < top_fraction <= 1.0:
            raise InvalidInputError(f"top_fraction is a share of the pool in (0, 1], got {top_fraction}.")
        n_top = max(1, int(round(top_fraction * len(self.scores))))
        cut = np.partition(self.scores, len(self.scores) - n_top)[len(self.scores) - n_top]
        return (self.scores >= cut) & (self.scores > 0)

    def saturation(self, edge_mask=None, labeled_idx=None, batch_idx=None) -> EdgeSaturation:
        """Coverage of the edge region (``edge_mask``, (n,) bool; default :meth:`edge_region`) by the labeled rows,
        then by the labeled rows plus ``batch_idx``."""
        n = len(self.scores)
        edge = self.edge_region() if edge_mask is None else _edge_mask(edge_mask, n)
        labeled = row_mask(labeled_idx, n, "labeled_idx")
        with_batch = labeled | row_mask(batch_idx, n, "batch_idx")
        n_edge = int(edge.sum())
        if n_edge == 0:
            return EdgeSaturation(n_edge=0, covered_before=1.0, covered_after=1.0)
        return EdgeSaturation(n_edge=n_edge, covered_before=self._covered_share(edge, labeled),
                              covered_after=self._covered_share(edge, with_batch))

    def _covered_share(self, edge: np.ndarray, labeled: np.ndarray) -> float:
        rows = np.flatnonzero(edge)
        covered = labeled[rows] | labeled[self.neighbors[rows]].any(axis=1)
        return float(covered.mean())


def edge_neighborhoods(vectors, *, k: int = DEFAULT_K, seed: int = 0, exact: bool | None = None) -> EdgeNeighborhoods:
    """Nearest neighbours and edge scores of ``vectors`` (n, dim), n >= 2.

    k: neighbours per row; in a pool of fewer than 2k + 1 rows, capped at half the others ((n - 1) // 2, at least
        1): with every other row as a neighbour, every row's LOF would be about 1.
    exact: brute-force neighbours (default: up to ``knn.EXACT_MAX_SIZE`` rows), else within k-means cells.
    seed: the k-means partition's.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k, the number of neighbours, must be a positive integer, got {k!r}; "
                                f"{DEFAULT_K} is the usual choice.")
    shape = np.shape(vectors)  # knn_graph validates the rest
    if len(shape) == 2 and shape[0] < 2:
        raise InvalidInputError(f"Edge scores compare a sample with its neighbours: need at least 2 embeddings, "
                                f"got {shape[0]}.")
    n = shape[0] if shape else 0
    k = min(int(k), max(1, (n - 1) // 2))
    if exact is None:
        exact = n <= EXACT_MAX_SIZE
    if exact:
        ids, sims = knn_graph(vectors, k, exact=True)
    else:
        unit = normalize_rows(vectors, zero_rows="raise")
        sims, ids = _cell_knn(unit, k + 1, seed)
        ids, sims = drop_self_pairs(ids, sims)
    distances = np.maximum(1.0 - sims, 0.0).astype(np.float32)
    scores = np.maximum(_lof_scores(distances, ids), _isolation_scores(distances))
    return EdgeNeighborhoods(neighbors=ids, distances=distances, scores=scores)


def edge_scores(vectors, *, k: int = DEFAULT_K, seed: int = 0, exact: bool | None = None) -> np.ndarray:
    """(n,) float32 edge score per row of ``vectors`` (n, dim), in [0, 1], higher = more of an edge case:
    ``clip(1 - 1/LOF, 0, 1)``, LOF = the mean local density of a row's ``k`` nearest neighbours over its own
    (cosine distances, module docstring); 0 = as dense as its neighbours, 0.5 = half as dense, 1 = isolated; or,
    when larger, the same ratio against the pool's typical row (module docstring). Options as
    :func:`edge_neighborhoods`."""
    return edge_neighborhoods(vectors, k=k, seed=seed, exact=exact).scores


def edge_saturation(vectors, edge_mask, labeled_idx, batch_idx=None, *, k: int = DEFAULT_K,
                    seed: int = 0) -> EdgeSaturation:
    """Share of the edge region that labeled samples cover, before and after adding ``batch_idx``.

    edge_mask: (n,) bool rows of the edge region, or None for the top ``DEFAULT_EDGE_FRACTION`` of edge scores.
    labeled_idx, batch_idx: row numbers. An edge row is covered when it, or one of its ``k`` nearest neighbours, is
    labeled. Searches neighbours; to measure several batches, compute :func:`edge_neighborhoods` once and call its
    ``saturation``.
    """
    return edge_neighborhoods(vectors, k=k, seed=seed).saturation(edge_mask, labeled_idx, batch_idx)


def saturated(gains, *, min_gain: float = DEFAULT_MIN_GAIN, patience: int = DEFAULT_PATIENCE) -> bool:
    """True when labeling edge cases has stopped paying: each of the last ``patience`` batches covered less than
    ``min_gain`` more of the edge region (``gains``: one :attr:`EdgeSaturation.gain` per batch, oldest first)."""
    gains = np.asarray(gains, dtype=float).ravel()
    if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 1:
        raise InvalidInputError(f"patience, a number of batches, must be a positive integer, got {patience!r}.")
    if not 0.0 <= min_gain <= 1.0:
        raise InvalidInputError(f"min_gain is a share of the edge region in [0, 1], got {min_gain}.")
    return len(gains) >= patience and bool((gains[-patience:] < min_gain).all())


# -- the guts (no validation) --------------------------------------------------------------------------------------
def _lof_scores(distances: np.ndarray, neighbors: np.ndarray) -> np.ndarray:
    """``clip(1 - 1/LOF, 0, 1)`` from each row's (n, k) neighbours and distances (module docstring)."""
    reach = np.maximum(distances, distances[neighbors, -1])  # to o: at least o's own k-th neighbour distance
    density = 1.0 / (reach.mean(axis=1) + DISTANCE_EPS)
    lof = density[neighbors].mean(axis=1) / density
    return np.clip(1.0 - 1.0 / lof, 0.0, 1.0).astype(np.float32)


def _isolation_scores(distances: np.ndarray) -> np.ndarray:
    """``clip(1 - typical / own, 0, 1)`` of the mean distance to the ``k`` nearest neighbours, ``typical`` its median
    over the pool: 0 for the typical half, 0.5 twice as far from its neighbours as a typical row, towards 1 isolated."""
    own = distances.mean(axis=1)
    typical = float(np.median(own))
    return np.clip(1.0 - (typical + DISTANCE_EPS) / (own + DISTANCE_EPS), 0.0, 1.0).astype(np.float32)


def _cell_knn(unit: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, rows), each (n, k), of every row's ``k`` most similar rows (itself included), searching each
    row's ``CELL_PROBES`` nearest k-means cells only.

    A cell's rows are compared, in one product, with every row that has the cell among its probes; each row keeps
    the best ``k`` over its probes. Rows whose probed cells hold fewer than ``k`` rows are searched exactly."""
    n = len(unit)
    n_cells = default_partitions(n)
    cells, _ = nearest_cells(unit, n_cells, n_probe=min(CELL_PROBES, n_cells), seed=seed)
    n_probe = cells.shape[1]
    members = group_rows(cells[:, 0], n_cells)
    probing = group_rows(cells.ravel(), n_cells)  # positions in the flattened (n, n_probe) array
    best_sims = np.full((n, k), -np.inf, dtype=np.float32)
    best_ids = np.full((n, k), -1, dtype=np.int64)
    for cell in range(n_cells):
        if len(members[cell]) == 0:
            continue
        queries = probing[cell] // n_probe
        sims, local = faiss.knn(unit[queries], unit[members[cell]], min(k, len(members[cell])),
                                metric=faiss.METRIC_INNER_PRODUCT)
        best_sims[queries], best_ids[queries] = _best_of(best_sims[queries], best_ids[queries], sims,
                                                         members[cell][local], k)
    short = np.flatnonzero((best_ids < 0).any(axis=1))
    if len(short):
        best_sims[short], best_ids[short] = faiss.knn(unit[short], unit, k, metric=faiss.METRIC_INNER_PRODUCT)
    order = np.argsort(-best_sims, axis=1, kind="stable")
    return np.take_along_axis(best_sims, order, axis=1), np.take_along_axis(best_ids, order, axis=1)


def _best_of(sims_a, ids_a, sims_b, ids_b, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise the ``k`` highest similarities of two candidate lists (unsorted); a row is never in both lists,
    since every row is a member of exactly one cell."""
    sims = np.concatenate([sims_a, sims_b], axis=1)
    ids = np.concatenate([ids_a, ids_b], axis=1)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.take_along_axis(sims, top, axis=1), np.take_along_axis(ids, top, axis=1)


def _edge_mask(edge_mask, n: int) -> np.ndarray:
    mask = np.asarray(edge_mask)
    if mask.dtype != bool or mask.shape != (n,):
        raise InvalidInputError(f"edge_mask must be a boolean array with one entry per embedding ({n},), got dtype "
                                f"{mask.dtype} and shape {mask.shape}; build one with scores >= threshold, or pass "
                                "None for the top-scoring rows.")
    return mask
