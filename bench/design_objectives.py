"""Design study for the combined selection's defaults: run on data other than the digits the bench judges.

Not a bench (``make bench`` does not run it): the record of where ``Objectives`` and the combined recipe were
chosen, so anyone can rerun the choice. Three design sets, none of them digits:

- ``blobs10``: ``make_classification``, 1,800 samples, 10 classes, 20 features (12 informative, 4 redundant),
  class_sep 2, standardised;
- ``blobs6x2``: ``make_classification``, 1,800 samples, 6 classes of two clusters each, 30 features (16
  informative, 4 redundant), class_sep 2.5, standardised;
- ``shapes``: 1,800 rendered 32x32 grey images of one shape each (``skimage.draw``; 8 classes: square, triangle,
  diamond, bar, disk, ring, wide and tall ellipse), jittered, scaled, turned and noisy; HOG features (image
  features, like the bench's second set, but not digits).

Each variant runs the bench's own loop (``bench.bench_loop_model_efficiency.run_curves``: logistic regression,
batches of 10 after one diverse batch, 20 iterations) on ``DESIGN_SEEDS`` seeds. Rule (the one every default of
``Objectives`` was chosen by): the highest mean accuracy over the curve, averaged over the sets; printed with it,
the largest fall of the variant's mean curve below diversity alone or margin alone at any budget, and its labels to
95% of full-pool accuracy against random's.

    .venv/bin/python -m bench.design_objectives            # every variant
    CURATE_LOOP_DESIGN_VARIANTS=current,raw ...            # some of them (CURATE_LOOP_DESIGN_SEEDS, _SETS too)

Results (2026-12-02, mean curve accuracy averaged over the three sets, 5 seeds unless said; diversity alone 0.7744,
margin alone 0.7667):

- ``current`` (uncertain candidates compared centred on the pool's mean; then still the cluster-balanced pick
  among them, ``clusters`` since): **0.8018**; shapes 0.6941, and never
  below diversity or margin alone there; on the two sets that are centred already it moved by seed noise only
  (blobs10 -.004, blobs6x2 -.004 in area; labels to 95% 68 -> 76 and 114 -> 134, which says how noisy that figure
  is on 5 seeds);
- ``raw`` (the recipe before, raw cosine): 0.7909; shapes with 10 seeds: 0.6546 raw, 0.6891 centred;
- with centring, another uncertainty strength: ``u=0.25`` 0.8000, ``u=1`` 0.7955 (0.5 kept); another trust ramp:
  ``t=3`` 0.7934, ``t=8`` 0.8031, and with 10 seeds ``current`` (5) 0.7973, ``t=8`` 0.7972, ``t=12`` 0.7964 (a tie:
  5 kept); class balance ``cb=0`` 0.8019, ``cb=1`` 0.7993 (0.25 kept: a guard, same score as 0);
- ``with_labeled`` (the candidates' k-means also holding the labeled rows, so that picks keep away from them):
  0.7924;
- with raw cosine: ``u=1`` 0.7834, ``u=2`` 0.7813; ``badge`` 0.7519, ``badge_candidates`` 0.7664 (both fell up to
  .11 below diversity alone at low budgets); ``whole_pool`` 0.7849 against 0.7881 (3 seeds);
- ``diversity_centred`` (diversity alone, centred): 0.7759 against 0.7744: no change, so diversity keeps raw cosine.

2026-12-03, 5 seeds, each against ``current`` (0.8018) in the same run; none kept:

- ``weighted`` (Zhdanov's own step: the candidates' k-means weighted by their uncertainty): 0.7957;
- ``min=2`` (diversity alone until the model has 2 labels per class): 0.7927 (shapes 0.6695 against 0.6941: even
  the first model, on one label per class, helps there);
- ``standardised`` (uncertain candidates compared after scaling each feature too, not only centring): 0.8007;
- ``density=1``, ``density=0.5`` (Settles & Craven's information density: uncertainty x (median / own mean squared
  distance to the 20 nearest rows) ** beta): 0.7790 and 0.7876, shapes falling .06 and .04 below diversity alone;
- ``with_labeled_wide=0.5``, ``=0.25`` (``with_labeled`` only while the candidates are at least that share of the
  selectable pool, i.e. for a first model trusted little): 0.7960 and 0.7967.

2026-12-03 (later), 5 seeds, against ``current`` (0.8018) in the same run; none kept (the model step swapped
through ``run_curves(model_step=...)``):

- ``committee=kl``, ``committee=bag`` (query by committee: 5 logistic regressions on bootstrap resamples of the
  labels; the members' mean KL divergence from their consensus, or the consensus's margin): 0.7557 and 0.7938
  (the KL score fell .06 below diversity alone on blobs10: with 10-50 labels, resamples miss whole classes);
- ``score=entropy``, ``score=least_confidence`` (the combined recipe fed another score than margin): 0.7540 and
  0.7821 (entropy .17 below diversity alone on shapes);
- ``graph=mix``, ``graph=spread`` (an uncertainty that reads the pool's structure: label spreading over a 10-NN
  graph of the centred rows, its margin averaged with the model's, or alone): 0.7570 and 0.7349 (shapes .12 below
  diversity alone: HOG neighbours of a shape are often other shapes);
- ``geometry=probs``, ``geometry=mix`` (the uncertain candidates compared in the model's output space, centred
  square-root probabilities, alone or beside the centred embedding): 0.7850 and 0.7988.

2026-12-03 (evening), the candidates' diversity step itself, against the cluster-balanced pick (now ``clusters``):

- parts of the cluster-balanced pick switched off, 5 seeds: natural-cluster cover off 0.8018 (identical: among
  uncertain candidates it never fired), refinement off 0.8000, each budget cluster's most uncertain member instead
  of its most representative (refinement off) 0.7744 (.07 below diversity alone on two sets);
- greedy facility location among the candidates (``curate_loop.curation.facility``), every unlabeled row a client,
  5 seeds: unweighted **0.8067**, clients weighted by their uncertainty 0.8035; 10 seeds: unweighted **0.8020**
  against ``clusters`` 0.7973 (blobs10 .8807/.8797, blobs6x2 .8320/.8228, shapes .6932/.6893; no fall below
  diversity alone on any set, where ``clusters`` fell .006 on blobs6x2), weighted by the uncertainty's square root
  0.7992, the candidates as the only clients 0.7868. **Kept**: the unweighted one is ``current`` since then;
- with facility location, 5 seeds against ``current`` 0.8068: the strengths again, ``u=0.25`` 0.8045, ``u=1``
  0.8029, ``t=3`` 0.8039, ``t=8`` 0.8043 (the defaults stay); its similarity max(cos, 0) raised to a power,
  ``kernel=0.5`` 0.8065, ``kernel=2`` 0.8027, ``kernel=4`` 0.8019 (1 stays); each candidate's gain times its
  uncertainty (or its square root) when the greedy step compares them, 0.8044 and 0.7995 (code since removed, as
  for ``weighted`` and the switched-off parts of the cluster-balanced pick above: they patched steps that are gone).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

DESIGN_SEEDS = tuple(range(int(os.environ.get("CURATE_LOOP_DESIGN_SEEDS", "3"))))
WORKERS = int(os.environ.get("CURATE_LOOP_BENCH_WORKERS", "2"))
SETS = tuple(os.environ.get("CURATE_LOOP_DESIGN_SETS", "blobs10,blobs6x2,shapes").split(","))
N_SAMPLES = 1800
SHAPES = ("square", "triangle", "diamond", "bar", "disk", "ring", "ellipse_wide", "ellipse_tall")
SHAPE_HOG = {"orientations": 9, "pixels_per_cell": (8, 8), "cells_per_block": (2, 2)}
BASELINES = ("random", "diversity", "margin")


def design_set(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of one design set, drawn with ``seed``."""
    from sklearn.datasets import make_classification
    from sklearn.preprocessing import StandardScaler

    if name == "blobs10":
        x, y = make_classification(N_SAMPLES, 20, n_informative=12, n_redundant=4, n_classes=10,
                                   n_clusters_per_class=1, class_sep=2.0, random_state=seed)
    elif name == "blobs6x2":
        x, y = make_classification(N_SAMPLES, 30, n_informative=16, n_redundant=4, n_classes=6,
                                   n_clusters_per_class=2, class_sep=2.5, random_state=seed)
    elif name == "shapes":
        return shape_images(seed)
    else:
        raise ValueError(f"unknown design set {name!r}")
    return StandardScaler().fit_transform(x).astype(np.float32), y


