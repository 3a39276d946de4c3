"""Near-duplicate groups in a pool of embeddings, SemDeDup style (Abbas et al., 2023): no all-pairs step.

Method, for unit vectors (cosine geometry):

1. k-means splits the pool into cells of about ``CELL_ROWS`` rows (:func:`nearest_cells`); a row belongs to the
   cell of its nearest centroid.
2. Inside each cell every pair is compared (one matrix product per block of rows); pairs with cosine similarity
   >= ``threshold`` are near-duplicates. Cost: about n x ``CELL_ROWS`` dot products instead of n².
3. Connected components over those pairs are the groups; each group keeps its most central member.

Boundary trade-off: two near-duplicates whose nearest centroids differ are never compared in step 2. A row whose
similarity to its second-nearest centroid is within ``second_cell_margin`` of the nearest is therefore also
compared with the rows of that second cell. Two rows at distance δ (cosine 1 - δ²/2) differ by at most δ in their
similarity to any centroid, so when such a pair is split, each row's gap is at most 2δ: the default margin 0.1
makes every row of a split pair with cosine >= 0.99875 (copies with a little noise) search its second cell, and
the pair is found when that second cell is the other row's. A pair at the 0.98 threshold (δ = 0.2) would need a
margin of 0.4, and a pair split across a third cell can be missed whatever the margin. The cost is bounded: each
visiting row is compared with one more cell, at most doubling step 2 (on the 1M x 512 check, where 99% of rows
are within 0.1, step 2 took about 20 s of 59 s, the k-means 30 s). ``None`` turns it off (plain SemDeDup).

Memory stays O(n): similarities are computed in blocks of ``BLOCK_ENTRIES``, and each block's pairs are folded at
once into a spanning forest of the cell (at most one edge per row), so a cell full of copies of one image never
holds its millions of pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from curate_loop.curation.clustering import group_rows, kmeans_labels
from curate_loop.curation.rows import row_mask
from curate_loop.errors import InvalidInputError
from curate_loop.vectors import normalize_rows

DEFAULT_THRESHOLD = 0.98  # cosine; the selection strategies skip candidates this close to a labeled sample
CELL_ROWS = 1_000  # rows per k-means cell: a cell's pairs are one 1k x 1k product, the k-means stays affordable
MAX_CELLS = 2_000  # k-means cost grows with n x cells; beyond 2M rows cells grow instead
DEFAULT_SECOND_CELL_MARGIN = 0.1  # catches split pairs of cosine >= 0.99875 (module docstring)
SIMILARITY_TOL = 1e-6  # float32 dot products of identical unit vectors can land a hair under 1
BLOCK_ENTRIES = 1 << 22  # similarities held at once per block (16 MB of float32)
CENTRALITY_BLOCK = 1 << 16  # rows per block when scoring group members (bounds a (rows, dim) copy)


@dataclass(frozen=True)
class NearDuplicates:
    """Near-duplicate groups of a pool and the one row of each group worth keeping.

    group: (n,) int64, a group id in ``0..n_groups-1`` for a row with at least one near-duplicate, -1 otherwise.
        Groups are numbered by their smallest row.
    keep: (n,) bool, True for every row without near-duplicates and for one representative per group: the member
        with the highest mean cosine similarity to the others (ties: the lowest row).
    n_groups: number of groups.
    threshold: the cosine similarity at or above which two rows are near-duplicates.
    n_partitions: k-means cells the pool was split into.
    """

    group: np.ndarray
    keep: np.ndarray
    n_groups: int
    threshold: float
    n_partitions: int

    def groups(self) -> list[np.ndarray]:
        """Row numbers of each group, in group-id order."""
        return group_rows(self.group, self.n_groups)

    def to_dict(self) -> dict:
        """JSON-ready summary: how many groups, rows in them, rows a de-duplication would drop."""
        sizes = np.bincount(self.group[self.group >= 0], minlength=self.n_groups)
        return {"n_groups": self.n_groups, "n_in_groups": int(sizes.sum()), "n_redundant": int((~self.keep).sum()),
                "largest_group": int(sizes.max()) if self.n_groups else 0, "threshold": self.threshold,
                "n_partitions": self.n_partitions}


def find_near_duplicates(vectors, *, threshold: float = DEFAULT_THRESHOLD, n_partitions: int | None = None,
                         second_cell_margin: float | None = DEFAULT_SECOND_CELL_MARGIN,
                         seed: int = 0) -> NearDuplicates:
    """Groups of rows of ``vectors`` (n, dim) linked by cosine similarity >= ``threshold`` (in (0, 1]).

    n_partitions: k-means cells compared pair by pair; default ``n // CELL_ROWS`` clamped to [1, ``MAX_CELLS``]
        (1 cell: an exact all-pairs comparison).
    second_cell_margin: rows whose two nearest centroid similarities differ by at most this are also compared with
        their second cell, to find near-duplicates split by a cell boundary; None: never (see module docstring).
    Linking is transitive: a ~ b and b ~ c put a, b, c in one group even if a and c are further apart.
    """
    _check_threshold(threshold)
    if second_cell_margin is not None and not second_cell_margin >= 0:
        raise InvalidInputError(f"second_cell_margin is a difference of cosine similarities, >= 0 (or None to turn "
                                f"the second-cell search off), got {second_cell_margin}.")
    unit = normalize_rows(vectors, zero_rows="raise")
    n = len(unit)
    n_cells = _check_partitions(n_partitions, n)
    search_second = second_cell_margin is not None and n_cells > 1
    cells, sims = nearest_cells(unit, n_cells, n_probe=2 if search_second else 1, seed=seed)
    members = group_rows(cells[:, 0], n_cells)
    visitors = [np.empty(0, dtype=np.int64)] * n_cells
    if search_second:
        near_boundary = np.flatnonzero(sims[:, 0] - sims[:, 1] <= second_cell_margin)
        visitors = group_rows(cells[near_boundary, 1], n_cells)
        visitors = [near_boundary[v] for v in visitors]
    edges = [_cell_forest(unit, members[c], visitors[c], threshold - SIMILARITY_TOL) for c in range(n_cells)]
    group = _groups(n, edges)
    n_groups = int(group.max()) + 1
    return NearDuplicates(group=group, keep=_keep_central(unit, group, n_groups), n_groups=n_groups,
                          threshold=float(threshold), n_partitions=n_cells)


def exclude_near_duplicates(nd: NearDuplicates, labeled_idx=None) -> np.ndarray:
    """(n,) bool mask of rows not worth labeling: in each group, every member but the kept representative, and,
    in a group that already has a labeled member, every unlabeled member (the group is represented already).

    Labeled rows are never in the mask: they are labeled already, whatever their group.
    """
    labeled = row_mask(labeled_idx, len(nd.group), "labeled_idx")
    in_group = nd.group >= 0
    has_labeled = np.zeros(nd.n_groups, dtype=bool)
    has_labeled[nd.group[labeled & in_group]] = True
    group_labeled = np.zeros(len(nd.group), dtype=bool)
    group_labeled[in_group] = has_labeled[nd.group[in_group]]
    return in_group & ~labeled & (~nd.keep | group_labeled)


def nearest_cells(unit: np.ndarray, n_cells: int, *, n_probe: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A k-means partition of ``unit`` (n, dim) rows into ``n_cells`` cells, seen from each row.

    Returns ``(cells, similarities)``, each (n, n_probe): the ids of the row's ``n_probe`` nearest cells and its
    cosine similarity to their centroids, nearest first; ``cells[:, 0]`` is the cell the row belongs to. Centroids
    are the normalised means of the k-means clusters, so a row's cell and its probes use the same centres.
    """
    n = len(unit)
    labels = np.zeros(n, dtype=np.int64) if n_cells <= 1 else kmeans_labels(unit, n_cells, seed=seed)
    n_used = int(labels.max()) + 1
    summing = csr_matrix((np.ones(n, dtype=np.float32), (labels, np.arange(n))), shape=(n_used, n))
    centroids = np.asarray(summing @ unit, dtype=np.float32)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    sims, cells = faiss.knn(unit, centroids, min(n_probe, n_used), metric=faiss.METRIC_INNER_PRODUCT)
    return cells.astype(np.int64), sims


