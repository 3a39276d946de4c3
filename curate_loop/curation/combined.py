"""A batch chosen by diversity, model uncertainty and class balance together, each with a strength.

Recipe (Zhdanov 2019, "Diverse mini-batch active learning", and Cluster-Margin, Citovsky et al. 2021): filter the
pool to the most uncertain candidates, then pick a diverse batch among them. The diversity step is greedy facility
location (:mod:`curate_loop.curation.facility`): the candidates that together stand in for the most of the
selectable pool, what is labeled counting as covered already, near-duplicates of labeled rows set aside. It took
the place of a cluster-balanced pick among the candidates (Zhdanov's k-means of the candidates into k clusters, one
representative each): 0.8020 against 0.7973 mean curve accuracy on the design sets (10 seeds), higher on each set.
Class balance is a per-class cap on the batch from the model's predicted classes.

Geometry: the diversity step among uncertain candidates compares the embeddings centred on the pool's mean
(``normalize_rows(centre=True)``). Embeddings often share one dominant direction (CLIP's narrow cone, any
non-negative features such as HOG), so that raw cosine says little about how uncertain candidates differ; centring
removes it. Chosen on the design sets of ``bench/design_objectives.py`` (never digits), with the cluster-balanced
step: mean curve accuracy 0.8018 centred against 0.7909 raw over the three sets (5 seeds); +.041 on the one with
non-negative (HOG) features (+.035 over 10 seeds), and within the seed noise (-.004 each) on the two that are
centred already. Diversity alone (no model yet, or uncertainty off) keeps the raw cosine of today's loop: centring
did not change it there (0.7759 against 0.7744, noise). Near-duplicates of labeled rows among the candidates are
judged in the same centred geometry (a tighter test inside a cone, where raw cosines of unrelated rows reach 0.9).

Strengths (``Objectives``), each >= 0, 0 switching that objective off:

- ``uncertainty`` / ``diversity`` = r sets the candidate count between the whole pool (r = 0: exactly the diversity
  pick) and ``k`` (r -> inf: exactly the ``k`` most uncertain): ``n_candidates = k * (n_available / k) ** (1 / (1 +
  r))``, a geometric interpolation (r = 1: sqrt(k * n_available), 11k for k = 10 in a pool of 1,250, close to
  Zhdanov's top-10k; the default r = 0.5: k * (n_available / k) ** (2/3), 25k there). ``diversity = 0``: the
  ``k`` most uncertain, no diversity step.
- the trust ramp: r is multiplied by ``labels / (trust_labels_per_class * C)`` (labeled rows, C the predicted
  classes' columns), so a first model, trained on a few labels per class, shapes the batch little and a model
  with many labels per class shapes it more (``Objectives``: why, and where 5 was chosen). Without predicted classes
  or labeled rows: r as given.
- ``class_balance`` = s caps each predicted class at ``ceil(k * target_share * (1 + 1 / s))`` picks (s -> inf: the
  target shares exactly; s = 1: twice them). A sample counts for every class its ``predicted_classes`` row holds;
  it is passed over only while all its classes are full. When the caps cannot fill the batch (too few candidates
  of the open classes) the rest is picked without them, and ``quota_relaxed`` says so.

``contributions`` (documented figures, one per objective; None where the objective had no input):

- ``uncertainty``: mean percentile rank of the batch's uncertainty among the selectable rows (0.5: what a random
  batch gets on average; 1.0: the most uncertain rows);
- ``diversity``: coverage gain, 1 - D_after / D_before, D the mean cosine distance of (a sample of) the selectable
  rows to their nearest labeled or picked row; with nothing labeled D_before is the distance to the pool's mean
  direction;
- ``class_balance``: total-variation distance between the batch's predicted-class shares and the target
  (0: on target, 1: disjoint); ``class_balance_pool``: the same for the selectable pool (a random batch's
  expectation), for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from curate_loop.curation.clustering import NOISE, ClusterResult, cluster_embeddings
from curate_loop.curation.rows import row_mask
from curate_loop.curation.facility import facility_location
from curate_loop.curation.strategies import (COST_SAMPLE, DEFAULT_NEAR_DUP_THRESHOLD, REASON_REPRESENTATIVE,
                                             SelectionResult, _check_k, _two_nearest, select_cluster_balanced)
from curate_loop.errors import InvalidInputError
from curate_loop.curation.objectives import Objectives, target_shares, total_variation
from curate_loop.vectors import normalize_rows

REASON_UNCERTAIN = "uncertain"  # picked for its uncertainty alone (diversity strength 0)
UNCERTAIN_PREFIX = "uncertain:"  # a diversity reason among uncertain candidates, e.g. "uncertain:representative"
MODE_COMBINED = "combined"


@dataclass(frozen=True)
class CombinedSelection(SelectionResult):
    """A :class:`SelectionResult` (same fields, same meaning) and how the objectives shaped it.

    reasons: diversity reasons prefixed ``"uncertain:"`` when picked among uncertain candidates, ``"uncertain"`` when
        picked by uncertainty alone, plain diversity reasons in diversity-only mode.
    mode: ``"combined"``, or ``"diversity only: <why>"``.
    contributions: per objective a figure (module docstring).
    class_histogram: {"batch": {class: n}, "pool": {class: n}} of predicted classes ({} without them).
    n_candidates: how many uncertain rows the diversity step chose among (the selectable pool in diversity mode).
    quota_relaxed: the class caps could not fill the batch and the rest was picked without them.
    """

    mode: str = MODE_COMBINED
    contributions: dict = field(default_factory=dict)
    class_histogram: dict = field(default_factory=dict)
    n_candidates: int = 0
    quota_relaxed: bool = False


def select_combined(vectors, k: int, *, objectives: Objectives | None = None, uncertainty=None,
                    predicted_classes=None, class_names=None, labeled_idx=None, exclude_idx=None,
                    clusters: ClusterResult | None = None, seed: int = 0,
                    near_dup_threshold: float | None = DEFAULT_NEAR_DUP_THRESHOLD) -> CombinedSelection:
    """``k`` pool rows to label next, by diversity, uncertainty and class balance (module docstring: the recipe).

    Parameters
    ----------
    vectors : (n, dim) embeddings of every row (labeled ones included).
    k : batch size.
    objectives : strengths and class target (default ``Objectives()``).
    uncertainty : (n,) scores, higher = more uncertain (``curate_loop.model.uncertainty``), or None: no model yet,
        pure diversity (``mode`` says so).
    predicted_classes : (n, C) membership of each row in each predicted class: bool / 0-1 (multi-hot for
        detections), or probability rows (their argmax counts); None: no class balance.
    class_names : C names of the columns (default "0".."C-1"); ``class_target`` keys must be among them.
    labeled_idx, exclude_idx : rows never picked (labeled ones count as covered; excluded ones only shape clusters).
    clusters : natural clusters of these rows (computed when omitted).
    """
    objectives = Objectives() if objectives is None else objectives
    if not isinstance(objectives, Objectives):
        raise InvalidInputError(f"objectives must be an Objectives, got {type(objectives).__name__}.")
    unit = normalize_rows(vectors, zero_rows="raise")
    n = len(unit)
    labeled = row_mask(labeled_idx, n, "labeled_idx")
    excluded = row_mask(exclude_idx, n, "exclude_idx") & ~labeled
    selectable = ~labeled & ~excluded
    n_available = int(selectable.sum())
    _check_k(k, n_available)
    scores = _check_uncertainty(uncertainty, n)
    member, names = _membership(predicted_classes, class_names, n)
    if clusters is None:
        clusters = cluster_embeddings(unit, seed=seed)
    elif len(clusters.labels) != n:
        raise InvalidInputError(f"clusters has labels for {len(clusters.labels)} samples but there are {n} vectors; "
                                "cluster these same vectors or omit clusters.")
    diverse = dict(clusters=clusters, near_dup_threshold=near_dup_threshold, seed=seed)

    use_uncertainty = scores is not None and objectives.uncertainty > 0
    use_balance = member is not None and objectives.class_balance > 0
    if scores is None:
        mode = "diversity only: no uncertainty scores (no model predictions yet)"
    elif objectives.uncertainty == 0 and not use_balance:
        mode = "diversity only: uncertainty strength 0"
    else:
        mode = MODE_COMBINED
    if scores is None or (not use_uncertainty and not use_balance):
        result = select_cluster_balanced(unit, k, labeled_idx=np.flatnonzero(labeled),
                                         exclude_idx=np.flatnonzero(excluded), **diverse)
        return _finish(result.indices, result.reasons.tolist(), result.near_duplicates_skipped, unit, labeled,
                       selectable, clusters, scores, member, names, objectives, mode, n_available, False)

    candidates = selectable.copy()
    if use_uncertainty:
        n_cand = _n_candidates(k, n_available, objectives, n_labeled=int(labeled.sum()),
                               n_classes=None if member is None else member.shape[1])
        candidates = np.zeros(n, dtype=bool)
        candidates[_most_uncertain(scores, selectable, n_cand, seed)] = True
    caps = _caps(objectives, names, k) if use_balance else None

    if objectives.diversity == 0:
        order = _most_uncertain(scores, selectable, n_available, seed)
        picks = _take_in_order(order, k, member, caps)
        relaxed = len(picks) < k
        if relaxed:
            picks = np.concatenate([picks, order[~np.isin(order, picks)][:k - len(picks)]])
        return _finish(picks, [REASON_UNCERTAIN] * len(picks), 0, unit, labeled, selectable, clusters, scores,
                       member, names, objectives, mode, int(candidates.sum()), relaxed)

    geometry = _centred(vectors, unit) if use_uncertainty else unit
    picks, reasons, skipped, relaxed = _diverse_with_caps(geometry, k, labeled, excluded, candidates, member, caps,
                                                          diverse, whole_pool=not use_uncertainty)
    if use_uncertainty:
        reasons = [UNCERTAIN_PREFIX + r if candidates[p] else r for p, r in zip(picks, reasons)]
    return _finish(picks, reasons, skipped, unit, labeled, selectable, clusters, scores, member, names, objectives,
                   mode, int(candidates.sum()), relaxed)


# -- steps ---------------------------------------------------------------------------------------------------------
def _n_candidates(k: int, n_available: int, objectives: Objectives, *, n_labeled: int | None = None,
                  n_classes: int | None = None) -> int:
    """k * (n_available / k) ** (1 / (1 + r)), r = uncertainty / diversity (times the trust ramp); k when diversity
    is 0."""
    if objectives.diversity == 0:
        return k
    ratio = objectives.uncertainty / objectives.diversity * _trust(objectives, n_labeled, n_classes)
    return int(min(n_available, max(k, math.ceil(k * (n_available / k) ** (1.0 / (1.0 + ratio)) - 1e-6))))


def _centred(vectors, unit: np.ndarray) -> np.ndarray:
    """Unit rows of ``vectors`` centred on their mean (module docstring: why), or ``unit`` when a row sits exactly
    at the mean (it would have no direction)."""
    try:  # the vectors were validated already: the only refusal left is a row at the mean
        return normalize_rows(vectors, centre=True, zero_rows="raise")
    except InvalidInputError:
        return unit


def _trust(objectives: Objectives, n_labeled: int | None, n_classes: int | None) -> float:
    """How far the model's uncertainty is trusted: labels per class over ``trust_labels_per_class`` (1 without it,
    or without a label count and classes)."""
    ramp = objectives.trust_labels_per_class
    if ramp is None or not n_labeled or not n_classes:
        return 1.0
    return n_labeled / (ramp * n_classes)


def _most_uncertain(scores: np.ndarray, selectable: np.ndarray, m: int, seed: int) -> np.ndarray:
    """The ``m`` selectable rows with the highest scores, highest first; ties in a seeded random order."""
    rows = np.flatnonzero(selectable)
    tie = np.random.default_rng(seed).random(len(rows))
    return rows[np.lexsort((tie, -scores[rows]))][:m]


def _caps(objectives: Objectives, names: list[str], k: int) -> np.ndarray:
    """(C,) most picks per predicted class: ceil(k * share * (1 + 1 / strength))."""
    target = objectives.class_target
    if target == "uniform":
        shares = np.full(len(names), 1.0 / len(names))
    else:
        unknown = sorted(set(map(str, target)) - set(names))
        if unknown:
            raise InvalidInputError(f"class_target names classes the predictions do not have: {unknown}; "
                                    f"the classes are {names}.")
        given = {str(c): float(s) for c, s in target.items()}
        shares = np.array([given.get(c, 0.0) for c in names])
        shares /= shares.sum()
    return np.ceil(k * shares * (1.0 + 1.0 / objectives.class_balance) - 1e-6)


def _take_in_order(order: np.ndarray, k: int, member: np.ndarray | None, caps: np.ndarray | None) -> np.ndarray:
    """The first ``k`` rows of ``order`` that the class caps let through (all of them without caps)."""
    if caps is None:
        return order[:k].astype(np.int64)
    counts = np.zeros(len(caps))
    picks: list[int] = []
    for row in order:  # stops after k accepted; a row is refused only while all its classes are full
        if _open(member[row], counts, caps):
            picks.append(int(row))
            counts += member[row]
            if len(picks) == k:
                break
    return np.asarray(picks, dtype=np.int64)


def _open(classes: np.ndarray, counts: np.ndarray, caps: np.ndarray) -> bool:
    return not classes.any() or bool((counts[classes] < caps[classes]).any())


def _diverse_with_caps(unit, k, labeled, excluded, candidates, member, caps, diverse, whole_pool):
    """Cluster-balanced picks among ``candidates``, round by round: a pick of a full class is turned down, the
    remaining candidates whose classes are all full are set aside, and the next round fills the rest with the
    accepted picks counted as labeled (so coverage accounts for them). At most C + 1 rounds; then, if still short
    (caps, or near-duplicates among few candidates), the rest from the whole selectable pool without caps."""
    n = len(unit)
    kept: list[int] = []
    reasons: list[str] = []
    skipped = 0
    counts = np.zeros(0 if caps is None else len(caps))
    blocked = np.zeros(n, dtype=bool)
    relaxed = False
    rounds = 1 if caps is None else len(caps) + 1
    for attempt in range(rounds + 1):
        final = attempt == rounds
        if final:  # last resort: the caps and the candidate filter give way so that the batch is full
            if len(kept) == k:
                break
            relaxed = caps is not None
            pickable = ~labeled & ~excluded
        else:
            pickable = candidates & ~blocked
        done = np.zeros(n, dtype=bool)
        done[kept] = True
        avail = pickable & ~labeled & ~excluded & ~done
        need = min(k - len(kept), int(avail.sum()))
        if need == 0:
            continue
        rows, reasons_round, skipped_round = _diverse_among(unit, need, avail, labeled | done, ~labeled & ~excluded,
                                                            diverse, whole_pool=final or whole_pool)
        skipped += skipped_round
        for row, reason in zip(rows, reasons_round):  # at most k picks
            if caps is not None and not final and not _open(member[row], counts, caps):
                continue
            kept.append(int(row))
            reasons.append(str(reason))
            if caps is not None:
                counts += member[row]
        if caps is not None:
            full = counts >= caps
            blocked = member.any(axis=1) & ~(member & ~full).any(axis=1)
        if len(kept) == k:
            break
    return np.asarray(kept, dtype=np.int64), reasons, skipped, relaxed


def _diverse_among(unit, k, avail, covered, clients, diverse, whole_pool: bool):
    """``k`` picks among the ``avail`` rows; ``covered``: labeled or kept rows; ``clients``: the selectable rows.

    ``whole_pool`` (no uncertainty filter): :func:`select_cluster_balanced` over every row, the rest excluded, labeled
    ones as labeled: exactly the diversity pick. Otherwise the uncertain candidates that stand in for the most of the
    pool: greedy facility location (:func:`~curate_loop.curation.facility.facility_location`) with the candidates as
    facilities, the ``clients`` not covered yet as clients and the covered rows as already open. Candidates within
    ``near_dup_threshold`` of a covered row are set aside first (unless too few would be left)."""
    threshold = diverse["near_dup_threshold"]
    if whole_pool:
        result = select_cluster_balanced(unit, k, labeled_idx=np.flatnonzero(covered),
                                         exclude_idx=np.flatnonzero(~avail & ~covered), **diverse)
        return result.indices, [str(r) for r in result.reasons], result.near_duplicates_skipped
    rows, skipped = apart_from_covered(unit, np.flatnonzero(avail), covered, threshold, k)
    candidates = np.zeros(len(unit), dtype=bool)
    candidates[rows] = True
    picks = facility_location(unit, k, candidates, clients & ~covered, covered,
                              near_dup_threshold=threshold, seed=diverse["seed"])
    return picks, [REASON_REPRESENTATIVE] * len(picks), skipped


def apart_from_covered(unit, rows, covered, threshold: float | None, k: int) -> tuple[np.ndarray, int]:
    """``rows`` without those within cosine ``threshold`` of a ``covered`` row, and how many were set aside; all of
    them when fewer than ``k`` would be left (or no threshold, or nothing covered)."""
    if threshold is None or not covered.any():
        return rows, 0
    near = _two_nearest(unit[rows], unit[covered])[1]  # cosine distance sqrt(2 - 2 cos)
    dup = near < np.sqrt(max(2 - 2 * threshold, 0.0))
    return (rows[~dup], int(dup.sum())) if (~dup).sum() >= k else (rows, 0)


# -- result --------------------------------------------------------------------------------------------------------
def _finish(picks, reasons, skipped, unit, labeled, selectable, clusters, scores, member, names, objectives, mode,
            n_candidates, relaxed) -> CombinedSelection:
    picks = np.asarray(picks, dtype=np.int64)
    pick_clusters = clusters.labels[picks]
    touched = clusters.labels[np.concatenate([np.flatnonzero(labeled), picks])]
    reached = np.zeros(clusters.n_clusters, dtype=bool)
    reached[touched[touched >= 0]] = True
    sparse = clusters.kinds == "sparse"
    in_sparse = np.zeros(len(picks), dtype=bool)
    in_sparse[pick_clusters >= 0] = sparse[pick_clusters[pick_clusters >= 0]]
    histogram, balance, balance_pool = {}, None, None
    if member is not None:
        batch_counts = member[picks].sum(axis=0)
        pool_counts = member[selectable].sum(axis=0)
        histogram = {"batch": {c: int(v) for c, v in zip(names, batch_counts)},
                     "pool": {c: int(v) for c, v in zip(names, pool_counts)}}
        target = target_shares(objectives, names)
        balance = total_variation(batch_counts, target)
        balance_pool = total_variation(pool_counts, target)
    contributions = {
        "diversity": coverage_gain(unit, labeled, selectable, picks),
        "uncertainty": None if scores is None else uncertainty_percentile(scores, selectable, picks),
        "class_balance": balance,
        "class_balance_pool": balance_pool,
    }
    return CombinedSelection(indices=picks, reasons=np.asarray(reasons, dtype=str), clusters=pick_clusters,
                             natural=clusters, clusters_reached=int(reached.sum()),
                             sparse_reached=int((reached & sparse).sum()),
                             edge_cases=int(((pick_clusters == NOISE) | in_sparse).sum()),
                             near_duplicates_skipped=int(skipped), mode=mode, contributions=contributions,
                             class_histogram=histogram, n_candidates=int(n_candidates), quota_relaxed=bool(relaxed))


def uncertainty_percentile(scores: np.ndarray, selectable: np.ndarray, picks: np.ndarray) -> float:
    """Mean percentile rank (ties: mid-rank) of the picks' scores among the selectable rows' scores, in [0, 1]."""
    pool = np.sort(scores[selectable])
    below = np.searchsorted(pool, scores[picks], side="left")
    upto = np.searchsorted(pool, scores[picks], side="right")
    return round(float(np.mean((below + upto) / 2.0 / len(pool))), 4) if len(picks) else 0.0


def coverage_gain(unit: np.ndarray, labeled: np.ndarray, selectable: np.ndarray, picks: np.ndarray,
                  seed: int = 0) -> float:
    """1 - D_after / D_before, D the mean cosine distance of (up to ``COST_SAMPLE``) selectable rows to their nearest
    labeled or picked row; before anything is labeled, D_before is the distance to the pool's mean direction."""
    rows = np.flatnonzero(selectable)
    if len(rows) > COST_SAMPLE:
        rows = np.random.default_rng(seed).choice(rows, COST_SAMPLE, replace=False)
    points = unit[rows]
    if labeled.any():
        before = _two_nearest(points, unit[labeled])[1]
    else:
        centre = unit[selectable].mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        before = np.sqrt(np.maximum(2 - 2 * points @ centre, 0))
    anchors = np.concatenate([np.flatnonzero(labeled), picks])
    after = _two_nearest(points, unit[anchors])[1] if len(anchors) else before
    d_before = float(before.mean())
    return round(1.0 - float(after.mean()) / d_before, 4) if d_before > 0 else 0.0


