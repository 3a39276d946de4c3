"""Similarity query latency and recall@10 at 100k x 512: our faiss backend vs FiftyOne Brain's Milvus backend on
Milvus Lite (exact FLAT, curate-loop's default), through the same Brain API the App's sort by similarity uses.

Each backend indexes the same vectors on one FiftyOne dataset (``build_similarity_index`` / ``build_milvus_index``,
timed), then answers the same ``QUERIES`` queries by sample id (``results._kneighbors(query=id, k=10)``, one at a
time, as the App asks). Recall@10 is against exact cosine search with numpy, the query itself included (it is its
own nearest neighbour). Milvus Lite is a pure-Python, in-process Milvus: the figures say what one machine gets
from it, not what a Milvus server does. (Milvus Lite's HNSW is left out: building it over 100k x 512 took more
than five minutes on 2 cores, past this bench's budget.)

Data: bench_knn's seeded Gaussian mixture. A throwaway FiftyOne database and Milvus Lite file, removed at the end;
building the dataset is not timed. Progress goes to stderr; stdout gets the one ``BENCH {json}`` line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from bench.bench_knn import DIM, K, N, SEED, gaussian_mixture

QUERIES = 50


def _queries(results, query_ids) -> tuple[float, list[list[str]]]:
    """Median milliseconds per query, and the k ids each query returned."""
    seconds, found = [], []
    for query in query_ids:
        started = time.perf_counter()
        ids, _ = results._kneighbors(query=query, k=K)
        seconds.append(time.perf_counter() - started)
        found.append(list(ids))
    return float(np.median(seconds) * 1000), found


def _recall(found, exact) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact)]))


def main() -> None:
    from bench.throwaway_db import use_throwaway_database

    use_throwaway_database("similarity-backends")
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb

    from curate_loop.similarity.faiss_backend import build_similarity_index
    from curate_loop.similarity.milvus import build_milvus_index, release_lite
    from curate_loop.vectors import normalize_rows

    fo.config.show_progress_bars = False

    vectors = gaussian_mixture()
    rows = np.random.default_rng(SEED).choice(N, QUERIES, replace=False)
    unit = normalize_rows(vectors)
    exact_rows = np.argsort(-(unit[rows] @ unit.T), axis=1)[:, :K]
    folder = tempfile.mkdtemp(prefix="bench-milvus-")
    dataset = fo.Dataset(f"bench-similarity-{os.getpid()}")
    out = {}
    try:
        dataset.add_samples([fo.Sample(filepath=f"/bench/{i:06d}.jpg") for i in range(N)], progress=False)
        ids = np.array(dataset.values("id"))
        query_ids = ids[rows].tolist()
        exact = [ids[r].tolist() for r in exact_rows]
        builds = {
            "faiss": lambda: build_similarity_index(dataset, vectors, ids, "bench_faiss"),
            "milvus_lite_flat": lambda: build_milvus_index(dataset, vectors, ids, "bench_flat",
                                                           uri=os.path.join(folder, "flat.db")),
        }
        keys = {"faiss": "bench_faiss", "milvus_lite_flat": "bench_flat"}
        for name, build in builds.items():
            started = time.perf_counter()
            build()
            build_s = time.perf_counter() - started
            results = dataset.load_brain_results(keys[name])
            ms, found = _queries(results, query_ids)
            out[name] = {"build_s": round(build_s, 1), "query_ms_median": round(ms, 1),
                         "recall_at_10": round(_recall(found, exact), 4)}
            print(f"{name}: {out[name]}", file=sys.stderr, flush=True)
            if name != "faiss":
                release_lite(results.config.uri)
    finally:
        dataset.delete()
        fodb.drop_database()
        shutil.rmtree(folder, ignore_errors=True)

    result = {
        "name": "similarity_backends",
        "backends": out,
        "ratios": {"milvus_lite_flat_vs_faiss_query": round(out["milvus_lite_flat"]["query_ms_median"]
                                                            / max(out["faiss"]["query_ms_median"], 1e-3), 1)},
        "setup": {"n": N, "dim": DIM, "k": K, "queries": QUERIES, "seed": SEED,
                  "threads": len(os.sched_getaffinity(0)), "load_average_1m": round(os.getloadavg()[0], 2)},
    }
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
