"""Edge-case scores, edge-case saturation and near-duplicate groups (array level).

Gaussian mixtures in 64 dimensions with planted outliers, a far-away small group and planted near-duplicate
groups, whose right answers are known; the partitioned searches are checked against brute force on 20k rows.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from curate_loop.curation.duplicates import exclude_near_duplicates, find_near_duplicates, nearest_cells
from curate_loop.curation.edges import edge_neighborhoods, edge_saturation, edge_scores, saturated
from curate_loop.errors import InvalidInputError
from curate_loop.similarity.knn import recall_at_k

DIM = 64


def mixture(rng, sizes=(400, 300, 300), n_centers: int | None = None, spread: float = 0.5) -> np.ndarray:
    """Gaussian clusters around random centres; within a cluster cosine ~0.8, across ~0: no pair reaches 0.98."""
    centers = rng.normal(size=(n_centers or len(sizes), DIM))
    if n_centers:
        sizes = np.bincount(rng.integers(0, n_centers, sum(sizes)), minlength=n_centers)
    return np.concatenate([c + spread * rng.normal(size=(s, DIM)) for c, s in zip(centers, sizes)]).astype(np.float32)


def near_copies(rng, source: np.ndarray, m: int, noise: float = 0.01) -> np.ndarray:
    """``m`` copies of ``source`` with a little noise: cosine to it > 0.999."""
    return (source + noise * np.abs(source).mean() * rng.normal(size=(m, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def pool():
    """1,000 cluster rows, then 5 isolated outliers (rows 1000-1004), then a far-away group of 6 (1005-1010)."""
    rng = np.random.default_rng(0)
    clusters = mixture(rng)
    outliers = rng.normal(size=(5, DIM)).astype(np.float32)
    group = near_copies(rng, rng.normal(size=DIM), 6, noise=0.3)
    return np.concatenate([clusters, outliers, group])


OUTLIERS = np.arange(1000, 1005)
GROUP = np.arange(1005, 1011)


# -- edge scores ---------------------------------------------------------------------------------------------------
def test_planted_outliers_score_highest(pool):
    scores = edge_scores(pool[:1005])
    assert scores.dtype == np.float32 and scores.shape == (1005,)
    assert set(np.argsort(-scores)[:5]) == set(OUTLIERS)
    assert scores[OUTLIERS].min() > 0.6
    assert np.median(scores[:1000]) < 0.1  # inside a cluster: about as dense as the neighbours


def test_far_small_group_scores_above_every_cluster_member(pool):
    scores = edge_scores(pool)
    assert scores.min() >= 0 and scores.max() <= 1
    assert scores[GROUP].min() > scores[:1000].max()
    assert scores[GROUP].min() > 0.4


def test_scores_do_not_depend_on_row_order(pool):
    perm = np.random.default_rng(1).permutation(len(pool))
    np.testing.assert_allclose(edge_scores(pool[perm]), edge_scores(pool)[perm], atol=1e-5)


def test_scores_barely_move_when_the_pool_doubles():
    def scores_of(n_per_cluster: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        centers = np.random.default_rng(99).normal(size=(3, DIM))  # the same distribution, new draws
        pool = np.concatenate([c + 0.5 * rng.normal(size=(n_per_cluster, DIM)) for c in centers]
                              + [rng.normal(size=(5, DIM))]).astype(np.float32)
        scores = edge_scores(pool)
        return scores[:-5], scores[-5:]

    members, outliers = scores_of(300, seed=2)
    members_2x, outliers_2x = scores_of(600, seed=3)
    assert abs(members.mean() - members_2x.mean()) < 0.02
    assert abs(np.quantile(members, 0.9) - np.quantile(members_2x, 0.9)) < 0.03
    assert outliers.min() > 0.6 and outliers_2x.min() > 0.6


def test_tiny_pool_caps_k():
    vectors = np.array([[1, 0], [1, 0.1], [0.9, 0.1], [1, 0.05], [0.95, 0.1], [0, 1]], dtype=np.float32)
    nb = edge_neighborhoods(vectors, k=10)
    assert nb.k == 2 and nb.neighbors.shape == (6, 2)  # half the pool: a neighbourhood must stay local
    assert (nb.neighbors != np.arange(6)[:, None]).all()  # never its own neighbour
    assert np.argmax(nb.scores) == 5 and nb.scores[5] > 0.9  # the one pointing elsewhere
    assert np.all(np.diff(nb.distances, axis=1) >= 0)
    with pytest.raises(InvalidInputError, match="at least 2"):
        edge_scores(vectors[:1])


def test_approximate_search_matches_brute_force():
    rng = np.random.default_rng(4)
    pool = mixture(rng, sizes=(20_000,), n_centers=100, spread=0.6)
    exact = edge_neighborhoods(pool, exact=True)
    approx = edge_neighborhoods(pool, exact=False, seed=0)
    assert recall_at_k(approx.neighbors, exact.neighbors) > 0.99
    assert np.abs(approx.scores - exact.scores).mean() < 1e-3
    top = 200  # the top 1 %: the edge cases a user would look at
    assert len(set(np.argsort(-approx.scores)[:top]) & set(np.argsort(-exact.scores)[:top])) >= 0.97 * top


# -- saturation ----------------------------------------------------------------------------------------------------
def test_coverage_on_a_hand_checked_circle():
    # Unit vectors at angles 0, 10, 20, 90, 100 degrees; k = 1: each row's nearest is its angular neighbour
    # (row 2's is row 1, row 3's is row 4).
    angles = np.deg2rad([0, 10, 20, 90, 100])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    nb = edge_neighborhoods(vectors, k=1)
    assert nb.neighbors[:, 0].tolist() == [1, 0, 1, 4, 3]
    edge = np.array([False, False, True, True, False])
    result = nb.saturation(edge, labeled_idx=[1], batch_idx=[4])
    assert (result.n_edge, result.covered_before, result.covered_after) == (2, 0.5, 1.0)
    assert result.gain == 0.5
    assert result.to_dict() == {"n_edge": 2, "covered_before": 0.5, "covered_after": 1.0, "gain": 0.5}


def test_labeling_the_outliers_gains_their_share(pool):
    vectors = pool[:1005]
    nb = edge_neighborhoods(vectors)
    region = nb.edge_region()
    assert region[OUTLIERS].all() and region.sum() == 100  # the top 10 %
    before = nb.saturation(region, labeled_idx=[])
    assert before.covered_before == 0.0 and before.covered_after == 0.0
    result = nb.saturation(region, labeled_idx=[], batch_idx=OUTLIERS)
    assert result.gain == pytest.approx(5 / 100)  # isolated: no other edge row has an outlier among its neighbours
    one_shot = edge_saturation(vectors, region, labeled_idx=None, batch_idx=OUTLIERS)
    assert one_shot == result


def test_labeling_a_cluster_edge_covers_its_neighbourhood(pool):
    nb = edge_neighborhoods(pool[:1005])
    region = nb.edge_region()
    cluster_edge = np.flatnonzero(region[:1000])[:10]
    result = nb.saturation(region, labeled_idx=OUTLIERS, batch_idx=cluster_edge)
    assert result.covered_before == pytest.approx(0.05)
    assert result.gain >= 10 / 100  # each labeled edge row covers itself, and possibly edge rows next to it


def test_empty_region_counts_as_saturated():
    nb = edge_neighborhoods(np.eye(3, dtype=np.float32), k=2)  # every row as sparse as the others: scores 0
    assert not nb.edge_region().any()
    result = nb.saturation(None, labeled_idx=[0])
    assert (result.n_edge, result.covered_before, result.gain) == (0, 1.0, 0.0)


@pytest.mark.parametrize("gains, expected", [
    ([], False),
    ([0.01], False),  # one small batch could be bad luck
    ([0.3, 0.01, 0.005], True),
    ([0.01, 0.005, 0.1], False),
    ([0.3, 0.019, 0.0], True),
])
def test_saturated(gains, expected):
    assert saturated(gains) is expected


def test_saturated_options():
    assert saturated([0.05], min_gain=0.1, patience=1)
    with pytest.raises(InvalidInputError, match="patience"):
        saturated([0.1], patience=0)
    with pytest.raises(InvalidInputError, match="min_gain"):
        saturated([0.1], min_gain=2)


# -- near-duplicates -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted():
    """A clean mixture (no pair at 0.98) plus 8 planted groups of 2-5 near-copies of random rows."""
    rng = np.random.default_rng(5)
    base = mixture(rng, sizes=(600, 500, 400, 300))
    rows, groups, start = [base], [], len(base)
    for size in (2, 3, 2, 5, 4, 2, 3, 2):
        source = int(rng.integers(len(base)))
        rows.append(near_copies(rng, base[source], size - 1))
        groups.append(frozenset([source, *range(start, start + size - 1)]))
        start += size - 1
    return np.concatenate(rows), groups


def test_planted_groups_recovered_exactly(planted):
    vectors, groups = planted
    nd = find_near_duplicates(vectors, n_partitions=4)
    assert nd.n_groups == len(groups)
    assert {frozenset(g.tolist()) for g in nd.groups()} == set(groups)
    in_group = nd.group >= 0
    assert nd.keep[~in_group].all()
    assert np.bincount(nd.group[nd.keep & in_group], minlength=nd.n_groups).tolist() == [1] * nd.n_groups
    assert [int(g.min()) for g in nd.groups()] == sorted(min(g) for g in groups)  # numbered by smallest row
    assert nd.to_dict() == {"n_groups": 8, "n_in_groups": 23, "n_redundant": 15, "largest_group": 5,
                            "threshold": 0.98, "n_partitions": 4}


def test_no_groups_in_clean_data():
    nd = find_near_duplicates(mixture(np.random.default_rng(6)), n_partitions=3)
    assert nd.n_groups == 0 and (nd.group == -1).all() and nd.keep.all()


def test_the_most_central_member_is_kept():
    rng = np.random.default_rng(7)
    a = rng.normal(size=DIM)
    b = a + 0.1 * rng.normal(size=DIM)
    vectors = np.concatenate([[a, b, (a + b) / 2], rng.normal(size=(20, DIM))]).astype(np.float32)
    nd = find_near_duplicates(vectors, threshold=0.99)
    assert nd.groups()[0].tolist() == [0, 1, 2]
    assert nd.keep[:3].tolist() == [False, False, True]  # the midpoint is closest to both others


def test_a_cell_full_of_exact_copies():
    # 3,000 copies of one vector: pairs come in several blocks and are folded into one group; the tie for most
    # central goes to the lowest row.
    rng = np.random.default_rng(8)
    vectors = np.concatenate([rng.normal(size=(500, DIM)), np.repeat(rng.normal(size=(1, DIM)), 3000, axis=0)])
    nd = find_near_duplicates(vectors.astype(np.float32), threshold=1.0, n_partitions=1)
    assert nd.n_groups == 1 and nd.groups()[0].tolist() == list(range(500, 3500))
    assert np.flatnonzero(~nd.keep).tolist() == list(range(501, 3500))


def test_pair_split_by_a_cell_boundary_needs_the_second_cell():
    rng = np.random.default_rng(9)
    a, b = np.eye(DIM)[0], np.eye(DIM)[1]
    clusters = np.concatenate([a + 0.05 * rng.normal(size=(300, DIM)), b + 0.05 * rng.normal(size=(300, DIM))])
    middle = (a + b) / 2
    pair = np.stack([middle + 0.03 * (a - b), middle - 0.03 * (a - b)])  # cosine 0.996, one each side
    vectors = np.concatenate([clusters, pair]).astype(np.float32)
    cells, _ = nearest_cells(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), 2, seed=0)
    assert cells[600, 0] != cells[601, 0]
    plain = find_near_duplicates(vectors, n_partitions=2, second_cell_margin=None)
    assert plain.n_groups == 0  # SemDeDup alone never compares them
    nd = find_near_duplicates(vectors, n_partitions=2)
    assert nd.n_groups == 1 and nd.groups()[0].tolist() == [600, 601]


def test_partitions_match_brute_force():
    rng = np.random.default_rng(10)
    base = mixture(rng, sizes=(20_000,), n_centers=100, spread=0.6)
    sources = rng.choice(len(base), 150, replace=False)
    vectors = np.concatenate([base] + [near_copies(rng, base[s], 1 + s % 3) for s in sources])
    nd = find_near_duplicates(vectors)  # about 1,000 rows per partition
    assert nd.n_partitions == 20
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(DIM)
    index.add(unit)
    lims, _, found = index.range_search(unit, 0.98 - 1e-6)
    graph = coo_matrix((np.ones(len(found)), (np.repeat(np.arange(len(unit)), np.diff(lims).astype(np.int64)), found)),
                       shape=(len(unit), len(unit)))
    _, component = connected_components(graph, directed=False)
    truth = {frozenset(np.flatnonzero(component == c).tolist()) for c in np.flatnonzero(np.bincount(component) > 1)}
    assert len(truth) == 150
    assert {frozenset(g.tolist()) for g in nd.groups()} == truth


def test_exclude_near_duplicates(planted):
    vectors, groups = planted
    nd = find_near_duplicates(vectors, n_partitions=4)
    drop = exclude_near_duplicates(nd)
    assert drop.tolist() == ((nd.group >= 0) & ~nd.keep).tolist()  # all but one per group
    big = sorted(max(groups, key=len))
    kept = int(big[np.argmax(nd.keep[big])])
    labeled = [g for g in big if g != kept][:1]
    drop = exclude_near_duplicates(nd, labeled_idx=labeled)
    assert np.flatnonzero(drop[big]).tolist() == [i for i, g in enumerate(big) if g not in labeled]
    assert not drop[labeled].any()
    others = (nd.group >= 0) & (nd.group != nd.group[big[0]])
    assert (drop[others] == ~nd.keep[others]).all()


# -- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vectors, message", [
    (np.ones(5), "2-D"),
    (np.array([[1.0, np.nan], [1.0, 0.0]]), r"1 row\(s\) with NaN or inf \(first at row 0\)"),
    (np.array([[1.0, 0.0], [0.0, 0.0]]), r"1 row\(s\) of all zeros \(first at row 1\)"),
    (np.array([["a", "b"], ["c", "d"]]), "real numbers"),
])
def test_bad_vectors(vectors, message):
    with pytest.raises(InvalidInputError, match=message):
        edge_scores(vectors)
    with pytest.raises(InvalidInputError, match=message):
        find_near_duplicates(vectors)


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": 0.0}, "threshold"), ({"threshold": 1.5}, "threshold"), ({"threshold": True}, "threshold"),
    ({"threshold": float("nan")}, "threshold"), ({"n_partitions": 0}, "n_partitions"),
    ({"n_partitions": 11}, "n_partitions"), ({"second_cell_margin": -0.1}, "second_cell_margin"),
])
def test_bad_duplicate_options(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        find_near_duplicates(np.eye(10, dtype=np.float32), **kwargs)


def test_bad_edge_options(pool):
    with pytest.raises(InvalidInputError, match="k, the number of neighbours"):
        edge_scores(pool, k=0)
    nb = edge_neighborhoods(pool[:50])
    with pytest.raises(InvalidInputError, match="edge_mask"):
        nb.saturation(np.ones(49, dtype=bool), labeled_idx=[0])
    with pytest.raises(InvalidInputError, match="labeled_idx"):
        nb.saturation(None, labeled_idx=[50])
    with pytest.raises(InvalidInputError, match="top_fraction"):
        nb.edge_region(0)
