"""Pick the next labeling batch of a FiftyOne dataset and record it: the glue around :mod:`curate_loop.curation`.

A batch is the samples whose ``curate_batch`` field holds its name, a saved view of the same name (what the Label
Studio push takes), and a run on the dataset with its parameters, the coverage comparison against random subsets
of the same size, the edge-case saturation and the path of its HTML report. Everything is computed before anything
is written, so a failure leaves the dataset as it was.

The pool is the samples of the given view with a vector that are neither labeled (``label_field`` set) nor queued
in an earlier batch, nor near-duplicates marked not to keep (:func:`curate_loop.runs.duplicates.find_duplicates`).

With a predictions field (a model's ``Classification`` or ``Detections``, :mod:`curate_loop.runs.predictions`), the
cluster-balanced strategy becomes :func:`curate_loop.curation.combined.select_combined`: diversity, the model's
uncertainty and predicted-class balance, each with its strength (``Objectives``). Without predictions on the pool,
or with nothing labeled yet (a model trained on nothing knows nothing), it stays pure diversity, and the batch's
``mode`` says why.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from curate_loop.curation.combined import MODE_COMBINED
from curate_loop.curation.objectives import Objectives
from curate_loop.curation.strategies import (DEFAULT_NEAR_DUP_THRESHOLD, REASON_REPRESENTATIVE,
                                             select_cluster_balanced, select_kcenter, select_random,
                                             select_typicality)
from curate_loop.errors import InvalidInputError
from curate_loop.runs.embeddings import Progress, embedding_config, load_embeddings, random_weights_notice
from curate_loop.runs.pool import BATCH_FIELD, REASON_FIELD, class_of_each, pool_state, resolve_label_field
from curate_loop.runs.pool_structure import PoolStructure

METHOD = "curate_loop.batch"
STRATEGIES = ("cluster_balanced", "typicality", "kcenter", "random")


@dataclass
class BatchSummary:
    """What :func:`select_batch` picked and how it compares with random picks of the same size."""

    name: str
    strategy: str
    k: int
    picked: int
    pool_size: int
    covered_before: int  # labeled or queued samples
    clusters: int
    clusters_reached: int
    sparse_clusters: int
    sparse_reached: int
    near_duplicates_skipped: int
    without_vectors: int
    saturation: dict
    coverage: dict  # metric -> {"ours", "random_mean", "random_std", ...}
    view_name: str
    report_path: str | None = None
    seconds: float = 0.0
    sample_ids: list[str] = field(default_factory=list, repr=False)
    # the pool it was picked from, in disjoint counts (``PoolState.counts``): labeled, queued, excluded, available
    pool: dict = field(default_factory=dict)
    notice: str | None = None  # random_weights_notice of the embeddings it was picked with
    # "combined", or "<strategy> only: <why the model took no part>" (e.g. "diversity only: nothing labeled yet")
    mode: str = ""
    # per objective the documented figure of curate_loop.curation.combined (None where it had no input):
    # diversity = coverage gain, uncertainty = mean percentile rank in the pool, class_balance = distance to target
    contributions: dict = field(default_factory=dict)
    # {"batch": {class: samples}, "pool": {class: samples}} of predicted classes ({} without predictions)
    class_histogram: dict = field(default_factory=dict)
    # {"field", "score" (the one used), "note", "batch_mean", "pool_mean", "without_predictions"} ({} without)
    uncertainty: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


CONTRIBUTION_LABELS = {"diversity": "diversity (coverage gain)", "uncertainty": "uncertainty (percentile in pool)",
                       "class_balance": "class balance (distance to target)",
                       "class_balance_pool": "pool's distance to target"}


def contributions_line(contributions: dict) -> str:
    """``BatchSummary.contributions`` on one line, for the CLI and the App; objectives without input left out."""
    return ", ".join(f"{CONTRIBUTION_LABELS.get(name, name)} {value:.2f}" for name, value in contributions.items()
                     if value is not None)


def batch_view_name(name: str) -> str:
    """The saved view of a batch: its own name, so the App's view list and the CLI speak of the same thing."""
    return name