def shape_images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """HOG of rendered 32x32 one-shape images, near the centre (jitter, size, rotation and noise drawn per image);
    class = the shape."""
    from skimage.draw import disk, ellipse, polygon
    from skimage.feature import hog

    rng = np.random.default_rng(seed)
    y = rng.integers(len(SHAPES), size=N_SAMPLES)
    feats = []
    for label in y:
        image = np.zeros((32, 32), dtype=np.float32)
        cy, cx = 16 + rng.uniform(-3, 3, size=2)
        r = rng.uniform(7, 12)
        turn = rng.uniform(-0.3, 0.3)
        shape = SHAPES[label]
        if shape in ("square", "triangle", "diamond", "bar"):
            corners = {"square": 4, "triangle": 3, "diamond": 4, "bar": 4}[shape]
            angles = turn + np.arange(corners) * 2 * np.pi / corners + (np.pi / 4 if shape != "diamond" else 0)
            radius = np.full(corners, r)
            if shape == "bar":
                angles = turn + np.array([0.35, np.pi - 0.35, np.pi + 0.35, -0.35])
            rr, cc = polygon(cy + radius * np.sin(angles), cx + radius * np.cos(angles), image.shape)
        elif shape == "disk":
            rr, cc = disk((cy, cx), r, shape=image.shape)
        elif shape == "ring":
            rr, cc = disk((cy, cx), r, shape=image.shape)
            image[rr, cc] = 1.0
            rr, cc = disk((cy, cx), r * 0.6, shape=image.shape)
            image[rr, cc] = 0.0
            rr, cc = rr[:0], cc[:0]
        else:  # ellipse_wide / ellipse_tall
            wide = shape == "ellipse_wide"
            rr, cc = ellipse(cy, cx, r * (0.5 if wide else 1.0), r * (1.0 if wide else 0.5), image.shape,
                             rotation=turn)
        image[rr, cc] = 1.0
        image = image * rng.uniform(0.5, 1.0) + rng.normal(0, 0.15, image.shape).astype(np.float32)
        feats.append(hog(image, **SHAPE_HOG))
    return np.asarray(feats, dtype=np.float32), y


