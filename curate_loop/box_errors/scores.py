"""Box-level label-error scores from a detector's predictions: overlooked, mislocated, spurious, duplicate, swapped.

:func:`score_box_errors` takes every label and every prediction of a dataset as flat arrays (:class:`BoxSet`) and
scores all of them at once; boxes are grouped by sample with segment operations (``geometry``), never a Python loop
over samples. Scores are in [0, 1], higher = more likely that error:

- **overlooked** (per prediction): ``precision x (1 - IoU with the nearest label / match_iou)``, clipped at 0 - a
  confident prediction far from every label is an object the annotator did not draw; its box is the suggested label.
  ``precision`` is the confidence calibrated on the labels (:func:`calibrated_precision`: the share of the model's
  boxes of that class and confidence that match a label), so a class the model hallucinates weighs less;
- **mislocated** (per label): the most confident same-class prediction that overlaps the label at all
  (IoU >= ``overlap_iou``) is what the model thinks the object is; ``confidence x (1 - IoU)`` measures how far the
  label is from it, times ``1 - confidence`` of the best prediction (any class) that does match the label
  (IoU >= ``match_iou``), which says the box is right where it is; its box is the suggested geometry;
- **spurious** (per label): ``reliability[class] x (1 - support)``, support being the best
  ``confidence x min(1, IoU / match_iou)`` of any prediction over the label; ``reliability`` is the mean support of
  the class's labels (how reliably the model finds that class: a class it never predicts gets 0, with a warning);
- **duplicate** (per label): the IoU with an earlier label of the same class in the same sample, where at least
  ``duplicate_iou`` (the later of a pair is the suspect; no predictions needed);
- **swapped** (per label): ``confidence x P(another class)`` of the prediction overlapping the label most (its class
  probabilities if given, else its class), averaged with the embedding mislabel score ``swap_scores`` when given.
  (Calibrating that confidence on the labels, as for overlooked, moved the AP by -0.04..+0.12 on the tuning seeds:
  not kept.)

The per-sample score is the worst item of the sample (label or prediction, any kind); per-class rates are the share
of each class's labels (predictions, for overlooked) whose score reaches ``flag_score``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from curate_loop.box_errors.geometry import (as_boxes, best_per_group, check_boxes, group_max, paired_iou,
                                             pairs_within_samples)
from curate_loop.errors import InvalidInputError

logger = logging.getLogger(__name__)

KINDS = ("overlooked", "mislocated", "spurious", "duplicate", "swapped")
LABEL_KINDS = ("mislocated", "spurious", "duplicate", "swapped")


@dataclass
class BoxSet:
    """All boxes of a dataset, flat: row i is box i of sample ``sample[i]``."""

    sample: np.ndarray  # (n,) int, row index of the sample (0..n_samples-1)
    boxes: np.ndarray  # (n, 4) float xywh relative
    classes: np.ndarray  # (n,) int codes into the class list
    confidences: np.ndarray | None = None  # (n,) float in [0, 1]; required for predictions
    probabilities: np.ndarray | None = None  # (n, n_classes) optional per-class probabilities of predictions

    def __len__(self) -> int:
        return len(self.classes)


@dataclass
class BoxErrorSettings:
    """The thresholds of :func:`score_box_errors`. None was tuned on the ``box_errors`` bench's planted data."""

    # COCO's convention: a prediction with IoU >= 0.5 has found the object (also what the example detector's
    # threshold and FiftyOne's evaluate_detections use).
    match_iou: float = 0.5
    # Below this IoU a prediction is about another object, not a badly drawn box of this one. 0.1 is the smallest
    # overlap that is more than touching corners for boxes of similar size.
    overlap_iou: float = 0.1
    # Two labels of one class at IoU >= 0.5 would be counted as one object by COCO's matching (a duplicate).
    duplicate_iou: float = 0.5
    # A score at which a suspect counts as an error in the per-class rates: even odds.
    flag_score: float = 0.5
    # Fewest predictions (and matched / unmatched ones, a sixth of it each) a class needs for its own confidence
    # calibration; below it the class shares the pooled one, and with too few overall the raw confidence is used.
    # Isotonic fits on fewer points step from 0 to 1 between two neighbours; 30 is where a step holds ~5 points.
    calibration_min: int = 30

    def __post_init__(self) -> None:
        if self.calibration_min < 6:
            raise InvalidInputError(f"BoxErrorSettings.calibration_min={self.calibration_min} must be >= 6.")
        for name in ("match_iou", "overlap_iou", "duplicate_iou", "flag_score"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise InvalidInputError(f"BoxErrorSettings.{name}={value} must be in (0, 1].")
        if self.overlap_iou > self.match_iou:
            raise InvalidInputError(f"BoxErrorSettings.overlap_iou={self.overlap_iou} must be <= match_iou="
                                    f"{self.match_iou}.")


@dataclass
class BoxErrorResult:
    """Scores of :func:`score_box_errors`; each in [0, 1], higher = more likely that error."""

    # per label (len = n labels)
    mislocated: np.ndarray
    spurious: np.ndarray
    duplicate: np.ndarray
    swapped: np.ndarray
    suggested_box: np.ndarray  # (n_labels, 4): best same-class prediction's box (NaN row: none)
    suggested_class: np.ndarray  # (n_labels,) int code suggested for a swap (-1: none)
    duplicate_of: np.ndarray  # (n_labels,) index of the label it duplicates (-1: none)
    # per prediction (len = n predictions)
    overlooked: np.ndarray  # 0 where the prediction matches a label
    # per sample
    sample_score: np.ndarray  # (n_samples,) higher = worse (the worst item of the sample)
    # per class x kind: share of the class's labels (predictions, for overlooked) flagged, {kind: (n_classes,)}
    class_rates: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # which prediction each label's mislocated / swapped score came from (-1: none)
    mislocated_prediction: np.ndarray | None = None
    swapped_prediction: np.ndarray | None = None

    def label_scores(self) -> dict[str, np.ndarray]:
        """The per-label score arrays by kind."""
        return {kind: getattr(self, kind) for kind in LABEL_KINDS}


def score_box_errors(labels: BoxSet, predictions: BoxSet | None, n_samples: int, n_classes: int, *,
                     swap_scores: np.ndarray | None = None,
                     settings: BoxErrorSettings | None = None) -> BoxErrorResult:
    """Score every label and prediction of a dataset for box-level label errors (see the module docstring).

    Parameters
    ----------
    labels : BoxSet
        The annotations: ``sample`` (n,), ``boxes`` (n, 4) relative xywh, ``classes`` (n,) codes in 0..n_classes-1.
    predictions : BoxSet or None
        A detector's boxes with ``confidences`` (m,) in [0, 1] and optionally ``probabilities`` (m, n_classes).
        None: only ``duplicate`` (from overlap) and ``swapped`` (= ``swap_scores``, or 0) can be non-zero.
    n_samples, n_classes : int
        Sample rows are 0..n_samples-1 and class codes 0..n_classes-1.
    swap_scores : (n,) array, optional
        The embedding mislabel score of each label (``curate_loop.mislabels``), in [0, 1].
    settings : BoxErrorSettings, optional

    Returns
    -------
    BoxErrorResult
    """
    settings = settings or BoxErrorSettings()
    warnings: list[str] = []
    lab = _checked(labels, "labels", n_samples, n_classes, warnings)
    n_labels = len(lab.classes)
    if swap_scores is not None:
        swap_scores = np.asarray(swap_scores, dtype=np.float64).reshape(-1)
        if len(swap_scores) != n_labels or not np.all((swap_scores >= 0) & (swap_scores <= 1)):
            raise InvalidInputError(f"swap_scores must hold one score in [0, 1] per label ({n_labels}), got "
                                    f"{len(swap_scores)} values in [{np.nanmin(swap_scores, initial=0):.3g}, "
                                    f"{np.nanmax(swap_scores, initial=0):.3g}].")
    duplicate, duplicate_of = _duplicates(lab, n_samples, settings)
    zeros = np.zeros(n_labels)
    if predictions is None:
        warnings.append("no predictions: only duplicate (from overlap) and swapped (from embeddings) are scored; "
                        "run a model step or pass a predictions field for the other kinds")
        swapped = swap_scores.copy() if swap_scores is not None else zeros.copy()
        return _result(lab, None, n_samples, n_classes, settings, warnings,
                       mislocated=zeros.copy(), spurious=zeros.copy(), duplicate=duplicate, swapped=swapped,
                       suggested_box=np.full((n_labels, 4), np.nan), suggested_class=np.full(n_labels, -1),
                       duplicate_of=duplicate_of, overlooked=np.zeros(0),
                       mislocated_prediction=np.full(n_labels, -1), swapped_prediction=np.full(n_labels, -1))
    pred = _checked(predictions, "predictions", n_samples, n_classes, warnings, need_confidence=True)
    il, ip = pairs_within_samples(lab.sample, pred.sample, n_samples)
    iou = paired_iou(lab.boxes[il], pred.boxes[ip])
    conf = pred.confidences[ip]

    # mislocated: the most confident same-class prediction overlapping the label is the object as the model sees it
    same = (lab.classes[il] == pred.classes[ip]) & (iou >= settings.overlap_iou)
    pick = best_per_group(conf[same], il[same], n_labels)
    has = pick >= 0
    where = np.flatnonzero(same)[pick[has]]
    # ... unless a prediction matches the label where it is drawn (of any class: a class doubt is the swap score's)
    confirmed = group_max(np.where(iou >= settings.match_iou, conf, 0.0), il, n_labels)
    mislocated = zeros.copy()
    mislocated[has] = conf[where] * (1.0 - iou[where]) * (1.0 - confirmed[has])
    suggested_box = np.full((n_labels, 4), np.nan)
    suggested_box[has] = pred.boxes[ip[where]]
    mislocated_prediction = np.full(n_labels, -1)
    mislocated_prediction[has] = ip[where]

    # spurious: nothing the model (for this class, a reliable one) detects is there
    support = group_max(conf * np.minimum(1.0, iou / settings.match_iou), il, n_labels)
    reliability = _class_reliability(lab.classes, pred.classes, support, n_classes, warnings)
    spurious = reliability[lab.classes] * (1.0 - support)

    # swapped: the prediction overlapping the label most says another class
    near = iou >= settings.overlap_iou
    pick = best_per_group(iou[near], il[near], n_labels)
    has = pick >= 0
    where = np.flatnonzero(near)[pick[has]]
    p_other, other_class = _other_class(pred, ip[where], lab.classes[il[where]])
    swapped = zeros.copy()
    swapped[has] = conf[where] * p_other * np.minimum(1.0, iou[where] / settings.match_iou)
    suggested_class = np.full(n_labels, -1)
    suggested_class[has] = np.where(p_other > 0, other_class, -1)
    swapped_prediction = np.full(n_labels, -1)
    swapped_prediction[has] = ip[where]
    if swap_scores is not None:
        swapped = (swapped + swap_scores) / 2.0

    # overlooked: a prediction no label is near, weighed by how often the model is right at that confidence
    nearest = group_max(iou, ip, len(pred.classes))
    precision = calibrated_precision(pred.confidences, pred.classes, nearest >= settings.match_iou, n_classes,
                                     settings.calibration_min, warnings)
    overlooked = precision * np.clip(1.0 - nearest / settings.match_iou, 0.0, 1.0)
    return _result(lab, pred, n_samples, n_classes, settings, warnings, mislocated=mislocated, spurious=spurious,
                   duplicate=duplicate, swapped=swapped, suggested_box=suggested_box, suggested_class=suggested_class,
                   duplicate_of=duplicate_of, overlooked=overlooked, mislocated_prediction=mislocated_prediction,
                   swapped_prediction=swapped_prediction)


def _checked(boxes: BoxSet, what: str, n_samples: int, n_classes: int, warnings: list[str],
             need_confidence: bool = False) -> BoxSet:
    """A validated float/int copy of ``boxes``; a one-line :class:`InvalidInputError` for anything unusable."""
    array = as_boxes(boxes.boxes, what)
    n = len(array)
    sample = np.asarray(boxes.sample).reshape(-1)
    classes = np.asarray(boxes.classes).reshape(-1)
    if len(sample) != n or len(classes) != n:
        raise InvalidInputError(f"{what}: {n} boxes but {len(sample)} sample rows and {len(classes)} classes; "
                                "give one of each per box.")
    for name, values, limit in (("sample", sample, n_samples), ("classes", classes, n_classes)):
        if n and (not np.issubdtype(values.dtype, np.integer) or values.min() < 0 or values.max() >= limit):
            raise InvalidInputError(f"{what}: {name} must be integer codes in 0..{limit - 1}, got "
                                    f"{values.dtype} values in [{values.min()}, {values.max()}].")
    confidences = boxes.confidences
    if confidences is None:
        if need_confidence:
            raise InvalidInputError(f"{what}: the predictions have no confidences; the scores weigh each prediction "
                                    "by its confidence, so write a `confidence` on every predicted box (or use a "
                                    "model that outputs one).")
    else:
        confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)
        if len(confidences) != n or not np.all((confidences >= 0) & (confidences <= 1)):
            bad = int(np.sum(~((confidences >= 0) & (confidences <= 1)))) if len(confidences) == n else None
            raise InvalidInputError(f"{what}: confidences must be one value in [0, 1] per box ({n} boxes, got "
                                    f"{len(confidences)}{f', {bad} missing or out of range' if bad else ''}); "
                                    "fix the predictions' confidence values.")
    probabilities = boxes.probabilities
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.shape != (n, n_classes) or not np.all(np.isfinite(probabilities)):
            raise InvalidInputError(f"{what}: probabilities must be a finite ({n}, {n_classes}) array (one row per "
                                    f"box, one column per class), got shape {probabilities.shape}.")
    outside = check_boxes(array, what)
    if outside.any():
        warnings.append(f"{int(outside.sum())} {what} outside the image (scored on their overlap with the others)")
    return BoxSet(sample.astype(np.int64), array, classes.astype(np.int64), confidences, probabilities)


