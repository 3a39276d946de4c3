"""Mislabel detection without a trained model: which labels disagree with visually similar labeled items.

Array-level code only (embeddings and labels in, scores and an estimated noise matrix out; no FiftyOne); the
FiftyOne glue lives in ``curate_loop.runs``.

- ``detector``: :func:`detect_mislabels`, the public entry point, and its :class:`MislabelResult`;
- ``labels``: class names to codes, missing and unknown labels set aside;
- ``votes``: leave-one-out, similarity-weighted kNN votes over a cosine kNN graph;
- ``calibration``: confident learning (per-class thresholds, confident joint, noise matrix);
- ``posterior``: the true-class posteriors, an EM over the confusion and the classes' neighbourhood profiles.
"""

from curate_loop.mislabels.detector import DEFAULT_K, MislabelResult, detect_mislabels

__all__ = ["DEFAULT_K", "MislabelResult", "detect_mislabels"]