# -- validation ----------------------------------------------------------------------------------------------------
def _check_uncertainty(uncertainty, n: int) -> np.ndarray | None:
    if uncertainty is None:
        return None
    arr = np.asarray(uncertainty)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.number):
        raise InvalidInputError(f"uncertainty must be (n,) = ({n},) numbers, one per row of vectors; got dtype "
                                f"{arr.dtype} and shape {arr.shape}.")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"uncertainty holds NaN or infinite values (first at row "
                                f"{int(np.argmax(~np.isfinite(arr)))}); score every row, e.g. 0 for no prediction.")
    return arr


def _membership(predicted_classes, class_names, n: int) -> tuple[np.ndarray | None, list[str]]:
    """(n, C) bool membership and the C class names; probability rows become their argmax."""
    if predicted_classes is None:
        return None, []
    arr = np.asarray(predicted_classes)
    if arr.ndim != 2 or len(arr) != n or arr.shape[1] == 0:
        raise InvalidInputError(f"predicted_classes must be (n, C) = ({n}, C) membership, one row per row of "
                                f"vectors; got shape {arr.shape}.")
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number):
            raise InvalidInputError(f"predicted_classes must be bool or numbers, got dtype {arr.dtype}.")
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any():
            raise InvalidInputError("predicted_classes must be membership in [0, 1] (bool, 0/1 or probabilities); "
                                    "it holds values outside [0, 1] or NaN.")
        hard = np.isin(arr, (0.0, 1.0)).all()
        sums = arr.sum(axis=1)
        if not hard and np.allclose(sums[sums > 0], 1.0, atol=1e-3):
            onehot = np.zeros(arr.shape, dtype=bool)
            onehot[np.arange(n), arr.argmax(axis=1)] = sums > 0
            arr = onehot
        else:
            arr = arr >= 0.5
    names = [str(i) for i in range(arr.shape[1])] if class_names is None else [str(c) for c in class_names]
    if len(names) != arr.shape[1]:
        raise InvalidInputError(f"class_names has {len(names)} names for {arr.shape[1]} predicted_classes columns.")
    return arr, names