def default_partitions(n: int) -> int:
    """About ``CELL_ROWS`` rows per cell, at least 1 and at most ``MAX_CELLS`` cells."""
    return int(np.clip(n // CELL_ROWS, 1, MAX_CELLS))


# -- the guts (no validation) --------------------------------------------------------------------------------------
def _cell_forest(unit: np.ndarray, members: np.ndarray, visitors: np.ndarray,
                 min_similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges ``(rows, roots)`` of a spanning forest of one cell's near-duplicate graph: every pair of ``members``,
    and every visitor (a row of another cell near the boundary) against the members.

    Pairs are folded into the forest block by block, so memory is O(cell) whatever the number of pairs."""
    nodes = np.concatenate([members, visitors])  # members first: a member's node number is its column number
    if len(members) == 0 or len(nodes) < 2:
        return nodes[:0], nodes[:0]
    root = np.arange(len(nodes))
    reference = unit[members]
    step = max(1, BLOCK_ENTRIES // len(members))
    for start in range(0, len(nodes), step):
        sims = unit[nodes[start:start + step]] @ reference.T
        query, member = np.nonzero(sims >= min_similarity)
        query += start
        pair = query != member
        if pair.any():
            root = _fold(root, query[pair], member[pair])
    linked = np.flatnonzero(root != np.arange(len(nodes)))
    return nodes[linked], nodes[root[linked]]


def _fold(root: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge the edges ``a``-``b`` into a forest given as each node's root (the smallest node of its component)."""
    m = len(root)
    nodes = np.arange(m)
    graph = coo_matrix((np.ones(m + len(a), dtype=np.int32), (np.concatenate([nodes, a]), np.concatenate([root, b]))),
                       shape=(m, m))
    _, component = connected_components(graph, directed=False)
    _, first, inverse = np.unique(component, return_index=True, return_inverse=True)
    return first[inverse]  # np.unique's first index of a component is its smallest node


def _groups(n: int, edges: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """(n,) group id of every row in a component of two or more rows, numbered by smallest row; -1 elsewhere."""
    a = np.concatenate([e[0] for e in edges])
    b = np.concatenate([e[1] for e in edges])
    graph = coo_matrix((np.ones(len(a), dtype=np.int32), (a, b)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    _, first_row, inverse = np.unique(component, return_index=True, return_inverse=True)
    grouped = np.flatnonzero(np.bincount(inverse) >= 2)
    grouped = grouped[np.argsort(first_row[grouped], kind="stable")]
    group_of_component = np.full(len(first_row), -1, dtype=np.int64)
    group_of_component[grouped] = np.arange(len(grouped))
    return group_of_component[inverse]


def _keep_central(unit: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """(n,) keep mask: rows outside groups, and per group the member with the highest mean similarity to the others.

    A member's summed similarity to its group is its dot product with the group's vector sum (one sparse product
    for all groups), which ranks members like the mean similarity to the others."""
    keep = group < 0
    rows = np.flatnonzero(~keep)
    if len(rows) == 0:
        return keep
    summing = csr_matrix((np.ones(len(rows), dtype=np.float32), (group[rows], rows)), shape=(n_groups, len(unit)))
    sums = np.asarray(summing @ unit, dtype=np.float32)
    centrality = np.concatenate([np.einsum("ij,ij->i", unit[block], sums[group[block]])
                                 for block in np.array_split(rows, -(-len(rows) // CENTRALITY_BLOCK))])
    order = np.lexsort((rows, -centrality, group[rows]))  # by group, most central first, then lowest row
    firsts = np.flatnonzero(np.diff(group[rows[order]], prepend=-1) != 0)
    keep[rows[order[firsts]]] = True
    return keep


# -- validation ----------------------------------------------------------------------------------------------------
def _check_threshold(threshold) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not 0.0 < threshold <= 1.0:
        raise InvalidInputError(f"threshold is a cosine similarity in (0, 1] (1: identical directions only), got "
                                f"{threshold!r}; {DEFAULT_THRESHOLD} finds re-encoded or slightly cropped copies.")


def _check_partitions(n_partitions, n: int) -> int:
    if n_partitions is None:
        return default_partitions(n)
    if isinstance(n_partitions, bool) or not isinstance(n_partitions, (int, np.integer)) \
            or not 1 <= n_partitions <= n:
        raise InvalidInputError(f"n_partitions must be an integer between 1 and the number of vectors ({n}), got "
                                f"{n_partitions!r}; omit it for about {CELL_ROWS} rows per partition.")
    return int(n_partitions)
