"""A class- and object-balanced subset of labeled data (e.g. a test set): every class as equally present as the
data allows, counted in objects, not images.

A random subset mirrors the class imbalance (a class in 2% of the objects gets ~2% of the test set, often none);
picking images one class at a time, always for the class with the fewest objects so far, lifts rare classes up to
what exists of them while a frequent class stops growing once it leads.
"""

from __future__ import annotations

import numpy as np

from curate_loop.errors import InvalidInputError


def select_class_balanced(class_counts, k: int, *, seed: int = 0) -> np.ndarray:
    """``k`` row indices of ``class_counts`` (n_samples, n_classes; objects of each class per sample).

    Each step takes, for the class with the fewest picked objects among classes that still have unpicked samples,
    a random unpicked sample containing it, preferring samples with the fewest objects of other classes (so rare
    classes do not drag frequent ones along). Rows without any object are never picked.
    """
    counts = np.asarray(class_counts)
    if counts.ndim != 2 or not np.issubdtype(counts.dtype, np.number) or (counts < 0).any():
        raise InvalidInputError(f"class_counts must be an (n_samples, n_classes) array of object counts >= 0, "
                                f"got shape {counts.shape}.")
    has_objects = counts.sum(axis=1) > 0
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= int(has_objects.sum()):
        raise InvalidInputError(f"k must be between 1 and the number of samples with labels ({int(has_objects.sum())}), "
                                f"got {k!r}.")
    rng = np.random.default_rng(seed)
    n, n_classes = counts.shape
    others = counts.sum(axis=1, keepdims=True) - counts  # objects of other classes, per sample and class
    tiebreak = rng.random(n)
    queues = []  # per class: its samples, fewest other-class objects first, random among equals
    for c in range(n_classes):
        rows = np.flatnonzero(counts[:, c] > 0)
        queues.append(rows[np.lexsort((tiebreak[rows], others[rows, c]))])
    heads = np.zeros(n_classes, dtype=np.int64)
    picked = np.zeros(n, dtype=bool)
    have = np.zeros(n_classes, dtype=np.int64)
    order = []
    while len(order) < k:
        open_classes = np.flatnonzero([heads[c] < len(queues[c]) for c in range(n_classes)])
        c = open_classes[np.argmin(have[open_classes])]
        queue = queues[c]
        while heads[c] < len(queue) and picked[queue[heads[c]]]:
            heads[c] += 1
        if heads[c] == len(queue):
            continue
        row = int(queue[heads[c]])
        picked[row] = True
        have += counts[row]
        order.append(row)
    return np.asarray(order, dtype=np.int64)
