"""Labeling-batch quality on real images: does our cluster-balanced pick teach a classifier as much as TypiClust?

scikit-learn's digits (1,797 8x8 images, 10 classes), four feature sets computed from the pixels:
- pca32: PCA to 32 dimensions, fitted on the pool;
- hog: HOG of the image upscaled to 16x16 (4x4-pixel cells, 2x2-cell blocks, 9 orientations; 324 dims);
- held out, never looked at while choosing any default (their lines say ``"held_out": true``):
  - pixels_12x12: raw pixels resized to 12x12 (bilinear), standardised by the pool's mean and deviation (144 dims);
  - hog_8px_cells: HOG of the image upscaled to 24x24, 8x8-pixel cells (2x2-cell blocks, 9 orientations; 144 dims).
Per seed: a stratified 30% held-out test split; the pool is the rest. Each strategy picks K pool samples, only their
labels are revealed, and a 1-NN and a logistic regression trained on them are scored on the test split. Mean over
seeds, for ours (``select_cluster_balanced``) and the anchors random, k-center greedy and TypiClust.

Paired differences ours - TypiClust (mean and standard error over seeds) come with the means. For ours it also
reports the share of natural clusters (``cluster_embeddings`` on the pool) reached, the share of
sparse ones reached, and the edge cases picked (outliers or sparse-cluster members) per batch.
Issue's reference (pca32, 1-NN, K=10/20/50/100): random .55/.63/.84/.91, k-center .56/.70/.87/.93,
TypiClust .74/.86/.93/.96. Target: ours >= TypiClust at every K, both classifiers.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np

BUDGETS = (10, 20, 50, 100)
# 20: at K >= 50 ours and TypiClust differ by a few picks, and over 10 seeds the paired standard error (.002 to .004)
# was as large as the differences themselves.
SEEDS = tuple(range(int(os.environ.get("CURATE_LOOP_BENCH_SEEDS", "20"))))
TEST_SIZE = 0.3
METRICS = ("knn1", "logreg")
ANCHORS = ("random", "kcenter", "typiclust")
# Feature set -> held out: True where no default of ours was chosen on it (a check against tuning to pca32 and hog).
FEATURE_SETS = {"pca32": False, "hog": False, "pixels_12x12": True, "hog_8px_cells": True}


def _hog(images: np.ndarray, size: int, cell: int) -> np.ndarray:
    """HOG (9 orientations, 2x2-cell blocks) of each image upscaled to size x size, with cell x cell-pixel cells."""
    from skimage.feature import hog
    from skimage.transform import resize

    return np.stack([hog(resize(im, (size, size), order=1), orientations=9, pixels_per_cell=(cell, cell),
                         cells_per_block=(2, 2)) for im in images]).astype(np.float32)


def digits_features() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per image: raw pixels (PCA fitted per pool), 12x12 pixels (standardised per pool), both HOGs; and its class."""
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images / 16.0
    pixels_12 = resize(images, (len(images), 12, 12), order=1).reshape(len(images), -1)
    return {"pixels": digits.data.astype(np.float32), "pixels_12x12": pixels_12.astype(np.float32),
            "hog": _hog(images, 16, 4), "hog_8px_cells": _hog(images, 24, 8)}, digits.target


def split(features: dict[str, np.ndarray], y: np.ndarray, seed: int) -> dict[str, tuple]:
    """Per feature set: (pool features, pool labels, test features, test labels) for one stratified split."""
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    pool, test = train_test_split(np.arange(len(y)), test_size=TEST_SIZE, stratify=y, random_state=seed)
    # Fitted on the pool only, as a user would on their unlabeled data; constant pixels keep scale 1.
    fitted = {"pca32": ("pixels", PCA(32, random_state=seed)), "pixels_12x12": ("pixels_12x12", StandardScaler())}
    out = {}
    for name in FEATURE_SETS:
        source, transform = fitted.get(name, (name, None))
        pool_x, test_x = features[source][pool], features[source][test]
        if transform is not None:
            transform.fit(pool_x)
            pool_x, test_x = transform.transform(pool_x), transform.transform(test_x)
        out[name] = (pool_x.astype(np.float32), y[pool], test_x.astype(np.float32), y[test])
    return out


