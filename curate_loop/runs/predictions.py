"""A predictions field of FiftyOne as arrays: what uncertainty-aware selection reads, and the per-sample uncertainty
users sort by in the App.

Predictions follow the loop's convention (``model.field``): a ``Classification`` (``label``, ``confidence``,
optionally ``logits`` = natural-log class probabilities) or ``Detections`` whose boxes carry a ``confidence`` and
optionally ``logits``. They are read with bulk ``values`` calls and aligned to the rows of an embeddings run, so
:mod:`curate_loop.model.uncertainty` and :mod:`curate_loop.curation.combined` get plain arrays.

Without logits only the predicted class's confidence is known: margin and entropy need the other classes'
probabilities, so the score falls back to least confidence, and ``PredictionArrays.uncertainty`` says so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from curate_loop.errors import InvalidInputError

CLASSIFICATION, DETECTIONS = "classification", "detections"


@dataclass
class PredictionArrays:
    """Predictions of ``n`` samples (the rows of ``ids`` given to :func:`read_prediction_arrays`).

    present: (n,) bool, the sample has a prediction document (an empty ``Detections`` counts: the model found nothing).
    predicted_classes: (n, C) bool, the sample's prediction holds class ``classes[j]``.
    Classification: ``confidence`` (n,) float, NaN without one; ``probs`` (n, C) float from the logits when every
    present prediction has them, else None.
    Detections: one entry per box, flattened: ``box_sample`` (m,) int row of its sample, ``box_confidence`` (m,)
    float (NaN without one), ``box_label`` (m,) int column of ``classes``, ``box_probs`` (m, C) or None.
    """

    kind: str
    field: str
    classes: list[str]
    present: np.ndarray
    predicted_classes: np.ndarray
    confidence: np.ndarray | None = None
    probs: np.ndarray | None = None
    box_sample: np.ndarray | None = None
    box_confidence: np.ndarray | None = None
    box_label: np.ndarray | None = None
    box_probs: np.ndarray | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return len(self.present)

    def class_counts(self, rows: np.ndarray) -> dict[str, int]:
        """Samples among ``rows`` whose prediction holds each class (every class listed, zeros included): for
        Detections a sample counts once per class it has a box of, as in the class balance of
        :func:`curate_loop.curation.combined.select_combined`."""
        counts = self.predicted_classes[np.asarray(rows, dtype=np.int64)].sum(axis=0)
        return {c: int(v) for c, v in zip(self.classes, counts)}

    def uncertainty(self, score: str = "margin") -> tuple[np.ndarray, str, str | None]:
        """``(scores (n,) in [0, 1], higher = more uncertain, NaN where no prediction; the score used; a note when
        it is not the one asked for)``. Detections: the most uncertain box of each sample (least confidence, margin)
        or the mean box entropy; a sample whose prediction holds no box scores 0 (the model saw nothing to doubt), a
        box without a confidence counts as confidence 0."""
        from curate_loop.model.uncertainty import (UNCERTAINTY_SCORES, detection_scores_for, detection_uncertainty,
                                                   score_uncertainty)

        if score not in UNCERTAINTY_SCORES:
            raise InvalidInputError(f"Unknown uncertainty score {score!r}; choose one of {UNCERTAINTY_SCORES}.")
        out = np.full(self.n, np.nan)
        note = None
        if self.kind == CLASSIFICATION:
            if self.probs is not None:
                out[self.present] = score_uncertainty(self.probs[self.present], score)
                return out, score, None
            used = "least_confidence"
            if score != used:
                note = (f"{self.field!r} has confidences but no logits: {score} needs every class's probability, "
                        "so the batch used least confidence (1 - confidence)")
            known = self.present & ~np.isnan(self.confidence)
            out[known] = 1.0 - self.confidence[known]
            return out, used, note
        per_sample = detection_uncertainty(self.box_sample, self.n, np.nan_to_num(self.box_confidence, nan=0.0),
                                           probs=self.box_probs)
        values, key = detection_scores_for(per_sample, score)
        used = {"mean_entropy": "entropy"}.get(key, key)
        if used != score:
            note = (f"the boxes of {self.field!r} have confidences but no logits: {score} needs every class's "
                    "probability, so the batch used the least confident box of each sample")
        out[self.present] = np.asarray(values, dtype=float)[self.present]
        return out, used, note


def prediction_kind(samples, field: str) -> str | None:
    """``"classification"`` or ``"detections"`` for ``field``; None when the dataset has no such field yet; an
    error naming the field's kind otherwise."""
    import fiftyone.core.labels as fol

    if not samples.has_field(field):
        return None
    spec = samples.get_field(field)
    doc_type = getattr(spec, "document_type", None)
    if doc_type is not None and issubclass(doc_type, fol.Detections):
        return DETECTIONS
    if doc_type is not None and issubclass(doc_type, fol.Classification):
        return CLASSIFICATION
    held = doc_type.__name__ if doc_type is not None else type(spec).__name__
    raise InvalidInputError(f"predictions field {field!r} holds {held}; the batch needs Classification or Detections "
                            "predictions (a model step writes them: manifest `model:`), or pick no predictions field.")


