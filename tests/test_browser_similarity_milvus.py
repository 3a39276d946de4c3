"""The FiftyOne App's own "sort by image similarity", in Chromium, answered by the Milvus Lite backend.

The run is built in this (the test) process, which then lets go of the Milvus Lite file: the App server, another
process, opens it when the user sorts (Milvus Lite is one process at a time). The user's path is the one of
tests/test_browser_similarity.py: select a planted near-duplicate in the grid, "Sort by image similarity", "Show
similar samples", then "Show results" in the Similarity Search panel. The grid's order must be Milvus' own answer
to that query, computed here before the App opened the file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import SMALL_SPEC, fresh_clone

pytest.importorskip("pymilvus")  # the `milvus` extra (in `dev`)

CLONE_NAME = "milvus-browser"
EMBEDDINGS_KEY = "milvus_pixels"  # not the faiss test's key: a clone of the example copies that run and its searches
SEARCH_OPERATOR = "@voxel51/panels/similarity_search"
WAIT_MS = 60_000  # like the page's default timeout; expect() alone waits only 5 s


def pixel_features(images):
    """16x16 grey thumbnails, centred: near-duplicates of the example are near-identical in pixels."""
    return np.stack([np.asarray(img.convert("L").resize((16, 16)), dtype=np.float32).ravel() - 127 for img in images])


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


def _post_json(request) -> dict:
    try:
        return json.loads(request.post_data or "{}")
    except ValueError:
        return {}


def _is_search(response) -> bool:
    return (response.url.endswith("/operators/execute")
            and _post_json(response.request).get("operator_uri") == SEARCH_OPERATOR)


def _is_first_page_of_selected_results(response) -> bool:
    """The App's first ``paginateSamplesQuery`` over the ordered ``Select`` view that applies the results."""
    if not response.url.endswith("/graphql"):
        return False
    body = _post_json(response.request)
    variables = body.get("variables") or {}
    return ("paginateSamplesQuery" in body.get("query", "") and variables.get("after") is None
            and any(stage.get("_cls") == "fiftyone.core.stages.Select" for stage in variables.get("view") or []))


def test_app_sort_by_similarity_on_milvus_lite_shows_milvus_order(app_session, milvus_run, app_page, artifacts_dir):
    from fiftyone import ViewField as F
    from playwright.sync_api import expect

    dataset, brain_key, rankings = milvus_run
    page = app_page
    # The grid's popover uses the dataset's last-used index; make ours the last used (keyed by dataset id).
    last_used = json.dumps({str(dataset._doc.id): brain_key})
    page.add_init_script(
        "window.IS_PLAYWRIGHT = true;"
        "localStorage.setItem('fiftyone-enterprise-tooltip-seen', 'true');"
        f"localStorage.setItem('lastUsedBrainKeys', {json.dumps(last_used)});"
    )
    page.goto(f"{app_session.url.rstrip('/')}/datasets/{CLONE_NAME}")
    page.get_by_text("ground_truth", exact=True).first.wait_for()  # the sidebar has loaded the dataset

    # Show near_dup_group on the tiles, then select the first near-duplicate the grid shows.
    page.locator('[data-cy="sidebar-group-entry-EXAMPLE TRUTH (KEPT ASIDE)"]').click()
    show_group = page.locator('[data-cy="checkbox-near_dup_group"]')
    expect(show_group).to_be_in_viewport(timeout=WAIT_MS)
    show_group.click()
    tiles = page.locator('[data-cy="looker"]')
    tile = tiles.filter(has=page.locator('[data-cy="tag-near_dup_group"]')).first
    tile.scroll_into_view_if_needed()
    group = int(tile.locator('[data-cy="tag-near_dup_group"]').inner_text())
    tile.hover()
    tile.locator('[data-cy="looker-checkbox-"]').click()

    # Sort by image similarity -> Show similar samples: the App server runs the query on Milvus Lite.
    sort_button = page.locator('[data-cy="action-sort-by-similarity"]')
    sort_button.hover()
    expect(page.get_by_text("Sort by image similarity", exact=True)).to_be_visible(timeout=WAIT_MS)
    sort_button.click()
    with page.expect_response(_is_search) as search_info:
        page.get_by_text("Show similar samples", exact=True).click()
    search = search_info.value
    params = _post_json(search.request)["params"]
    assert search.ok and search.json()["error"] is None, search.text()
    assert params["brain_key"] == brain_key and params["query_type"] == "image"
    assert len(params["query"]) == 1
    query_id = params["query"][0]
    assert dataset[query_id]["near_dup_group"] == group  # the App queried with the tile we ticked

    run_card = page.get_by_role("button").filter(has_text="Completed").filter(has_text=brain_key)
    run_card.wait_for()
    show_results = run_card.locator('button[aria-label="Show results"]')
    assert show_results.get_attribute("disabled") is None
    with page.expect_response(_is_first_page_of_selected_results) as page_info:
        show_results.click(force=True)  # the card is aria-disabled for drag-and-drop; the button is enabled
    shown = [edge["node"]["id"] for edge in page_info.value.json()["data"]["samples"]["edges"]]

    # The grid's order is Milvus' ranking for that query; the near-duplicates come first.
    assert len(shown) == min(params["k"], 20)  # a first page of the k results
    assert shown == rankings[query_id][:len(shown)]
    group_ids = set(dataset.match(F("near_dup_group") == group).values("id"))
    assert len(group_ids) == SMALL_SPEC.near_dup_group_size == 4
    assert set(shown[:4]) == group_ids
    expect(page.locator('[data-cy="entry-counts"]')).to_contain_text(f"{params['k']} samples", timeout=WAIT_MS)
    for i in range(4):
        expect(tiles.nth(i).locator('[data-cy="tag-near_dup_group"]')).to_have_text(str(group), timeout=WAIT_MS)
    page.screenshot(path=str(artifacts_dir / "app_sort_by_similarity_milvus.png"))
