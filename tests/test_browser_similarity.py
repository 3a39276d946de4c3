"""The FiftyOne App's own "sort by image similarity", in a real browser, on our faiss similarity index.

A user selects one planted near-duplicate in the grid, clicks the grid's "Sort by image similarity"
action, "Show similar samples", then "Show results" on the run in the Similarity Search panel that opens
(FiftyOne >= 1.22 runs the query as the ``@voxel51/panels/similarity_search`` operator and applies it
as an ordered ``Select`` view; the older ``/sort`` route is no longer used by the grid). What the App
asked for and what it then displays are read from its own network traffic.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import EXAMPLE_DATASET_NAME, SMALL_SPEC

EMBEDDINGS_KEY = "browser_pixels"
SEARCH_OPERATOR = "@voxel51/panels/similarity_search"
WAIT_MS = 60_000  # like the page's default timeout; expect() alone waits only 5 s


def pixel_features(images):
    """16x16 grey thumbnails, centred: near-duplicates of the example are near-identical in pixels."""
    return np.stack([np.asarray(img.convert("L").resize((16, 16)), dtype=np.float32).ravel() - 127 for img in images])


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


def test_app_sort_by_similarity_puts_the_query_near_duplicates_first(app_session, pixel_index, app_page,
                                                                      example_dataset, artifacts_dir):
    from fiftyone import ViewField as F
    from playwright.sync_api import expect

    page = app_page
    # The grid's popover has no index picker: it uses the dataset's last-used index, else the first by name.
    # Make ours the last used, as if the user had searched with it before; the request below confirms it.
    # IS_PLAYWRIGHT is FiftyOne's own switch for browser tests: no analytics, no popups over the grid.
    last_used = json.dumps({str(example_dataset._doc.id): pixel_index})  # keyed by dataset id
    page.add_init_script(
        "window.IS_PLAYWRIGHT = true;"
        "localStorage.setItem('fiftyone-enterprise-tooltip-seen', 'true');"
        f"localStorage.setItem('lastUsedBrainKeys', {json.dumps(last_used)});"
    )
    page.goto(f"{app_session.url.rstrip('/')}/datasets/{EXAMPLE_DATASET_NAME}")
    page.get_by_text("ground_truth", exact=True).first.wait_for()  # the sidebar has loaded the dataset

    # Show near_dup_group on the tiles: expand its sidebar group, tick the field.
    page.locator('[data-cy="sidebar-group-entry-EXAMPLE TRUTH (KEPT ASIDE)"]').click()
    show_group = page.locator('[data-cy="checkbox-near_dup_group"]')
    expect(show_group).to_be_in_viewport(timeout=WAIT_MS)
    show_group.click()

    # Select the first near-duplicate the grid shows: hover its tile, tick its checkbox.
    tiles = page.locator('[data-cy="looker"]')
    tile = tiles.filter(has=page.locator('[data-cy="tag-near_dup_group"]')).first
    tile.scroll_into_view_if_needed()
    group = int(tile.locator('[data-cy="tag-near_dup_group"]').inner_text())
    tile.hover()
    tile.locator('[data-cy="looker-checkbox-"]').click()

    # Sort by image similarity -> Show similar samples: the App runs the search operator.
    sort_button = page.locator('[data-cy="action-sort-by-similarity"]')
    sort_button.hover()
    expect(page.get_by_text("Sort by image similarity", exact=True)).to_be_visible(timeout=WAIT_MS)  # its tooltip
    sort_button.click()
    with page.expect_response(_is_search) as search_info:
        page.get_by_text("Show similar samples", exact=True).click()
    search = search_info.value
    params = _post_json(search.request)["params"]
    assert search.ok and search.json()["error"] is None, search.text()
    assert params["brain_key"] == pixel_index and params["query_type"] == "image"
    assert len(params["query"]) == 1
    query_id = params["query"][0]
    assert example_dataset[query_id]["near_dup_group"] == group  # the App queried with the tile we ticked

    # The Similarity Search panel lists the run; "Show results" applies it as the grid's view.
    run_card = page.get_by_role("button").filter(has_text="Completed").filter(has_text=pixel_index)
    run_card.wait_for()
    show_results = run_card.locator('button[aria-label="Show results"]')
    assert show_results.get_attribute("disabled") is None
    with page.expect_response(_is_first_page_of_selected_results) as page_info:
        # The run card is a drag-and-drop item marked aria-disabled, which Playwright's actionability check
        # inherits; the button itself is enabled (checked above) and a real click reaches it.
        show_results.click(force=True)
    edges = page_info.value.json()["data"]["samples"]["edges"]
    shown = [edge["node"]["id"] for edge in edges]

    group_ids = set(example_dataset.match(F("near_dup_group") == group).values("id"))
    assert len(group_ids) == SMALL_SPEC.near_dup_group_size == 4
    assert query_id in group_ids
    assert set(shown[:4]) == group_ids, [example_dataset[i]["near_dup_group"] for i in shown[:8]]
    assert len(shown) == min(params["k"], 20)  # a first page of the k results

    # The grid shows it: k samples, the group's four tiles first.
    expect(page.locator('[data-cy="entry-counts"]')).to_contain_text(f"{params['k']} samples", timeout=WAIT_MS)
    for i in range(4):
        expect(tiles.nth(i).locator('[data-cy="tag-near_dup_group"]')).to_have_text(str(group), timeout=WAIT_MS)
    page.screenshot(path=str(artifacts_dir / "app_sort_by_similarity.png"))

    # The same query in Python agrees on the first four.
    python_first = example_dataset.sort_by_similarity(query_id, k=4, brain_key=pixel_index).values("id")
    assert set(python_first) == group_ids