def _duplicates(lab: BoxSet, n_samples: int, settings: BoxErrorSettings) -> tuple[np.ndarray, np.ndarray]:
    """Per label: the IoU with the most overlapping earlier same-class label of its sample where >= duplicate_iou,
    and that label's index (-1: none)."""
    n = len(lab.classes)
    ia, ib = pairs_within_samples(lab.sample, lab.sample, n_samples)
    keep = (ia < ib) & (lab.classes[ia] == lab.classes[ib])
    ia, ib = ia[keep], ib[keep]
    iou = paired_iou(lab.boxes[ia], lab.boxes[ib])
    close = iou >= settings.duplicate_iou
    pick = best_per_group(iou[close], ib[close], n)
    has = pick >= 0
    duplicate, duplicate_of = np.zeros(n), np.full(n, -1)
    duplicate[has] = iou[close][pick[has]]
    duplicate_of[has] = ia[close][pick[has]]
    return duplicate, duplicate_of


def calibrated_precision(confidences: np.ndarray, classes: np.ndarray, matched: np.ndarray, n_classes: int,
                         min_count: int, warnings: list[str]) -> np.ndarray:
    """(m,) P(a prediction is a real object | its class and confidence), estimated as the share of predictions that
    match a label: an isotonic (monotone) fit of ``matched`` on the confidence, per class where the class has
    ``min_count`` predictions (and a sixth of them matched, a sixth not), else pooled over classes; the raw
    confidence where even the pool is too small (warned).

    The labels are mostly right, so a class whose confident boxes rarely match a label is one the model
    hallucinates, and its unmatched boxes are weak evidence of an overlooked object.
    """
    from sklearn.isotonic import IsotonicRegression

    def enough(mask: np.ndarray) -> bool:
        hits = int(matched[mask].sum())
        return mask.sum() >= min_count and min(hits, int(mask.sum()) - hits) >= min_count // 6

    def fit(mask: np.ndarray) -> np.ndarray:
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        return model.fit(confidences[mask], matched[mask].astype(np.float64)).predict(confidences)

    everything = np.ones(len(confidences), dtype=bool)
    if not enough(everything):
        if len(confidences):
            warnings.append(f"too few predictions matching a label ({int(matched.sum())} of {len(confidences)}) to "
                            "calibrate confidences: overlooked scores use the raw confidence")
        return confidences.copy()
    precision = fit(everything)
    for c in range(n_classes):
        mask = classes == c
        if enough(mask):
            precision[mask] = fit(mask)[mask]
    return precision


