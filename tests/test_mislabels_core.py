"""Mislabel detection at the array level: rankings and noise estimates on digits, edge cases on tiny arrays.

Digits: scikit-learn's 1,797 8x8 images, PCA-32 of the pixels (what ``bench/bench_mislabels.py`` measures over
five seeds). The bounds below leave a margin under what seed 0 gives (noted next to each).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from curate_loop.errors import InvalidInputError
from curate_loop.mislabels import MislabelResult, detect_mislabels

N_CLASSES = 10


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA

    data = load_digits()
    return PCA(32, random_state=0).fit_transform(data.data).astype(np.float32), data.target


def inject(y: np.ndarray, kind: str, rate: float, seed: int = 0) -> np.ndarray:
    """Symmetric (any other class) or pair-flip (c -> c + 1) noise on an exact number of rows."""
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    if kind == "symmetric":
        rows = rng.choice(len(y), round(rate * len(y)), replace=False)
        noisy[rows] = (y[rows] + rng.integers(1, N_CLASSES, len(rows))) % N_CLASSES
        return noisy
    for c in range(N_CLASSES):
        rows = rng.choice(np.flatnonzero(y == c), round(rate * np.sum(y == c)), replace=False)
        noisy[rows] = (c + 1) % N_CLASSES
    return noisy


def average_precision(is_error: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(is_error, score))


@pytest.mark.parametrize(("kind", "rate", "min_ap"), [
    ("symmetric", 0.2, 0.98),  # seed 0: 0.998 (plain vote 0.985)
    ("pairflip", 0.2, 0.98),  # seed 0: 0.999 (plain vote 0.905)
    ("pairflip", 0.4, 0.97),  # seed 0: 0.9996 (plain vote 0.77)
])
def test_injected_errors_rank_first(digits, kind, rate, min_ap):
    x, y = digits
    noisy = inject(y, kind, rate)
    is_error = noisy != y
    result = detect_mislabels(x, noisy)

    assert average_precision(is_error, result.score) >= min_ap
    top = np.argsort(-result.score)[: is_error.sum()]
    assert is_error[top].mean() >= 0.95  # precision at k = number of errors; seed 0: 0.98-0.99
    assert np.all((result.score >= 0) & (result.score <= 1))


def test_beats_the_plain_vote_on_pair_flip_noise(digits):
    """At 40% pair flips every neighbourhood is 60/40: the vote can't tell the errors apart, the confusion can."""
    x, y = digits
    noisy = inject(y, "pairflip", 0.4)
    is_error = noisy != y
    result = detect_mislabels(x, noisy)

    vote_ap = average_precision(is_error, 1 - result.given_prob)
    assert average_precision(is_error, result.score) >= vote_ap + 0.15  # seed 0: +0.23


def test_pair_flip_noise_matrix_is_recovered(digits):
    x, y = digits
    rate = 0.3
    result = detect_mislabels(x, inject(y, "pairflip", rate))
    truth = (1 - rate) * np.eye(N_CLASSES) + rate * np.roll(np.eye(N_CLASSES), 1, axis=0)  # P(given=i | true=j)

    assert list(result.classes) == list(range(N_CLASSES))
    assert np.abs(result.noise_matrix - truth).max() < 0.1  # seed 0: 0.05
    np.testing.assert_allclose(result.noise_matrix.sum(axis=0), 1.0)
    assert result.estimated_noise_rate == pytest.approx(rate, abs=0.03)
    top_pairs = {(r["given"], r["true"]) for r in result.noise_rates[:N_CLASSES]}
    assert top_pairs == {((c + 1) % N_CLASSES, c) for c in range(N_CLASSES)}


def test_suggestion_is_the_true_class_for_detected_errors(digits):
    x, y = digits
    noisy = inject(y, "symmetric", 0.2)
    is_error = noisy != y
    result = detect_mislabels(x, noisy)

    detected = np.flatnonzero(is_error & (result.score > 0.5))
    assert len(detected) >= 0.9 * is_error.sum()
    assert np.mean(result.suggested[detected] == y[detected]) >= 0.9  # seed 0: 0.98
    assert np.all(result.suggested[detected] != noisy[detected])
    assert np.all(result.suggested_confidence[detected] > 0.5)


def test_string_labels_give_the_same_scores_as_ints(digits):
    x, y = digits
    noisy = inject(y, "symmetric", 0.1)
    as_ints = detect_mislabels(x[:600], noisy[:600])
    as_names = detect_mislabels(x[:600], np.array([f"digit-{c}" for c in noisy[:600]], dtype=object))

    np.testing.assert_allclose(as_ints.score, as_names.score)
    assert list(as_names.classes) == [f"digit-{c}" for c in range(N_CLASSES)]
    assert [f"digit-{c}" for c in as_ints.suggested] == list(as_names.suggested)


