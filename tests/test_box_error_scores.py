"""Box-error scores on hand-made boxes: one case per kind, the empty cases and bad input (array level, no FiftyOne)."""

import numpy as np
import pytest

from curate_loop.box_errors import BoxErrorSettings, BoxSet, box_iou, check_boxes, score_box_errors
from curate_loop.box_errors.geometry import best_per_group, pairs_within_samples
from curate_loop.errors import InvalidInputError

A = [0.10, 0.10, 0.20, 0.20]  # a digit in the top-left quarter
B = [0.60, 0.60, 0.20, 0.20]  # another, bottom right
C = [0.60, 0.10, 0.20, 0.20]  # a third, top right


def boxset(sample, boxes, classes, confidences=None, probabilities=None):
    return BoxSet(np.array(sample), np.array(boxes, dtype=float).reshape(-1, 4), np.array(classes),
                  None if confidences is None else np.array(confidences, dtype=float),
                  None if probabilities is None else np.array(probabilities, dtype=float))


def shifted(box, dx):
    return [box[0] + dx, box[1], box[2], box[3]]


# ----------------------------------------------------------------------------------------------- geometry
def test_box_iou_by_hand():
    iou = box_iou([A, [0.1, 0.1, 0.1, 0.2]], [A, B, [0.2, 0.1, 0.2, 0.2]])
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 0.0, 0.02 / 0.06])  # half overlap: 0.02 / (0.04 + 0.04 - 0.02)
    np.testing.assert_allclose(iou[1], [0.5, 0.0, 0.0])  # left half of A, touching the shifted box's edge
    assert box_iou(np.zeros((0, 4)), [A]).shape == (0, 1)
    assert box_iou([[0.1, 0.1, 0.0, 0.0]], [[0.1, 0.1, 0.0, 0.0]])[0, 0] == 0.0  # empty boxes overlap nothing


def test_pairs_within_samples_and_best_per_group():
    ia, ib = pairs_within_samples(np.array([0, 2, 0]), np.array([2, 0, 0, 1]), 3)
    assert sorted(zip(ia.tolist(), ib.tolist())) == [(0, 1), (0, 2), (1, 0), (2, 1), (2, 2)]
    assert best_per_group(np.array([0.2, 0.9, 0.5, 0.9]), np.array([1, 1, 0, 1]), 3).tolist() == [2, 1, -1]


def test_check_boxes_flags_outside_and_rejects_nan():
    outside = check_boxes([A, [0.9, 0.5, 0.2, 0.1], [-0.05, 0.0, 0.1, 0.1], [0.0, 0.0, 1.0, 1.0]], "labels")
    assert outside.tolist() == [False, True, True, False]
    with pytest.raises(InvalidInputError, match="NaN"):
        check_boxes([A, [np.nan, 0.1, 0.1, 0.1]], "labels")
    with pytest.raises(InvalidInputError, match=r"\(n, 4\)"):
        check_boxes([[0.1, 0.2, 0.3]], "labels")
    with pytest.raises(InvalidInputError, match="negative width"):
        check_boxes([[0.1, 0.2, -0.3, 0.1]], "labels")


# ----------------------------------------------------------------------------------------------- one case per kind
def test_clean_sample_scores_low():
    labels = boxset([0, 0], [A, B], [3, 5])
    preds = boxset([0, 0], [shifted(A, 0.01), B], [3, 5], [0.9, 0.95])
    result = score_box_errors(labels, preds, 1, 10)
    for kind in ("mislocated", "spurious", "duplicate", "swapped"):
        assert getattr(result, kind).max() < 0.2, kind
    assert result.overlooked.max() == 0.0
    assert result.sample_score[0] < 0.2


def test_overlooked_prediction_no_label_is_near():
    labels = boxset([0], [A], [3])
    preds = boxset([0, 0], [A, B], [3, 7], [0.9, 0.8])
    result = score_box_errors(labels, preds, 1, 10)
    assert result.overlooked.tolist() == [0.0, pytest.approx(0.8)]  # matched: 0; nothing near B: its confidence
    assert result.sample_score[0] == pytest.approx(0.8)
    assert result.class_rates["overlooked"][7] == 1.0  # no label of 7, one flagged prediction


def test_mislocated_label_gets_the_predicted_box():
    labels = boxset([0, 0], [shifted(A, 0.1), B], [3, 5])  # A's label drawn half a box to the right
    preds = boxset([0, 0], [A, B], [3, 5], [0.9, 0.9])
    result = score_box_errors(labels, preds, 1, 10)
    expected_iou = 0.02 / 0.06
    assert result.mislocated[0] == pytest.approx(0.9 * (1 - expected_iou))
    assert result.mislocated[1] == pytest.approx(0.0)
    np.testing.assert_allclose(result.suggested_box[0], A)
    assert result.mislocated_prediction.tolist() == [0, 1]
    assert result.mislocated[0] > result.spurious[0]  # the object is there, just boxed badly
    assert result.overlooked[0] < result.mislocated[0]  # the prediction is not a new object


