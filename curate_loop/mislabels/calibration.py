"""Confident learning on kNN votes: per-class thresholds, the confident joint, the noise matrix.

Confident learning (Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels",
JAIR 2021; ``cleanlab.count``) counts a row as "given class i, truly class j" when its out-of-sample probability of
j reaches class j's threshold, the mean probability of j over the rows labeled j (its *self-confidence*). A
per-class threshold is the point: a class whose members are often confused (pair-flip noise, a class that looks
like another, a small class whose neighbours are mostly other classes) gets a lower bar, where a plain kNN vote
would hold every class to 1/2. Among the classes above their threshold, the one with the highest probability wins;
rows above none are left out. The counts are then calibrated so each given class keeps its size, and normalised
to the joint distribution Q(given=i, true=j).

Here the probabilities are leave-one-out kNN votes (``votes``), and the joint only starts the EM in
``posterior``, which refines it.
"""

from __future__ import annotations

import numpy as np

MIN_CLASS_SIZE = 2  # a threshold needs another row of the class to vote for it


def class_thresholds(votes: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) mean vote for class j over the rows labeled j; NaN for classes with fewer than ``MIN_CLASS_SIZE``.

    A class with a single row has no other member to vote for it: its threshold would be 0 and let every row in.
    """
    sizes = np.bincount(codes, minlength=n_classes)
    own_votes = np.bincount(codes, weights=votes[np.arange(len(codes)), codes], minlength=n_classes)
    thresholds = np.full(n_classes, np.nan)
    enough = sizes >= MIN_CLASS_SIZE
    thresholds[enough] = own_votes[enough] / sizes[enough]
    return thresholds


def confident_true_class(votes: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(n,) the most voted class among those whose vote reaches its threshold; -1 when none does."""
    bar = np.where(np.isnan(thresholds), np.inf, thresholds)
    above = votes >= bar[None, :] - 1e-6  # float32 votes against float64 means of the same numbers
    candidate = np.where(above, votes, -1.0).argmax(axis=1)
    return np.where(above.any(axis=1), candidate, -1)


def confident_joint(codes: np.ndarray, true_class: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts of rows given class i (row) whose confident true class is j (column)."""
    counted = true_class >= 0
    flat = codes[counted] * n_classes + true_class[counted]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes).astype(np.float64)


def calibrate_joint(counts: np.ndarray, given_sizes: np.ndarray, pseudo_count: float) -> np.ndarray:
    """(C, C) joint Q(given=i, true=j) summing to 1, each row scaled to the size of its given class.

    Given classes without a confident row keep their mass on the diagonal (no evidence of noise). ``pseudo_count``
    correct rows per class are added first, so no class has zero prior and no estimate rests on one row alone.
    """
    counted = counts.sum(axis=1)
    rows = np.where(counted[:, None] > 0, counts / np.maximum(counted, 1)[:, None], np.eye(len(counts)))
    scaled = rows * given_sizes[:, None] + pseudo_count * np.eye(len(counts))
    return scaled / scaled.sum()


def noise_matrix(joint: np.ndarray) -> np.ndarray:
    """(C, C) P(given=i | true=j) from the joint: each column normalised (cleanlab's ``noise_matrix``)."""
    return joint / np.maximum(joint.sum(axis=0, keepdims=True), np.finfo(float).tiny)