def two_blobs(n_per_class: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two tight, well separated clusters in 3-d: 'cat' near +x, 'dog' near +y."""
    rng = np.random.default_rng(seed)
    centers = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    x = np.repeat(centers, n_per_class, axis=0) + 0.05 * rng.standard_normal((2 * n_per_class, 3))
    labels = np.array(["cat"] * n_per_class + ["dog"] * n_per_class, dtype=object)
    return x.astype(np.float32), labels


def test_a_flipped_row_in_a_clean_cluster_tops_the_ranking():
    x, labels = two_blobs()
    labels[3] = "dog"  # a cat labeled dog
    result = detect_mislabels(x, labels, k=5)

    assert isinstance(result, MislabelResult)
    assert int(np.argmax(result.score)) == 3
    assert result.score[3] > 0.9
    assert result.suggested[3] == "cat"
    assert result.given_prob[3] == pytest.approx(0.0)  # none of its 5 neighbours says dog
    assert np.all(np.delete(result.score, 3) < 0.5)


def test_a_class_with_a_single_row_is_scored_and_flagged():
    x, labels = two_blobs()
    x = np.vstack([x, [[0.0, 0.0, 1.0]]]).astype(np.float32)
    labels = np.append(labels, "bird")
    result = detect_mislabels(x, labels, k=5)

    assert result.unscorable.tolist() == [False] * 24 + [True]
    assert 0.0 <= result.score[-1] <= 1.0
    assert np.isnan(result.thresholds[list(result.classes).index("bird")])
    assert any("'bird'" in w and "single" in w for w in result.warnings)
    assert result.to_dict()["n_unscorable"] == 1


def test_rows_without_a_known_label_are_set_aside_but_get_a_suggestion():
    x, labels = two_blobs()
    labels[0] = None
    labels[1] = float("nan")
    labels[12] = "wolf"  # not in the vocabulary below
    result = detect_mislabels(x, labels, k=5, classes=["cat", "dog", "fox"])

    assert result.missing_label[[0, 1]].all() and result.unknown_label[12]
    assert np.isnan(result.score[[0, 1, 12]]).all() and np.isnan(result.given_prob[[0, 1, 12]]).all()
    assert list(result.suggested[[0, 1, 12]]) == ["cat", "cat", "dog"]
    assert list(result.classes) == ["cat", "dog"]  # "fox" has no row: not modelled, and said so
    summary = result.to_dict()
    assert (summary["n_scored"], summary["n_missing_label"], summary["n_unknown_label"]) == (21, 2, 1)
    assert any("fox" in w for w in result.warnings) and any("wolf" in w for w in result.warnings)


def test_summary_is_json_and_results_are_deterministic():
    x, labels = two_blobs()
    labels[5] = "dog"
    first, second = detect_mislabels(x, labels, k=5), detect_mislabels(x, labels, k=5)

    np.testing.assert_array_equal(first.score, second.score)
    summary = json.loads(json.dumps(first.to_dict()))
    assert summary["classes"] == ["cat", "dog"]
    assert summary["params"]["k"] == 5
    assert summary["noise_rates"][0]["given"] == "dog" and summary["noise_rates"][0]["true"] == "cat"


@pytest.mark.parametrize(("change", "message"), [
    (lambda x, y: (np.where(np.arange(24)[:, None] == 4, np.nan, x), y), "NaN or inf"),
    (lambda x, y: (x, y[:-1]), "vectors has 24 rows but labels has 23"),
    (lambda x, y: (x, np.array(["cat"] * 24, dtype=object)), "at least two classes"),
    (lambda x, y: (x[:5], y[[0, 1, 2, 12, 13]]), "k=5 neighbours need at least 6 labeled rows, got 5; pass k <= 4"),
    (lambda x, y: (x[0], y), "2-D array"),
])
def test_bad_input_says_what_to_do(change, message):
    x, labels = two_blobs()
    bad_x, bad_labels = change(x, labels)
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        detect_mislabels(bad_x, bad_labels, k=5)


@pytest.mark.parametrize(("option", "value"), [
    ("k", 0), ("temperature", 0.0), ("evidence_strength", -1.0), ("label_smoothing", 1.0), ("n_iter", 0),
])
def test_settings_out_of_range_are_refused(option, value):
    x, labels = two_blobs()
    with pytest.raises(InvalidInputError, match=option):
        detect_mislabels(x, labels, **{option: value})