def test_spurious_label_weighed_by_class_reliability():
    # class 3 is found every time elsewhere; its third label sits on background: spurious
    labels = boxset([0, 1, 2], [A, A, B], [3, 3, 3])
    preds = boxset([0, 1], [A, A], [3, 3], [0.9, 0.9])
    result = score_box_errors(labels, preds, 3, 10)
    reliability = (0.9 + 0.9 + 0.0) / 3
    assert result.spurious[2] == pytest.approx(reliability)
    assert result.spurious[:2] == pytest.approx([reliability * 0.1] * 2)
    assert result.mislocated[2] == 0.0 and np.isnan(result.suggested_box[2]).all()


def test_duplicate_found_from_overlap_alone():
    labels = boxset([0, 0, 0, 1], [A, B, shifted(A, 0.01), shifted(A, 0.01)], [3, 5, 3, 3])
    result = score_box_errors(labels, None, 2, 10)
    assert result.duplicate_of.tolist() == [-1, -1, 0, -1]  # the later of the pair; another sample's box is not one
    assert result.duplicate[2] == pytest.approx(box_iou([A], [shifted(A, 0.01)])[0, 0])
    assert result.duplicate[[0, 1, 3]].tolist() == [0.0, 0.0, 0.0]
    # another class on the same spot is not a duplicate
    other = score_box_errors(boxset([0, 0], [A, A], [3, 4]), None, 1, 10)
    assert other.duplicate.tolist() == [0.0, 0.0]


def test_swapped_class_from_probabilities_and_from_classes():
    labels = boxset([0, 0], [A, B], [3, 5])
    probabilities = np.full((2, 10), 0.0)
    probabilities[0, 8], probabilities[0, 3] = 0.9, 0.1  # the model sees an 8 where the label says 3
    probabilities[1, 5] = 1.0
    preds = boxset([0, 0], [A, B], [8, 5], [0.8, 0.9], probabilities)
    result = score_box_errors(labels, preds, 1, 10)
    assert result.swapped.tolist() == pytest.approx([0.8 * 0.9, 0.0])
    assert result.suggested_class.tolist() == [8, -1]
    no_probs = score_box_errors(labels, boxset([0, 0], [A, B], [8, 5], [0.8, 0.9]), 1, 10)
    assert no_probs.swapped.tolist() == pytest.approx([0.8, 0.0])
    assert no_probs.suggested_class.tolist() == [8, -1]
    embedded = score_box_errors(labels, preds, 1, 10, swap_scores=np.array([0.5, 0.2]))
    assert embedded.swapped.tolist() == pytest.approx([(0.72 + 0.5) / 2, 0.1])


# ----------------------------------------------------------------------------------------------- empty cases
def test_no_labels_every_confident_prediction_is_overlooked():
    preds = boxset([0, 1], [A, B], [3, 5], [0.7, 0.4])
    result = score_box_errors(boxset([], [], []), preds, 2, 10)
    assert len(result.mislocated) == 0 and result.suggested_box.shape == (0, 4)
    assert result.overlooked.tolist() == pytest.approx([0.7, 0.4])
    assert result.sample_score.tolist() == pytest.approx([0.7, 0.4])


def test_no_predictions_only_duplicates_and_embedding_swaps():
    labels = boxset([0, 0], [A, A], [3, 3])
    result = score_box_errors(labels, None, 1, 10, swap_scores=np.array([0.1, 0.6]))
    assert result.mislocated.tolist() == [0.0, 0.0] and result.spurious.tolist() == [0.0, 0.0]
    assert result.duplicate.tolist() == [0.0, 1.0]
    assert result.swapped.tolist() == [0.1, 0.6]
    assert len(result.overlooked) == 0
    assert any("no predictions" in w for w in result.warnings)
    empty = score_box_errors(labels, boxset([], [], [], []), 1, 10)  # a predictions field, but nothing predicted
    assert empty.spurious.tolist() == [0.0, 0.0]
    assert any("never predicted" in w for w in empty.warnings)


def test_class_never_predicted_has_no_spurious_score():
    labels = boxset([0, 0, 1], [A, B, C], [3, 7, 3])
    preds = boxset([0], [A], [3], [0.9])
    result = score_box_errors(labels, preds, 2, 10)
    assert result.spurious[1] == 0.0  # no "7" was ever predicted: its absence says nothing
    assert result.spurious[2] > 0.4  # "3" is found half the time: an unsupported 3 is suspect
    assert any("[7] never predicted" in w for w in result.warnings)


def test_no_samples_at_all():
    result = score_box_errors(boxset([], [], []), boxset([], [], [], []), 0, 3)
    assert result.sample_score.shape == (0,) and result.class_rates["spurious"].shape == (3,)


# ----------------------------------------------------------------------------------------------- bad input
def test_predictions_without_confidences_name_the_fix():
    with pytest.raises(InvalidInputError, match="no confidences.*confidence"):
        score_box_errors(boxset([0], [A], [3]), boxset([0], [A], [3]), 1, 10)


