"""Curation at scale: 1M x 512 embeddings clustered, a 10k batch selected, edge scores, near-duplicate groups and the
batch's coverage report, end to end on this machine; FiftyOne Brain's uniqueness and representativeness on 100k
of the same vectors for reference.

Data: a seeded Gaussian mixture (``CLUSTERS`` known clusters around random centres, widths 0.5x to 1.5x the
centres' scale, Zipf-like sizes with exponent ``ZIPF_EXPONENT``: from a quarter of the pool down to a few dozen
rows), rows of a cluster spread over the whole array, plus ``DUP_GROUPS`` planted near-duplicate groups (a row and
1 to 4 copies with ``DUP_NOISE`` relative noise, cosine ~0.999 to each other) and ``OUTLIERS`` planted isolated
outliers (random directions, in no cluster). The array is generated in place, block by block: one 2 GB copy.

Pipeline (array-level API, each stage given the raw vectors as a user would pass them, seed 0), each stage timed:
``cluster_embeddings`` -> ``select_cluster_balanced`` (k = 1% of the pool, 10k at 1M) -> ``edge_scores`` ->
``find_near_duplicates`` (cosine >= 0.98) -> ``selection_metrics`` on the batch. Memory: the process's peak RSS
(``ru_maxrss``) right after the 1M stages, next to the RSS before them (the input array, FiftyOne and the
libraries imported). Targets: total <= 600 s, peak RSS <= 8 GB.

Quality sanity checks (not timed): share of the known clusters the batch reaches (and of the smallest tenth of
them), next to a seeded random batch of the same size; recall of the planted near-duplicates (share of planted
pairs that land in one group; on the 100k rows, the pairs both inside them) and the groups found beyond them;
share of the planted outliers in the top 1% of edge scores.

Reference (after the 1M peak is recorded): a FiftyOne dataset of the first 100k rows (fake filepaths, built
untimed), then ``fob.compute_uniqueness`` and ``fob.compute_representativeness`` with ``embeddings=`` those rows,
each in a child process (its own peak RSS; a failure or more than ``BRAIN_TIMEOUT_S`` is recorded, not raised),
and our same five stages on the same 100k rows (k = 1k): ``ours_vs_brain`` is our seconds over Brain's two calls'.
Runs in a throwaway FiftyOne database (``curate-loop-bench-<pid>``, on a mongod in
``<curate-loop home>/bench/mongodb``) that is dropped at the end. ``CURATE_LOOP_BENCH_SCALE_N`` runs on fewer rows
for a quick check (default 1,000,000). Progress goes to stderr; stdout gets the one ``BENCH {json}`` line.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N = int(os.environ.get("CURATE_LOOP_BENCH_SCALE_N", "1000000"))
DIM, CLUSTERS, SEED = 512, 1_000, 0
ZIPF_EXPONENT = 1.2  # cluster sizes ~ 1 / rank^1.2: at 1M, 231k rows down to 58
DUP_GROUPS, DUP_MAX_COPIES, DUP_NOISE = 300, 4, 0.03  # copy = row + 3% relative gaussian noise
OUTLIERS = 300
BUDGET_SHARE = 0.01  # the batch: 1% of the pool (10k at 1M)
DUP_THRESHOLD = 0.98
REFERENCE_ROWS = 100_000
BRAIN_TIMEOUT_S = 900
BLOCK_ROWS = 1 << 16  # rows generated at once (128 MB of float32 at 512 dims)
TARGET = {"total_seconds": 600, "peak_rss_gb": 8.0}


def planted_mixture(n: int = N, d: int = DIM, n_clusters: int = CLUSTERS, seed: int = SEED) -> dict:
    """The (n, d) float32 vectors, generated in place, and what was planted in them.

    Returns ``vectors``, ``labels`` ((n,) known cluster, -1 for a planted outlier), ``outliers`` (rows) and
    ``dup_groups`` (list of row arrays, the original row first).
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d), dtype=np.float32)
    widths = rng.uniform(0.5, 1.5, n_clusters).astype(np.float32)
    share = 1.0 / np.arange(1, n_clusters + 1) ** ZIPF_EXPONENT
    sizes = np.maximum(1, np.floor(share / share.sum() * n)).astype(np.int64)
    sizes[0] += n - sizes.sum()  # the rounding remainder goes to the largest cluster
    labels = rng.permutation(np.repeat(np.arange(n_clusters), sizes))

    vectors = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, BLOCK_ROWS):
        block, rows = vectors[start:start + BLOCK_ROWS], labels[start:start + BLOCK_ROWS]
        rng.standard_normal(out=block, dtype=np.float32)
        block *= widths[rows, None]
        block += centers[rows]

    copies = rng.integers(1, DUP_MAX_COPIES + 1, DUP_GROUPS)
    special = rng.choice(n, OUTLIERS + DUP_GROUPS + int(copies.sum()), replace=False)
    outliers, special = special[:OUTLIERS], special[OUTLIERS:]
    scale = np.sqrt(1 + np.mean(widths ** 2))  # a row's typical size per dimension
    vectors[outliers] = scale * rng.standard_normal((OUTLIERS, d), dtype=np.float32)
    labels[outliers] = -1
    dup_groups = []
    bases, special = special[:DUP_GROUPS], special[DUP_GROUPS:]
    for base, m in zip(bases, copies):
        rows, special = special[:m], special[m:]
        size = np.linalg.norm(vectors[base]) / np.sqrt(d)
        vectors[rows] = vectors[base] + DUP_NOISE * size * rng.standard_normal((m, d), dtype=np.float32)
        labels[rows] = labels[base]
        dup_groups.append(np.concatenate([[base], rows]))
    return {"vectors": vectors, "labels": labels, "outliers": np.sort(outliers), "dup_groups": dup_groups}


