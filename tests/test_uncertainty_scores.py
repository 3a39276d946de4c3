"""Uncertainty scores on tiny arrays whose values are worked out by hand (in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from curate_loop.errors import InvalidInputError
from curate_loop.model.uncertainty import (UNCERTAINTY_SCORES, detection_scores_for, detection_uncertainty, entropy,
                                           least_confidence, margin, score_uncertainty, softmax)

# rows: a confident-ish prediction, a uniform one, a certain one, a tie between two classes
PROBS = np.array([[0.7, 0.2, 0.1],
                  [1 / 3, 1 / 3, 1 / 3],
                  [1.0, 0.0, 0.0],
                  [0.5, 0.5, 0.0]])


def test_least_confidence_is_one_minus_the_top_probability():
    # 1 - 0.7, 1 - 1/3, 1 - 1, 1 - 0.5
    np.testing.assert_allclose(least_confidence(PROBS), [0.3, 2 / 3, 0.0, 0.5], atol=1e-12)


def test_least_confidence_accepts_predicted_class_confidences():
    np.testing.assert_allclose(least_confidence(np.array([0.9, 0.25, 1.0])), [0.1, 0.75, 0.0], atol=1e-12)


def test_margin_is_one_minus_the_gap_between_the_two_likeliest():
    # 1 - (0.7 - 0.2) = 0.5; uniform: gap 0 -> 1; certain: gap 1 -> 0; tie 0.5/0.5 -> 1
    np.testing.assert_allclose(margin(PROBS), [0.5, 1.0, 0.0, 1.0], atol=1e-12)


def test_entropy_is_normalised_by_log_of_the_class_count():
    # row 0: -(0.7 ln .7 + .2 ln .2 + .1 ln .1) = 0.249672 + 0.321888 + 0.230259 = 0.801819; / ln 3 (1.098612)
    # row 3: ln 2 / ln 3 = 0.693147 / 1.098612
    np.testing.assert_allclose(entropy(PROBS), [0.729847, 1.0, 0.0, 0.630930], atol=1e-6)


def test_one_class_is_never_uncertain():
    one = np.ones((3, 1))
    for score in UNCERTAINTY_SCORES:
        np.testing.assert_array_equal(score_uncertainty(one, score), [0.0, 0.0, 0.0])


def test_softmax_gives_back_the_probabilities_of_log_probabilities():
    # logits shifted by a constant give the same probabilities: exp(ln p + 5) / sum = p
    np.testing.assert_allclose(softmax(np.log(PROBS[:1]) + 5.0), PROBS[:1], atol=1e-12)
    # softmax(0, ln 3) = (1, 3) / 4
    np.testing.assert_allclose(softmax(np.array([[0.0, np.log(3.0)]])), [[0.25, 0.75]], atol=1e-12)
    # huge logits do not overflow
    np.testing.assert_allclose(softmax(np.array([[1000.0, 1000.0]])), [[0.5, 0.5]])


def test_scores_from_logits_match_scores_from_probabilities():
    logits = np.log(np.array([[0.7, 0.2, 0.1]]))
    np.testing.assert_allclose(score_uncertainty(softmax(logits), "margin"), [0.5], atol=1e-12)


def test_empty_input_gives_empty_scores():
    for score in UNCERTAINTY_SCORES:
        assert score_uncertainty(np.zeros((0, 3)), score).shape == (0,)


@pytest.mark.parametrize("bad, words", [
    (np.array([[0.5, np.nan, 0.5]]), "NaN"),
    (np.array([[1.2, -0.2]]), ">= 0"),
    (np.array([[2.0, 3.0]]), "sum to 1"),
    (np.array([0.5, 0.5]), "2-D"),
])
def test_bad_probabilities_are_refused_with_the_fix(bad, words):
    with pytest.raises(InvalidInputError, match=words):
        margin(bad)


def test_bad_confidences_and_unknown_score_are_refused():
    with pytest.raises(InvalidInputError, match="NaN"):
        least_confidence(np.array([0.5, np.nan]))
    with pytest.raises(InvalidInputError, match="in \\[0, 1\\]"):
        least_confidence(np.array([3.0]))
    with pytest.raises(InvalidInputError, match="margin, least_confidence, entropy"):
        score_uncertainty(PROBS, "variance")


# -- detections ---------------------------------------------------------------------------------------------------
# four samples; sample 0 has boxes with confidences 0.9 and 0.6, sample 2 one box at 0.8; samples 1 and 3 none
INDEX = np.array([0, 0, 2])
CONF = np.array([0.9, 0.6, 0.8])
BOX_PROBS = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2]])


def test_detection_aggregates_per_sample():
    got = detection_uncertainty(INDEX, 4, CONF, probs=BOX_PROBS, labels=np.array(["cat", "dog", "cat"]),
                                rare_classes={"dog"})
    # worst box: max(1 - .9, 1 - .6) = 0.4; sample 2: 1 - .8 = 0.2; no boxes: 0
    np.testing.assert_allclose(got["least_confidence"], [0.4, 0.0, 0.2, 0.0], atol=1e-12)
    np.testing.assert_array_equal(got["count"], [2, 0, 1, 0])
    assert got["count"].dtype == np.int64
    # binary entropies in bits: H(.9) = 0.468996, H(.6) = 0.970951, H(.8) = 0.721928; sample 0 averages two
    np.testing.assert_allclose(got["mean_entropy"], [(0.468996 + 0.970951) / 2, 0.0, 0.721928, 0.0], atol=1e-6)
    # box margins 1 - (.9 - .1) = .2, 1 - (.6 - .4) = .8, 1 - (.8 - .2) = .4; worst per sample
    np.testing.assert_allclose(got["margin"], [0.8, 0.0, 0.4, 0.0], atol=1e-12)
    np.testing.assert_array_equal(got["rare_class"], [1.0, 0.0, 0.0, 0.0])


def test_detections_without_probabilities_have_no_entropy_and_fall_back_to_least_confidence():
    got = detection_uncertainty(INDEX, 4, CONF)
    assert "mean_entropy" not in got and "margin" not in got
    np.testing.assert_array_equal(got["rare_class"], np.zeros(4))
    scores, key = detection_scores_for(got, "entropy")
    assert key == "least_confidence"
    np.testing.assert_allclose(scores, [0.4, 0.0, 0.2, 0.0], atol=1e-12)
    with_probs = detection_uncertainty(INDEX, 4, CONF, probs=BOX_PROBS)
    assert detection_scores_for(with_probs, "margin")[1] == "margin"
    assert detection_scores_for(with_probs, "entropy")[1] == "mean_entropy"


def test_no_boxes_at_all():
    got = detection_uncertainty(np.array([], dtype=np.int64), 3, np.array([]), probs=np.zeros((0, 2)))
    np.testing.assert_array_equal(got["least_confidence"], np.zeros(3))
    np.testing.assert_array_equal(got["mean_entropy"], np.zeros(3))
    np.testing.assert_array_equal(got["count"], [0, 0, 0])


def test_bad_detection_input_is_refused():
    with pytest.raises(InvalidInputError, match="outside \\[0, 2\\)"):
        detection_uncertainty(np.array([0, 2]), 2, np.array([0.5, 0.5]))
    with pytest.raises(InvalidInputError, match="2 values for 3 boxes"):
        detection_uncertainty(INDEX, 4, np.array([0.5, 0.5]))
    with pytest.raises(InvalidInputError, match="NaN"):
        detection_uncertainty(INDEX, 4, np.array([0.5, np.nan, 0.5]))
    with pytest.raises(InvalidInputError, match=">= 0"):
        detection_uncertainty(INDEX, 4, CONF, probs=np.array([[1.1, -0.1], [0.5, 0.5], [0.5, 0.5]]))
    with pytest.raises(InvalidInputError, match="needs labels"):
        detection_uncertainty(INDEX, 4, CONF, rare_classes={"dog"})
