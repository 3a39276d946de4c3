"""Similarity search: array-level faiss kNN (recall, self-exclusion, errors) and the FiftyOne Brain backend
against real MongoDB (near-duplicate sort, reload in a fresh process, text prompts, views, patches, cleanup).

FiftyOne is imported inside fixtures and tests, after conftest has pointed it at the run's own database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curate_loop.errors import InvalidInputError
from curate_loop.similarity import knn
from curate_loop.vectors import normalize_rows

# -- array level ---------------------------------------------------------------------------------------------


def clustered(n: int, d: int, n_clusters: int, spread: float = 1.0, seed: int = 0) -> np.ndarray:
    """A Gaussian mixture whose clusters have different widths (0.5x to 1.5x ``spread``)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d), dtype=np.float32)
    labels = rng.integers(0, n_clusters, n)
    widths = rng.uniform(0.5, 1.5, n_clusters).astype(np.float32) * spread
    return centers[labels] + widths[labels, None] * rng.standard_normal((n, d), dtype=np.float32)


@pytest.fixture(scope="module")
def clustered_30k() -> np.ndarray:
    return clustered(30_000, 64, 300)


def test_small_sets_get_an_exact_index_large_ones_ivf(clustered_30k):
    import faiss

    assert isinstance(knn.build_index(clustered_30k[:knn.EXACT_MAX_SIZE]), faiss.IndexFlatIP)
    ivf = knn.build_index(clustered_30k)
    assert isinstance(ivf, faiss.IndexIVFFlat)
    assert ivf.nlist == knn.default_nlist(30_000) == 693
    assert 1 <= ivf.nprobe < ivf.nlist // 4  # tuned to a small fraction of the lists, not exhaustive


def test_approximate_knn_graph_recall_at_10_is_at_least_095(clustered_30k):
    exact_idx, exact_sims = knn.knn_graph(clustered_30k, 10, exact=True)
    approx_idx, approx_sims = knn.knn_graph(clustered_30k, 10, exact=False)
    recall = knn.recall_at_k(approx_idx, exact_idx)
    assert recall >= 0.95, recall
    # Approximate similarities are real cosines of the returned pairs, never better than the exact k-th.
    x = normalize_rows(clustered_30k)
    rows = np.arange(0, 30_000, 997)
    recomputed = np.einsum("rd,rkd->rk", x[rows], x[approx_idx[rows]])
    np.testing.assert_allclose(approx_sims[rows], recomputed, atol=1e-4)
    assert (approx_sims[:, -1] <= exact_sims[:, -1] + 1e-5).all()


def test_knn_graph_excludes_self_and_finds_twins():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((200, 16))
    x = np.concatenate([base, base * 3.0])  # row i and i+200 point the same way: cosine 1
    idx, sims = knn.knn_graph(x, 5)
    rows = np.arange(400)
    assert idx.shape == sims.shape == (400, 5)
    assert not (idx == rows[:, None]).any()
    np.testing.assert_array_equal(idx[:, 0], (rows + 200) % 400)
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # best first


def test_normalize_rows_zero_row_policy_is_explicit():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    kept = normalize_rows(x, zero_rows="keep")
    assert kept.dtype == np.float32 and kept.flags.c_contiguous
    np.testing.assert_allclose(kept, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]], atol=1e-7)
    with pytest.raises(InvalidInputError, match=r"1 row\(s\) of all zeros \(first at row 1\)"):
        normalize_rows(x, zero_rows="raise")
    with pytest.raises(InvalidInputError, match=r"zero_rows must be one of \('keep', 'raise'\), got 'drop'"):
        normalize_rows(x, zero_rows="drop")
    assert normalize_rows(np.empty((0, 4)), min_rows=0).shape == (0, 4)
    with pytest.raises(InvalidInputError, match=r"need at least 2 embeddings \(rows\), got 1"):
        normalize_rows(x[:1], min_rows=2)


def test_normalize_rows_blocks_give_the_whole_array_answer(monkeypatch):
    """Rows are normalised and checked block by block (bounded temporaries): block edges change nothing."""
    import curate_loop.vectors as vectors

    x = np.random.default_rng(3).standard_normal((10, 5))
    whole = vectors.normalize_rows(x)
    monkeypatch.setattr(vectors, "BLOCK_ROWS", 3)
    np.testing.assert_array_equal(vectors.normalize_rows(x), whole)
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-6)
    x[7, 2] = np.inf
    x[9, 0] = np.nan
    with pytest.raises(InvalidInputError, match=r"2 row\(s\) with NaN or inf \(first at row 7\)"):
        vectors.normalize_rows(x)