def test_boxes_outside_the_image_warn_and_still_score():
    labels = boxset([0, 0], [[0.9, 0.9, 0.3, 0.3], B], [3, 5])
    preds = boxset([0], [[0.9, 0.9, 0.3, 0.3]], [3], [0.9])
    result = score_box_errors(labels, preds, 1, 10)
    assert "1 labels outside the image" in result.warnings[0]
    assert "1 predictions outside the image" in result.warnings[1]
    assert result.mislocated[0] == pytest.approx(0.0)


def test_nan_boxes_and_bad_codes_are_errors():
    with pytest.raises(InvalidInputError, match="NaN"):
        score_box_errors(boxset([0], [[np.nan, 0, 0.1, 0.1]], [3]), None, 1, 10)
    with pytest.raises(InvalidInputError, match="classes must be integer codes in 0..9"):
        score_box_errors(boxset([0], [A], [12]), None, 1, 10)
    with pytest.raises(InvalidInputError, match="sample must be integer codes in 0..0"):
        score_box_errors(boxset([1], [A], [3]), None, 1, 10)
    with pytest.raises(InvalidInputError, match="confidences must be one value in"):
        score_box_errors(boxset([0], [A], [3]), boxset([0], [A], [3], [1.5]), 1, 10)
    with pytest.raises(InvalidInputError, match="swap_scores"):
        score_box_errors(boxset([0], [A], [3]), None, 1, 10, swap_scores=np.array([0.1, 0.2]))
    with pytest.raises(InvalidInputError, match="overlap_iou"):
        BoxErrorSettings(overlap_iou=0.8, match_iou=0.5)


def test_vectorised_matches_per_sample_scoring():
    """Scoring a dataset at once gives each sample the same scores as scoring it alone."""
    rng = np.random.default_rng(0)
    n_samples, n_labels, n_preds = 40, 120, 150
    labels = boxset(rng.integers(0, n_samples, n_labels), np.c_[rng.uniform(0, 0.7, (n_labels, 2)),
                                                                 rng.uniform(0.05, 0.3, (n_labels, 2))],
                    rng.integers(0, 4, n_labels))
    preds = boxset(rng.integers(0, n_samples, n_preds), np.c_[rng.uniform(0, 0.7, (n_preds, 2)),
                                                               rng.uniform(0.05, 0.3, (n_preds, 2))],
                   rng.integers(0, 4, n_preds), rng.uniform(0, 1, n_preds))
    whole = score_box_errors(labels, preds, n_samples, 4)
    for s in range(n_samples):
        li, pi = np.flatnonzero(labels.sample == s), np.flatnonzero(preds.sample == s)
        alone = score_box_errors(boxset(np.zeros(len(li), int), labels.boxes[li], labels.classes[li]),
                                 boxset(np.zeros(len(pi), int), preds.boxes[pi], preds.classes[pi],
                                        preds.confidences[pi]), 1, 4)
        for kind in ("mislocated", "duplicate", "swapped"):
            np.testing.assert_allclose(getattr(whole, kind)[li], getattr(alone, kind))
        np.testing.assert_allclose(whole.overlooked[pi], alone.overlooked)


def test_a_prediction_matching_the_label_confirms_its_place():
    labels = boxset([0], [shifted(A, 0.1)], [3])
    lone = score_box_errors(labels, boxset([0], [A], [3], [0.9]), 1, 10)
    confirmed = score_box_errors(labels, boxset([0, 0], [A, shifted(A, 0.11)], [3, 4], [0.9, 0.8]), 1, 10)
    assert confirmed.mislocated[0] == pytest.approx(lone.mislocated[0] * (1 - 0.8))
    np.testing.assert_allclose(confirmed.suggested_box[0], A)  # the suggestion stays the same-class box


def test_overlooked_weighs_classes_the_model_hallucinates_less():
    """Class 1's confident boxes rarely match a label (the model hallucinates 1s), class 2's mostly do: an unmatched
    2 at confidence 0.8 is likelier an overlooked object than an unmatched 1 at 0.9."""
    rng = np.random.default_rng(1)
    n = 40
    spots = np.c_[rng.uniform(0, 0.1, (n, 2)), np.full((n, 2), 0.2)]
    sample = np.arange(n)
    label_rows = np.r_[np.arange(10), np.arange(35)]  # 10 of the 1s and 35 of the 2s have a label under them
    labels = boxset(np.r_[sample[:10], sample[:35] + n], np.r_[spots[:10], spots[:35]],
                    np.r_[np.full(10, 1), np.full(35, 2)])
    preds = boxset(np.r_[sample, sample + n], np.r_[spots, spots], np.r_[np.full(n, 1), np.full(n, 2)],
                   np.r_[rng.uniform(0.85, 0.95, n), rng.uniform(0.75, 0.85, n)])
    assert len(label_rows) == len(labels.classes)
    result = score_box_errors(labels, preds, 2 * n, 10)
    unmatched_1, unmatched_2 = result.overlooked[10:n], result.overlooked[n + 35:]
    assert unmatched_2.min() > unmatched_1.max()
    assert result.overlooked[:10].max() == 0.0 and result.overlooked[n:n + 35].max() == 0.0
    assert not result.warnings
