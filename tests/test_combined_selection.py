"""Combined selection on hand-made arrays: each strength at 0 switches its objective off, a huge uncertainty
strength gives the most uncertain rows, class caps hold, and the contribution figures match hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from curate_loop.curation.clustering import cluster_embeddings
from curate_loop.curation.combined import (Objectives, _n_candidates, coverage_gain, select_combined,
                                           uncertainty_percentile)
from curate_loop.curation.strategies import select_cluster_balanced
from curate_loop.errors import InvalidInputError


@pytest.fixture(scope="module")
def pool():
    """300 points in 6 well-separated groups (8-D), a seeded random uncertainty and a predicted class per group."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 8)) * 4
    y = np.repeat(np.arange(6), 50)
    x = centres[y] + rng.normal(size=(300, 8))
    uncertainty = rng.random(300)
    clusters = cluster_embeddings(x, seed=0)
    return x, y, uncertainty, clusters


def test_uncertainty_strength_zero_is_exactly_the_diversity_pick(pool):
    x, y, u, clusters = pool
    labeled = np.arange(0, 300, 37)
    expected = select_cluster_balanced(x, 12, clusters=clusters, labeled_idx=labeled, seed=5)
    got = select_combined(x, 12, objectives=Objectives(uncertainty=0, class_balance=0), uncertainty=u,
                          predicted_classes=np.eye(6, dtype=bool)[y], labeled_idx=labeled, clusters=clusters, seed=5)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.reasons, expected.reasons)
    assert got.mode == "diversity only: uncertainty strength 0"


def test_no_uncertainty_means_pure_diversity_and_says_why(pool):
    x, _, _, clusters = pool
    expected = select_cluster_balanced(x, 10, clusters=clusters, seed=1)
    got = select_combined(x, 10, uncertainty=None, clusters=clusters, seed=1)
    np.testing.assert_array_equal(got.indices, expected.indices)
    assert got.mode.startswith("diversity only: no uncertainty")
    assert got.contributions["uncertainty"] is None and got.contributions["class_balance"] is None


def test_huge_uncertainty_strength_gives_the_k_most_uncertain(pool):
    x, _, u, clusters = pool
    labeled = np.array([int(np.argmax(u))])  # the most uncertain row is labeled: never picked
    got = select_combined(x, 8, objectives=Objectives(uncertainty=1e9, class_balance=0), uncertainty=u,
                          labeled_idx=labeled, clusters=clusters, near_dup_threshold=None)
    order = np.argsort(-u)
    np.testing.assert_array_equal(np.sort(got.indices), np.sort(order[1:9]))
    assert got.n_candidates == 8 and got.mode == "combined"
    assert got.contributions["uncertainty"] > 0.97


def test_diversity_strength_zero_ranks_by_uncertainty_alone():
    x = np.random.default_rng(0).normal(size=(6, 3))
    u = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.8])
    got = select_combined(x, 3, objectives=Objectives(diversity=0, uncertainty=1), uncertainty=u)
    assert got.indices.tolist() == [1, 5, 3]  # 0.9, 0.8, 0.7
    assert got.reasons.tolist() == ["uncertain"] * 3


def test_the_trust_ramp_scales_uncertainty_with_the_labels_per_class():
    # r = 0.5 * labels / (5 * classes): 25 labels of 10 classes -> r = 0.25: 10 * 100 ** (1 / 1.25) = 398.1
    assert _n_candidates(10, 1000, Objectives(), n_labeled=25, n_classes=10) == 399
    assert _n_candidates(10, 1000, Objectives(), n_labeled=50, n_classes=10) == 216  # 5 per class: r as given
    assert _n_candidates(10, 1000, Objectives(), n_labeled=100, n_classes=10) == 100  # r = 1: 10 * 100 ** 0.5
    assert _n_candidates(10, 1000, Objectives(trust_labels_per_class=None), n_labeled=25, n_classes=10) == 216
    assert _n_candidates(10, 1000, Objectives(), n_labeled=None, n_classes=10) == 216  # nothing to scale by
    with pytest.raises(InvalidInputError, match="trust_labels_per_class must be a number > 0"):
        Objectives(trust_labels_per_class=0)


def test_candidate_count_interpolates_between_the_pool_and_k():
    assert _n_candidates(10, 1000, Objectives()) == 216  # default r = 0.5: 10 * 100 ** (2/3) = 215.4
    assert _n_candidates(10, 1000, Objectives(diversity=1, uncertainty=0)) == 1000
    assert _n_candidates(10, 1000, Objectives(diversity=1, uncertainty=1)) == 100  # 10 * sqrt(100)
    assert _n_candidates(10, 1000, Objectives(diversity=1, uncertainty=3)) == 32  # 10 * 100 ** (1/4) = 31.6
    assert _n_candidates(10, 1000, Objectives(diversity=2, uncertainty=6)) == 32  # only the ratio counts
    assert _n_candidates(10, 1000, Objectives(diversity=0, uncertainty=1)) == 10