def test_normalize_rows_centre_subtracts_the_mean_block_by_block(monkeypatch):
    """centre=True: the rows minus their mean, then unit length (hand-computed); a row at the mean is a zero row;
    NaN rows do not leak into the mean before they are refused; block edges change nothing."""
    import curate_loop.vectors as vectors

    x = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 2.0]])  # mean (2, 2/3)
    expected = np.array([[-1.0, -2 / 3], [1.0, -2 / 3], [0.0, 4 / 3]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors.normalize_rows(x, centre=True), expected, atol=1e-6)
    shifted = x + 1000.0  # a common offset is gone after centring (raw cosine would call every row the same)
    np.testing.assert_allclose(vectors.normalize_rows(shifted, centre=True), expected, atol=1e-4)
    assert (vectors.normalize_rows(shifted) @ vectors.normalize_rows(shifted).T).min() > 0.999
    at_mean = np.vstack([x, [[2.0, 2 / 3]]])  # the mean of the four rows is still (2, 2/3)
    assert not vectors.normalize_rows(at_mean, centre=True)[3].any()
    with pytest.raises(InvalidInputError, match=r"1 row\(s\) equal to the mean of all rows \(first at row 3\)"):
        vectors.normalize_rows(at_mean, centre=True, zero_rows="raise")
    big = np.random.default_rng(4).standard_normal((10, 5)) + 3.0
    whole = vectors.normalize_rows(big, centre=True)
    monkeypatch.setattr(vectors, "BLOCK_ROWS", 3)
    np.testing.assert_allclose(vectors.normalize_rows(big, centre=True), whole, atol=1e-6)
    big[4, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"1 row\(s\) with NaN or inf \(first at row 4\)"):
        vectors.normalize_rows(big, centre=True)


def test_one_knn_graph_serves_edge_scores_and_cluster_density():
    """Edge scores' neighbours and cluster density are the kNN graph itself, not a second search."""
    from curate_loop.curation.clustering import mean_knn_sq_dist
    from curate_loop.curation.edges import edge_neighborhoods

    x = clustered(600, 16, 6, seed=5)
    idx, sims = knn.knn_graph(x, 10)
    nb = edge_neighborhoods(x, k=10)
    np.testing.assert_array_equal(nb.neighbors, idx)
    np.testing.assert_allclose(nb.distances, 1 - sims, atol=1e-6)
    np.testing.assert_allclose(mean_knn_sq_dist(normalize_rows(x), 10), (2 - 2 * sims).mean(axis=1), atol=1e-6)


def test_search_matches_numpy_cosine_ranking():
    rng = np.random.default_rng(2)
    x, q = rng.standard_normal((500, 32)), rng.standard_normal((7, 32))
    sims, idx = knn.search(knn.build_index(x), q, 10)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(idx, np.argsort(-cos, axis=1)[:, :10])
    np.testing.assert_allclose(sims, np.take_along_axis(cos, idx, axis=1), atol=1e-5)


def test_index_round_trips_through_an_atomic_file(tmp_path):
    x = clustered(25_000, 32, 50, seed=3)
    index = knn.build_index(x)
    path = knn.save_index(index, tmp_path / "sub" / "index.faiss")
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.faiss"]  # no temp file left behind
    loaded = knn.load_index(path)
    assert loaded.nprobe == index.nprobe and loaded.ntotal == 25_000
    np.testing.assert_array_equal(knn.search(loaded, x[:20], 5)[1], knn.search(index, x[:20], 5)[1])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: knn.build_index(np.ones(8)), r"2-D array of shape \(n, dim\), got shape \(8,\)"),
        (lambda: knn.build_index(np.empty((0, 8))), r"need at least 1 vectors \(rows\), got 0"),
        (lambda: knn.build_index(np.array([[1.0, np.nan], [1.0, 2.0]])),
         r"1 row\(s\) with NaN or inf \(first at row 0"),
        (lambda: knn.build_index(np.array([[1.0, 0.0], [0.0, 0.0]])),
         r"1 row\(s\) of all zeros \(first at row 1\).*leave those items out"),
        (lambda: knn.knn_graph(np.eye(5), 5), r"k=5 is larger than the 4 other vectors"),
        (lambda: knn.search(knn.build_index(np.eye(5)), np.eye(5), 6), r"k=6 is larger than the 5 indexed"),
        (lambda: knn.search(knn.build_index(np.eye(5)), np.ones((1, 4)), 1), r"4 dimensions but the index has 5"),
        (lambda: knn.knn_graph(np.eye(5), 0), r"k must be a positive integer"),
        (lambda: knn.load_index("/nonexistent/index.faiss"), r"no faiss index at"),
    ],
)
def test_bad_input_says_what_to_do(call, message):
    with pytest.raises(InvalidInputError, match=message):
        call()