def select_batch(samples, name: str, k: int, embeddings_key: str = "clip", *, strategy: str = "cluster_balanced",
                 label_field: str | None = None, class_field: str | None = None,
                 near_dup_threshold: float | None = DEFAULT_NEAR_DUP_THRESHOLD, min_cluster_size: int | None = None,
                 seed: int = 0, overwrite: bool = False, report: bool = True, progress: Progress | None = None,
                 predictions_field: str | None = None, objectives: Objectives | None = None,
                 classes: list[str] | None = None) -> BatchSummary:
    """Pick ``k`` samples of ``samples`` to label next, tag them with batch ``name`` and write the report.

    ``min_cluster_size``: the smallest group that counts as a cluster of its own (default ``sqrt(n) / 3``, which
    grows with the pool: lower it to see finer clusters in a large one).
    ``predictions_field``: a model's Classification or Detections field; with the cluster-balanced strategy, some
    labeled samples and predictions on the pool, the batch combines diversity, uncertainty and class balance with
    the strengths of ``objectives`` (default ``Objectives()``); otherwise ``mode`` says why it did not.
    ``classes``: the class names in the order of the predictions' logits (the manifest's), for class balance."""
    started = time.perf_counter()
    step = progress or (lambda fraction, label: None)
    dataset = samples._dataset
    _check_batch_name(dataset, name, overwrite)
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"Unknown strategy {strategy!r}; choose one of {STRATEGIES}.")
    if embedding_config(dataset, embeddings_key).get("patches_field"):
        raise InvalidInputError(f"Embeddings {embeddings_key!r} are per object; a batch is picked from image "
                                "embeddings. Compute image embeddings (`curate-loop embed compute`) and pass their key.")
    label_field = resolve_label_field(samples, label_field)

    step(0.05, "loading vectors")
    ids, vectors = load_embeddings(samples, embeddings_key)
    without_vectors = len(samples) - len(ids)
    if len(ids) < 2:
        raise InvalidInputError(f"Only {len(ids)} sample(s) of this view have {embeddings_key!r} vectors; compute "
                                "embeddings for the view first.")
    state = pool_state(samples, ids, label_field, redo_batch=name if overwrite else None)
    available = int(state.available.sum())
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= available:
        raise InvalidInputError(f"k must be between 1 and the {available} samples available to pick (not labeled, "
                                f"queued or excluded), got {k!r}.")

    objectives = Objectives() if objectives is None else objectives
    if not isinstance(objectives, Objectives):
        raise InvalidInputError(f"objectives must be a curate_loop.curation.objectives.Objectives, got "
                                f"{type(objectives).__name__}.")
    step(0.1, "reading predictions" if predictions_field else "no predictions")
    model = _model_inputs(samples, ids, state, strategy, predictions_field, classes, objectives.uncertainty_score)
    step(0.15, f"clustering {len(ids)} samples")
    structure = PoolStructure(dataset, embeddings_key, ids, vectors)
    clusters = structure.clusters(min_cluster_size=min_cluster_size, seed=seed)
    step(0.45, f"selecting {k} ({model.mode})")
    if model.mode == MODE_COMBINED:
        picks, reasons, skipped, model.mode = _pick_combined(vectors, k, clusters, state, model, objectives,
                                                             near_dup_threshold, seed)
    else:
        picks, reasons, skipped = _pick(strategy, vectors, k, clusters, state, near_dup_threshold, seed)
    contributions, class_histogram, uncertainty = _model_figures(vectors, state, picks, model, objectives)

    step(0.6, "edge cases and saturation")
    neighborhoods = structure.neighborhoods(seed=seed)
    saturation = _saturation(neighborhoods, clusters, state.covered, picks)
    step(0.7, "coverage against random subsets")
    from curate_loop.curation.metrics import selection_metrics

    class_labels = class_of_each(samples, ids, class_field) if class_field else None
    metrics = selection_metrics(vectors, clusters, picks, labeled_idx=np.flatnonzero(state.covered | state.excluded),
                                class_labels=class_labels, seed=seed)
    sparse = clusters.kinds == "sparse"
    reached = np.zeros(clusters.n_clusters, dtype=bool)
    member = clusters.labels >= 0
    reached[clusters.labels[member & (state.covered | np.isin(np.arange(len(ids)), picks))]] = True
    summary = BatchSummary(
        name=name, strategy=strategy, k=int(k), picked=len(picks), pool_size=available,
        covered_before=int(state.covered.sum()), clusters=clusters.n_clusters, clusters_reached=int(reached.sum()),
        sparse_clusters=int(sparse.sum()), sparse_reached=int((reached & sparse).sum()),
        near_duplicates_skipped=skipped, without_vectors=without_vectors, saturation=saturation,
        coverage=metrics.get("summary", {}), view_name=batch_view_name(name),
        sample_ids=ids[picks].tolist(), pool=state.counts(), notice=random_weights_notice(dataset, embeddings_key),
        mode=model.mode, contributions=contributions, class_histogram=class_histogram, uncertainty=uncertainty,
    )
    html = None
    if report:
        step(0.8, "rendering the report")
        from curate_loop.runs.report import render_batch_report

        html = render_batch_report(samples, summary, metrics, ids=ids, picks=picks, state=state,
                                   clusters=clusters, embeddings_key=embeddings_key, vectors=vectors, seed=seed)

    step(0.9, "writing the batch")
    _write_batch(dataset, name, ids[picks], reasons, overwrite)
    if html is not None:
        from curate_loop.curation.report_html import write_report
        from curate_loop.runs.report import report_path

        summary.report_path = str(write_report(html, report_path(dataset, name)))
    summary.seconds = round(time.perf_counter() - started, 2)
    _record(dataset, name, summary, metrics, embeddings_key, label_field, class_field, near_dup_threshold,
            min_cluster_size, seed, predictions_field, objectives)
    step(1.0, f"batch {name!r}: {len(picks)} samples")
    return summary