def run_pipeline(vectors: np.ndarray, k: int) -> tuple[dict[str, float], dict]:
    """Seconds per stage of the curation pipeline on ``vectors``, and what each stage returned."""
    from curate_loop.curation.clustering import cluster_embeddings
    from curate_loop.curation.duplicates import find_near_duplicates
    from curate_loop.curation.edges import edge_scores
    from curate_loop.curation.metrics import selection_metrics
    from curate_loop.curation.strategies import select_cluster_balanced

    seconds, out = {}, {}

    def stage(name, call):
        started = time.perf_counter()
        out[name] = call()
        seconds[name] = round(time.perf_counter() - started, 2)
        print(f"  {name}: {seconds[name]:.1f} s (peak RSS {peak_rss_gb():.2f} GB)", file=sys.stderr, flush=True)

    stage("cluster", lambda: cluster_embeddings(vectors, seed=SEED))
    stage("select", lambda: select_cluster_balanced(vectors, k, clusters=out["cluster"], seed=SEED))
    stage("edge_scores", lambda: edge_scores(vectors, seed=SEED))
    stage("near_duplicates", lambda: find_near_duplicates(vectors, threshold=DUP_THRESHOLD, seed=SEED))
    stage("metrics", lambda: selection_metrics(vectors, out["cluster"], out["select"].indices, seed=SEED))
    seconds["total"] = round(sum(seconds.values()), 2)
    return seconds, out


