"""Data-quality checks on a FiftyOne dataset: the glue around :mod:`curate_loop.quality`.

One decode pass (a thread pool: PIL and numpy release the GIL) measures each image and the boxes of its label field;
then the dataset's thresholds adapt to the values stored on ALL its samples, and scores and flags are written with
one bulk write per field. What is stored:

- samples: ``quality_<metric>`` (float, :data:`~curate_loop.quality.image_metrics.METRICS` and ``duplicates``),
  ``quality_hash`` (content hash), ``quality_<issue>`` (score in [0, 1], higher = worse), ``quality_issues`` (the
  flagged issues), ``quality_exclude`` (kept out of curation batches: by :func:`apply_policy` or by hand);
- labels of the label field: ``quality_<box metric>``, ``quality_<box issue>`` scores and ``quality_issues``;
- the run record ``quality``: metrics, thresholds used (metric, direction, adaptive value, a user's override),
  counts per issue, failures per sample and per label;
- saved views ``quality_<issue>``: the samples flagged with it, worst first.

Resumable: a sample is decoded only when its image metrics, or the box metrics of one of its labels, are missing
(``recompute=True`` decodes everything again). An unreadable file is reported for its sample and the rest proceeds;
a zero-area box is reported for its label (its area is 0, its crop metrics None).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np

from curate_loop.errors import InvalidInputError
from curate_loop.quality.box_metrics import BOX_METRICS
from curate_loop.quality.decode import measure_file
from curate_loop.quality.image_metrics import METRICS
from curate_loop.quality.thresholds import (BOX_ISSUES, FLAG_SCORE, IMAGE_ISSUES, RULES, adaptive_threshold,
                                            duplicate_counts, issue_score)
from curate_loop.runs.embeddings import Progress
from curate_loop.runs.pool import QUALITY_EXCLUDE_FIELD

METHOD = "curate_loop.quality"
RUN_KEY = "quality"
PREFIX = "quality_"
ISSUES_FIELD = "quality_issues"
HASH_FIELD = "quality_hash"
MANUAL_EXCLUDE_FIELD = "quality_exclude_manual"  # the panel's choice, which a policy never overrides
SAMPLE_METRICS = (*METRICS, "duplicates")  # duplicates: how many samples of the dataset share this content hash
POLICIES = ("exclude", "keep", "flag")
MAX_REPORTED_FAILURES = 50


@dataclass
class QualitySummary:
    measured: int  # samples decoded by this call
    skipped: int  # samples whose metrics were stored already
    failed: dict[str, str] = field(default_factory=dict)  # sample id -> why its file could not be read
    box_failures: dict[str, str] = field(default_factory=dict)  # label id -> why its box has no crop metrics
    flagged: dict[str, int] = field(default_factory=dict)  # issue -> flagged samples (box issues: labels)
    thresholds: dict[str, dict] = field(default_factory=dict)
    label_field: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def field_name(name: str) -> str:
    """The sample field (or label attribute) of a metric or issue: ``quality_<name>``."""
    return PREFIX + name


# -- reading ---------------------------------------------------------------------------------------------------------
def _detections_field(samples, label_field: str | None) -> str | None:
    """``label_field`` when it is a Detections field of ``samples``; None when not given or absent."""
    import fiftyone.core.labels as fol

    if not label_field or not samples.has_field(label_field):
        return None
    doc_type = getattr(samples.get_field(label_field), "document_type", None)
    if doc_type is None or not issubclass(doc_type, fol.Detections):
        raise InvalidInputError(f"{label_field!r} is not a Detections field; box checks need boxes. Pass a Detections "
                                "field, or label_field=None for image checks only.")
    return label_field


def _values(samples, path: str, *, unwind: bool = False) -> list:
    return samples.values(path, unwind=unwind) if samples.has_field(path) else (
        [] if unwind else [None] * len(samples))


def _to_measure(samples, label_field: str | None, recompute: bool):
    """Ids, file paths and boxes (or None) of the samples that need decoding, and how many are complete already."""
    paths = ["id", "filepath"]
    if label_field:
        paths += [f"{label_field}.detections.bounding_box"]
    rows = samples.values(paths)
    ids, filepaths = rows[0], rows[1]
    boxes = rows[2] if label_field else [None] * len(ids)
    done = np.asarray([v is not None for v in _values(samples, field_name("brightness"))], dtype=bool)
    if label_field and samples.has_field(f"{label_field}.detections.{field_name('box_area')}"):
        box_done = [all(v is not None for v in (row or [])) for row in
                    samples.values(f"{label_field}.detections.{field_name('box_area')}")]
        done &= np.asarray(box_done, dtype=bool)
    elif label_field:
        done &= np.asarray([not row for row in boxes], dtype=bool)  # no box yet measured: only box-less are done
    todo = np.ones(len(ids), dtype=bool) if recompute else ~done
    pick = np.flatnonzero(todo)
    return ([ids[i] for i in pick], [filepaths[i] for i in pick], [boxes[i] for i in pick]), int((~todo).sum())


# -- compute ---------------------------------------------------------------------------------------------------------
def compute_quality(samples, *, label_field: str | None = "ground_truth", num_workers: int | None = None,
                    recompute: bool = False, progress: Progress | None = None) -> QualitySummary:
    """Measure the images (and the boxes of ``label_field``) of ``samples``, then score and flag the whole dataset.

    ``num_workers``: decoding threads (default: the CPU count). A label field that does not exist is skipped
    (image checks only); one that is not Detections is an error.
    """
    started = time.perf_counter()
    step = progress or (lambda fraction, label: None)
    dataset = samples._dataset
    label_field = _detections_field(samples, label_field)
    (ids, filepaths, boxes), skipped = _to_measure(samples, label_field, recompute)
    summary = QualitySummary(measured=0, skipped=skipped, label_field=label_field)
    results = _decode_all(filepaths, boxes, num_workers, step)
    image_values = {m: {} for m in METRICS}
    hashes, box_values = {}, {m: {} for m in BOX_METRICS}
    for sample_id, sample_boxes, (metrics, digest, per_box, error) in zip(ids, boxes, results):
        if error is not None:
            summary.failed[sample_id] = error
            continue
        summary.measured += 1
        hashes[sample_id] = digest
        for m in METRICS:
            image_values[m][sample_id] = _jsonable_float(metrics[m])
        if per_box is not None:
            for m in BOX_METRICS:
                for j, v in enumerate(per_box[m]):
                    box_values[m][(sample_id, j)] = _jsonable_float(v)
    step(0.85, "writing metrics")
    _write_image_metrics(samples, image_values, hashes)
    if label_field and box_values["box_area"]:
        _write_box_metrics(samples, label_field, ids, box_values)
    step(0.9, "thresholds and flags")
    user = _stored(dataset).get("user_thresholds", {})
    summary.thresholds, summary.flagged, summary.box_failures = _score_dataset(dataset, label_field, user)
    summary.seconds = round(time.perf_counter() - started, 2)
    _record(dataset, summary, user)
    step(1.0, f"{summary.measured} measured, {len(summary.failed)} unreadable")
    return summary


def _write_image_metrics(samples, image_values: dict[str, dict], hashes: dict) -> None:
    """Every metric and the hash in one update per measured sample (:func:`set_sample_fields`; one ``set_values``
    per field sent 12 updates per sample); fields declared first, so a metric that is None on every sample written
    still has its type. ``image_values``: metric -> {sample id: value}, over the same ids as ``hashes``."""
    import fiftyone as fo

    from curate_loop.runs.bulk import set_sample_fields

    dataset = samples._dataset
    for m in METRICS:
        if not dataset.has_field(field_name(m)):
            dataset.add_sample_field(field_name(m), fo.FloatField)
    if not dataset.has_field(HASH_FIELD):
        dataset.add_sample_field(HASH_FIELD, fo.StringField)
    ids = list(hashes)
    if ids:
        columns = {field_name(m): [image_values[m][i] for i in ids] for m in METRICS}
        set_sample_fields(samples, ids, {**columns, HASH_FIELD: [hashes[i] for i in ids]})


def record_image_metrics(samples, ids, metrics: dict[str, np.ndarray], hashes) -> QualitySummary:
    """Store image metrics measured by another pass (e.g. the embedding pass, with
    :func:`curate_loop.quality.pil_image_metrics`: ``metrics`` metric -> (N,), ``hashes`` (N,) content hashes of
    the same decoded pixels), then score and flag the dataset as :func:`compute_quality` does. A later
    ``compute_quality`` does not decode these samples again (boxes excepted)."""
    started = time.perf_counter()
    ids = list(ids)
    missing = [m for m in METRICS if m not in metrics]
    if missing or len(hashes) != len(ids):
        raise InvalidInputError(f"record_image_metrics needs every metric {list(METRICS)} (missing: {missing}) and "
                                f"one hash per id ({len(hashes)} hashes, {len(ids)} ids).")
    values = {m: {i: _jsonable_float(v) for i, v in zip(ids, metrics[m])} for m in METRICS}
    _write_image_metrics(samples, values, dict(zip(ids, hashes)))
    dataset = samples._dataset
    stored = _stored(dataset)
    label_field, user = stored.get("label_field"), stored.get("user_thresholds", {})
    summary = QualitySummary(measured=len(ids), skipped=0, label_field=label_field)
    summary.thresholds, summary.flagged, summary.box_failures = _score_dataset(dataset, label_field, user)
    summary.seconds = round(time.perf_counter() - started, 2)
    _record(dataset, summary, user)
    return summary


def _decode_all(filepaths, boxes, num_workers, step) -> list:
    workers = num_workers or os.cpu_count() or 1
    total = max(len(filepaths), 1)
    out = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, result in enumerate(pool.map(measure_file, filepaths, boxes)):
            out.append(result)
            if i % 64 == 0:
                step(0.8 * (i + 1) / total, f"measuring {i + 1}/{len(filepaths)}")
    return out


def _jsonable_float(value) -> float | None:
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


def _write_box_metrics(samples, label_field, ids, box_values) -> None:
    """One ``set_label_values`` per box metric, for the labels of the measured samples."""
    measured = samples.select(ids, ordered=True)
    label_ids = measured.values(f"{label_field}.detections.id")
    by_position = {(sid, j): lid for sid, row in zip(ids, label_ids) for j, lid in enumerate(row or [])}
    dataset = samples._dataset
    for m in BOX_METRICS:
        values = {by_position[key]: v for key, v in box_values[m].items() if key in by_position}
        dataset.set_label_values(f"{label_field}.detections.{field_name(m)}", values, dynamic=True)


# -- thresholds, scores, flags (the whole dataset) -------------------------------------------------------------------
def _float_array(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _image_metric_arrays(dataset) -> tuple[list, dict[str, np.ndarray], np.ndarray]:
    """Sample ids, the stored metric arrays and which samples have been measured."""
    ids = dataset.values("id")
    hashes = _values(dataset, HASH_FIELD)
    values = {m: _float_array(_values(dataset, field_name(m))) for m in METRICS}
    values["duplicates"] = duplicate_counts(hashes)
    return ids, values, np.asarray([h is not None for h in hashes], dtype=bool)


def _threshold_of(rule, values: np.ndarray, user: dict) -> dict:
    adaptive = adaptive_threshold(rule, values)
    chosen = user.get(rule.issue, adaptive)
    return {"metric": rule.metric, "direction": rule.direction, "threshold": float(chosen),
            "adaptive": float(adaptive), "user": rule.issue in user, "fixed": rule.fixed is not None}


def _score_dataset(dataset, label_field: str | None, user: dict):
    """Thresholds from every measured sample (and box) of the dataset, then scores, flags and views, written."""
    import fiftyone as fo

    ids, values, measured = _image_metric_arrays(dataset)
    thresholds, flagged, scores, issues_of = _flag(IMAGE_ISSUES, values, measured, user)
    for issue, score in scores.items():
        if not dataset.has_field(field_name(issue)):
            dataset.add_sample_field(field_name(issue), fo.FloatField)
        dataset.set_values(field_name(issue), dict(zip(ids, [round(float(s), 6) if m else None
                                                            for s, m in zip(score, measured)])), key_field="id")
    dataset.set_values(field_name("duplicates"), dict(zip(ids, [float(v) if m else None
                                                                for v, m in zip(values["duplicates"], measured)])),
                       key_field="id")
    box_failures = {}
    if label_field:
        box_thresholds, box_flagged, box_issues_of, box_failures = _score_boxes(dataset, label_field, user)
        thresholds.update(box_thresholds)
        flagged.update(box_flagged)
    if not dataset.has_field(ISSUES_FIELD):
        dataset.add_sample_field(ISSUES_FIELD, fo.ListField, subfield=fo.StringField)
    dataset.set_values(ISSUES_FIELD, dict(zip(ids, [row if m else None for row, m in zip(issues_of, measured)])),
                       key_field="id")
    if not dataset.has_field(QUALITY_EXCLUDE_FIELD):
        dataset.add_sample_field(QUALITY_EXCLUDE_FIELD, fo.BooleanField)
    _save_views(dataset, label_field)
    return thresholds, flagged, box_failures


def _flag(issues, values: dict, measured: np.ndarray, user: dict):
    """Thresholds, scores and flags of ``issues`` on metric arrays (the measured rows): ``(thresholds, flagged
    counts, scores per issue, the issues of each row)``. One implementation for images and boxes."""
    thresholds, flagged, scores = {}, {}, {}
    hits = []
    for issue in issues:
        rule = RULES[issue]
        x = np.where(measured, values[rule.metric], np.nan)
        thresholds[issue] = _threshold_of(rule, x[measured], user)
        scores[issue] = issue_score(rule, x, thresholds[issue]["threshold"])
        hit = measured & (scores[issue] >= FLAG_SCORE) & np.isfinite(thresholds[issue]["threshold"])
        flagged[issue] = int(hit.sum())
        hits.append(hit)
    names = np.asarray(issues, dtype=object)
    matrix = np.stack(hits, axis=1) if hits else np.zeros((len(measured), 0), dtype=bool)
    issues_of = [names[row].tolist() for row in matrix]
    return thresholds, flagged, scores, issues_of


def _score_boxes(dataset, label_field: str, user: dict):
    prefix = f"{label_field}.detections"
    label_ids = dataset.values(f"{prefix}.id", unwind=True)
    if not label_ids or not dataset.has_field(f"{prefix}.{field_name('box_area')}"):
        return {}, {}, {}, {}
    values = {m: _float_array(dataset.values(f"{prefix}.{field_name(m)}", unwind=True)) for m in BOX_METRICS}
    measured = np.isfinite(values["box_area"])
    thresholds, flagged, scores, issues_of = _flag(BOX_ISSUES, values, measured, user)
    for issue, score in scores.items():
        dataset.set_label_values(f"{prefix}.{field_name(issue)}",
                                 {i: round(float(s), 6) for i, s, m in zip(label_ids, score, measured) if m},
                                 dynamic=True)
    dataset.set_label_values(f"{prefix}.{ISSUES_FIELD}",
                             {i: row for i, row, m in zip(label_ids, issues_of, measured) if m}, dynamic=True)
    failures = {i: "zero-area box: no crop to measure (area 0)" for i, a, m in
                zip(label_ids, values["box_area"], measured) if m and a <= 0}
    return thresholds, flagged, issues_of, failures


def _save_views(dataset, label_field: str | None) -> None:
    from fiftyone import ViewField as F

    for issue in IMAGE_ISSUES:
        view = dataset.match(F(ISSUES_FIELD).contains(issue)).sort_by(field_name(issue), reverse=True)
        dataset.save_view(view_name(issue), view, description=f"Data quality: {issue}, worst first", overwrite=True)
    if label_field and dataset.has_field(f"{label_field}.detections.{ISSUES_FIELD}"):
        for issue in BOX_ISSUES:  # one patch per flagged box, worst first: the reviewer looks at the box itself
            view = (dataset.filter_labels(label_field, F(ISSUES_FIELD).contains(issue), only_matches=True)
                    .to_patches(label_field).sort_by(f"{label_field}.{field_name(issue)}", reverse=True))
            dataset.save_view(view_name(issue), view, description=f"Data quality: {issue} boxes, worst first",
                              overwrite=True)


def view_name(issue: str) -> str:
    return field_name(issue)


# -- the run record --------------------------------------------------------------------------------------------------
READ_ATTEMPTS = 5  # the App's panel can read the run while another of its events rewrites it


def _stored(dataset) -> dict:
    """The quality run's record. FiftyOne can fail to read run results that another request is rewriting at that
    moment ("'str' object has no attribute 'decode'", seen in the App when one threshold arrives as two panel
    events): read again after a reload, a few times, before giving up."""
    for attempt in range(READ_ATTEMPTS):
        if RUN_KEY not in dataset.list_runs():
            return {}
        try:
            return dataset.load_run_results(RUN_KEY, cache=False).serialize()
        except (AttributeError, TypeError, ValueError):
            if attempt == READ_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
            dataset.reload()
    return {}


def _record(dataset, summary: QualitySummary, user: dict) -> None:
    previous = _stored(dataset)
    failures = {**previous.get("failures", {}), **summary.failed}
    measured_ok = set(dataset.exists(HASH_FIELD).values("id")) if dataset.has_field(HASH_FIELD) else set()
    failures = {k: v for k, v in failures.items() if k not in measured_ok}  # read since: no longer a failure
    config = dataset.init_run(method=METHOD, label_field=summary.label_field, metrics=list(SAMPLE_METRICS),
                              box_metrics=list(BOX_METRICS) if summary.label_field else [])
    dataset.register_run(RUN_KEY, config, overwrite=True, cleanup=False)
    results = {"label_field": summary.label_field, "metrics": list(SAMPLE_METRICS),
               "box_metrics": list(BOX_METRICS) if summary.label_field else [],
               "thresholds": summary.thresholds, "flagged": summary.flagged, "user_thresholds": dict(user),
               "failures": dict(list(failures.items())[:MAX_REPORTED_FAILURES]), "n_failures": len(failures),
               "box_failures": dict(list(summary.box_failures.items())[:MAX_REPORTED_FAILURES]),
               "n_box_failures": len(summary.box_failures), "last_measured": summary.measured,
               "last_seconds": summary.seconds}
    dataset.save_run_results(RUN_KEY, dataset.init_run_results(RUN_KEY, **results), overwrite=True)


def quality_run(dataset) -> dict:
    """The run record's results (thresholds, counts, failures); a clear error when the checks never ran."""
    stored = _stored(dataset)
    if not stored:
        raise InvalidInputError(f"No data quality run on {dataset.name!r} yet: run `curate-loop quality compute "
                                f"{dataset.name}` (or compute_quality) first.")
    return stored


