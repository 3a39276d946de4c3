"""Box-level label errors on a FiftyOne dataset and their review: the glue around :mod:`curate_loop.box_errors`.

A scan (:func:`find_label_issues`) compares the boxes of ``label_field`` with a detector's ``predictions_field`` and
raises five kinds of suspects: **overlooked** (a confident prediction no label matches), **mislocated** (a label
its best same-class prediction overlaps poorly), **spurious** (a label no prediction supports), **duplicate** (a
second label of one class on one object) and **swapped** (the prediction, and the embedding mislabel score
``mislabel_score`` when present, disagree with the class). Everything is computed before anything is written; then:

- one "issue card" per suspect in the sample field ``label_issues`` (an ``fo.Detection``: ``label`` the class shown,
  ``bounding_box`` the box to look at, attributes ``kind``, ``score``, ``label_id``, ``suggested_box``,
  ``suggested_label``, ``fix``, ``decision``; its tag "kind: fix" shows on the App's tiles), and the saved view
  ``label_issues`` (patches of the open cards, worst first);
- on every label ``label_issue_kind`` / ``label_issue_score`` (its worst kind, whether raised or not) and
  ``label_issue_warning`` (a box outside the image); per sample ``label_quality`` (1 = clean, 0 = surely wrong);
- a run ``label_issues_<label_field>``: counts per kind, per-class error rates, warnings, and whether the
  predictions were out-of-fold (unbiased) or in-sample (biased: the model saw those labels).

Review: :func:`accept_issues` applies the fix to the label field exactly as suggested and logs who/when/before/after
(run ``label_issue_reviews``), which :func:`undo_issue` restores exactly. :func:`reject_issues` fingerprints the label
(class and box; for an overlooked box, the predicted region on its sample), so a re-scan does not raise it again
until the label changes. :func:`send_issues_for_reannotation` queues the sample in the re-annotation batch and
writes its labels with the fix applied to ``label_issue_fix``, which a push sends as the pre-annotation::

    push_batch(dataset, batch, label_field, predictions_field="label_issue_fix", pre_annotations="predictions",
               model_version="curate-loop label issues")
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from curate_loop.errors import InvalidInputError
from curate_loop.runs.embeddings import Progress
from curate_loop.runs.mislabels import _fingerprint, _jsonable

METHOD = "curate_loop.label_issues"
ISSUES_FIELD = "label_issues"  # sample field, fo.Detections: one issue card per suspect
VIEW_NAME = "label_issues"  # saved view: patches of the open cards, worst first
FIX_FIELD = "label_issue_fix"  # a re-annotated sample's labels with the fixes applied (the push's pre-annotation)
QUALITY_FIELD = "label_quality"  # per sample, 1 - the combined box-error score
DISMISSED_FIELD = "label_issue_dismissed"  # per sample: overlooked regions rejected or re-annotated ("class|box")
KIND, SCORE, WARNING = "label_issue_kind", "label_issue_score", "label_issue_warning"  # on each label
REVIEWED = "label_issue_reviewed"  # on a label: "kind,kind|fingerprint" of the kinds dismissed as it was then
MISLABEL_SCORE = "mislabel_score"  # the embedding mislabel score (curate_loop.runs.mislabels), the swap evidence
MISLABEL_SUGGESTION = "mislabel_suggestion"  # its suggested class, for a swap the detector does not name
LOG_KEY = "label_issue_reviews"  # run holding the accept log (before/after of each fixed label)
PUSH_MODEL_VERSION = "curate-loop label issues"
LABEL_KINDS = ("mislocated", "spurious", "duplicate", "swapped")  # the kinds scored on labels
ISSUE_MIN_SCORE = 0.5  # a card from here: BoxErrorSettings.flag_score, even odds (the rates count the same)
DISMISSED_IOU = 0.5  # a new prediction this close to a dismissed overlooked region is that region again
ACCEPTED, REJECTED, REANNOTATE = "accepted", "rejected", "reannotate"


@dataclass
class LabelIssuesSummary:
    label_field: str
    predictions_field: str | None
    scored_labels: int
    scored_predictions: int
    scored_samples: int
    issues: int  # cards raised (open)
    by_kind: dict  # kind -> open cards
    still_dismissed: int  # rejected or re-annotated before and unchanged: not raised again
    without_predictions: int  # samples not scored: no value in predictions_field
    outside_image: int  # labels whose box leaves the image (warned on the label)
    class_rates: dict  # kind -> {class: estimated rate}
    warnings: list
    out_of_fold_folds: int
    scoring_note: str  # out-of-fold (unbiased) or in-sample (biased) predictions
    view_name: str
    seconds: float = 0.0
    top: list = field(default_factory=list)  # [(card id, kind, score, fix)], worst first

    def to_dict(self) -> dict:
        return asdict(self)


def run_key(label_field: str) -> str:
    return f"label_issues_{label_field}"


# -- reading -------------------------------------------------------------------------------------------------------
def _detections_field(samples, name: str, role: str) -> None:
    import fiftyone.core.labels as fol

    if not samples.has_field(name):
        raise InvalidInputError(f"No field {name!r} on {samples._dataset.name!r}: pass the {role} field (a Detections "
                                "field), e.g. the model step's predictions field.")
    doc_type = getattr(samples.get_field(name), "document_type", None)
    if doc_type is None or not issubclass(doc_type, fol.Detections):
        kind = doc_type.__name__ if doc_type is not None else type(samples.get_field(name)).__name__
        raise InvalidInputError(f"{role.capitalize()} field {name!r} holds {kind}, not Detections: box errors need "
                                "boxes on both sides; pass a Detections field.")


@dataclass
class _Boxes:
    """The boxes of one field, flat: which sample (row), id, class, box (NaN rows where missing), extra columns."""
    rows: np.ndarray
    ids: list
    classes: list
    boxes: np.ndarray
    extra: dict


def _read_boxes(values: dict, prefix: str, rows_of: np.ndarray, extra: tuple = ()) -> _Boxes:
    ids, rows, classes, boxes = [], [], [], []
    cols = {name: [] for name in extra}
    for r in rows_of.tolist():
        sample_ids = values[f"{prefix}.id"][r] or []
        ids += sample_ids
        rows += [r] * len(sample_ids)
        classes += (values[f"{prefix}.label"][r] or [])[:len(sample_ids)]
        boxes += [b if b is not None else [np.nan] * 4 for b in (values[f"{prefix}.bounding_box"][r] or [])]
        for name in extra:
            column = values.get(f"{prefix}.{name}")
            cols[name] += list((column[r] if column is not None else None) or [None] * len(sample_ids))
    return _Boxes(np.asarray(rows, dtype=np.int64), ids, classes, np.asarray(boxes, dtype=float).reshape(-1, 4), cols)


def _scoring_note(predictions_field: str | None, folds: int) -> str:
    if predictions_field is None:
        return "no predictions: only duplicates (from overlap) and class swaps (from embeddings) were scored"
    if folds:
        return f"scored on out-of-fold predictions ({folds} folds): each label was judged by a model that never saw it"
    return (f"scored on in-sample predictions of {predictions_field!r}: biased, the model was trained on these labels, "
            "so it tends to agree with their errors; set model.out_of_fold (k >= 2) for unbiased scores")


# -- the scan ------------------------------------------------------------------------------------------------------
def find_label_issues(samples, label_field: str = "ground_truth", predictions_field: str | None = "predictions", *,
                      embeddings_key: str | None = None, progress: Progress | None = None) -> LabelIssuesSummary:
    """Score every box of ``label_field`` in ``samples`` against ``predictions_field`` (None: duplicates and
    embedding swaps only) and raise the likely errors of each kind as issue cards (saved view ``label_issues``).

    ``embeddings_key``: object embeddings of these boxes; when given, the embedding mislabel scan runs first and its
    ``mislabel_score`` is the swap evidence (else an earlier scan's score is used when the labels have one). Samples
    with no value in ``predictions_field`` are not scored (counted in ``without_predictions``)."""
    from curate_loop.box_errors.scores import BoxSet, score_box_errors
    from curate_loop.runs.model_step import out_of_fold_folds

    started = time.perf_counter()
    step = progress or (lambda fraction, label: None)
    dataset = samples._dataset
    _detections_field(samples, label_field, "label")
    if predictions_field is not None:
        if predictions_field == label_field:
            raise InvalidInputError(f"label_field and predictions_field are both {label_field!r}: pass the field the "
                                    "model wrote its predictions to.")
        _detections_field(samples, predictions_field, "predictions")
    if embeddings_key:
        from curate_loop.runs.mislabels import find_mislabels

        step(0.02, "scoring class swaps from embeddings")
        find_mislabels(samples, label_field, embeddings_key)
    step(0.1, "reading labels and predictions")
    lp, pp = f"{label_field}.detections", f"{predictions_field}.detections"
    paths = ["id", f"{lp}.id", f"{lp}.label", f"{lp}.bounding_box", f"{lp}.tags"]
    paths += [p for p in (f"{lp}.{MISLABEL_SCORE}", f"{lp}.{MISLABEL_SUGGESTION}", f"{lp}.{REVIEWED}",
                                       DISMISSED_FIELD) if samples.has_field(p)]
    if predictions_field is not None:
        paths += [f"{pp}.id", f"{pp}.label", f"{pp}.bounding_box", f"{pp}.confidence"]
    values = dict(zip(paths, samples.values(paths)))
    sample_ids = values["id"]
    if predictions_field is None:
        scored_rows = np.arange(len(sample_ids))
    else:
        scored_rows = np.asarray([r for r, p in enumerate(values[f"{pp}.id"]) if p is not None], dtype=np.int64)
    if not len(scored_rows):
        raise InvalidInputError(f"No sample of this view has predictions in {predictions_field!r}: run the model on "
                                "the labeled samples first (the loop's model step writes them out-of-fold).")
    labels = _read_boxes(values, lp, scored_rows, (MISLABEL_SCORE, MISLABEL_SUGGESTION, REVIEWED))
    preds = (_read_boxes(values, pp, scored_rows, ("confidence",)) if predictions_field is not None else None)
    _check(labels, preds, label_field, predictions_field)

    classes = sorted({str(c) for c in labels.classes} | ({str(c) for c in preds.classes} if preds else set()))
    code = {c: k for k, c in enumerate(classes)}
    row_index = np.full(len(sample_ids), -1, dtype=np.int64)
    row_index[scored_rows] = np.arange(len(scored_rows))
    label_set = BoxSet(sample=row_index[labels.rows], boxes=labels.boxes,
                       classes=np.asarray([code[str(c)] for c in labels.classes], dtype=np.int64))
    pred_set = None if preds is None else BoxSet(
        sample=row_index[preds.rows], boxes=preds.boxes,
        classes=np.asarray([code[str(c)] for c in preds.classes], dtype=np.int64),
        confidences=np.asarray(preds.extra["confidence"], dtype=float))
    swap = np.asarray([np.nan if s is None else s for s in labels.extra[MISLABEL_SCORE]], dtype=float)
    step(0.3, f"scoring {len(labels.ids)} labels against {0 if preds is None else len(preds.ids)} predictions")
    result = score_box_errors(label_set, pred_set, len(scored_rows), len(classes),
                              swap_scores=np.nan_to_num(swap) if np.isfinite(swap).any() else None)

    step(0.7, "building issue cards")
    fingerprints = [_fingerprint(c, None if np.isnan(b).any() else b) for c, b in zip(labels.classes, labels.boxes)]
    kind_scores, still, stale = _label_kind_scores(result, labels, fingerprints)
    dismissed = _dismissed_regions(values, scored_rows)
    cards_of, still_overlooked = _cards(label_field, predictions_field, labels, preds, result, kind_scores, classes,
                                        dismissed)
    worst = kind_scores.argmax(axis=1) if len(labels.ids) else np.zeros(0, dtype=int)
    worst_score = kind_scores.max(axis=1) if len(labels.ids) else np.zeros(0)
    outside = _outside(labels.boxes)

    step(0.85, "writing cards and scores")
    if labels.ids:
        put = lambda attribute, column: dataset.set_label_values(  # noqa: E731
            f"{lp}.{attribute}", dict(zip(labels.ids, column)), dynamic=True)
        put(KIND, [LABEL_KINDS[k] if s > 0 else None for k, s in zip(worst.tolist(), worst_score.tolist())])
        put(SCORE, [round(float(s), 6) for s in worst_score])
        put(WARNING, ["box outside the image" if o else None for o in outside.tolist()])
        if stale.any():  # changed since a reviewer dismissed it: the dismissal no longer holds
            put(REVIEWED, [None if s else r for s, r in zip(stale.tolist(), labels.extra[REVIEWED])])
    scored_ids = [sample_ids[r] for r in scored_rows.tolist()]
    quality = 1.0 - np.clip(np.asarray(result.sample_score, dtype=float), 0.0, 1.0)
    dataset.set_values(QUALITY_FIELD, dict(zip(scored_ids, np.round(quality, 6).tolist())), key_field="id")
    dataset.set_values(ISSUES_FIELD, _issue_documents(scored_ids, scored_rows, cards_of), key_field="id", dynamic=True)
    save_issues_view(dataset)

    by_kind = {kind: 0 for kind in ("overlooked",) + LABEL_KINDS}
    for card in (c for cards in cards_of.values() for c in cards):
        by_kind[card.kind] += 1
    top = sorted((c for cards in cards_of.values() for c in cards), key=lambda c: -c.score)[:10]
    warnings = list(result.warnings)
    if outside.any():
        warnings.append(f"{int(outside.sum())} label boxes of {label_field!r} leave the image (label_issue_warning)")
    without = len(sample_ids) - len(scored_rows)
    if without:
        warnings.append(f"{without} samples have no predictions in {predictions_field!r} and were not scored")
    folds = out_of_fold_folds(dataset, predictions_field) if predictions_field else 0
    summary = LabelIssuesSummary(
        label_field=label_field, predictions_field=predictions_field, scored_labels=len(labels.ids),
        scored_predictions=0 if preds is None else len(preds.ids), scored_samples=len(scored_rows),
        issues=sum(by_kind.values()), by_kind=by_kind, still_dismissed=int(still.sum()) + still_overlooked,
        without_predictions=without, outside_image=int(outside.sum()),
        class_rates={kind: {classes[k]: round(float(r), 6) for k, r in enumerate(np.asarray(rates).tolist())}
                     for kind, rates in (result.class_rates or {}).items()},
        warnings=warnings, out_of_fold_folds=folds, scoring_note=_scoring_note(predictions_field, folds),
        view_name=VIEW_NAME, seconds=round(time.perf_counter() - started, 2),
        top=[[c.id, c.kind, round(c.score, 6), c.fix] for c in top])
    _record_run(dataset, summary, embeddings_key)
    step(1.0, f"{summary.issues} label issues")
    return summary


def _check(labels: _Boxes, preds: _Boxes | None, label_field: str, predictions_field: str | None) -> None:
    """Refuse input the scores cannot use, before anything is written."""
    for boxes, name in ((labels, label_field), (preds, predictions_field)):
        if boxes is None:
            continue
        missing = int(np.isnan(boxes.boxes).any(axis=1).sum())
        if missing:
            first = boxes.ids[int(np.isnan(boxes.boxes).any(axis=1).argmax())]
            raise InvalidInputError(f"{missing} boxes of {name!r} have no (or a non-numeric) bounding_box, e.g. "
                                    f"{first}; fix or delete them.")
        unlabeled = sum(c is None for c in boxes.classes)
        if unlabeled:
            raise InvalidInputError(f"{unlabeled} boxes of {name!r} have no class (label); give them one or delete "
                                    "them.")
    if preds is not None:
        missing = [i for i, c in zip(preds.ids, preds.extra["confidence"]) if c is None]
        if missing:
            raise InvalidInputError(f"{len(missing)} of {len(preds.ids)} predictions in {predictions_field!r} have no "
                                    f"confidence (e.g. {missing[0]}): box-error scores weigh each prediction by it; "
                                    "write the detector's score to each Detection's `confidence`.")


def _outside(boxes: np.ndarray, tolerance: float = 1e-6) -> np.ndarray:
    if not len(boxes):
        return np.zeros(0, dtype=bool)
    return ((boxes[:, :2] < -tolerance).any(axis=1) | (boxes[:, 2:] <= 0).any(axis=1)
            | (boxes[:, :2] + boxes[:, 2:] > 1 + tolerance).any(axis=1))


def _parse_reviewed(value) -> tuple[set, str | None]:
    if not value or "|" not in value:
        return set(), None
    kinds, fingerprint = value.split("|", 1)
    return set(filter(None, kinds.split(","))), fingerprint


def _label_kind_scores(result, labels: _Boxes, fingerprints: list):
    """(n_labels, 4) scores of LABEL_KINDS, 0 where the kind has no fix to offer or a reviewer dismissed it for the
    label as it still is; plus masks of labels with a standing dismissal and of stale ones (changed since)."""
    n = len(labels.ids)
    scores = np.zeros((n, len(LABEL_KINDS)))
    for k, kind in enumerate(LABEL_KINDS):
        scores[:, k] = np.nan_to_num(np.asarray(getattr(result, kind), dtype=float)) if n else 0
    if n:
        scores[np.isnan(np.asarray(result.suggested_box, dtype=float)).any(axis=1), LABEL_KINDS.index("mislocated")] = 0
    still, stale = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for i, value in enumerate(labels.extra[REVIEWED]):
        kinds, fingerprint = _parse_reviewed(value)
        if fingerprint is None:
            continue
        if fingerprint != fingerprints[i]:
            stale[i] = True
            continue
        still[i] = True
        scores[i, [LABEL_KINDS.index(k) for k in kinds if k in LABEL_KINDS]] = 0
    return scores, still, stale


def _dismissed_regions(values: dict, scored_rows: np.ndarray) -> dict:
    """row -> [(class, box)] of overlooked regions a reviewer rejected (or sent to re-annotation) on that sample."""
    column = values.get(DISMISSED_FIELD)
    if column is None:
        return {}
    regions = {}
    for r in scored_rows.tolist():
        for entry in column[r] or []:
            cls, box = entry.split("|", 1)
            regions.setdefault(r, []).append((cls, [float(v) for v in box.split(",")]))
    return regions


def _cards(label_field, predictions_field, labels: _Boxes, preds: _Boxes | None, result, kind_scores, classes,
           dismissed: dict):
    """row -> [fo.Detection card] and the number of overlooked regions still dismissed."""
    import fiftyone as fo

    from curate_loop.box_errors.geometry import box_iou

    cards, still_overlooked = {}, 0
    suggested_class = np.asarray(result.suggested_class, dtype=np.int64) if len(labels.ids) else np.zeros(0, int)
    duplicate_of = np.asarray(result.duplicate_of, dtype=np.int64) if len(labels.ids) else np.zeros(0, int)
    swapped_k = LABEL_KINDS.index("swapped")
    swap_mislabel = labels.extra[MISLABEL_SUGGESTION]
    for i in range(len(labels.ids)):
        k = int(kind_scores[i].argmax())
        score = float(kind_scores[i, k])
        kind = LABEL_KINDS[k]
        if kind == "swapped" and suggested_class[i] < 0 and not (swap_mislabel and swap_mislabel[i]):
            kind_scores[i, swapped_k] = 0  # no class to suggest: no fix to offer
            k = int(kind_scores[i].argmax())
            score, kind = float(kind_scores[i, k]), LABEL_KINDS[k]
        if score < ISSUE_MIN_SCORE:
            continue
        given, box = str(labels.classes[i]), labels.boxes[i].tolist()
        attrs = dict(kind=kind, score=round(score, 6), label_field=label_field, predictions_field=predictions_field,
                     label_id=labels.ids[i], prediction_id=None, suggested_box=None, suggested_label=None,
                     decision=None, duplicate_of=None)
        if kind == "mislocated":
            attrs["suggested_box"] = [float(v) for v in result.suggested_box[i]]
            attrs["fix"] = "move box to [" + ", ".join(f"{v:.3f}" for v in attrs["suggested_box"]) + "]"
            shown = attrs["suggested_box"]
        elif kind == "swapped":
            suggested = classes[suggested_class[i]] if suggested_class[i] >= 0 else str(swap_mislabel[i])
            attrs["suggested_label"] = suggested
            attrs["fix"] = f"relabel {given} -> {suggested}"
            shown = box
        else:
            attrs["fix"] = "delete box"
            if kind == "duplicate" and duplicate_of[i] >= 0:
                attrs["duplicate_of"] = labels.ids[duplicate_of[i]]
            shown = box
        cards.setdefault(int(labels.rows[i]), []).append(fo.Detection(label=given, bounding_box=shown,
                                                                      tags=[f"{kind}: {attrs['fix']}"], **attrs))
    if preds is not None:
        overlooked = np.nan_to_num(np.asarray(result.overlooked, dtype=float))
        for j in np.flatnonzero(overlooked >= ISSUE_MIN_SCORE).tolist():
            row, cls, box = int(preds.rows[j]), str(preds.classes[j]), preds.boxes[j]
            same = [b for c, b in dismissed.get(row, []) if c == cls]
            if same and box_iou(box[None, :], np.asarray(same)).max() >= DISMISSED_IOU:
                still_overlooked += 1
                continue
            suggested_box = [float(v) for v in box]
            cards.setdefault(row, []).append(fo.Detection(
                label=cls, bounding_box=suggested_box, tags=[f"overlooked: add box {cls}"], kind="overlooked",
                score=round(float(overlooked[j]), 6), label_field=label_field, predictions_field=predictions_field,
                label_id=None, prediction_id=preds.ids[j], suggested_box=suggested_box, suggested_label=cls,
                decision=None, duplicate_of=None, fix=f"add box {cls}"))
    return cards, still_overlooked


def _issue_documents(scored_ids: list, scored_rows: np.ndarray, cards_of: dict) -> dict:
    import fiftyone as fo

    return {sid: fo.Detections(detections=sorted(cards_of.get(r, []), key=lambda c: -c.score))
            for sid, r in zip(scored_ids, scored_rows.tolist())}


def save_issues_view(dataset) -> None:
    """The open cards as patches, worst first. Saved again after every decision: a patches view is a snapshot."""
    from fiftyone import ViewField as F

    if not dataset.has_field(ISSUES_FIELD):
        return
    view = (dataset.filter_labels(ISSUES_FIELD, F("decision") == None, only_matches=True)  # noqa: E711 (MongoDB)
            .to_patches(ISSUES_FIELD).sort_by([(F(f"{ISSUES_FIELD}.score"), -1), ("_id", 1)]))  # ties: stable
    dataset.save_view(VIEW_NAME, view, description="Box-level label issues: kind and fix on each card, worst first",
                      overwrite=True)


def _record_run(dataset, summary: LabelIssuesSummary, embeddings_key: str | None) -> None:
    key = run_key(summary.label_field)
    config = dataset.init_run(method=METHOD, label_field=summary.label_field,
                              predictions_field=summary.predictions_field, embeddings_key=embeddings_key)
    dataset.register_run(key, config, overwrite=True, cleanup=False)
    dataset.save_run_results(key, dataset.init_run_results(key, **_jsonable(summary.to_dict())), overwrite=True)


def issues_report(dataset, label_field: str = "ground_truth") -> dict:
    """The last scan's summary (counts per kind, class rates, warnings, the out-of-fold line)."""
    key = run_key(label_field)
    if key not in dataset.list_runs():
        raise InvalidInputError(f"No label-issue scan of {label_field!r} on {dataset.name!r}; run `curate-loop "
                                f"label-issues find {dataset.name} --label-field {label_field}` first.")
    return dataset.load_run_results(key, cache=False).serialize()


def open_issues(dataset, limit: int = 20) -> list[dict]:
    """The open cards of the saved view, worst first: card and sample ids, kind, score, class shown, fix."""
    if not dataset.has_saved_view(VIEW_NAME):
        return []
    view = dataset.load_saved_view(VIEW_NAME).limit(limit)
    names = ["id", "sample_id", "kind", "score", "label", "fix", "label_id"]
    rows = view.values([f"{ISSUES_FIELD}.id", "sample_id"] + [f"{ISSUES_FIELD}.{n}" for n in names[2:]])
    return [dict(zip(names, row)) for row in zip(*rows)]


# the review flow lives in its own module; its names are part of this one's interface
from curate_loop.runs.label_issue_review import (accept_issues, issue_ids_of_selection, reject_issues,  # noqa: E402
                                                 send_issues_for_reannotation, undo_issue)

__all__ = ["ISSUES_FIELD", "VIEW_NAME", "LabelIssuesSummary", "find_label_issues", "accept_issues", "reject_issues",
           "undo_issue", "send_issues_for_reannotation", "issue_ids_of_selection", "issues_report", "open_issues"]