def _pick(strategy, vectors, k, clusters, state, near_dup_threshold, seed):
    """``(rows, reasons, near-duplicates skipped)`` for the chosen strategy."""
    unavailable = np.flatnonzero(~state.available)
    if strategy == "cluster_balanced":
        result = select_cluster_balanced(vectors, k, clusters=clusters, labeled_idx=np.flatnonzero(state.covered),
                                         exclude_idx=np.flatnonzero(state.excluded & ~state.covered),
                                         near_dup_threshold=near_dup_threshold, seed=seed)
        return result.indices, [str(r) for r in result.reasons], int(result.near_duplicates_skipped)
    if strategy == "random":
        rows = select_random(len(vectors), k, seed=seed, labeled_idx=unavailable)
    elif strategy == "kcenter":
        rows = select_kcenter(vectors, k, labeled_idx=unavailable, seed=seed)
    else:
        rows = select_typicality(vectors, k, labeled_idx=unavailable, seed=seed)
    return rows, [strategy if strategy != "typicality" else REASON_REPRESENTATIVE] * len(rows), 0


@dataclass
class _ModelInputs:
    """What the predictions give the selection: ``mode`` (combined, or why not), and when readable the arrays, the
    per-row uncertainty (NaN where a row has no prediction), the score used and a note when it is not the one asked
    for."""

    mode: str
    field: str | None = None
    arrays: object = None  # curate_loop.runs.predictions.PredictionArrays
    scores: np.ndarray | None = None
    score: str | None = None
    note: str | None = None