def quality_thresholds(dataset) -> dict[str, dict]:
    """issue -> {"metric", "direction", "threshold", "adaptive", "user", "fixed"} of the last run."""
    return quality_run(dataset)["thresholds"]


def metric_values(samples, metric: str) -> np.ndarray:
    """A metric's stored values over ``samples`` (samples, or the boxes of the run's label field), NaN where
    unmeasured; for the panel's histograms."""
    if metric in SAMPLE_METRICS:
        return _float_array(_values(samples, field_name(metric)))
    if metric in BOX_METRICS:
        label_field = quality_run(samples._dataset).get("label_field")
        if not label_field:
            return np.zeros(0)
        return _float_array(_values(samples, f"{label_field}.detections.{field_name(metric)}", unwind=True))
    raise InvalidInputError(f"Unknown quality metric {metric!r}; choose one of {list(SAMPLE_METRICS + BOX_METRICS)}.")


def _check_issue(issue: str) -> None:
    if issue not in RULES:
        raise InvalidInputError(f"Unknown quality issue {issue!r}; choose one of {list(IMAGE_ISSUES + BOX_ISSUES)}.")


def set_threshold(dataset, issue: str, threshold: float | None) -> int:
    """Re-flag ``issue`` with the user's ``threshold`` (metric units; None: back to the adaptive one), kept for
    later runs; returns how many samples (box issues: labels) are flagged now."""
    _check_issue(issue)
    stored = quality_run(dataset)
    if threshold is not None and not np.isfinite(float(threshold)):
        raise InvalidInputError(f"Threshold {threshold!r} for {issue!r} is not a finite number.")
    user = dict(stored.get("user_thresholds", {}))
    if threshold is None:
        user.pop(issue, None)
    else:
        user[issue] = float(threshold)
    label_field = stored.get("label_field")
    thresholds, flagged, box_failures = _score_dataset(dataset, label_field, user)
    summary = QualitySummary(measured=0, skipped=0, box_failures=box_failures, flagged=flagged,
                             thresholds=thresholds, label_field=label_field)
    _record(dataset, summary, user)
    return flagged.get(issue, 0)


