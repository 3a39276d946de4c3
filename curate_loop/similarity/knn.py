"""Cosine k-nearest neighbours on arrays with faiss: vectors in, arrays out (no FiftyOne).

Every vector is L2-normalised to float32 (:func:`curate_loop.vectors.normalize_rows`; all-zero rows are refused),
so an inner product is a cosine similarity. Up to ``EXACT_MAX_SIZE`` vectors the index is exact (``IndexFlatIP``:
brute force is fast there and never misses); above it is IVF-Flat, whose ``nprobe`` is tuned on a sample of the
data itself until recall@10 against exact search reaches ``TARGET_RECALL``, so the approximation is measured, not
assumed. :func:`knn_graph` on top is the kNN graph every array package uses.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import faiss
import numpy as np

from curate_loop.errors import InvalidInputError
from curate_loop.vectors import normalize_rows

NUMPY_MAX_SIZE = 2_000  # up to here one matrix product beats faiss, whose thread start-up costs ~10 ms a call
EXACT_MAX_SIZE = 20_000  # brute force over 20k x 512 takes milliseconds per query batch
TARGET_RECALL = 0.97  # tuned on a sample with a margin over the 0.95 we promise
TUNE_QUERIES = 1_000  # enough for a +-0.5 % recall estimate, cheap to search exactly
TRAIN_POINTS_PER_LIST = 40  # faiss warns below 39; more only slows k-means down
KMEANS_ITERATIONS = 10  # IVF cells need not be converged centroids, 10 is as good as faiss's 25 here


def _set_threads() -> None:
    """Use the cores this process may run on (not the machine's count), unless OMP_NUM_THREADS says."""
    if "OMP_NUM_THREADS" not in os.environ:
        faiss.omp_set_num_threads(max(1, len(os.sched_getaffinity(0))))


_set_threads()


def default_nlist(n: int) -> int:
    """About 4 * sqrt(n) inverted lists (faiss's rule of thumb), but at least 39 training points each."""
    return int(max(1, min(round(4 * np.sqrt(n)), n // 39)))


def build_index(vectors, *, exact: bool | None = None, nlist: int | None = None, nprobe: int | None = None,
                seed: int = 0, unit_rows: bool = False) -> faiss.Index:
    """A cosine index over ``vectors``: exact up to ``EXACT_MAX_SIZE`` rows, IVF-Flat above (or as forced).

    ``nlist``/``nprobe`` override the IVF defaults; without ``nprobe`` it is tuned for recall@10 >=
    ``TARGET_RECALL`` on a sample of the vectors (positions in the index are row numbers). ``unit_rows``: the
    vectors are :func:`curate_loop.vectors.normalize_rows`' output already, so no normalised copy is made.
    """
    unit = vectors if unit_rows else normalize_rows(vectors, zero_rows="raise", what="vectors")
    return _build_index(unit, exact, nlist, nprobe, seed)


def _build_index(x: np.ndarray, exact: bool | None, nlist: int | None, nprobe: int | None, seed: int) -> faiss.Index:
    """:func:`build_index` on rows normalised already (no second copy of a large array)."""
    n, d = x.shape
    if exact is None:
        exact = n <= EXACT_MAX_SIZE
    if exact:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return index
    nlist = default_nlist(n) if nlist is None else int(nlist)
    if not 1 <= nlist <= n:
        raise InvalidInputError(f"nlist must be between 1 and the number of vectors ({n}), got {nlist}.")
    # "IVF...,Flat" from the factory owns its coarse quantizer (no dangling reference from Python).
    index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.seed = seed
    rng = np.random.default_rng(seed)
    n_train = min(n, TRAIN_POINTS_PER_LIST * nlist)
    index.train(x[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else x)
    index.add(x)
    if nprobe is not None:
        if not 1 <= nprobe <= nlist:
            raise InvalidInputError(f"nprobe must be between 1 and nlist ({nlist}), got {nprobe}.")
        index.nprobe = int(nprobe)
    else:
        index.nprobe = tune_nprobe(index, x, rng=rng)
    return index


def tune_nprobe(index, x: np.ndarray, *, k: int = 10, target: float = TARGET_RECALL, rng=None) -> int:
    """The smallest power-of-two nprobe whose recall@k on sampled rows of ``x`` reaches ``target``.

    ``x`` are the (normalised) vectors the index holds, in order; ground truth is brute force for the sample.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    n = x.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return 1
    rows = np.sort(rng.choice(n, min(n, TUNE_QUERIES), replace=False))
    _, exact = faiss.knn(x[rows], x, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    truth = drop_self(exact, rows)
    nlist = faiss.extract_index_ivf(index).nlist
    nprobe = 1
    while nprobe < nlist:
        _, found = index.search(x[rows], k + 1, params=faiss.SearchParametersIVF(nprobe=nprobe))
        if recall_at_k(drop_self(found, rows), truth) >= target:
            return nprobe
        nprobe *= 2
    return nlist


def search(index: faiss.Index, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar indexed rows for each query: ``(similarities, indices)``, each (m, k).

    Similarities are cosines (higher is closer), rows sorted best first; indices are positions in the index.
    """
    _check_k(k, index.ntotal)
    q = normalize_rows(queries, zero_rows="raise", what="queries")
    if q.shape[1] != index.d:
        raise InvalidInputError(
            f"queries have {q.shape[1]} dimensions but the index has {index.d}; embed the queries with the "
            "model that embedded the indexed items."
        )
    return _search(index, q, k)


def knn_graph(vectors, k: int, *, exact: bool | None = None, index: faiss.Index | None = None,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows by cosine: ``(indices, similarities)``, each (n, k), nearest first, self
    excluded (where exact copies push a row out of its own list, its weakest hit goes instead).

    The one kNN graph of the array packages (mislabel votes, edge scores, cluster density, typicality): exact up
    to ``EXACT_MAX_SIZE`` rows, IVF above with ``nprobe`` tuned to recall@10 >= ``TARGET_RECALL`` (``exact``
    forces either; ``seed`` seeds the IVF k-means). ``index`` reuses an index already built over exactly these
    ``vectors`` (same order). Memory: one normalised copy of ``vectors`` plus the index's own.
    """
    x = normalize_rows(vectors, zero_rows="raise", what="vectors")
    n = x.shape[0]
    _check_k(k, n - 1, what="other vectors")
    if index is None and n <= NUMPY_MAX_SIZE and exact is not False:  # typicality calls this once per small cluster
        return _small_knn_graph(x, k)
    if index is None:
        index = _build_index(x, exact, None, None, seed)
    elif index.ntotal != n or index.d != x.shape[1]:
        raise InvalidInputError(
            f"the index holds {index.ntotal} x {index.d} vectors but {n} x {x.shape[1]} were given; "
            "pass the vectors the index was built from, or no index."
        )
    sims, idx = _search(index, x, k + 1)
    return drop_self_pairs(idx, sims)


def _small_knn_graph(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`knn_graph` on few unit rows, exactly, by one matrix product (self excluded, nearest first)."""
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top_sims = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_sims, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)


def drop_self(indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(m, k+1) search results for indexed ``rows`` -> (m, k) neighbours other than the row itself."""
    return indices[~_self_mask(indices, rows)].reshape(indices.shape[0], indices.shape[1] - 1)


def drop_self_pairs(indices: np.ndarray, similarities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, k+1) neighbour lists of every row 0..n-1, self included -> ``(indices, similarities)`` (n, k) without
    it (where exact copies pushed a row out of its own list, its weakest hit goes instead)."""
    n, width = indices.shape
    keep = ~_self_mask(indices, np.arange(n))
    return indices[keep].reshape(n, width - 1), similarities[keep].reshape(n, width - 1)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of the true neighbours (row-wise sets of ``truth``) that appear in the same row of ``found``."""
    found, truth = np.asarray(found), np.asarray(truth)
    if found.shape[0] != truth.shape[0] or truth.size == 0:
        raise InvalidInputError(f"found {found.shape} and truth {truth.shape} must have the same, non-zero rows.")
    hits = (truth[:, :, None] == found[:, None, :]).any(axis=2)
    return float(hits.mean())


def save_index(index: faiss.Index, path: str | os.PathLike) -> Path:
    """Write ``index`` to ``path`` atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_index(path: str | os.PathLike) -> faiss.Index:
    """Read an index written by :func:`save_index`."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"no faiss index at {path}; build one with build_index() and save_index().")
    return faiss.read_index(str(path))


def _search(index: faiss.Index, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss search; rows an IVF probe left short of ``k`` hits (index -1) are searched again exhaustively."""
    sims, idx = index.search(q, k)
    short = (idx < 0).any(axis=1)
    if short.any() and isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(nprobe=index.nlist)
        sims[short], idx[short] = index.search(q[short], k, params=params)
    return sims, idx


def _self_mask(idx: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Marks one entry per row to drop: the row itself, or the last (weakest) hit if self was not found."""
    mask = idx == rows[:, None]
    mask[~mask.any(axis=1), -1] = True
    return mask




def _check_k(k, available: int, what: str = "indexed vectors") -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}.")
    if k > available:
        raise InvalidInputError(
            f"k={k} is larger than the {available} {what}; use k <= {available} or index more vectors."
        )