def _class_reliability(label_classes: np.ndarray, pred_classes: np.ndarray, support: np.ndarray, n_classes: int,
                       warnings: list[str]) -> np.ndarray:
    """(n_classes,) mean support of each class's labels; 0 for a class the model never predicts (warned)."""
    counts = np.bincount(label_classes, minlength=n_classes)
    total = np.bincount(label_classes, weights=support, minlength=n_classes)
    reliability = np.divide(total, counts, out=np.zeros(n_classes), where=counts > 0)
    never = np.flatnonzero((counts > 0) & (np.bincount(pred_classes, minlength=n_classes) == 0))
    if len(never):
        reliability[never] = 0.0
        warnings.append(f"classes {never.tolist()} never predicted: their spurious scores are 0")
    return reliability


def _other_class(pred: BoxSet, rows: np.ndarray, label_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(not ``label_class``) of predictions ``rows``, and the most likely other class."""
    if pred.probabilities is not None:
        probs = pred.probabilities[rows]
        p_label = probs[np.arange(len(rows)), label_class]
        others = probs.copy()
        others[np.arange(len(rows)), label_class] = -np.inf
        return np.clip(1.0 - p_label, 0.0, 1.0), others.argmax(axis=1) if len(rows) else np.zeros(0, np.int64)
    differs = pred.classes[rows] != label_class
    return differs.astype(np.float64), pred.classes[rows]


def _result(lab: BoxSet, pred: BoxSet | None, n_samples: int, n_classes: int, settings: BoxErrorSettings,
            warnings: list[str], **scores) -> BoxErrorResult:
    """Per-sample worst item and per-class flagged shares around the per-box scores."""
    sample_score = np.zeros(n_samples)
    for kind in LABEL_KINDS:
        np.maximum.at(sample_score, lab.sample, scores[kind])
    if pred is not None:
        np.maximum.at(sample_score, pred.sample, scores["overlooked"])
    counts = np.bincount(lab.classes, minlength=n_classes)
    class_rates = {}
    for kind in LABEL_KINDS:
        flagged = np.bincount(lab.classes, weights=scores[kind] >= settings.flag_score, minlength=n_classes)
        class_rates[kind] = np.divide(flagged, counts, out=np.zeros(n_classes), where=counts > 0)
    if pred is not None:
        flagged = np.bincount(pred.classes, weights=scores["overlooked"] >= settings.flag_score, minlength=n_classes)
        class_rates["overlooked"] = np.divide(flagged, counts + flagged, out=np.zeros(n_classes),
                                              where=counts + flagged > 0)
    else:
        class_rates["overlooked"] = np.zeros(n_classes)
    for message in warnings:
        logger.info("box errors: %s", message)
    return BoxErrorResult(sample_score=sample_score, class_rates=class_rates, warnings=tuple(warnings), **scores)
