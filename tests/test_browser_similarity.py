"""The FiftyOne App's own "sort by image similarity", in a real browser, on our faiss similarity index.

A user selects one planted near-duplicate in the grid, clicks the grid's "Sort by image similarity"
action, "Show similar samples", then "Show results" on the run in the Similarity Search panel that opens
(FiftyOne >= 1.22 runs the query as the ``@voxel51/panels/similarity_search`` operator and applies it
as an ordered ``Select`` view; the older ``/sort`` route is no longer used by the grid). What the App
asked for and what it then displays are read from its own network traffic.
"""

from __future__ import annotations

import pytest
from conftest import BROWSER_WAIT_MS as WAIT_MS
from conftest import SMALL_SPEC, pixel_features, sort_by_image_similarity_in_app

EMBEDDINGS_KEY = "browser_pixels"


@pytest.fixture(scope="module")
def pixel_index(example_dataset, app_session):
    """Pixel embeddings and their similarity index (our faiss backend), made before any page loads the App."""
    import fiftyone as fo

    from curate_loop.runs import embeddings as runs
    from curate_loop.runs.similarity import build_similarity

    runs.import_embeddings(example_dataset, EMBEDDINGS_KEY, pixel_features)
    brain_key = build_similarity(example_dataset, EMBEDDINGS_KEY)
    assert example_dataset.get_brain_info(brain_key).config.method == "faiss"
    yield brain_key
    # Leave the shared dataset and App session as the other tests expect them.
    app_session.clear_view()
    app_session.spaces = fo.Space(children=[fo.Panel(type="Samples", pinned=True)])
    example_dataset.delete_brain_run(brain_key)
    runs.delete_embeddings(example_dataset, EMBEDDINGS_KEY)


def test_app_sort_by_similarity_puts_the_query_near_duplicates_first(app_session, pixel_index, app_page,
                                                                      example_dataset, artifacts_dir):
    from fiftyone import ViewField as F
    from playwright.sync_api import expect

    seen = sort_by_image_similarity_in_app(app_page, app_session.url, example_dataset, pixel_index)
    params, group, shown, tiles = seen["params"], seen["group"], seen["shown"], seen["tiles"]
    assert params["brain_key"] == pixel_index and params["query_type"] == "image"
    assert len(params["query"]) == 1
    query_id = params["query"][0]
    assert example_dataset[query_id]["near_dup_group"] == group  # the App queried with the tile we ticked

    group_ids = set(example_dataset.match(F("near_dup_group") == group).values("id"))
    assert len(group_ids) == SMALL_SPEC.near_dup_group_size == 4
    assert query_id in group_ids
    assert set(shown[:4]) == group_ids, [example_dataset[i]["near_dup_group"] for i in shown[:8]]
    assert len(shown) == min(params["k"], 20)  # a first page of the k results

    # The grid shows it: k samples, the group's four tiles first.
    expect(app_page.locator('[data-cy="entry-counts"]')).to_contain_text(f"{params['k']} samples", timeout=WAIT_MS)
    for i in range(4):
        expect(tiles.nth(i).locator('[data-cy="tag-near_dup_group"]')).to_have_text(str(group), timeout=WAIT_MS)
    app_page.screenshot(path=str(artifacts_dir / "app_sort_by_similarity.png"))

    # The same query in Python agrees on the first four.
    python_first = example_dataset.sort_by_similarity(query_id, k=4, brain_key=pixel_index).values("id")
    assert set(python_first) == group_ids