def _model_inputs(samples, ids, state, strategy, predictions_field, classes, score) -> _ModelInputs:
    """Read ``predictions_field`` for the rows ``ids`` and decide the mode. A field of the wrong kind is an error
    (before anything is written); a missing or empty one, or nothing labeled yet, means diversity alone."""
    from curate_loop.runs.predictions import prediction_kind, read_prediction_arrays

    alone = "diversity only" if strategy == "cluster_balanced" else f"{strategy} only"
    if predictions_field is None:
        return _ModelInputs(f"{alone}: no predictions field given")
    if predictions_field == state.label_field:
        raise InvalidInputError(f"The predictions field {predictions_field!r} is the label field; pass the field the "
                                "model writes its predictions to (manifest `model.field`, e.g. predictions).")
    if prediction_kind(samples, predictions_field) is None:
        return _ModelInputs(f"{alone}: no predictions field {predictions_field!r} yet", predictions_field)
    arrays = read_prediction_arrays(samples, ids, predictions_field, classes)
    scores, used, note = arrays.uncertainty(score)
    model = _ModelInputs("", predictions_field, arrays, scores, used, note)
    if not (arrays.present & state.available).any():
        model.mode = f"{alone}: no predictions in {predictions_field!r} on the pool yet"
    elif not state.labeled.any():
        model.mode = f"{alone}: nothing labeled yet"
    elif strategy != "cluster_balanced":
        model.mode = f"{alone}: the {strategy} strategy takes no predictions (cluster_balanced combines them)"
    else:
        model.mode = MODE_COMBINED
    return model


def _pick_combined(vectors, k, clusters, state, model, objectives, near_dup_threshold, seed):
    """``(rows, reasons, near-duplicates skipped, mode)`` of :func:`select_combined` (its mode: "combined", or
    "diversity only: uncertainty strength 0"). Pool rows without a prediction get the pool's median uncertainty:
    neither sought nor avoided."""
    from curate_loop.curation.combined import select_combined

    scores = model.scores.copy()
    known = ~np.isnan(scores)
    scores[~known] = float(np.median(scores[known & state.available])) if (known & state.available).any() else 0.0
    result = select_combined(vectors, k, objectives=objectives, uncertainty=scores,
                             predicted_classes=model.arrays.predicted_classes, class_names=model.arrays.classes,
                             labeled_idx=np.flatnonzero(state.covered),
                             exclude_idx=np.flatnonzero(state.excluded & ~state.covered), clusters=clusters,
                             seed=seed, near_dup_threshold=near_dup_threshold)
    return result.indices, [str(r) for r in result.reasons], int(result.near_duplicates_skipped), result.mode


def _model_figures(vectors, state, picks, model, objectives) -> tuple[dict, dict, dict]:
    """``(contributions, class_histogram, uncertainty)`` of the batch, the same figures in every mode (those of
    :mod:`curate_loop.curation.combined`), so a diversity-only batch can be compared with a combined one."""
    from curate_loop.curation.combined import coverage_gain, uncertainty_percentile
    from curate_loop.curation.objectives import target_shares, total_variation
    from curate_loop.vectors import normalize_rows

    pool = state.available
    contributions = {"diversity": coverage_gain(normalize_rows(vectors, zero_rows="raise"), state.covered, pool,
                                                picks),
                     "uncertainty": None, "class_balance": None, "class_balance_pool": None}
    if model.arrays is None:
        return contributions, {}, {}
    arrays, scores = model.arrays, model.scores
    known = ~np.isnan(scores)
    pool_known = pool & known
    picked_known = picks[known[picks]]
    if pool_known.any() and len(picked_known):
        contributions["uncertainty"] = uncertainty_percentile(np.nan_to_num(scores), pool_known, picked_known)
    histogram = {"batch": arrays.class_counts(picks), "pool": arrays.class_counts(np.flatnonzero(pool))}
    with np.errstate(invalid="ignore", divide="ignore"):  # a class_target naming none of the classes: no figure
        target = target_shares(objectives, arrays.classes)
    if np.isfinite(target).all():
        contributions["class_balance"] = total_variation(np.array(list(histogram["batch"].values())), target)
        contributions["class_balance_pool"] = total_variation(np.array(list(histogram["pool"].values())), target)
    uncertainty = {"field": model.field, "score": model.score, "note": model.note,
                   "batch_mean": round(float(scores[picked_known].mean()), 4) if len(picked_known) else None,
                   "pool_mean": round(float(scores[pool_known].mean()), 4) if pool_known.any() else None,
                   "without_predictions": int((pool & ~arrays.present).sum())}
    return contributions, histogram, uncertainty