def read_prediction_arrays(samples, ids, field: str, classes: list[str] | None = None) -> PredictionArrays:
    """The predictions in ``field`` of the samples ``ids`` (sample ids, e.g. an embeddings run's rows, in any order),
    as arrays aligned to ``ids``. ``classes``: the manifest's, in its order; predicted labels outside it are added
    after it (sorted), and without it the classes are the predicted labels, sorted. An error when ``field`` is not a
    Classification or Detections field, or is missing."""
    kind = prediction_kind(samples, field)
    if kind is None:
        raise InvalidInputError(f"No predictions field {field!r} on {samples._dataset.name!r}; run the model step "
                                "first (manifest `model:`) or pick no predictions field.")
    ids = np.asarray(ids, dtype=str)
    prefix = f"{field}.detections." if kind == DETECTIONS else f"{field}."
    sample_ids, docs, labels, confidences, logits = samples.values(
        ["id", f"{field}._cls", prefix + "label", prefix + "confidence", prefix + "logits"])
    rows = _align(np.asarray(sample_ids, dtype=str), ids).tolist()
    pick = functools.partial(_take, rows=rows)
    present = np.fromiter((d is not None for d in pick(docs)), dtype=bool, count=len(ids))
    if kind == CLASSIFICATION:
        labels, confidences, logits = pick(labels), pick(confidences), pick(logits)
        names = _class_names(classes, labels)
        column = {c: j for j, c in enumerate(names)}
        membership = np.zeros((len(ids), len(names)), dtype=bool)
        labeled_rows = [i for i, lab in enumerate(labels) if lab is not None]
        membership[labeled_rows, [column[labels[i]] for i in labeled_rows]] = True
        confidence = np.asarray([np.nan if c is None else c for c in confidences], dtype=float)
        return PredictionArrays(CLASSIFICATION, field, names, present, membership, confidence=confidence,
                                probs=_probs([lg for lg, p in zip(logits, present) if p], field, present))
    labels, confidences, logits = (pick(v) for v in (labels, confidences, logits))
    per_sample = np.fromiter((len(lab or ()) for lab in labels), dtype=np.int64, count=len(ids))
    flat_labels = list(chain.from_iterable(lab or () for lab in labels))
    names = _class_names(classes, flat_labels)
    column = {c: j for j, c in enumerate(names)}
    box_sample = np.repeat(np.arange(len(ids)), per_sample)
    box_label = np.fromiter((column[c] if c is not None else -1 for c in flat_labels), dtype=np.int64,
                            count=len(flat_labels))
    unlabeled_box = box_label < 0
    if unlabeled_box.any():
        raise InvalidInputError(f"{int(unlabeled_box.sum())} boxes of {field!r} have no label; every predicted box "
                                "needs its class.")
    box_confidence = np.asarray([np.nan if c is None else c for c in chain.from_iterable(c or () for c in confidences)],
                                dtype=float)
    flat_logits = list(chain.from_iterable(lg or [None] * n for lg, n in zip(logits, per_sample.tolist())))
    membership = np.zeros((len(ids), len(names)), dtype=bool)
    membership[box_sample, box_label] = True
    return PredictionArrays(DETECTIONS, field, names, present, membership, box_sample=box_sample,
                            box_confidence=box_confidence, box_label=box_label,
                            box_probs=_probs(flat_logits, field, None))


