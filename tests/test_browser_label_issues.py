"""The reviewer's walk through box-level label issues in the FiftyOne App, in Chromium: open the saved view
``label_issues`` (one patch per issue card, worst first), and through the operator browser accept the worst card
five times; the example got one planted error of each kind (overlooked, mislocated, spurious, duplicate, swapped),
so each step fixes one kind, and the label field is checked after each: the box added, moved, deleted or
relabeled exactly as the card suggested. Running the review with nothing selected shows the one-line reason; an
"undo" with nothing selected then restores the last fix.
"""

from __future__ import annotations

import pytest
from test_browser_qa import UI_WAIT_MS, _start_app
from test_label_issues_runs import KINDS, plant_errors

from curate_loop.runs.label_issues import ISSUES_FIELD, VIEW_NAME, find_label_issues
from conftest import review_in_operator_browser, fresh_clone

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def issues_app(example_dataset):
    """A copy of the example with one planted error per kind, scanned, and an App server on the issues view."""
    import fiftyone as fo

    name = "browser-label-issues"
    dataset = fresh_clone(example_dataset, name)
    planted = plant_errors(dataset)
    assert find_label_issues(dataset, "ground_truth", "predictions").by_kind == {kind: 1 for kind in KINDS}
    session = _start_app(dataset.load_saved_view(VIEW_NAME))
    yield session, dataset, planted
    session.close()
    dataset.delete()


def _open_issues(page, url: str, count: int) -> None:
    """The saved issues view in the App's grid: ``count`` patches, one per open card."""
    import re

    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator('[data-cy="entry-counts"]')).to_have_text(re.compile(rf"\b{count} patch(es)?\b"),
                                                                     timeout=UI_WAIT_MS)
    expect(page.locator('[data-cy="looker"]')).to_have_count(count, timeout=UI_WAIT_MS)


def _review(page, decision_label, *, select_tile: int | None):
    """Select one tile of the grid (or none), run "review label issues" from the operator browser with the decision."""
    review_in_operator_browser(page, "review label issues", decision_label, select_tile=select_tile, wait_ms=UI_WAIT_MS)


def _labels(dataset, sample_id):
    dataset.reload()
    return {d.id: (d.label, list(d.bounding_box)) for d in dataset[sample_id].ground_truth.detections}


def _check_fixed(card, before: dict, after: dict) -> None:
    """The label field changed exactly as ``card`` suggested, and nothing else on the sample."""
    if card.kind == "overlooked":
        (new_id,) = set(after) - set(before)
        assert after[new_id] == (card.suggested_label, pytest.approx(card.suggested_box))
        assert {i: after[i] for i in before} == before
    elif card.kind in ("spurious", "duplicate"):
        assert after == {i: v for i, v in before.items() if i != card.label_id}
    else:
        label, box = before[card.label_id]
        expected = (label, list(card.suggested_box)) if card.kind == "mislocated" else (card.suggested_label, box)
        assert after == {**before, card.label_id: expected}


def test_reviewer_fixes_one_issue_of_each_kind(issues_app, chromium_path, artifacts_dir, request):
    from conftest import CHROMIUM_ARGS
    from playwright.sync_api import expect, sync_playwright

    session, dataset, planted = issues_app
    slug = dataset._get_saved_view_doc(VIEW_NAME).slug
    url = f"{session.url.rstrip('/')}/datasets/{dataset.name}?view={slug}"
    fixed = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(UI_WAIT_MS)
        page.add_init_script("window.IS_PLAYWRIGHT = true;")
        try:
            _open_issues(page, url, len(KINDS))
            _review(page, "Accept the fix", select_tile=None)
            expect(page.get_by_text("Select at least one issue card (in the label_issues view) to review.")) \
                .to_be_visible()
            assert "Traceback" not in page.inner_text("body")
            page.get_by_role("button", name="Close").click()

            for step in range(len(KINDS)):
                _open_issues(page, url, len(KINDS) - step)
                card = dataset.load_saved_view(VIEW_NAME).first()[ISSUES_FIELD]  # the worst: the first tile
                sample_id = dataset.select_labels(ids=[card.id], fields=ISSUES_FIELD).first().id
                before = _labels(dataset, sample_id)
                _review(page, "Accept the fix", select_tile=0)
                expect(page.get_by_text("Reviewed", exact=True)).to_be_visible(timeout=UI_WAIT_MS)
                page.screenshot(path=str(artifacts_dir / f"label_issues_{step}_{card.kind}.png"))
                page.get_by_role("button", name="Close").click()
                _check_fixed(card, before, _labels(dataset, sample_id))
                fixed.append((card, sample_id, before))
            assert len(dataset.load_saved_view(VIEW_NAME)) == 0

            # "undo" with nothing selected: the last fix goes
            _review(page, "Undo the accept (nothing selected: the last one)", select_tile=None)
            expect(page.get_by_text("Reviewed", exact=True)).to_be_visible(timeout=UI_WAIT_MS)
            page.get_by_role("button", name="Close").click()
        except Exception:
            page.screenshot(path=str(artifacts_dir / f"{request.node.name}.png"))
            raise
        finally:
            browser.close()

    assert sorted(card.kind for card, _, _ in fixed) == sorted(KINDS)  # one of each kind walked through
    last, sample_id, before = fixed[-1]
    assert _labels(dataset, sample_id) == before
    assert [c.id for c in dataset.load_saved_view(VIEW_NAME).values(ISSUES_FIELD)] == [last.id]
