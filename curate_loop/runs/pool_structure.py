"""The pool's natural clusters and edge neighbourhoods, computed once per set of vectors and reused.

The edges step and the batch selection both need the clusters, and the batch's saturation needs the neighbourhoods
the edges step searched: at 1M x 512 each costs ~40 s (profile of BENCH ``scale_end_to_end_1m``), and the next
iteration of the loop asks again for the same vectors. Each result is saved beside the run's vectors (any store
filesystem) with a digest of what it was computed from: the item ids, the vectors' bytes and the parameters. A
changed view, recomputed vectors or other parameters give another digest, so the result is computed afresh (and
replaces the saved one): a reuse is always of the very same computation.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

from curate_loop.curation.clustering import ClusterResult, cluster_embeddings
from curate_loop.curation.edges import DEFAULT_K, EdgeNeighborhoods, edge_neighborhoods

CLUSTERS_FILE = "cache-clusters.npz"
NEIGHBORHOODS_FILE = "cache-neighborhoods.npz"


class PoolStructure:
    """The natural clusters and edge neighbourhoods of one set of vectors (rows <-> ``ids``) of a run, each computed
    once and reused while these very inputs come back. The inputs' digest is computed once per object (2 s at
    1M x 512): one object serves both results of a step."""

    def __init__(self, dataset, embeddings_key: str, ids: np.ndarray, vectors: np.ndarray):
        self.dataset, self.embeddings_key, self.ids, self.vectors = dataset, embeddings_key, ids, vectors
        self._inputs: str | None = None

    def clusters(self, *, min_cluster_size: int | None = None, seed: int = 0) -> ClusterResult:
        """:func:`cluster_embeddings` of the vectors."""
        digest = self._digest("clusters", min_cluster_size, seed)
        saved = self._load(CLUSTERS_FILE, digest)
        if saved is not None:
            return ClusterResult(labels=saved["labels"], sizes=saved["sizes"], density=saved["density"],
                                 kinds=saved["kinds"], method=str(saved["method"]))
        clusters = cluster_embeddings(self.vectors, min_cluster_size=min_cluster_size, seed=seed)
        self._save(CLUSTERS_FILE, digest, labels=clusters.labels, sizes=clusters.sizes, density=clusters.density,
                   kinds=clusters.kinds.astype(str), method=np.array(clusters.method))
        return clusters

    def neighborhoods(self, *, k: int = DEFAULT_K, seed: int = 0) -> EdgeNeighborhoods:
        """:func:`edge_neighborhoods` of the vectors."""
        digest = self._digest("neighborhoods", k, seed)
        saved = self._load(NEIGHBORHOODS_FILE, digest)
        if saved is not None:
            return EdgeNeighborhoods(neighbors=saved["neighbors"], distances=saved["distances"],
                                     scores=saved["scores"])
        found = edge_neighborhoods(self.vectors, k=k, seed=seed)
        self._save(NEIGHBORHOODS_FILE, digest, neighbors=found.neighbors, distances=found.distances,
                   scores=found.scores)
        return found

    def _digest(self, *parameters) -> str:
        if self._inputs is None:
            self._inputs = inputs_digest(self.ids, self.vectors)
        return hashlib.blake2b(f"{self._inputs} {parameters!r}".encode(), digest_size=16).hexdigest()

    def _load(self, name: str, digest: str) -> dict | None:
        data = _store(self.dataset, self.embeddings_key).get_bytes(name)
        if data is None:
            return None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as saved:
                if str(saved["digest"]) != digest:
                    return None
                return {key: saved[key] for key in saved.files}
        except (OSError, ValueError, KeyError):  # unreadable or from an older layout: compute again
            return None

    def _save(self, name: str, digest: str, **arrays) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, digest=np.array(digest), **arrays)
        _store(self.dataset, self.embeddings_key).put_bytes(name, buffer.getvalue())


def inputs_digest(ids: np.ndarray, vectors: np.ndarray) -> str:
    """What a result is computed from, in 32 hex digits (BLAKE2b: ~1 GB/s, 2 s for 1M x 512 float32)."""
    h = hashlib.blake2b(digest_size=16)
    h.update("\n".join(np.asarray(ids, dtype=str).tolist()).encode())
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    h.update(repr(data.shape).encode())
    h.update(memoryview(data).cast("B"))
    return h.hexdigest()


def _store(dataset, embeddings_key: str):
    from curate_loop.embeddings.store import EmbeddingStore
    from curate_loop.runs.embeddings import run_dir

    return EmbeddingStore(run_dir(dataset, embeddings_key))