def badge_picks(vectors, probs, k: int, available: np.ndarray, seed: int) -> np.ndarray:
    """BADGE (Ash et al. 2020): k-means++ seeding on the gradient embeddings (p - onehot(argmax p)) x features,
    without forming them: <g_i, g_j> = <a_i, a_j> <x_i, x_j>."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(available)
    x = np.asarray(vectors, dtype=np.float64)[rows]
    a = np.asarray(probs, dtype=np.float64)[rows].copy()
    a[np.arange(len(rows)), a.argmax(axis=1)] -= 1.0
    sq = (a * a).sum(1) * (x * x).sum(1)
    first = int(np.argmax(sq))
    chosen = [first]
    d2 = np.maximum(sq + sq[first] - 2 * (a @ a[first]) * (x @ x[first]), 0)
    while len(chosen) < k:
        total = d2.sum()
        nxt = int(rng.choice(len(rows), p=d2 / total)) if total > 0 else int(rng.integers(len(rows)))
        chosen.append(nxt)
        d2 = np.minimum(d2, np.maximum(sq + sq[nxt] - 2 * (a @ a[nxt]) * (x @ x[nxt]), 0))
        d2[chosen] = 0
    return rows[np.asarray(chosen)]


def _among_clusters(original, unit, k, avail, covered, clients, diverse, whole_pool, *, with_labeled=False):
    """The candidates' diversity step before facility location (until 2026-12-03): Zhdanov's k-means of the
    candidates into k clusters, one pick each by ``select_cluster_balanced`` (its most representative member; the
    pool's natural clusters that no covered row reaches still ask for coverage). ``with_labeled``: the k-means also
    holds the covered rows (k + covered clusters), so that a pick does not land beside a labeled row."""
    from curate_loop.curation.clustering import NOISE, ClusterResult
    from curate_loop.curation.combined import apart_from_covered
    from curate_loop.curation.strategies import select_cluster_balanced

    if whole_pool:
        return original(unit, k, avail, covered, clients, diverse, whole_pool=True)
    anchors = np.flatnonzero(covered)
    threshold = diverse["near_dup_threshold"]
    rows, skipped = apart_from_covered(unit, np.flatnonzero(avail), covered, threshold, k)
    natural = diverse["clusters"]
    both = np.concatenate([rows, anchors]) if with_labeled else rows
    sub_labels = natural.labels[both].copy()
    if not with_labeled:  # natural clusters a covered row reaches ask for nothing more
        reached = np.zeros(natural.n_clusters + 1, dtype=bool)
        reached[natural.labels[covered]] = True  # NOISE (-1) lands on the spare last slot
        sub_labels[reached[sub_labels] & (sub_labels >= 0)] = NOISE
    used, relabelled = np.unique(sub_labels[sub_labels >= 0], return_inverse=True)
    labels = np.full(len(both), NOISE, dtype=np.int64)
    labels[sub_labels >= 0] = relabelled
    sub = ClusterResult(labels=labels, sizes=natural.sizes[used], density=natural.density[used],
                        kinds=natural.kinds[used], method=natural.method)
    result = select_cluster_balanced(unit[both], k, labeled_idx=np.arange(len(rows), len(both)), clusters=sub,
                                     near_dup_threshold=threshold, seed=diverse["seed"])
    return both[result.indices], [str(r) for r in result.reasons], skipped + result.near_duplicates_skipped


COMMITTEE = 5


def committee_step(kind: str):
    """A model step for run_curves: a committee of COMMITTEE logistic regressions on bootstrap resamples of the
    labeled rows (query by committee, Seung et al. 1992; McCallum & Nigam 1998). ``kind``: "kl" scores the mean KL
    divergence of the members from their consensus, "bag" the margin of the consensus; probabilities: the
    consensus."""
    from bench.bench_loop_model_efficiency import fit_predict
    from curate_loop.model.uncertainty import margin

    def step(x_train, y_train, pool, n_classes, seed):
        rng = np.random.default_rng(seed)
        members = np.stack([fit_predict(x_train[rows], y_train[rows], pool, n_classes) for rows in
                            (rng.integers(0, len(y_train), len(y_train)) for _ in range(COMMITTEE))])
        consensus = members.mean(axis=0)
        if kind == "bag":
            return consensus, margin(consensus)
        eps = 1e-12
        kl = (members * (np.log(members + eps) - np.log(consensus + eps))).sum(axis=2).mean(axis=0)
        return consensus, kl

    return step


def score_step(score: str):
    """A model step for run_curves: the bench's logistic regression, its probabilities turned into ``score`` (one of
    ``curate_loop.model.uncertainty``'s classification scores) instead of margin."""
    from bench.bench_loop_model_efficiency import fit_predict
    from curate_loop.model.uncertainty import score_uncertainty

    def step(x_train, y_train, pool, n_classes, seed):
        probs = fit_predict(x_train, y_train, pool, n_classes)
        return probs, score_uncertainty(probs, score)

    return step


def graph_step(kind: str):
    """A model step for run_curves whose uncertainty also reads the pool's structure: label spreading (Zhou et al.
    2004; scikit-learn's ``LabelSpreading``, 10-NN graph on the centred unit rows, alpha 0.2) from the labels over
    the pool. ``kind``: "mix" scores the margin of the mean of the logistic regression's and the spreading's
    probabilities, "spread" the spreading's alone; probabilities: the logistic regression's (the model)."""
    from sklearn.semi_supervised import LabelSpreading

    from bench.bench_loop_model_efficiency import fit_predict
    from curate_loop.model.uncertainty import margin
    from curate_loop.vectors import normalize_rows

    def step(x_train, y_train, pool, n_classes, seed):
        probs = fit_predict(x_train, y_train, pool, n_classes)
        rows = normalize_rows(np.concatenate([x_train, pool]), centre=True)
        targets = np.concatenate([y_train, np.full(len(pool), -1)])
        spreading = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.2, max_iter=100).fit(rows, targets)
        spread = np.zeros_like(probs)
        spread[:, spreading.classes_[spreading.classes_ >= 0]] = spreading.label_distributions_[len(x_train):]
        spread /= np.maximum(spread.sum(axis=1, keepdims=True), 1e-12)
        return probs, margin(spread if kind == "spread" else 0.5 * (probs + spread))

    return step