def test_combined_picks_come_from_the_uncertain_candidates(pool):
    x, _, u, clusters = pool
    got = select_combined(x, 10, objectives=Objectives(uncertainty=1, class_balance=0), uncertainty=u,
                          clusters=clusters, near_dup_threshold=None)
    assert got.n_candidates == math.ceil(10 * math.sqrt(30))  # 55
    threshold = np.sort(u)[::-1][got.n_candidates - 1]
    assert (u[got.indices] >= threshold).all()
    assert all(r.startswith("uncertain:") for r in got.reasons)
    assert got.contributions["uncertainty"] > 0.8  # top-55 of 300 rows: their percentiles start at 0.82


def test_class_caps_with_uncertainty_alone_are_hand_checkable():
    # rows 0-29 class a with uncertainty .99 .. .70, rows 30-39 class b with .29 .. .20
    x = np.random.default_rng(1).normal(size=(40, 4))
    u = np.concatenate([0.99 - 0.01 * np.arange(30), 0.29 - 0.01 * np.arange(10)])
    member = np.zeros((40, 2), dtype=bool)
    member[:30, 0] = member[30:, 1] = True
    strict = Objectives(diversity=0, class_balance=1e9)  # caps ceil(4 * 0.5 * (1 + 1e-9)) = 2 per class
    got = select_combined(x, 4, objectives=strict, uncertainty=u, predicted_classes=member, class_names=["a", "b"])
    assert got.indices.tolist() == [0, 1, 30, 31]
    assert got.class_histogram == {"batch": {"a": 2, "b": 2}, "pool": {"a": 30, "b": 10}}
    assert got.contributions["class_balance"] == 0.0 and got.contributions["class_balance_pool"] == 0.25
    loose = Objectives(diversity=0, class_balance=1)  # caps ceil(4 * 0.5 * 2) = 4: uncertainty decides
    assert select_combined(x, 4, objectives=loose, uncertainty=u, predicted_classes=member).indices.tolist() == \
        [0, 1, 2, 3]
    skewed = Objectives(diversity=0, class_balance=1e9, class_target={"a": 3, "b": 1})  # caps 3 and 1
    got = select_combined(x, 4, objectives=skewed, uncertainty=u, predicted_classes=member, class_names=["a", "b"])
    assert got.indices.tolist() == [0, 1, 2, 30]


def test_class_caps_hold_with_diversity(pool):
    x, y, u, clusters = pool
    member = np.zeros((300, 6), dtype=bool)
    member[:, 0] = True  # the model predicts class 0 everywhere but in group 5
    member[y == 5] = np.eye(6, dtype=bool)[5]
    got = select_combined(x, 6, objectives=Objectives(class_balance=1e9), uncertainty=u, predicted_classes=member,
                          clusters=clusters, near_dup_threshold=None)
    # caps: ceil(6 / 6) = 1 per class; only classes 0 and 5 exist, so two picks obey the caps and the rest is relaxed
    assert got.quota_relaxed
    first_two = member[got.indices[:2]].sum(axis=0)
    assert first_two[0] == 1 and first_two[5] == 1
    assert len(got.indices) == 6 and len(set(got.indices.tolist())) == 6


def test_probability_rows_count_by_their_argmax():
    x = np.random.default_rng(2).normal(size=(4, 3))
    probs = np.array([[0.6, 0.4], [0.45, 0.55], [0.9, 0.1], [0.2, 0.8]])
    got = select_combined(x, 2, objectives=Objectives(diversity=0, class_balance=1e9),
                          uncertainty=np.array([0.9, 0.1, 0.8, 0.7]), predicted_classes=probs)
    assert got.indices.tolist() == [0, 3]  # 0 (class 0), 2 is class 0 too (full), 3 is class 1


def test_contribution_figures_by_hand():
    # percentile: picks score 0.4 among (0.1, 0.2, 0.3, 0.4): 3 below, 4 up to it -> mid-rank 3.5 / 4
    assert uncertainty_percentile(np.array([0.1, 0.2, 0.3, 0.4]), np.ones(4, dtype=bool), np.array([3])) == 0.875
    # coverage: labeled (1, 0); pool (0, 1) and (-1, 0) at sqrt 2 and 2; picking (0, 1) leaves 0 and sqrt 2:
    # 1 - (sqrt 2 / 2) / ((sqrt 2 + 2) / 2) = 1 - 1.41421 / 3.41421 = 0.5858
    unit = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    gain = coverage_gain(unit, np.array([True, False, False]), np.array([False, True, True]), np.array([1]))
    assert gain == pytest.approx(0.5858, abs=1e-4)


