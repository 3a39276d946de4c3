"""How unsure a model is about each sample, from its class probabilities: numpy in, numpy out (no FiftyOne).

Every score is in [0, 1], higher = more uncertain, so that selection can rank them the same way.

Classification, one row of class probabilities ``probs`` (n, C) per sample (``softmax`` turns logits into them):

- ``least_confidence``: 1 - max_c p_c (a 1-D array of predicted-class confidences is accepted too);
- ``margin``: 1 - (p_(1) - p_(2)), the two largest probabilities; 1 for a tie, 0 for a sure prediction;
- ``entropy``: -sum p log p / log C, normalised so that a uniform row scores 1.

Detection, one row per predicted box, ``sample_index`` saying whose box it is (:func:`detection_uncertainty`):
per-sample aggregates computed with ``np.maximum.at`` / ``np.bincount``, never a loop over samples. A sample without
boxes scores 0 everywhere (nothing predicted, nothing to be unsure about) and has count 0.
"""

from __future__ import annotations

import numpy as np

from curate_loop.errors import InvalidInputError

UNCERTAINTY_SCORES = ("margin", "least_confidence", "entropy")
PROB_SUM_TOLERANCE = 1e-3  # rows of float32 probabilities (softmax of rounded logits) sum to 1 within ~1e-6


def softmax(logits) -> np.ndarray:
    """(n, C) float64 probabilities from (n, C) logits (or log-probabilities), row by row, overflow-safe."""
    return softmax_last_axis(_as_2d(logits, "logits"))


def softmax_last_axis(values: np.ndarray) -> np.ndarray:
    """The project's one softmax, over the last axis of a float array the caller built (no checks; its dtype kept):
    the largest value is subtracted first, so any logits are safe."""
    if values.size == 0:
        return values
    exp = np.exp(values - values.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def least_confidence(probs) -> np.ndarray:
    """(n,) 1 - max_c p_c. ``probs``: (n, C) probabilities, or (n,) confidences of the predicted class."""
    if np.ndim(probs) == 1:
        arr = np.asarray(probs)
        if arr.size and (not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating)):
            raise InvalidInputError(f"confidences must be real numbers, got dtype {arr.dtype}.")
        arr = arr.astype(np.float64)
        _check_values(arr, "confidences")
        if len(arr) and arr.max() > 1.0 + PROB_SUM_TOLERANCE:
            raise InvalidInputError(f"confidences are probabilities in [0, 1], got a maximum of {arr.max():.4g}; "
                                    "pass probabilities, not scores or logits.")
        return np.clip(1.0 - arr, 0.0, 1.0)
    p = check_probabilities(probs)
    return np.clip(1.0 - p.max(axis=1, initial=0.0), 0.0, 1.0) if p.shape[1] else np.zeros(len(p))


def margin(probs) -> np.ndarray:
    """(n,) 1 - (p_(1) - p_(2)): 1 when the two likeliest classes tie, 0 when one class has all the mass.
    With a single class there is no second one: p_(2) = 0, so the score is 0."""
    p = check_probabilities(probs)
    if p.shape[1] == 1:
        return np.zeros(len(p))
    top2 = -np.partition(-p, 1, axis=1)[:, :2]  # the two largest, largest first
    return np.clip(1.0 - (top2[:, 0] - top2[:, 1]), 0.0, 1.0)


def entropy(probs) -> np.ndarray:
    """(n,) Shannon entropy of each row divided by log C, in [0, 1]; 0 for a single class (nothing to confuse)."""
    p = check_probabilities(probs)
    if p.shape[1] <= 1:
        return np.zeros(len(p))
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.clip(-plogp.sum(axis=1) / np.log(p.shape[1]), 0.0, 1.0)


_SCORERS = {"margin": margin, "least_confidence": least_confidence, "entropy": entropy}


def score_uncertainty(probs, score: str) -> np.ndarray:
    """(n,) the ``score`` (one of ``UNCERTAINTY_SCORES``) of each row of ``probs`` (n, C)."""
    if score not in _SCORERS:
        raise InvalidInputError(f"unknown uncertainty score {score!r}; choose one of {', '.join(UNCERTAINTY_SCORES)}.")
    return _SCORERS[score](probs)