def accuracies(train_x, train_y, test_x, test_y) -> dict[str, float]:
    """1-NN and logistic-regression accuracy on the test split, trained on the picked samples only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(1).fit(train_x, train_y).score(test_x, test_y)
    if len(np.unique(train_y)) < 2:
        logreg = float(np.mean(test_y == train_y[0]))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logreg = LogisticRegression(max_iter=2000).fit(train_x, train_y).score(test_x, test_y)
    return {"knn1": float(knn), "logreg": float(logreg)}


def run_feature_set(name: str, splits: list[dict[str, tuple]]) -> dict:
    from curate_loop.curation.clustering import cluster_embeddings
    from curate_loop.curation.strategies import (select_cluster_balanced, select_kcenter, select_random,
                                                 select_typiclust)

    scores = {s: {m: {k: [] for k in BUDGETS} for m in METRICS} for s in ("ours",) + ANCHORS}
    coverage = {c: {k: [] for k in BUDGETS} for c in ("clusters_reached", "sparse_reached", "edge_cases")}
    n_clusters = []
    for seed, per_set in zip(SEEDS, splits):
        pool_x, pool_y, test_x, test_y = per_set[name]
        clusters = cluster_embeddings(pool_x, seed=seed)
        n_clusters.append(clusters.n_clusters)
        n_sparse = max(1, len(clusters.clusters_of_kind("sparse")))
        for k in BUDGETS:
            ours = select_cluster_balanced(pool_x, k, clusters=clusters, seed=seed)
            picks = {"ours": ours.indices, "random": select_random(len(pool_x), k, seed),
                     "kcenter": select_kcenter(pool_x, k, seed=seed),
                     "typiclust": select_typiclust(pool_x, k, seed=seed)}
            for strategy, idx in picks.items():
                idx = np.sort(idx)  # the same picks score the same: lbfgs's result shifts with the row order
                for metric, acc in accuracies(pool_x[idx], pool_y[idx], test_x, test_y).items():
                    scores[strategy][metric][k].append(acc)
            coverage["clusters_reached"][k].append(ours.clusters_reached / max(1, clusters.n_clusters))
            coverage["sparse_reached"][k].append(ours.sparse_reached / n_sparse)
            coverage["edge_cases"][k].append(ours.edge_cases)

    def means(per_k: dict) -> dict[str, float]:
        return {str(k): round(float(np.mean(v)), 4) for k, v in per_k.items()}

    summary = {s: {m: means(scores[s][m]) for m in METRICS} for s in scores}
    # Paired over seeds (same split, same k-means): the noise a difference of means has to be read against.
    paired = {m: {str(k): [round(float(np.mean(d)), 4), round(float(np.std(d) / np.sqrt(len(d))), 4)]
                  for k in BUDGETS for d in [np.subtract(scores["ours"][m][k], scores["typiclust"][m][k])]}
              for m in METRICS}
    ratios = {f"ours_vs_typiclust_{m}": {str(k): round(summary["ours"][m][str(k)] / summary["typiclust"][m][str(k)], 4)
                                         for k in BUDGETS} for m in METRICS}
    passed = all(summary["ours"][m][str(k)] >= summary["typiclust"][m][str(k)] for m in METRICS for k in BUDGETS)
    # At K >= 50 both pick nearly the same samples: a strict >= then reads noise. Not worse by 2 paired SEs anywhere:
    tied_or_better = all(paired[m][str(k)][0] >= -2 * paired[m][str(k)][1] for m in METRICS for k in BUDGETS)
    return {
        "name": f"curation_quality_digits_{name}",
        "held_out": FEATURE_SETS[name],
        "seeds": len(SEEDS),
        "natural_clusters_mean": round(float(np.mean(n_clusters)), 1),
        "ours": {**summary["ours"], **{c: means(v) for c, v in coverage.items()}},
        "anchors": {s: summary[s] for s in ANCHORS},
        "ratios": ratios,
        "ours_minus_typiclust_mean_se": paired,
        "target": "ours >= typiclust at every K",
        "pass": passed,
        "pass_within_2se": tied_or_better,
    }


def main() -> None:
    from threadpoolctl import threadpool_limits

    features, y = digits_features()
    splits = [split(features, y, seed) for seed in SEEDS]
    with threadpool_limits(1):  # a thousand small fits: thread start-up would cost more than it saves
        for name in FEATURE_SETS:
            print("BENCH " + json.dumps(run_feature_set(name, splits)), flush=True)


if __name__ == "__main__":
    main()
