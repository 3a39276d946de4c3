"""The FiftyOne App's own "sort by image similarity", in Chromium, answered by the Milvus Lite backend.

The run is built in this (the test) process, which then lets go of the Milvus Lite file: the App server, another
process, opens it when the user sorts (Milvus Lite is one process at a time). The user's path is the one of
tests/test_browser_similarity.py: select a planted near-duplicate in the grid, "Sort by image similarity", "Show
similar samples", then "Show results" in the Similarity Search panel. The grid's order must be Milvus' own answer
to that query, computed here before the App opened the file.
"""

from __future__ import annotations

import pytest
from conftest import BROWSER_WAIT_MS as WAIT_MS
from conftest import SMALL_SPEC, fresh_clone, pixel_features, sort_by_image_similarity_in_app

pytest.importorskip("pymilvus")  # the `milvus` extra (in `dev`)

CLONE_NAME = "milvus-browser"
EMBEDDINGS_KEY = "milvus_pixels"  # not the faiss test's key: a clone of the example copies that run and its searches


@pytest.fixture(scope="module")
def milvus_run(example_dataset, app_session):
    """A fresh clone with a Milvus similarity run, Milvus' full ranking for each near-duplicate, and the clone
    shown in the App; the Milvus Lite file released before any page loads."""
    import fiftyone as fo

    from curate_loop.runs import embeddings as runs
    from curate_loop.runs.similarity import build_similarity
    from curate_loop.similarity.milvus import release_lite

    dataset = fresh_clone(example_dataset, CLONE_NAME)
    dataset.persistent = True  # the App server is another FiftyOne process
    runs.import_embeddings(dataset, EMBEDDINGS_KEY, pixel_features)
    brain_key = build_similarity(dataset, EMBEDDINGS_KEY, backend="milvus")
    config = dataset.get_brain_info(brain_key).config
    assert config.method == "milvus" and config.uri.endswith(f"{dataset._doc.id}.db")
    rankings = {query: dataset.sort_by_similarity(query, k=len(dataset), brain_key=brain_key).values("id")
                for query in dataset.exists("near_dup_group").values("id")}
    release_lite(config.uri)  # the App server opens it next
    app_session.dataset = dataset
    yield dataset, brain_key, rankings
    app_session.dataset = example_dataset
    app_session.spaces = fo.Space(children=[fo.Panel(type="Samples", pinned=True)])
    dataset.delete()  # the App holds the file until it exits: the collection goes with the test run's home


def test_app_sort_by_similarity_on_milvus_lite_shows_milvus_order(app_session, milvus_run, app_page, artifacts_dir):
    from fiftyone import ViewField as F
    from playwright.sync_api import expect

    dataset, brain_key, rankings = milvus_run
    seen = sort_by_image_similarity_in_app(app_page, app_session.url, dataset, brain_key)
    params, group, shown, tiles = seen["params"], seen["group"], seen["shown"], seen["tiles"]
    assert params["brain_key"] == brain_key and params["query_type"] == "image"
    assert len(params["query"]) == 1
    query_id = params["query"][0]
    assert dataset[query_id]["near_dup_group"] == group  # the App queried with the tile we ticked

    # The grid's order is Milvus' ranking for that query; the near-duplicates come first.
    assert len(shown) == min(params["k"], 20)  # a first page of the k results
    assert shown == rankings[query_id][:len(shown)]
    group_ids = set(dataset.match(F("near_dup_group") == group).values("id"))
    assert len(group_ids) == SMALL_SPEC.near_dup_group_size == 4
    assert set(shown[:4]) == group_ids
    expect(app_page.locator('[data-cy="entry-counts"]')).to_contain_text(f"{params['k']} samples", timeout=WAIT_MS)
    for i in range(4):
        expect(tiles.nth(i).locator('[data-cy="tag-near_dup_group"]')).to_have_text(str(group), timeout=WAIT_MS)
    app_page.screenshot(path=str(artifacts_dir / "app_sort_by_similarity_milvus.png"))