def quality(data: dict, out: dict) -> dict:
    """Sanity numbers of the pipeline's output against what was planted."""
    labels, picked = data["labels"], out["select"].indices
    sizes = np.bincount(labels[labels >= 0], minlength=CLUSTERS)
    known = np.flatnonzero(sizes > 0)
    reached = np.zeros(CLUSTERS, dtype=bool)
    reached[labels[picked][labels[picked] >= 0]] = True
    random_reached = np.zeros(CLUSTERS, dtype=bool)
    drawn = labels[np.random.default_rng(SEED).choice(len(labels), len(picked), replace=False)]
    random_reached[drawn[drawn >= 0]] = True
    smallest = known[np.argsort(sizes[known], kind="stable")[:max(1, len(known) // 10)]]

    group = out["near_duplicates"].group
    pairs = found = 0
    for rows in data["dup_groups"]:
        g = group[rows]
        same = (g[:, None] == g[None, :]) & (g[:, None] >= 0)
        pairs += len(rows) * (len(rows) - 1) // 2
        found += int(np.triu(same, 1).sum())
    planted_rows = np.concatenate(data["dup_groups"])
    planted_groups = np.unique(group[planted_rows][group[planted_rows] >= 0])

    scores = out["edge_scores"]
    n_top = max(1, len(scores) // 100)
    cut = np.partition(scores, len(scores) - n_top)[len(scores) - n_top]
    return {
        "known_clusters": int(len(known)),
        "known_clusters_reached": round(float(reached[known].mean()), 4),
        "known_clusters_reached_random": round(float(random_reached[known].mean()), 4),
        "smallest_tenth_reached": round(float(reached[smallest].mean()), 4),
        "smallest_tenth_reached_random": round(float(random_reached[smallest].mean()), 4),
        "smallest_tenth_max_size": int(sizes[smallest].max()),
        "clusters_found": out["cluster"].n_clusters,
        "cluster_method": out["cluster"].method,
        "batch_size": int(len(picked)),
        "planted_dup_pairs": pairs,
        "planted_dup_pair_recall": round(found / pairs, 4),
        "dup_groups_found": out["near_duplicates"].n_groups,
        "dup_groups_beyond_planted": out["near_duplicates"].n_groups - int(len(planted_groups)),
        "outliers_in_top_1pct_edge": round(float(np.mean(scores[data["outliers"]] >= cut)), 4),
        "outlier_edge_score_median": round(float(np.median(scores[data["outliers"]])), 4),
        "edge_score_top_1pct_cut": round(float(cut), 4),
        "delta_coverage_vs_random": round(float(out["metrics"]["summary"]["delta_coverage"]["ratio"] or 0), 4),
    }


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # kB on Linux


def current_rss_gb(field: str = "VmRSS") -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak of this program image) from /proc, in GB."""
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith(field + ":"))
    return kb / 2 ** 20


def brain_call(method: str, dataset_name: str, embeddings_path: str) -> dict:
    """Seconds (and the child's peak RSS) of one Brain call, run in a child process; ``error`` when it fails or
    runs past ``BRAIN_TIMEOUT_S``."""
    code = ("import sys; from bench.bench_curation_scale import _brain_child; "
            f"_brain_child({method!r}, {dataset_name!r}, {embeddings_path!r})")
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                              capture_output=True, text=True, timeout=BRAIN_TIMEOUT_S + 120)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "error": f"no answer after {time.perf_counter() - started:.0f} s (killed)"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BRAIN ")]
    if proc.returncode != 0 or not lines:
        return {"seconds": None, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    return json.loads(lines[-1][len("BRAIN "):])


def _brain_child(method: str, dataset_name: str, embeddings_path: str) -> None:
    """In the child: load the dataset the parent built (same database, from the inherited environment) and time
    ``fob.<method>`` on it; prints ``BRAIN {json}``. Peak RSS from ``VmHWM``: ``ru_maxrss`` keeps the parent's
    peak across fork and exec."""
    import signal

    import fiftyone as fo
    import fiftyone.brain as fob

    fo.config.show_progress_bars = False
    dataset = fo.load_dataset(dataset_name)
    embeddings = np.load(embeddings_path)
    signal.alarm(BRAIN_TIMEOUT_S)  # SIGALRM ends the child: the parent records the error
    started = time.perf_counter()
    getattr(fob, method)(dataset, embeddings=embeddings, progress=False)
    seconds = time.perf_counter() - started
    signal.alarm(0)
    print("BRAIN " + json.dumps({"seconds": round(seconds, 2), "peak_rss_gb": round(current_rss_gb("VmHWM"), 3)}),
          flush=True)


def main() -> dict:
    # Before FiftyOne is imported: a throwaway database, never the user's datasets (bench/throwaway_db.py says why)
    from bench.throwaway_db import use_throwaway_database

    use_throwaway_database("curation-scale")
    import fiftyone as fo
    import fiftyone.core.odm.database as fodb

    for module in ("curate_loop.curation.edges", "curate_loop.curation.metrics"):  # libraries in before the baseline
        importlib.import_module(module)

    fo.config.show_progress_bars = False
    load_before = os.getloadavg()[0]

    started = time.perf_counter()
    data = planted_mixture()
    print(f"{N:,} x {DIM} mixture generated in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    rss_before = {"current_gb": round(current_rss_gb(), 3), "peak_gb": round(peak_rss_gb(), 3)}
    k = max(1, int(N * BUDGET_SHARE))
    print(f"pipeline on {N:,} rows, k = {k:,}:", file=sys.stderr, flush=True)
    seconds, out = run_pipeline(data["vectors"], k)
    peak = peak_rss_gb()
    checks = quality(data, out)
    print(f"total {seconds['total']:.1f} s, peak RSS {peak:.2f} GB; {checks}", file=sys.stderr, flush=True)

    m = min(N, REFERENCE_ROWS)
    reference = {key: value[:m] for key, value in data.items() if key in ("vectors", "labels")}
    reference["vectors"] = reference["vectors"].copy()
    in_ref = [rows[rows < m] for rows in data["dup_groups"] if (rows < m).sum() >= 2]  # planted pairs inside
    reference.update(outliers=data["outliers"][data["outliers"] < m], dup_groups=in_ref)
    del data, out  # the 1M array goes: the reference's own memory stays below the peak recorded
    k_ref = max(1, int(m * BUDGET_SHARE))

    dataset = fo.Dataset(f"bench-curation-scale-{os.getpid()}")
    dataset.persistent = True  # the Brain children load it from the same database
    brain = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg") for i in range(m)], progress=False)
            path = str(Path(tmp) / "embeddings.npy")
            np.save(path, reference["vectors"])
            for method in ("compute_uniqueness", "compute_representativeness"):
                brain[method] = brain_call(method, dataset.name, path)
                print(f"brain {method} on {m:,}: {brain[method]}", file=sys.stderr, flush=True)
        print(f"pipeline on the same {m:,} rows, k = {k_ref:,}:", file=sys.stderr, flush=True)
        ref_seconds, ref_out = run_pipeline(reference["vectors"], k_ref)
        ref_checks = quality(reference, ref_out)
    finally:
        dataset.delete()
        fodb.drop_database()

    brain_seconds = [b["seconds"] for b in brain.values()]
    brain_total = sum(brain_seconds) if None not in brain_seconds else None
    passed = seconds["total"] <= TARGET["total_seconds"] and peak <= TARGET["peak_rss_gb"]
    result = {
        "name": f"curation_scale_{N // 1000}k_{DIM}",
        "ours": {"seconds": seconds, "peak_rss_gb": round(peak, 3), "rss_before_stages": rss_before,
                 "quality": checks},
        "anchors": {
            f"fiftyone_brain_{m // 1000}k": brain,
            f"ours_{m // 1000}k": {"seconds": ref_seconds, "quality": ref_checks},
        },
        "ratios": {"ours_vs_brain": round(ref_seconds["total"] / brain_total, 3) if brain_total else None,
                   "ours_scores_vs_brain": round((ref_seconds["edge_scores"] + ref_seconds["near_duplicates"])
                                                 / brain_total, 3) if brain_total else None},
        "target": TARGET,
        "pass": bool(passed),
        "setup": {"n": N, "dim": DIM, "clusters": CLUSTERS, "zipf_exponent": ZIPF_EXPONENT, "seed": SEED,
                  "k": k, "reference_rows": m, "reference_k": k_ref, "dup_groups": DUP_GROUPS,
                  "dup_noise": DUP_NOISE, "outliers": OUTLIERS, "dup_threshold": DUP_THRESHOLD,
                  "threads": len(os.sched_getaffinity(0)),
                  "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
    }
    print("BENCH " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
