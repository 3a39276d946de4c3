"""Leave-one-out, similarity-weighted kNN votes: what the labeled neighbours of each row say about its class.

Each row's ``k`` nearest other labeled rows (cosine, faiss, self excluded, so every vote is out-of-sample) are
weighted by ``softmax((cos - 1) / temperature)`` over the row's neighbours: a closer neighbour counts more, and at
a temperature of 0.2 a neighbour 0.1 further away in cosine still counts about 60% as much (on digits, AP was flat
from 0.1 to 1.0 and dropped below 0.05, where a single neighbour decides). The same weights average any per-row
quantity: the given labels (a plain kNN vote) or the rows' estimated true-class probabilities (a vote of the
denoised neighbours, see ``posterior``).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def neighbor_weights(similarities: np.ndarray, temperature: float) -> np.ndarray:
    """(n, k) cosine similarities to the neighbours -> (n, k) float32 weights, each row summing to 1."""
    logits = (np.asarray(similarities, dtype=np.float64) - 1.0) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def label_votes(neighbors: np.ndarray, weights: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) float32: the weighted share of each row's neighbours carrying each class (rows sum to 1).

    ``neighbors`` (n, k) are row numbers into ``codes`` (n_labeled,), the class code of every labeled row.
    """
    n, k = neighbors.shape
    flat = np.repeat(np.arange(n), k) * n_classes + codes[neighbors].ravel()
    votes = np.bincount(flat, weights=weights.ravel().astype(np.float64), minlength=n * n_classes)
    return votes.reshape(n, n_classes).astype(np.float32)


def neighbor_average(neighbors: np.ndarray, weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(n, C): the weighted mean of the neighbours' rows of ``values`` (m, C), one sparse product."""
    n, k = neighbors.shape
    mixing = sparse.csr_matrix((weights.ravel(), neighbors.ravel(), np.arange(0, n * k + 1, k)),
                               shape=(n, values.shape[0]))
    return np.asarray(mixing @ values, dtype=np.float32)


def by_class_sum(codes: np.ndarray, values: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C'): the sum of ``values`` (n, C') over the rows of each class code (rows with code -1 are skipped)."""
    rows = np.flatnonzero(codes >= 0)
    grouping = sparse.csr_matrix((np.ones(len(rows)), (codes[rows], rows)), shape=(n_classes, len(codes)))
    return np.asarray(grouping @ values, dtype=np.float64)