def flagged_view(dataset, issue: str):
    """The saved view of ``issue``: samples flagged with it, worst first (box issues: a patches view of the flagged
    boxes, worst first)."""
    _check_issue(issue)
    if not dataset.has_saved_view(view_name(issue)):
        quality_run(dataset)  # a clear error when the checks never ran
        return dataset.limit(0)
    return dataset.load_saved_view(view_name(issue))


def _excluded_by(dataset, issue: str, label_field: str | None) -> set:
    """Sample ids a policy of "exclude" on ``issue`` keeps out: flagged samples (exact duplicates: all but the first
    of each group, in dataset order); box issues: samples with a flagged box."""
    from fiftyone import ViewField as F

    if issue in BOX_ISSUES:
        if not label_field or not dataset.has_field(f"{label_field}.detections.{ISSUES_FIELD}"):
            return set()
        view = dataset.match(F(f"{label_field}.detections").filter(F(ISSUES_FIELD).contains(issue)).length() > 0)
        return set(view.values("id"))
    if not dataset.has_field(ISSUES_FIELD):
        return set()
    view = dataset.match(F(ISSUES_FIELD).contains(issue))
    if issue != "exact_duplicate":
        return set(view.values("id"))
    seen, out = set(), set()
    for sample_id, digest in zip(*view.values(["id", HASH_FIELD])):
        (out.add(sample_id) if digest in seen else seen.add(digest))
    return out


