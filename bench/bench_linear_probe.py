"""The built-in model's cost at 100k samples: ``fit_linear_probe`` + ``predict_proba`` on 100k x 512 float32
embeddings, 10 classes, against its true limit, scikit-learn's own ``LogisticRegression`` (the same lbfgs solver,
C = 1, max_iter = 200) fitted directly on the same rows already centred and scaled (what the probe adds on top:
the centring, the mapping of columns onto the manifest's classes).

Data: a seeded Gaussian mixture (1,000 clusters of different widths, as ``bench_knn``'s), each cluster given one
of the 10 classes at random, so the classes are not one blob each and lbfgs works for its iterations;
unit-normalised, as the loop's embeddings are. The probe runs in one BLAS thread (its docstring says why); the
anchor is timed both in the default BLAS threads and in one, and the faster of the two is the anchor.
Timings: medians of ``REPEATS`` interleaved runs, spread (min-max) printed. Target: fit + predict of the pool in
``TARGET_SECONDS`` ("seconds at 100k samples", issue 17) and no more than ``TARGET_RATIO`` x the anchor.
"""

from __future__ import annotations

import json
import time

import numpy as np

N, DIM, N_CLASSES, CLUSTERS, REPEATS, SEED = 100_000, 512, 10, 1_000, 3, 0
TARGET_SECONDS = 10.0
TARGET_RATIO = 1.25


def labelled_mixture(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(N, DIM) unit rows and (N,) class names: a Gaussian mixture of ``CLUSTERS`` centres with widths 0.5x to 1.5x
    the centres' scale (as ``bench_knn``'s), each cluster given one of the classes at random."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM), dtype=np.float32)
    cluster = rng.integers(0, CLUSTERS, N)
    widths = rng.uniform(0.5, 1.5, CLUSTERS).astype(np.float32)
    x = centres[cluster] + widths[cluster, None] * rng.standard_normal((N, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    class_of_cluster = rng.integers(0, N_CLASSES, CLUSTERS)
    return x, np.asarray([f"c{c}" for c in range(N_CLASSES)])[class_of_cluster[cluster]]


def main() -> None:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from curate_loop.model.linear_probe import DEFAULT_C, MAX_ITER, fit_linear_probe

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    x, y = labelled_mixture()
    classes = sorted(set(y.tolist()))
    train = np.random.default_rng(SEED).random(N) < 0.8
    prepared = ((x - x[train].mean(axis=0)) / np.sqrt(np.mean((x[train] - x[train].mean(axis=0)) ** 2)))
    x_train, prepared_train, y_train = x[train], prepared[train], y[train]  # taken once: not what is timed

    def probe() -> tuple[float, float]:
        began = time.perf_counter()
        model = fit_linear_probe(x_train, y_train, classes)
        probs = model.predict_proba(x)
        return time.perf_counter() - began, float((np.asarray(classes)[probs.argmax(1)][~train] == y[~train]).mean())

    def sklearn() -> tuple[float, float]:
        began = time.perf_counter()
        model = LogisticRegression(C=DEFAULT_C, solver="lbfgs", max_iter=MAX_ITER).fit(prepared_train, y_train)
        predicted = model.predict_proba(prepared).argmax(1)
        return time.perf_counter() - began, float((model.classes_[predicted][~train] == y[~train]).mean())

    def sklearn_one_thread() -> tuple[float, float]:
        with threadpool_limits(1):
            return sklearn()

    jobs = {"probe": probe, "sklearn_default_threads": sklearn, "sklearn_one_thread": sklearn_one_thread}
    runs = {name: [] for name in jobs}
    accuracy = {}
    for _ in range(REPEATS):  # interleaved: machine noise hits each alike
        for name, job in jobs.items():
            seconds, accuracy[name] = job()
            runs[name].append(seconds)
    median = {k: float(np.median(v)) for k, v in runs.items()}
    anchor = min(median["sklearn_default_threads"], median["sklearn_one_thread"])
    ratio = median["probe"] / anchor
    line = {
        "name": "linear_probe_100k", "n": N, "dim": DIM, "classes": N_CLASSES, "repeats": REPEATS,
        "seconds": {k: round(v, 2) for k, v in median.items()},
        "spread": {k: [round(min(v), 2), round(max(v), 2)] for k, v in runs.items()},
        "held_out_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
        "ratio_vs_sklearn": round(ratio, 3),
        "target": {"seconds": TARGET_SECONDS, "ratio_vs_sklearn": TARGET_RATIO},
        "pass": bool(median["probe"] <= TARGET_SECONDS and ratio <= TARGET_RATIO),
    }
    print("BENCH " + json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