def variant(name: str):
    """A context that switches the combined recipe to variant ``name`` for one run (patched in this process)."""
    from contextlib import contextmanager
    from functools import partial
    from types import SimpleNamespace

    from curate_loop.curation import combined, facility
    from curate_loop.curation.objectives import Objectives

    @contextmanager
    def patched():
        original_among, original_select = combined._diverse_among, combined.select_combined
        original_centred = combined._centred
        original_cbs = combined.select_cluster_balanced
        original_power = facility.KERNEL_POWER
        if name == "whole_pool":  # the budget partition over the whole pool, labeled rows counted
            combined._diverse_among = lambda *a, whole_pool: original_among(*a, whole_pool=True)
        elif name == "badge":  # BADGE alone, strengths ignored
            def select(vectors, k, *, predicted_classes, labeled_idx, seed, **_):
                available = np.ones(len(vectors), dtype=bool)
                available[labeled_idx] = False
                return SimpleNamespace(indices=badge_picks(vectors, predicted_classes, k, available, seed))
            combined.select_combined = select
        elif name == "badge_candidates":  # BADGE among the uncertainty filter's candidates
            def select(vectors, k, *, objectives, uncertainty, predicted_classes, labeled_idx, seed, **_):
                n = len(vectors)
                selectable = np.ones(n, dtype=bool)
                selectable[labeled_idx] = False
                m = combined._n_candidates(k, int(selectable.sum()), objectives, n_labeled=len(labeled_idx),
                                           n_classes=predicted_classes.shape[1])
                available = np.zeros(n, dtype=bool)
                available[combined._most_uncertain(uncertainty, selectable, m, seed)] = True
                return SimpleNamespace(indices=badge_picks(vectors, predicted_classes, k, available, seed))
            combined.select_combined = select
        elif name.startswith("u="):  # another uncertainty strength, the rest as the defaults
            strength = float(name[2:])
            combined.select_combined = lambda *a, objectives, **kw: original_select(
                *a, objectives=Objectives(uncertainty=strength), **kw)
        elif name.startswith("min="):  # diversity alone while the model has fewer than min labels per class
            least = float(name[4:])

            def select(*a, uncertainty=None, predicted_classes=None, labeled_idx=None, **kw):
                few = predicted_classes is not None and len(labeled_idx) < least * predicted_classes.shape[1]
                return original_select(*a, uncertainty=None if few else uncertainty,
                                       predicted_classes=None if few else predicted_classes,
                                       labeled_idx=labeled_idx, **kw)
            combined.select_combined = select
        elif name == "standardised":  # uncertain candidates compared after centring and scaling each feature
            def standardised(vectors, unit):
                v = np.asarray(vectors, dtype=np.float64)
                spread = v.std(axis=0)
                return normalize_rows((v - v.mean(axis=0)) / np.where(spread > 0, spread, 1.0))
            from curate_loop.vectors import normalize_rows
            combined._centred = standardised
        elif name.startswith("density="):  # Settles & Craven's information density: uncertainty x density ** beta
            beta = float(name[8:])
            from curate_loop.curation.clustering import mean_knn_sq_dist

            def select(vectors, *a, uncertainty=None, **kw):
                if uncertainty is not None:
                    spread = mean_knn_sq_dist(combined._centred(vectors, None), 20)
                    density = np.median(spread) / np.maximum(spread, 1e-12)
                    uncertainty = np.asarray(uncertainty) * np.minimum(density, 10.0) ** beta
                return original_select(vectors, *a, uncertainty=uncertainty, **kw)
            combined.select_combined = select
        elif name.startswith("with_labeled_wide="):  # with_labeled only while the candidates are a share of the pool
            share = float(name.split("=")[1])

            def among(unit, k, avail, covered, clients, diverse, whole_pool):
                wide = avail.sum() >= share * (len(unit) - covered.sum())
                return _among_clusters(original_among, unit, k, avail, covered, clients, diverse, whole_pool,
                                       with_labeled=wide)
            combined._diverse_among = among
        elif name.startswith("geometry="):  # uncertain candidates compared in the model's output space (too)
            how = name.split("=")[1]
            holder = {}
            from curate_loop.vectors import normalize_rows

            def select(*a, predicted_classes=None, **kw):
                holder["probs"] = predicted_classes
                return original_select(*a, predicted_classes=predicted_classes, **kw)

            def model_space(vectors, unit):
                roots = np.sqrt(np.clip(np.asarray(holder["probs"], dtype=np.float64), 0, None))
                outputs = normalize_rows(roots - roots.mean(axis=0))
                if how == "probs":
                    return outputs
                return normalize_rows(np.hstack([original_centred(vectors, unit), outputs]))
            combined.select_combined = select
            combined._centred = model_space
        elif name == "with_labeled":  # the candidates' budget partition counts the labeled rows among them
            combined._diverse_among = partial(_among_clusters, original_among, with_labeled=True)
        elif name.startswith("kernel="):  # facility location's similarity max(cos, 0) raised to a power
            facility.KERNEL_POWER = float(name.split("=")[1])
        elif name == "clusters":  # the candidates' cluster-balanced pick, before facility location
            combined._diverse_among = partial(_among_clusters, original_among)
        elif name == "raw":  # the uncertain candidates compared by raw cosine, not centred (before 2026-12-02)
            combined._centred = lambda vectors, unit: unit
        elif name == "diversity_centred":  # today's diversity pick on centred vectors (no model)
            from curate_loop.curation.strategies import select_cluster_balanced
            combined.select_combined = lambda vectors, k, *, labeled_idx, clusters, seed, **_: select_cluster_balanced(
                vectors - vectors.mean(axis=0), k, clusters=clusters, labeled_idx=labeled_idx, seed=seed)
        elif name.startswith(("t=", "cb=")):  # another trust ramp or class balance strength, the rest default
            field, value = name.split("=")
            settings = {"t": "trust_labels_per_class", "cb": "class_balance"}
            combined.select_combined = lambda *a, objectives, **kw: original_select(
                *a, objectives=Objectives(**{settings[field]: float(value)}), **kw)
        elif name != "current":
            raise ValueError(f"unknown variant {name!r}")
        try:
            yield
        finally:
            combined._diverse_among, combined.select_combined = original_among, original_select
            combined._centred = original_centred
            combined.select_cluster_balanced = original_cbs
            facility.KERNEL_POWER = original_power

    return patched()