def _saturation(neighborhoods, clusters, covered, picks) -> dict:
    """How much of the edge region the labeled set covered before this batch, after it, and the gain. The edge
    region: outliers and sparse-cluster members, and the top 10% of edge scores."""
    member = clusters.labels >= 0
    edge_mask = ~member  # outliers; with no cluster at all (every row noise), that is every row
    if clusters.n_clusters:
        edge_mask |= member & (clusters.kinds[np.maximum(clusters.labels, 0)] == "sparse")
    edge_mask |= neighborhoods.edge_region()
    return neighborhoods.saturation(edge_mask, np.flatnonzero(covered), picks).to_dict()


def _check_batch_name(dataset, name: str, overwrite: bool) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidInputError(f"Invalid batch name {name!r}: use letters, digits and underscores (e.g. batch_01).")
    if name in dataset.list_runs():
        method = dataset.get_run_info(name).config.method
        if method != METHOD:
            raise InvalidInputError(f"{name!r} is already a different run ({method}) on {dataset.name!r}; "
                                    "choose another batch name.")
        if not overwrite:
            raise InvalidInputError(f"Batch {name!r} already exists on {dataset.name!r}. Pick another name for a new "
                                    "batch, or pass overwrite=True (CLI: --overwrite) to pick it again.")


def _write_batch(dataset, name: str, sample_ids: np.ndarray, reasons: list[str], overwrite: bool) -> None:
    """Batch name and reason on the picked samples (bulk), and the saved view the Label Studio push takes."""
    from fiftyone import ViewField as F

    if overwrite and dataset.has_field(BATCH_FIELD):
        previous = dataset.match(F(BATCH_FIELD) == name)
        previous.set_field(BATCH_FIELD, None).save(BATCH_FIELD)
        previous = dataset.match(F(REASON_FIELD).exists() & ~F(BATCH_FIELD).exists())
        previous.set_field(REASON_FIELD, None).save(REASON_FIELD)
    ids = sample_ids.tolist()
    dataset.set_values(BATCH_FIELD, dict(zip(ids, [name] * len(ids))), key_field="id")
    dataset.set_values(REASON_FIELD, dict(zip(ids, reasons)), key_field="id")
    # the push, the pull, batch status and the batch's view find its members by this field: indexed, a 10k batch
    # of a 1M pool is read without scanning the pool each time
    dataset.create_index(BATCH_FIELD)
    dataset.save_view(batch_view_name(name), dataset.match(F(BATCH_FIELD) == name), overwrite=True)


def _record(dataset, name, summary, metrics, embeddings_key, label_field, class_field, near_dup_threshold,
            min_cluster_size, seed, predictions_field, objectives):
    config = dataset.init_run(method=METHOD, embeddings_key=embeddings_key, strategy=summary.strategy, k=summary.k,
                              label_field=label_field, class_field=class_field,
                              near_dup_threshold=near_dup_threshold, min_cluster_size=min_cluster_size, seed=seed,
                              predictions_field=predictions_field, objectives=asdict(objectives))
    dataset.register_run(name, config, overwrite=True, cleanup=False)
    results = {k: v for k, v in summary.to_dict().items() if k != "sample_ids"}
    results["metrics"] = metrics
    results["created_at"] = time.time()
    dataset.save_run_results(name, dataset.init_run_results(name, **results), overwrite=True)


# -- reading batches back ------------------------------------------------------------------------------------------
def list_batches(dataset) -> list[dict]:
    """Every batch, oldest first: name, strategy, size, report path and the edge-case saturation it reached."""
    rows = []
    for name in dataset.list_runs(method=METHOD):
        results = dataset.load_run_results(name, cache=False)
        rows.append({"name": name, "strategy": results.strategy, "picked": results.picked,
                     "created_at": getattr(results, "created_at", 0.0), "report_path": results.report_path,
                     "saturation": results.saturation, "clusters_reached": results.clusters_reached,
                     "clusters": results.clusters, "mode": getattr(results, "mode", ""),
                     "contributions": getattr(results, "contributions", {})})
    return sorted(rows, key=lambda row: row["created_at"])