# -- FiftyOne Brain backend ----------------------------------------------------------------------------------


def thumbnail_embeddings(filepaths) -> np.ndarray:
    """16x16 grey thumbnails, mean-centred: enough to tell the example's shifted near-duplicates apart."""
    from PIL import Image

    thumbs = np.stack([np.asarray(Image.open(p).convert("L").resize((16, 16)), dtype=np.float32).ravel()
                       for p in filepaths])
    return thumbs - thumbs.mean(axis=0)


@pytest.fixture(scope="module")
def dup_dataset(example_dataset):
    """A clone of the example (runs made here stay out of the shared dataset) with pixel embeddings.

    Persistent: a FiftyOne process that exits believing it is the last client deletes non-persistent
    datasets, and the fresh-process test starts one.
    """
    dataset = example_dataset.clone("similarity-tests", persistent=True)
    ids, paths = dataset.values("id"), dataset.values("filepath")
    yield dataset, np.array(ids), thumbnail_embeddings(paths)
    dataset.delete()


@pytest.fixture
def plain_dataset():
    """Samples with non-existent files: the backend only needs ids and given vectors."""
    import fiftyone as fo

    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg", n=i) for i in range(120)])
    yield dataset
    dataset.delete()


def test_sort_by_similarity_puts_planted_near_duplicates_first(dup_dataset):
    from curate_loop.similarity.faiss_backend import FaissSimilarityIndex, build_similarity_index
    from curate_loop.paths import curate_loop_home

    dataset, ids, vectors = dup_dataset
    results = build_similarity_index(dataset, vectors, ids, "pixels")
    assert isinstance(results, FaissSimilarityIndex) and results.total_index_size == len(dataset)

    groups = dataset.values("near_dup_group")
    members = {g: set(ids[[x == g for x in groups]]) for g in set(groups) - {None}}
    assert len(members) == 3 and all(len(m) == 4 for m in members.values())
    for group, group_ids in members.items():
        query = sorted(group_ids)[0]
        view = dataset.sort_by_similarity(query, k=len(group_ids), brain_key="pixels")
        assert view.values("id")[0] == query
        assert set(view.values("id")) == group_ids, f"group {group}"

    # Vectors live in files under the curate-loop home, found via the run's stored config.
    index_dir = Path(dataset.get_brain_info("pixels").config.index_dir)
    assert index_dir == curate_loop_home() / "similarity" / "similarity-tests" / "pixels"
    assert sorted(p.name for p in index_dir.iterdir()) == ["data.npz", "index.faiss"]


