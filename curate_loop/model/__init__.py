"""The model in the loop, array-level: uncertainty scores and the built-in linear probe (no FiftyOne here)."""

from curate_loop.model.uncertainty import (UNCERTAINTY_SCORES, check_probabilities, detection_scores_for,
                                           detection_uncertainty, entropy, least_confidence, margin,
                                           score_uncertainty, softmax)

__all__ = [
    "UNCERTAINTY_SCORES", "check_probabilities", "detection_scores_for", "detection_uncertainty", "entropy",
    "least_confidence", "margin", "score_uncertainty", "softmax",
]
