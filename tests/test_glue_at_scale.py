"""The FiftyOne glue read in bulk (issue 20, "the FiftyOne glue at 1M"): the pool state is computed by MongoDB from
presence tests, never by loading label documents, and must agree with the one Python definition
(:func:`curate_loop.runs.pool.is_labeled` and the batch / duplicate / quality rules) on a real dataset holding
every kind of value: Classifications, an empty ``Detections``-like document, missing and None fields, batches,
``dup_keep`` False/True/None and ``quality_exclude`` True/False/None, with ids asked in any order."""

import numpy as np
import pytest

from curate_loop.errors import InvalidInputError
from curate_loop.runs.pool import (BATCH_FIELD, DUP_KEEP_FIELD, QUALITY_EXCLUDE_FIELD, is_labeled, labeled_view,
                                   pool_state)

N = 40


@pytest.fixture(scope="module")
def mixed():
    import fiftyone as fo

    name = "glue-at-scale-tests"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name)
    dataset.add_samples([fo.Sample(filepath=f"/nonexistent/glue/{i}.jpg") for i in range(N)], progress=False)
    rng = np.random.default_rng(3)
    labels = [fo.Classification(label="a") if r == 0 else fo.Detections() if r == 1 else None
              for r in rng.integers(0, 3, N)]
    dataset.add_sample_field("ground_truth", fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification)
    dataset.add_sample_field("boxes", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    dataset.set_values("ground_truth", [lab if isinstance(lab, fo.Classification) else None for lab in labels])
    dataset.set_values("boxes", [lab if isinstance(lab, fo.Detections) else None for lab in labels])
    batches = [[None, "batch_01", "batch_02"][r] for r in rng.integers(0, 3, N)]
    dataset.set_values(BATCH_FIELD, batches)
    dataset.add_sample_field(DUP_KEEP_FIELD, fo.BooleanField)
    dataset.add_sample_field(QUALITY_EXCLUDE_FIELD, fo.BooleanField)
    dataset.set_values(DUP_KEEP_FIELD, [[None, True, False][r] for r in rng.integers(0, 3, N)])
    dataset.set_values(QUALITY_EXCLUDE_FIELD, [[None, True, False][r] for r in rng.integers(0, 3, N)])
    yield dataset
    dataset.delete()


def _python_state(dataset, ids, label_field, redo_batch=None):
    """The masks by the Python rules, from whole documents (the slow path the bulk one replaces)."""
    by_id = {s.id: s for s in dataset}
    labeled = [is_labeled(by_id[i][label_field]) for i in ids]
    queued = [by_id[i][BATCH_FIELD] is not None and by_id[i][BATCH_FIELD] != redo_batch for i in ids]
    excluded = [by_id[i][DUP_KEEP_FIELD] is False or by_id[i][QUALITY_EXCLUDE_FIELD] is True for i in ids]
    return np.array(labeled), np.array(queued), np.array(excluded)


@pytest.mark.parametrize("label_field", ["ground_truth", "boxes"])
@pytest.mark.parametrize("redo_batch", [None, "batch_01"])
def test_bulk_pool_state_agrees_with_the_python_definition(mixed, label_field, redo_batch):
    ids = np.asarray(mixed.values("id"))
    shuffled = ids[np.random.default_rng(0).permutation(N)][: N - 7]  # a subset, in another order
    for asked in (ids, shuffled):
        state = pool_state(mixed, asked, label_field, redo_batch=redo_batch)
        labeled, queued, excluded = _python_state(mixed, asked.tolist(), label_field, redo_batch)
        np.testing.assert_array_equal(state.labeled, labeled)
        np.testing.assert_array_equal(state.queued, queued)
        np.testing.assert_array_equal(state.excluded, excluded)
        assert state.ids is asked
    # the fixture is not degenerate: every mask has both values, and an empty Detections counts as labeled
    assert 0 < labeled.sum() < len(labeled) and 0 < queued.sum() < len(queued) and 0 < excluded.sum() < len(excluded)
    assert pool_state(mixed, ids, label_field).labeled.sum() == len(labeled_view(mixed, label_field))


def test_pool_state_without_the_optional_fields_and_without_a_label_field(mixed):
    bare = mixed.clone("glue-at-scale-bare")
    try:
        for field in (BATCH_FIELD, DUP_KEEP_FIELD, QUALITY_EXCLUDE_FIELD):
            bare.delete_sample_field(field)
        ids = np.asarray(bare.values("id"))
        state = pool_state(bare, ids, None)
        assert not state.labeled.any() and not state.queued.any() and not state.excluded.any()
        assert state.counts() == {"labeled": 0, "queued": 0, "excluded": 0, "available": N}
        assert pool_state(bare, ids, "ground_truth").labeled.sum() == len(labeled_view(bare, "ground_truth"))
    finally:
        bare.delete()


def test_pool_state_names_an_id_that_is_not_in_the_view(mixed):
    ids = np.asarray(mixed.values("id"))
    view = mixed.select(ids[:10].tolist())
    with pytest.raises(InvalidInputError, match="1 of 11 ids are not samples of this view"):
        pool_state(view, np.append(ids[:10], ids[20]), "ground_truth")


def test_near_duplicate_rerun_writes_only_groups_and_clears_the_earlier_ones(mixed):
    """find_duplicates writes the members of the groups it finds and clears those an earlier run grouped, instead of
    a None on every sample; what a reader sees is the same."""
    from curate_loop.runs.duplicates import DUP_GROUP_FIELD, find_duplicates
    from curate_loop.runs.embeddings import import_embeddings

    dataset = mixed.clone("glue-at-scale-dups")
    try:
        rng = np.random.default_rng(5)
        vectors = rng.standard_normal((N, 16)).astype(np.float32)
        vectors[1] = vectors[0] + 1e-2 * rng.standard_normal(16)  # a planted pair: rows 0 and 1
        vectors[3] = vectors[2] + 1e-2 * rng.standard_normal(16)  # and rows 2 and 3
        import_embeddings(dataset, "dupvec", vectors)
        ids = dataset.values("id")
        first = find_duplicates(dataset, "dupvec", threshold=0.98)
        assert first.groups == 2 and first.in_groups == 4
        groups = dict(zip(ids, dataset.values(DUP_GROUP_FIELD)))
        assert groups[ids[0]] == groups[ids[1]] is not None and groups[ids[2]] == groups[ids[3]] is not None
        assert all(groups[i] is None for i in ids[4:])
        keep = dataset.values(DUP_KEEP_FIELD)
        assert sorted(k for k in keep[:4]) == [False, False, True, True] and set(keep[4:]) == {None}

        second = find_duplicates(dataset.select(ids[2:]), "dupvec", threshold=0.98)  # row 0's pair left the view
        assert second.groups == 1
        groups = dict(zip(ids, dataset.values(DUP_GROUP_FIELD)))
        assert groups[ids[0]] is not None  # outside the view: untouched, as before
        none = find_duplicates(dataset, "dupvec", threshold=0.99999)
        assert none.groups == 0
        assert set(dataset.values(DUP_GROUP_FIELD)) == {None} and set(dataset.values(DUP_KEEP_FIELD)) == {None}
    finally:
        from curate_loop.runs.embeddings import delete_embeddings

        delete_embeddings(dataset, "dupvec")
        dataset.delete()


def test_set_sample_fields_writes_what_set_values_writes_in_one_pass(mixed):
    """Several flat fields in one update per sample: the values, the declared field types and last_modified_at are
    those of one set_values per field; None leaves a field unset; numpy values arrive as plain numbers."""
    import fiftyone as fo

    from curate_loop.runs.bulk import set_sample_fields

    ours, theirs = mixed.clone("glue-bulk-ours"), mixed.clone("glue-bulk-theirs")
    try:
        ids = np.asarray(ours.values("id"))[::-1]  # any order
        scores = np.linspace(0, 1, N, dtype=np.float32)[::-1]
        clusters = np.arange(N, dtype=np.int64) % 3 - 1
        kinds = np.where(clusters < 0, "noise", "regular")
        note = [None if i % 4 == 0 else f"n{i}" for i in range(N)]
        before = max(ours.values("last_modified_at"))
        assert set_sample_fields(ours, ids, {"b_score": scores, "b_cluster": clusters, "b_kind": kinds,
                                             "b_note": note}) == N
        theirs_ids = np.asarray(theirs.values("id"))[::-1]
        for field, values in (("b_score", scores.tolist()), ("b_cluster", clusters.tolist()),
                              ("b_kind", kinds.tolist()), ("b_note", note)):
            theirs.set_values(field, dict(zip(theirs_ids.tolist(), values)), key_field="id")
            assert ours.values(field) == theirs.values(field)
            assert type(ours.get_field(field)) is type(theirs.get_field(field))
        assert isinstance(ours.get_field("b_cluster"), fo.IntField)
        assert min(ours.values("last_modified_at")) > before
        assert ours.first().b_kind == kinds[-1]  # a sample held in memory sees the write
        assert len(ours.exists("b_note")) == N - sum(v is None for v in note)
    finally:
        ours.delete()
        theirs.delete()


def test_set_sample_fields_unsets_a_field_of_any_type_with_an_all_none_column(mixed):
    """All None (a rerun that clears what an earlier one wrote) fits an existing int, bool or str field and leaves its
    type; on a new field it declares a float one."""
    import fiftyone as fo

    from curate_loop.runs.bulk import set_sample_fields

    dataset = mixed.clone("glue-bulk-none")
    try:
        ids = dataset.values("id")
        set_sample_fields(dataset, ids, {"n_int": np.arange(N), "n_bool": np.ones(N, bool), "n_str": ["a"] * N})
        set_sample_fields(dataset, ids[:5], {"n_int": [None] * 5, "n_bool": [None] * 5, "n_str": [None] * 5,
                                             "n_new": [None] * 5})
        for field, kind in (("n_int", fo.IntField), ("n_bool", fo.BooleanField), ("n_str", fo.StringField),
                            ("n_new", fo.FloatField)):
            assert type(dataset.get_field(field)) is kind
        assert dataset.values("n_int") == [None] * 5 + list(range(5, N))
        assert len(dataset.exists("n_str")) == N - 5 and not len(dataset.exists("n_new"))
    finally:
        dataset.delete()


def test_set_sample_fields_refuses_bad_columns_before_writing(mixed):
    from curate_loop.runs.bulk import set_sample_fields

    dataset = mixed.clone("glue-bulk-bad")
    try:
        ids = dataset.values("id")
        cases = [({"x": np.zeros(N - 1)}, "39 values for 40 samples"),
                 ({"x": [1.0] * (N - 1) + ["a"]}, "one kind per field"),
                 ({"x": np.zeros((N, 2))}, "1-d array"),
                 ({"ok": np.zeros(N), BATCH_FIELD: np.zeros(N)}, "is a StringField"),
                 ({"x": [[1]] * N}, "write labels, lists")]
        for columns, message in cases:
            with pytest.raises(InvalidInputError, match=message):
                set_sample_fields(dataset, ids, columns)
            assert not dataset.has_field("ok") and not dataset.has_field("x")  # nothing declared or written
    finally:
        dataset.delete()


def test_edges_then_select_cluster_and_search_once_and_never_reuse_stale_results(mixed):
    """The edges step saves the clusters and neighbourhoods it computed; the batch selection on the same vectors
    loads them (cluster_embeddings and edge_neighborhoods are not called again) and gets what computing would give.
    New vectors for the same ids are a different input: computed afresh."""
    from unittest import mock

    import curate_loop.runs.pool_structure as structure
    from curate_loop.runs.curation import select_batch
    from curate_loop.runs.edges import CLUSTER_FIELD, EDGE_FIELD, score_edge_cases
    from curate_loop.runs.embeddings import delete_embeddings, import_embeddings, load_embeddings

    dataset = mixed.clone("glue-structure")
    for field in (BATCH_FIELD, DUP_KEEP_FIELD, QUALITY_EXCLUDE_FIELD):
        dataset.delete_sample_field(field)  # every unlabeled sample is in the pool
    try:
        rng = np.random.default_rng(11)
        centres = rng.standard_normal((3, 8))
        vectors = (centres[np.arange(N) % 3] + 0.2 * rng.standard_normal((N, 8))).astype(np.float32)
        import_embeddings(dataset, "sv", vectors)
        calls = {"clusters": 0, "neighborhoods": 0}
        real_cluster, real_search = structure.cluster_embeddings, structure.edge_neighborhoods

        def counting(name, real):
            def call(*args, **kwargs):
                calls[name] += 1
                return real(*args, **kwargs)
            return call

        calls["digest"] = 0
        with mock.patch.object(structure, "cluster_embeddings", counting("clusters", real_cluster)), \
                mock.patch.object(structure, "edge_neighborhoods", counting("neighborhoods", real_search)), \
                mock.patch.object(structure, "inputs_digest", counting("digest", structure.inputs_digest)):
            edges = score_edge_cases(dataset, "sv", min_cluster_size=5)
            assert calls == {"clusters": 1, "neighborhoods": 1, "digest": 1}
            batch = select_batch(dataset, "b_structure", 5, "sv", label_field="ground_truth", min_cluster_size=5,
                                 report=False)
            assert calls == {"clusters": 1, "neighborhoods": 1, "digest": 2}  # both reused; one digest per step
            ids, stored = load_embeddings(dataset, "sv")
            fresh = real_cluster(stored, min_cluster_size=5, seed=0)
            loaded = structure.PoolStructure(dataset, "sv", ids, stored).clusters(min_cluster_size=5, seed=0)
            assert calls["clusters"] == 1
            np.testing.assert_array_equal(loaded.labels, fresh.labels)
            np.testing.assert_array_equal(loaded.kinds, fresh.kinds)
            assert batch.clusters == edges.clusters == fresh.n_clusters
            assert dataset.values(CLUSTER_FIELD) == fresh.labels.tolist()

            structure.PoolStructure(dataset, "sv", ids, stored).clusters(min_cluster_size=6, seed=0)  # other parameters
            assert calls["clusters"] == 2
            other = stored[::-1].copy()  # the same ids, other vectors
            found = structure.PoolStructure(dataset, "sv", ids, other).neighborhoods(seed=0)
            assert calls["neighborhoods"] == 2
            np.testing.assert_array_equal(found.scores, real_search(other, seed=0).scores)
    finally:
        delete_embeddings(dataset, "sv")
        dataset.delete()