VARIANTS = ("current", "raw", "whole_pool", "badge", "badge_candidates", "u=1", "u=2", "diversity_centred")


def _job(args: tuple[str, int, tuple[str, ...]]) -> dict:
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    from bench.bench_loop_model_efficiency import TEST_SHARE, run_curves

    name, seed, variants = args
    x, y = design_set(name, seed)
    pool_i, test_i = train_test_split(np.arange(len(y)), test_size=TEST_SHARE, stratify=y, random_state=seed)
    out = {"set": name, "seed": seed, "curves": {}}
    with threadpool_limits(1):
        base = run_curves(x[pool_i], y[pool_i], x[test_i], y[test_i], seed, strategies=BASELINES)
        out["full"] = base["full"]
        out["curves"].update(base["curves"])
        for v in variants:
            kind, _, value = v.partition("=")
            step = {"committee": committee_step, "score": score_step, "graph": graph_step}.get(
                kind, lambda _: None)(value)
            with variant("current" if step else v):
                out["curves"][v] = run_curves(x[pool_i], y[pool_i], x[test_i], y[test_i], seed,
                                              strategies=("combined",), model_step=step)["curves"]["combined"]
    return out


def main() -> None:
    from bench.bench_loop_model_efficiency import BATCH, DIVERSE_ITERATIONS, TARGET_SHARE, labels_needed

    variants = tuple(os.environ.get("CURATE_LOOP_DESIGN_VARIANTS", ",".join(VARIANTS)).split(","))
    jobs = [(s, seed, variants) for s in SETS for seed in DESIGN_SEEDS]
    with ProcessPoolExecutor(WORKERS) as pool:
        runs = list(pool.map(_job, jobs))
    for v in variants:
        per_set = {}
        for s in SETS:
            mine = [r for r in runs if r["set"] == s]
            mean = {c: np.mean([r["curves"][c][:DIVERSE_ITERATIONS] for r in mine], axis=0) for c in (*BASELINES, v)}
            falls = {o: round(float(min(0.0, (mean[v] - mean[o]).min())), 4) for o in ("diversity", "margin")}
            cap = lambda c: [labels_needed(r["curves"][c], TARGET_SHARE * r["full"]) or
                             (len(r["curves"][c]) + 1) * BATCH for r in mine]
            per_set[s] = {"area": round(float(mean[v].mean()), 4), "worst_fall": falls,
                          "labels": round(float(np.mean(cap(v))), 1),
                          "ratio_vs_random": round(float(np.mean(cap(v)) / np.mean(cap("random"))), 3),
                          "area_diversity": round(float(mean["diversity"].mean()), 4),
                          "area_margin": round(float(mean["margin"].mean()), 4)}
        print("DESIGN " + json.dumps({"variant": v, "seeds": len(DESIGN_SEEDS),
                                      "mean_area": round(float(np.mean([p["area"] for p in per_set.values()])), 4),
                                      "sets": per_set}), flush=True)


if __name__ == "__main__":
    main()