def saturation_history(dataset, *, min_gain: float | None = None) -> dict:
    """Edge-case coverage across batches: per batch the covered share of the edge region before and after it and
    its gain (the curve), the verdict computed from those rows (:func:`curate_loop.curation.saturation.
    saturation_verdict`: ``saturated`` and its one-line ``verdict``), and the random-weights notices of the
    embeddings behind the batches and mislabel scans (``notices``)."""
    from curate_loop.curation.saturation import saturation_verdict
    from curate_loop.runs.notices import recorded_result_notices

    rows = [{"name": b["name"], **b["saturation"]} for b in list_batches(dataset)]
    verdict = saturation_verdict(rows, **({} if min_gain is None else {"min_gain": min_gain}))
    return {"batches": rows, "saturated": verdict.saturated, "verdict": verdict.message,
            "notices": recorded_result_notices(dataset)}


def delete_batch(dataset, name: str) -> int:
    """Unqueue the batch's samples and delete its run, saved view and report; returns how many were unqueued."""
    from fiftyone import ViewField as F

    if name not in dataset.list_runs(method=METHOD):
        raise InvalidInputError(f"No batch {name!r} on {dataset.name!r}; batches: {dataset.list_runs(method=METHOD)}")
    results = dataset.load_run_results(name, cache=False)
    members = dataset.match(F(BATCH_FIELD) == name)
    count = len(members)
    members.set_field(REASON_FIELD, None).save(REASON_FIELD)
    dataset.match(F(BATCH_FIELD) == name).set_field(BATCH_FIELD, None).save(BATCH_FIELD)
    if dataset.has_saved_view(batch_view_name(name)):
        dataset.delete_saved_view(batch_view_name(name))
    dataset.delete_run(name)
    if getattr(results, "report_path", None):
        from pathlib import Path

        Path(results.report_path).unlink(missing_ok=True)
    return count


# -- labeled data: a class-balanced subset ------------------------------------------------------------------------
SUBSET_METHOD = "curate_loop.balanced_subset"


def select_balanced_subset(samples, name: str, k: int, label_field: str = "ground_truth", *, seed: int = 0,
                           overwrite: bool = False) -> dict:
    """Tag ``k`` labeled samples as a class- and object-balanced subset ``name`` (e.g. a test set), save the view
    ``subset_<name>`` and record per-class object counts against a random subset of the same size."""
    from curate_loop.curation.balanced import select_class_balanced
    from curate_loop.runs.pool import class_count_matrix

    dataset = samples._dataset
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidInputError(f"Invalid subset name {name!r}: use letters, digits and underscores (e.g. test_set).")
    if name in dataset.list_runs():
        if dataset.get_run_info(name).config.method != SUBSET_METHOD:
            raise InvalidInputError(f"{name!r} is already a different run on {dataset.name!r}; choose another name.")
        if not overwrite:
            raise InvalidInputError(f"Subset {name!r} exists; pass overwrite=True (CLI: --overwrite) to pick it again.")
    sample_ids, counts, classes = class_count_matrix(samples, label_field)
    rows = select_class_balanced(counts, k, seed=seed)
    labeled = np.flatnonzero(counts.sum(axis=1) > 0)
    random_rows = np.random.default_rng(seed).choice(labeled, len(rows), replace=False)
    per_class = {c: {"subset": int(counts[rows, j].sum()), "random": int(counts[random_rows, j].sum()),
                     "available": int(counts[:, j].sum())} for j, c in enumerate(classes)}
    if overwrite:
        dataset.untag_samples(name)
    dataset.select(sample_ids[rows].tolist()).tag_samples(name)
    dataset.save_view(f"subset_{name}", dataset.match_tags(name), overwrite=True)
    config = dataset.init_run(method=SUBSET_METHOD, label_field=label_field, k=int(k), seed=seed)
    dataset.register_run(name, config, overwrite=True, cleanup=False)
    objects = np.array([v["subset"] for v in per_class.values()])
    random_objects = np.array([v["random"] for v in per_class.values()])
    result = {"name": name, "picked": len(rows), "classes": per_class,
              "min_class_objects": int(objects.min()), "min_class_objects_random": int(random_objects.min()),
              "classes_present": int((objects > 0).sum()), "classes_present_random": int((random_objects > 0).sum())}
    dataset.save_run_results(name, dataset.init_run_results(name, **result), overwrite=True)
    return result
