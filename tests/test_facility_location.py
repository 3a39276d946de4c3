"""Greedy facility location on hand-computed arrays: each pick is the candidate with the largest coverage gain over
the clients, covered rows gain nothing and are never picked, near-duplicates of a pick are passed over."""

from __future__ import annotations

import numpy as np
import pytest

from curate_loop.curation import facility
from curate_loop.curation.facility import facility_location


def _at_degrees(*angles: float) -> np.ndarray:
    rad = np.deg2rad(angles)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


ROWS = _at_degrees(0, 10, 20, 90)  # every row a client and a candidate
ALL = np.ones(4, dtype=bool)
NONE = np.zeros(4, dtype=bool)


def test_each_pick_has_the_largest_gain():
    # first gains: 0 deg 1 + cos10 + cos20 = 2.9245; 10 deg 1 + 2 cos10 + cos80 = 3.1433; 20 deg 1 + cos10 + cos20 +
    # cos70 = 3.2665; 90 deg 1 + cos80 + cos70 = 1.5157 -> 20 deg. Then 90 deg gains 1 - cos70 = .658, 0 deg
    # (1 - cos20) + (cos10 - cos20)... = .0603, 10 deg .0603: -> 90 deg.
    assert facility_location(ROWS, 2, ALL, ALL, NONE).tolist() == [2, 3]


def test_covered_rows_gain_nothing_and_are_never_picked():
    covered = np.array([False, False, True, False])  # 20 deg is labeled: the pick after it, 90 deg, comes first
    assert facility_location(ROWS, 1, ALL, ALL, covered).tolist() == [3]
    assert 2 not in facility_location(ROWS, 3, ALL, ALL, covered).tolist()


def test_only_candidates_are_picked_and_only_clients_count():
    candidates = np.array([True, True, False, False])
    # the 0 deg row the only client: 0 deg gains 1, 10 deg cos10 = .985
    assert facility_location(ROWS, 1, candidates, np.array([True, False, False, False]), NONE).tolist() == [0]
    # 90 deg a client too: 0 deg gains 1 + 0, 10 deg .985 + cos80 = 1.158
    assert facility_location(ROWS, 1, candidates, np.array([True, False, False, True]), NONE).tolist() == [1]


def test_near_duplicates_of_a_pick_are_passed_over():
    rows = _at_degrees(0, 0.5, 90)  # rows 0 and 1 are near-duplicates (cos .99996)
    everything = np.ones(3, dtype=bool)
    without = facility_location(rows, 3, everything, everything, np.zeros(3, dtype=bool))
    assert sorted(without.tolist()) == [0, 1, 2]
    with_threshold = facility_location(rows, 3, everything, everything, np.zeros(3, dtype=bool),
                                       near_dup_threshold=0.98)
    assert len(with_threshold) == 2 and 2 in with_threshold.tolist()  # the candidates ran out


def test_large_inputs_are_sampled_with_the_seed(monkeypatch):
    monkeypatch.setattr(facility, "MAX_CANDIDATES", 50)
    monkeypatch.setattr(facility, "MAX_CLIENTS", 80)
    x = np.random.default_rng(0).normal(size=(400, 6))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    candidates = np.zeros(400, dtype=bool)
    candidates[100:300] = True
    first = facility_location(unit, 5, candidates, np.ones(400, dtype=bool), np.zeros(400, dtype=bool), seed=3)
    again = facility_location(unit, 5, candidates, np.ones(400, dtype=bool), np.zeros(400, dtype=bool), seed=3)
    assert first.tolist() == again.tolist() and len(set(first.tolist())) == 5
    assert ((first >= 100) & (first < 300)).all()


@pytest.mark.parametrize("k", [0, 3])
def test_no_candidates_or_no_budget_gives_nothing(k):
    candidates = NONE if k else ALL
    assert facility_location(ROWS, k, candidates, ALL, NONE).tolist() == []