def test_results_reload_in_a_fresh_process_like_the_app_server(dup_dataset):
    """The App server rebuilds the run from class names stored in MongoDB, without our registration."""
    dataset, ids, vectors = dup_dataset
    from curate_loop.similarity.faiss_backend import build_similarity_index

    build_similarity_index(dataset, vectors, ids, "pixels_reload")
    query = str(ids[[g is not None for g in dataset.values("near_dup_group")]][0])
    expected = dataset.sort_by_similarity(query, k=10, brain_key="pixels_reload").values("id")
    script = f"""
import json, fiftyone as fo, fiftyone.brain as fob
registered_before = "faiss" in fob.brain_config.similarity_backends
dataset = fo.load_dataset({dataset.name!r})
results = dataset.load_brain_results("pixels_reload")
print(json.dumps({{
    "registered_before": registered_before,
    "cls": type(results).__module__ + "." + type(results).__name__,
    "size": results.total_index_size,
    "ids": dataset.sort_by_similarity({query!r}, k=10, brain_key="pixels_reload").values("id"),
}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=os.environ.copy(), cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["registered_before"] is False
    assert got["cls"] == "curate_loop.similarity.faiss_backend.FaissSimilarityIndex"
    assert got["size"] == len(dataset)
    assert got["ids"] == expected


def test_text_prompts_sort_by_clip_text_score(plain_dataset):
    from curate_loop.similarity.faiss_backend import build_similarity_index

    vectors = np.random.default_rng(4).standard_normal((len(plain_dataset), 512)).astype(np.float32)
    ids = np.array(plain_dataset.values("id"))
    results = build_similarity_index(plain_dataset, vectors, ids, "clip", model_name="ViT-B-32", pretrained=None)
    assert plain_dataset.list_brain_runs(supports_prompts=True) == ["clip"]  # what the App looks for
    assert results.supports_prompts

    view = plain_dataset.sort_by_similarity("a photo of a digit", brain_key="clip", dist_field="text_dist")
    assert len(view) == len(plain_dataset)
    # The query, computed here from open_clip itself (tokenizer + encode_text, curate-loop's documented seed for
    # random weights), not by the code under test.
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    with torch.inference_mode():
        text = model.encode_text(open_clip.get_tokenizer("ViT-B-32")(["a photo of a digit"]))[0].numpy()
    scores = normalize_rows(vectors) @ (text / np.linalg.norm(text))
    np.testing.assert_array_equal(view.values("id"), ids[np.argsort(-scores, kind="stable")])
    np.testing.assert_allclose(view.values("text_dist"), 1 - np.sort(scores)[::-1], atol=1e-4)


def test_views_reverse_vectors_and_approximate_index(plain_dataset):
    from curate_loop.similarity.faiss_backend import build_similarity_index

    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((len(plain_dataset), 24))
    ids = np.array(plain_dataset.values("id"))
    unit = normalize_rows(vectors)
    results = build_similarity_index(plain_dataset, vectors, ids, "approx", exact=False)
    assert type(results._index).__name__ == "IndexIVFFlat"

    query = vectors[3]
    cos = unit @ unit[3]
    top = plain_dataset.sort_by_similarity(query, k=5, brain_key="approx").values("id")
    assert top[0] == ids[3]
    bottom = plain_dataset.sort_by_similarity(query, k=5, reverse=True, brain_key="approx").values("id")
    assert bottom == ids[np.argsort(cos)[:5]].tolist()

    view = plain_dataset.match({"n": {"$gte": 60}})  # the query id is outside the view: still a valid query
    in_view = view.sort_by_similarity(ids[3], k=10, brain_key="approx").values("id")
    assert in_view == ids[60:][np.argsort(-cos[60:])[:10]].tolist()


def test_find_duplicates_and_knn_of_every_point(plain_dataset):
    from curate_loop.similarity.faiss_backend import build_similarity_index

    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((len(plain_dataset), 32))
    vectors[100:110] = vectors[:10] + 1e-4 * rng.standard_normal((10, 32))  # 10 planted duplicates
    ids = np.array(plain_dataset.values("id"))
    results = build_similarity_index(plain_dataset, vectors, ids, "dups")

    results.find_duplicates(thresh=1e-3)
    assert len(results.duplicate_ids) == 10
    assert {frozenset((a, b)) for a, dups in results.neighbors_map.items() for b, _ in dups} == {
        frozenset((ids[i], ids[100 + i])) for i in range(10)}

    inds, dists = results._kneighbors(k=3, return_dists=True)  # brain's full-index form: rows, self excluded
    assert len(inds) == 120 and inds[0][0] == 100 and inds[105][0] == 5
    assert dists[0][0] < 1e-6 and all((np.diff(d) >= -1e-6).all() for d in dists)


def test_object_level_index_over_patches(dup_dataset):
    from curate_loop.similarity.faiss_backend import build_similarity_index

    dataset, _, _ = dup_dataset
    labeled = dataset.exists("ground_truth")
    sample_ids, label_ids = labeled.values(["id", "ground_truth.detections.id"])
    pairs = [(s, l) for s, ls in zip(sample_ids, label_ids) for l in ls]
    sample_ids, label_ids = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    vectors = np.random.default_rng(7).standard_normal((len(pairs), 16))
    vectors[1] = vectors[0] * 2 + 0.01  # the nearest object to object 0
    build_similarity_index(dataset, vectors, sample_ids, "objects", patches_field="ground_truth",
                           label_ids=label_ids)

    patches = dataset.to_patches("ground_truth")
    view = patches.sort_by_similarity(label_ids[0], k=2, brain_key="objects")
    assert view.values("id") == label_ids[:2].tolist()  # a patch's id is its label's id


def test_rebuilding_a_key_replaces_it_and_deleting_removes_the_folder(plain_dataset):
    from curate_loop.similarity.faiss_backend import build_similarity_index

    ids = np.array(plain_dataset.values("id"))
    rng = np.random.default_rng(9)
    first = build_similarity_index(plain_dataset, rng.standard_normal((120, 16)), ids, "tmp")
    index_dir = Path(first.config.index_dir)
    assert (index_dir / "data.npz").is_file()

    second = build_similarity_index(plain_dataset, rng.standard_normal((120, 8)), ids, "tmp")  # 8-d now
    assert plain_dataset.list_brain_runs() == ["tmp"]
    assert second.get_embeddings()[0].shape == (120, 8)
    assert plain_dataset.load_brain_results("tmp", cache=False).get_embeddings()[0].shape == (120, 8)

    plain_dataset.delete_brain_run("tmp")
    assert plain_dataset.list_brain_runs() == []
    assert not index_dir.exists()


def test_a_clone_shares_the_index_but_cannot_delete_it(plain_dataset):
    from curate_loop.similarity.faiss_backend import build_similarity_index

    ids = np.array(plain_dataset.values("id"))
    build_similarity_index(plain_dataset, np.random.default_rng(10).standard_normal((120, 8)), ids, "shared")
    index_dir = Path(plain_dataset.get_brain_info("shared").config.index_dir)
    clone = plain_dataset.clone()
    try:
        assert clone.sort_by_similarity(clone.first().id, k=3, brain_key="shared").values("id")[0] == clone.first().id
        clone.delete_brain_run("shared")
        assert (index_dir / "data.npz").is_file()
        assert len(plain_dataset.sort_by_similarity(ids[0], k=3, brain_key="shared")) == 3
    finally:
        clone.delete()


def test_a_deleted_datasets_folder_is_reused_by_a_new_dataset_of_that_name():
    import fiftyone as fo

    from curate_loop.similarity.faiss_backend import build_similarity_index

    folders = []
    for seed in (11, 12):  # the first dataset is deleted with its run in place: FiftyOne skips cleanup then
        dataset = fo.Dataset("similarity-reused-name")
        dataset.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.jpg") for i in range(30)])
        ids = np.array(dataset.values("id"))
        results = build_similarity_index(dataset, np.random.default_rng(seed).standard_normal((30, 8)), ids, "k")
        folders.append(results.config.index_dir)
        assert results.sort_by_similarity(ids[0], k=1).values("id") == [ids[0]]
        dataset.delete()
    assert folders[0] == folders[1]


def test_backend_errors_say_what_to_do(plain_dataset):
    from curate_loop.similarity.faiss_backend import build_similarity_index

    ids = np.array(plain_dataset.values("id"))
    with pytest.raises(InvalidInputError, match="120 sample ids; pass one id per embedding row"):
        build_similarity_index(plain_dataset, np.ones((100, 4)), ids, "bad")
    assert plain_dataset.list_brain_runs() == []  # a failed build leaves no run behind
    results = build_similarity_index(plain_dataset, np.random.default_rng(8).standard_normal((120, 4)), ids, "ok")
    with pytest.raises(InvalidInputError, match="NaN"):
        build_similarity_index(plain_dataset, np.full((120, 4), np.nan), ids, "ok")
    assert plain_dataset.list_brain_runs() == ["ok"] and results.total_index_size == 120  # old run intact
    with pytest.raises(InvalidInputError, match="not in this similarity index"):
        results.sort_by_similarity("0" * 24)
    with pytest.raises(InvalidInputError, match="3 dimensions but the index has 4"):
        results.sort_by_similarity(np.ones(3))
    with pytest.raises(InvalidInputError, match="patches_field and label_ids together"):
        build_similarity_index(plain_dataset, np.ones((120, 4)), ids, "bad", patches_field="ground_truth")
    other = plain_dataset.clone()
    try:
        with pytest.raises(InvalidInputError, match="holds the similarity index of another dataset"):
            build_similarity_index(other, np.ones((120, 4)), ids, "bad", index_dir=results.config.index_dir)
        assert other.list_brain_runs() == ["ok"]  # the clone's copy of the run; no half-made "bad" run
    finally:
        other.delete()