def compute_uncertainty(samples, field: str, score: str = "margin", out_field: str = "uncertainty") -> dict:
    """Write the uncertainty of each sample's predictions in ``field`` to the float field ``out_field`` (None where
    a sample has no prediction), so the App can sort by it. Returns ``{"field", "out_field", "score" (the one used),
    "scored", "note"}``; ``note`` says when ``score`` needed logits the predictions lack."""
    if out_field == field or not isinstance(out_field, str) or not out_field.isidentifier():
        raise InvalidInputError(f"out_field must be a new field name (letters, digits, underscores) other than the "
                                f"predictions field, got {out_field!r}.")
    if samples.has_field(out_field):
        import fiftyone.core.fields as fof

        if not isinstance(samples.get_field(out_field), fof.FloatField):
            raise InvalidInputError(f"{out_field!r} exists and is not a float field; pick another out_field.")
    ids = np.asarray(samples.values("id"), dtype=str)
    arrays = read_prediction_arrays(samples, ids, field)
    scores, used, note = arrays.uncertainty(score)
    values = [None if np.isnan(s) else float(s) for s in scores.tolist()]
    samples._dataset.set_values(out_field, dict(zip(ids.tolist(), values)), key_field="id")
    return {"field": field, "out_field": out_field, "score": used, "scored": int((~np.isnan(scores)).sum()),
            "note": note}


def _align(sample_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions in ``sample_ids`` of each of ``ids`` (every one must be there)."""
    order = np.argsort(sample_ids)
    found = np.searchsorted(sample_ids, ids, sorter=order)
    found = np.minimum(found, len(sample_ids) - 1) if len(sample_ids) else found
    if len(ids) and (not len(sample_ids) or (sample_ids[order[found]] != ids).any()):
        raise InvalidInputError("Some embedding rows are not samples of this view; compute the embeddings of the "
                                "view again.")
    return order[found] if len(ids) else np.zeros(0, dtype=np.int64)


def _array(value):
    """A logits value as read by ``values``: a list, an array, or the bytes of an array FiftyOne serialised (a numpy
    array set on a box as an undeclared attribute comes back so)."""
    if isinstance(value, bytes):
        from fiftyone.core.utils import deserialize_numpy_array

        return deserialize_numpy_array(value)
    return value


def _take(values: list, rows: list[int]) -> list:
    """``values`` reordered to ``rows`` (a list, not an array: entries are lists of unequal length)."""
    return [values[i] for i in rows]


def _class_names(classes, labels) -> list[str]:
    names = list(classes or [])
    extra = sorted({lab for lab in labels if lab is not None} - set(names))
    return names + extra


def _probs(logits: list, field: str, present) -> np.ndarray | None:
    """(m, C) probabilities when every entry has logits of the same length, else None (confidences only)."""
    from curate_loop.model.uncertainty import softmax

    if not logits or any(lg is None for lg in logits):
        return None
    rows = [np.asarray(_array(lg), dtype=float).ravel() for lg in logits]
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise InvalidInputError(f"The logits of {field!r} have different lengths {sorted(widths)}; each prediction "
                                "needs one log-probability per class, in the order of the manifest's classes.")
    probs = softmax(np.stack(rows))
    if present is None:
        return probs
    full = np.full((len(present), probs.shape[1]), np.nan)
    full[present] = probs
    return full
