"""kNN graph (k = 10) of 100k x 512 vectors: ours vs FiftyOne Brain's default (sklearn) similarity backend.

Both go through the same Brain API, the one Brain itself uses for "neighbours of every point"
(``compute_uniqueness``, ``plot_distances``): ``fob.compute_similarity(dataset, embeddings=X, backend=...)``
then ``results._kneighbors(k=10, return_dists=True)``. At 100k items (> 15k) the sklearn backend skips
its all-pairs matrix and fits ``sklearn.neighbors.NearestNeighbors(metric="euclidean")`` on mean-centred
unit vectors (brute force at d = 512). Ours is the faiss backend (IVF-Flat, nprobe tuned on the data).
Recall@10 is against exact cosine search (faiss ``IndexFlatIP`` brute force) for 10k random rows, self
excluded.

Data: a seeded Gaussian mixture with 1,000 clusters of different widths. Runs in a throwaway FiftyOne
database (``curate-loop-bench-<pid>``, on a mongod in ``<curate-loop home>/bench/mongodb``) that is
dropped at the end; building the dataset is not timed. Progress goes to stderr; stdout gets the one
``BENCH {json}`` line.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

N, DIM, K, CLUSTERS, SEED = 100_000, 512, 10, 1_000, 0
RECALL_ROWS = 10_000  # exact neighbours for a random 10 % of rows: +-0.1 % recall, a tenth of the brute force
TARGET = {"speedup_vs_sklearn": 5, "recall_at_10": 0.95}


def gaussian_mixture(n: int = N, d: int = DIM, n_clusters: int = CLUSTERS, seed: int = SEED) -> np.ndarray:
    """``n`` float32 points around ``n_clusters`` random centres, cluster widths 0.5x to 1.5x the centres' scale."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d), dtype=np.float32)
    labels = rng.integers(0, n_clusters, n)
    widths = rng.uniform(0.5, 1.5, n_clusters).astype(np.float32)
    return centers[labels] + widths[labels, None] * rng.standard_normal((n, d), dtype=np.float32)


def brain_knn_graph(dataset, vectors: np.ndarray, backend: str) -> tuple[float, np.ndarray]:
    """Seconds for Brain to index ``vectors`` with ``backend`` and return every point's k neighbours."""
    import fiftyone.brain as fob

    started = time.perf_counter()
    results = fob.compute_similarity(dataset, embeddings=vectors.copy(), backend=backend, progress=False)
    inds, _ = results._kneighbors(k=K, return_dists=True)
    seconds = time.perf_counter() - started
    return seconds, np.asarray(inds)


def main() -> None:
    # Before FiftyOne is imported: a throwaway database, never the user's datasets (bench/throwaway_db.py says why)
    from bench.throwaway_db import use_throwaway_database

    use_throwaway_database("knn")
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb

    from curate_loop.similarity import knn
    from curate_loop.similarity.faiss_backend import register_faiss_backend

    register_faiss_backend()  # backend="faiss" for fob.compute_similarity below

    fo.config.show_progress_bars = False

    vectors = gaussian_mixture()
    dataset = fo.Dataset(f"bench-knn-{os.getpid()}")
    try:
        dataset.add_samples([fo.Sample(filepath=f"/bench/{i:06d}.jpg") for i in range(N)], progress=False)

        sklearn_seconds, _ = brain_knn_graph(dataset, vectors, "sklearn")
        print(f"brain sklearn backend: {sklearn_seconds:.1f} s", file=sys.stderr, flush=True)
        ours_seconds, ours_inds = brain_knn_graph(dataset, vectors, "faiss")
        print(f"faiss backend: {ours_seconds:.1f} s", file=sys.stderr, flush=True)

        rows = np.sort(np.random.default_rng(SEED).choice(N, RECALL_ROWS, replace=False))
        _, exact = knn.search(knn.build_index(vectors, exact=True), vectors[rows], K + 1)  # IndexFlatIP
    finally:
        dataset.delete()
        fodb.drop_database()

    recall = knn.recall_at_k(ours_inds[rows], knn.drop_self(exact, rows))
    speedup = sklearn_seconds / ours_seconds
    result = {
        "name": "knn_graph_100k_512",
        "ours": {"seconds": round(ours_seconds, 2), "recall_at_10": round(recall, 4)},
        "anchors": {
            "fiftyone_brain_sklearn": {"seconds": round(sklearn_seconds, 2)},
        },
        "ratios": {"speedup_vs_sklearn": round(speedup, 2)},
        "target": TARGET,
        "pass": bool(speedup >= TARGET["speedup_vs_sklearn"] and recall >= TARGET["recall_at_10"]),
        "setup": {"n": N, "dim": DIM, "k": K, "clusters": CLUSTERS, "seed": SEED, "recall_rows": RECALL_ROWS,
                  "threads": len(os.sched_getaffinity(0)), "load_average_1m": round(os.getloadavg()[0], 2)},
    }
    print("BENCH " + json.dumps(result), flush=True)