def detection_uncertainty(sample_index, n_samples: int, confidences, probs=None, labels=None,
                          rare_classes=None) -> dict[str, np.ndarray]:
    """Per-sample aggregates of box predictions, each (n_samples,); a sample without boxes gets 0 everywhere.

    Parameters
    ----------
    sample_index : (m,) int, the sample (row in [0, n_samples)) each box belongs to.
    n_samples : how many samples there are (those without boxes included).
    confidences : (m,) each box's confidence, in [0, 1].
    probs : optional (m, C) class probabilities of each box.
    labels : optional (m,) each box's predicted class (names or ids), needed with ``rare_classes``.
    rare_classes : optional collection of classes (same kind as ``labels``) counted as rare.

    Returns
    -------
    dict with
        ``"least_confidence"``: max over the sample's boxes of 1 - confidence;
        ``"mean_entropy"`` (only with ``probs``): mean over its boxes of the normalised entropy;
        ``"margin"`` (only with ``probs``): max over its boxes of the margin score;
        ``"count"``: int64 number of boxes;
        ``"rare_class"``: 1.0 if it holds a box of a rare class, else 0.0 (all 0 without ``rare_classes``).
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 0:
        raise InvalidInputError(f"n_samples must be a non-negative integer, got {n_samples!r}.")
    index = np.asarray([] if sample_index is None else sample_index)
    if index.size == 0:
        index = index.astype(np.int64).reshape(0)
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise InvalidInputError(f"sample_index must be a 1-D array of integer sample rows, got dtype {index.dtype} "
                                f"and shape {index.shape}.")
    if len(index) and (index.min() < 0 or index.max() >= n_samples):
        raise InvalidInputError(f"sample_index holds rows outside [0, {n_samples}) (min {index.min()}, max "
                                f"{index.max()}); each box must name one of the n_samples samples.")
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1) if np.size(confidences) else np.zeros(0)
    if len(conf) != len(index):
        raise InvalidInputError(f"confidences has {len(conf)} values for {len(index)} boxes (sample_index); "
                                "give one confidence per box.")
    lc_box = least_confidence(conf)
    out: dict[str, np.ndarray] = {}
    worst = np.zeros(n_samples)
    np.maximum.at(worst, index, lc_box)
    out["least_confidence"] = worst
    count = np.bincount(index, minlength=n_samples).astype(np.int64)
    if probs is not None:
        p = check_probabilities(probs) if np.size(probs) else np.zeros((0, 1))
        if len(p) != len(index):
            raise InvalidInputError(f"probs has {len(p)} rows for {len(index)} boxes (sample_index); give one row "
                                    "of class probabilities per box.")
        total = np.bincount(index, weights=entropy(p), minlength=n_samples)
        out["mean_entropy"] = np.divide(total, count, out=np.zeros(n_samples), where=count > 0)
        box_margin = np.zeros(n_samples)
        np.maximum.at(box_margin, index, margin(p))
        out["margin"] = box_margin
    out["count"] = count
    rare = np.zeros(n_samples)
    if rare_classes is not None and len(rare_classes):
        if labels is None:
            raise InvalidInputError("rare_classes needs labels, the predicted class of each box; pass labels=... "
                                    "(one per box) or drop rare_classes.")
        lab = np.asarray(labels).reshape(-1)
        if len(lab) != len(index):
            raise InvalidInputError(f"labels has {len(lab)} values for {len(index)} boxes (sample_index); give one "
                                    "predicted class per box.")
        hit = np.isin(lab, np.asarray(list(rare_classes)))
        np.maximum.at(rare, index[hit], 1.0)
    out["rare_class"] = rare
    return out


def detection_scores_for(aggregates: dict[str, np.ndarray], score: str) -> tuple[np.ndarray, str]:
    """The per-sample aggregate that stands for classification ``score`` on detections, and its key.

    ``least_confidence`` -> the worst box's least confidence; ``entropy`` -> ``mean_entropy``; ``margin`` -> the
    worst box's margin. Without box probabilities only least confidence exists: it is used, and the key says so.
    """
    if score not in UNCERTAINTY_SCORES:
        raise InvalidInputError(f"unknown uncertainty score {score!r}; choose one of {', '.join(UNCERTAINTY_SCORES)}.")
    key = {"least_confidence": "least_confidence", "entropy": "mean_entropy", "margin": "margin"}[score]
    if key not in aggregates:
        key = "least_confidence"
    return aggregates[key], key


def check_probabilities(probs, what: str = "probs") -> np.ndarray:
    """(n, C) float64 copy of ``probs``, checked: finite, non-negative, rows summing to 1 (within
    ``PROB_SUM_TOLERANCE``). Logits or scores are refused with the fix (``softmax``)."""
    p = _as_2d(probs, what)
    if p.size == 0:
        return p
    _check_values(p, what)
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0) > PROB_SUM_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise InvalidInputError(f"{what} rows must sum to 1 (class probabilities); row {row} sums to "
                                f"{sums[row]:.4g} ({int(off.sum())} rows off). For logits use softmax(logits) first.")
    return p


def _as_2d(values, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise InvalidInputError(f"{what} must be a 2-D array (n samples, C classes), got shape {arr.shape}.")
    if arr.size and (not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating)):
        raise InvalidInputError(f"{what} must be real numbers, got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if arr.size and not np.isfinite(arr).all():
        row = int(np.argmax(~np.isfinite(arr).all(axis=1)))
        raise InvalidInputError(f"{what} holds NaN or infinite values (first in row {row}); the model's output is "
                                "broken there: fix or drop those predictions.")
    return arr


def _check_values(arr: np.ndarray, what: str) -> None:
    if arr.size == 0:
        return
    if not np.isfinite(arr).all():
        first = int(np.argmax(~np.isfinite(arr).reshape(len(arr), -1).all(axis=1)))
        raise InvalidInputError(f"{what} holds NaN or infinite values (first at row {first}); the model's output is "
                                "broken there: fix or drop those predictions.")
    if (arr < 0).any():
        rows = arr.reshape(len(arr), -1)
        first = int(np.argmax((rows < 0).any(axis=1)))
        raise InvalidInputError(f"{what} must be probabilities (>= 0), row {first} holds {rows[first].min():.4g}; "
                                "for logits use softmax(logits) first.")