@pytest.mark.parametrize("kwargs, words", [
    (dict(uncertainty=np.full(10, np.nan)), "NaN"),
    (dict(uncertainty=np.zeros(9)), "\\(10,\\)"),
    (dict(uncertainty=np.zeros(10), predicted_classes=np.zeros((10, 2)) + 2), "\\[0, 1\\]"),
    (dict(uncertainty=np.zeros(10), predicted_classes=np.eye(2, dtype=bool)[[0, 1] * 5], class_names=["a"]),
     "1 names for 2"),
    (dict(uncertainty=np.zeros(10), predicted_classes=np.eye(2, dtype=bool)[[0, 1] * 5], class_names=["a", "b"],
          objectives=Objectives(class_target={"c": 1})), "do not have: \\['c'\\]"),
])
def test_bad_input_is_refused(kwargs, words):
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(InvalidInputError, match=words):
        select_combined(x, 2, **kwargs)


@pytest.mark.parametrize("kwargs, words", [
    (dict(uncertainty=-1), "uncertainty must be a finite number >= 0"),
    (dict(diversity=0, uncertainty=0), "both 0"),
    (dict(uncertainty_score="variance"), "margin, least_confidence, entropy"),
    (dict(class_target="rare"), "'uniform' or a mapping"),
    (dict(class_target={"a": -1}), "shares must be numbers >= 0"),
])
def test_bad_objectives_are_refused(kwargs, words):
    with pytest.raises(InvalidInputError, match=words):
        Objectives(**kwargs)


def test_without_scores_every_strength_falls_back_to_diversity(pool):
    x, y, _, clusters = pool
    expected = select_cluster_balanced(x, 5, clusters=clusters, seed=2)
    got = select_combined(x, 5, objectives=Objectives(diversity=0, uncertainty=1), uncertainty=None,
                          predicted_classes=np.eye(6, dtype=bool)[y], clusters=clusters, seed=2)
    np.testing.assert_array_equal(got.indices, expected.indices)
    assert got.mode.startswith("diversity only")


def test_candidates_near_a_labeled_row_are_skipped():
    # rows 0 and 1 point the same way (cosine 1); row 0 is labeled, so row 1, the most uncertain, is a near-duplicate
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 5))
    x[1] = 2 * x[0]
    u = np.linspace(0.0, 0.5, 60)
    u[1] = 1.0
    got = select_combined(x, 3, objectives=Objectives(class_balance=0), uncertainty=u, labeled_idx=[0])
    assert 1 not in got.indices.tolist()
    assert got.near_duplicates_skipped >= 1


def test_uncertain_candidates_are_compared_centred_so_a_common_offset_changes_nothing(pool):
    # Raw cosine is not shift-invariant: an offset shared by every row (the cone CLIP embeddings or non-negative
    # features sit in) moves today's diversity pick. The combined step compares the candidates centred on the mean.
    x, y, u, clusters = pool
    offset = np.full(x.shape[1], 20.0)
    plain = select_combined(x, 12, objectives=Objectives(uncertainty=1.0), uncertainty=u, labeled_idx=[0, 60],
                            clusters=clusters, seed=1)
    shifted = select_combined(x + offset, 12, objectives=Objectives(uncertainty=1.0), uncertainty=u,
                              labeled_idx=[0, 60], clusters=clusters, seed=1)
    assert plain.mode == "combined" and plain.n_candidates < 300
    np.testing.assert_array_equal(np.sort(shifted.indices), np.sort(plain.indices))
    raw = [select_cluster_balanced(v, 12, labeled_idx=[0, 60], clusters=clusters, seed=1).indices
           for v in (x, x + offset)]
    assert set(raw[0]) != set(raw[1])


def test_a_row_at_the_mean_falls_back_to_raw_cosine_instead_of_failing(pool):
    x, _, u, clusters = pool
    at_mean = x.copy()
    at_mean[5] = np.delete(x, 5, axis=0).mean(axis=0)  # then the mean of all rows is row 5 itself
    got = select_combined(at_mean, 10, objectives=Objectives(uncertainty=1.0), uncertainty=u, clusters=clusters)
    assert len(got.indices) == 10 and len(set(got.indices.tolist())) == 10