POLICY_INFO = "curate_loop_quality_policy"  # dataset.info: the policy applied last, which pushes read


def issues_to_show(dataset) -> set[str]:
    """The issues whose policy (the one :func:`apply_policy` applied last) is "flag": a push puts a sample's flagged
    ones in its Label Studio task's data, so the annotator sees them."""
    policy = (dataset.info or {}).get(POLICY_INFO) or {}
    return {issue for issue, action in policy.items() if action == "flag"}


def apply_policy(dataset, policy: dict[str, str]) -> int:
    """Write ``quality_exclude`` from ``policy`` (issue -> "exclude" | "keep" | "flag"): True on the samples an
    "exclude" issue keeps out, False on the rest; a choice made by hand (:func:`exclude_from_curation`) wins.
    The policy is recorded (``dataset.info``) for the pushes that follow (:func:`issues_to_show`). Returns how many
    samples are excluded now."""
    import fiftyone as fo

    for issue, choice in policy.items():
        _check_issue(issue)
        if choice not in POLICIES:
            raise InvalidInputError(f"Quality policy {choice!r} for {issue!r}: choose one of {list(POLICIES)}.")
    label_field = quality_run(dataset).get("label_field")
    excluded = set()
    for issue, choice in policy.items():
        if choice == "exclude":
            excluded |= _excluded_by(dataset, issue, label_field)
    ids = dataset.values("id")
    manual = _values(dataset, MANUAL_EXCLUDE_FIELD)
    decided = [m if m is not None else (i in excluded) for i, m in zip(ids, manual)]
    if not dataset.has_field(QUALITY_EXCLUDE_FIELD):
        dataset.add_sample_field(QUALITY_EXCLUDE_FIELD, fo.BooleanField)
    dataset.set_values(QUALITY_EXCLUDE_FIELD, dict(zip(ids, decided)), key_field="id")
    info = dict(dataset.info or {})
    info[POLICY_INFO] = dict(policy)
    dataset.info = info
    dataset.save()
    return int(sum(decided))


def exclude_from_curation(samples, exclude: bool = True) -> int:
    """Keep ``samples`` out of curation batches (or let them back in): the panel's button. The choice is recorded
    as made by hand, so a later :func:`apply_policy` keeps it. Returns how many samples it set."""
    import fiftyone as fo

    dataset = samples._dataset
    for name in (QUALITY_EXCLUDE_FIELD, MANUAL_EXCLUDE_FIELD):
        if not dataset.has_field(name):
            dataset.add_sample_field(name, fo.BooleanField)
    ids = samples.values("id")
    samples.set_values(QUALITY_EXCLUDE_FIELD, dict.fromkeys(ids, bool(exclude)), key_field="id")
    samples.set_values(MANUAL_EXCLUDE_FIELD, dict.fromkeys(ids, bool(exclude)), key_field="id")
    return len(ids)
