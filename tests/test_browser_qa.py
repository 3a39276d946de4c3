"""The QA reviewer's flow in the FiftyOne App, in Chromium: open the saved view ``mislabel_suspects`` (one patch per
suspect box, best first), then through the operator browser (backtick, type the operator's name) accept one
suspect's suggested class, mark one "not a mislabel", send one for re-annotation; the labels and tags in the dataset
are then checked. Running the review with nothing selected shows the one-line reason in the App, not a stack. Each
review takes its suspect out of the saved view (it is saved again), and the App's count drops at once.

The boxes' vectors are imported (one-hot codes of their class before ``FLIPPED`` classes are flipped), so the
suspects are (mostly) the flipped boxes.
"""

from __future__ import annotations

import numpy as np
import pytest

from curate_loop.runs.mislabels import SUSPECTS_VIEW, TAG_ACCEPTED, TAG_REANNOTATE, TAG_REJECTED, find_mislabels
from curate_loop.runs.pool import BATCH_FIELD
from conftest import fresh_clone, review_in_operator_browser

FLIPPED = 6
UI_WAIT_MS = 60_000


@pytest.fixture(scope="module")
def qa_app(example_dataset, tmp_path_factory):
    """A copy of the example with flipped classes, scanned for mislabels, and an App server on it."""
    import fiftyone as fo

    from curate_loop.runs import embeddings as runs

    name = "browser-qa"
    dataset = fresh_clone(example_dataset, name)
    ids, classes = dataset.values(["ground_truth.detections.id", "ground_truth.detections.label"], unwind=True)
    rng = np.random.default_rng(5)
    codes = rng.normal(scale=0.05, size=(len(ids), 12)).astype(np.float32)
    codes[np.arange(len(ids)), [int(c) for c in classes]] += 1.0
    runs.import_embeddings(dataset, "boxes", codes, patches_field="ground_truth")
    flipped = {ids[i]: classes[i] for i in rng.choice(len(ids), FLIPPED, replace=False)}
    dataset.set_label_values("ground_truth.detections.label", {i: str((int(c) + 1) % 10) for i, c in flipped.items()})
    assert find_mislabels(dataset, "ground_truth", "boxes").suspects >= 4
    suspects = dataset.load_saved_view(SUSPECTS_VIEW)
    suggested = dict(zip(suspects.values("ground_truth.id"), suspects.values("ground_truth.mislabel_suggestion")))
    assert len(set(suggested) & set(flipped)) >= 4  # the scan raised the flipped boxes
    # the App's server session starts on the suspects view: a page (re)opened on `?view=` alone can otherwise be put
    # back on the whole dataset by the server's state; each review then leaves it on the view saved again
    session = _start_app(dataset.load_saved_view(SUSPECTS_VIEW))
    yield session, dataset, suggested
    session.close()
    dataset.delete()


def _start_app(view, attempts: int = 3):
    """An App server on ``view``. FiftyOne waits a fixed 60 s for it to listen, and on a busy 2-core machine its
    start alone takes about that long: a start that missed the wait is tried again on another port."""
    import fiftyone as fo
    from fiftyone.core.service import ServiceListenTimeout

    from curate_loop.adapters.labelstudio.server import free_port

    for attempt in range(attempts):
        try:
            return fo.Session(view=view, remote=True, port=free_port(), address="127.0.0.1", auto=False)
        except ServiceListenTimeout:
            if attempt == attempts - 1:
                raise


def _open_suspects(page, url: str) -> None:
    """The saved suspects view in the App's grid: one patch per suspect box."""
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator('[data-cy="entry-counts"]')).to_contain_text("patches", timeout=UI_WAIT_MS)
    page.locator('[data-cy="looker"]').first.wait_for()


def _expect_patches(page, count: int) -> None:
    import re

    from playwright.sync_api import expect

    expect(page.locator('[data-cy="entry-counts"]')).to_have_text(re.compile(rf"\b{count} patches"),
                                                                     timeout=UI_WAIT_MS)
    expect(page.locator('[data-cy="looker"]')).to_have_count(count, timeout=UI_WAIT_MS)


def _review(page, decision_label, *, select_tile: int | None):
    """Select one tile of the grid (or none), run "review mislabels" from the operator browser with the decision."""
    review_in_operator_browser(page, "review mislabels", decision_label, select_tile=select_tile, wait_ms=UI_WAIT_MS)


def _close_output(page):
    page.get_by_role("button", name="Close").click()


def test_qa_reviewer_accepts_rejects_and_resends_suspects(qa_app, chromium_path, artifacts_dir, request):
    from conftest import CHROMIUM_ARGS
    from playwright.sync_api import expect, sync_playwright

    session, dataset, suggested = qa_app
    slug = dataset._get_saved_view_doc(SUSPECTS_VIEW).slug
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(UI_WAIT_MS)
        page.add_init_script("window.IS_PLAYWRIGHT = true;")
        try:
            _open_suspects(page, f"{session.url.rstrip('/')}/datasets/{dataset.name}?view={slug}")

            # nothing selected: the reason, on one line, where the result would be
            _review(page, None, select_tile=None)
            expect(page.get_by_text("Select at least one label (a suspect) to review.")).to_be_visible()
            assert "Traceback" not in page.inner_text("body")
            page.screenshot(path=str(artifacts_dir / "qa_review_nothing_selected.png"))
            _close_output(page)

            for step, decision in enumerate(("Accept the suggestion (relabel)", "Not a mislabel",
                                             "Send for re-annotation (Label Studio batch)")):
                # the reviewer opens the suspects again (the App's count drops at once, but its grid keeps showing the
                # reviewed tile until the page is reloaded); each review took its suspect out of the view
                _open_suspects(page, f"{session.url.rstrip('/')}/datasets/{dataset.name}?view={slug}")
                _expect_patches(page, len(suggested) - step)
                _review(page, decision, select_tile=0)
                expect(page.get_by_text(decision, exact=True).last).to_be_visible(timeout=UI_WAIT_MS)
                expect(page.get_by_text("Reviewed", exact=True)).to_be_visible(timeout=UI_WAIT_MS)
                page.screenshot(path=str(artifacts_dir / f"qa_review_{step}.png"))
                _close_output(page)
                expect(page.locator('[data-cy="entry-counts"]')).to_contain_text(f"{len(suggested) - step - 1} patches")
            _open_suspects(page, f"{session.url.rstrip('/')}/datasets/{dataset.name}?view={slug}")
            _expect_patches(page, len(suggested) - 3)
        except Exception:
            page.screenshot(path=str(artifacts_dir / f"{request.node.name}.png"))
            raise
        finally:
            browser.close()

    dataset.reload()
    ids, labels, tags, previous = dataset.values(
        ["ground_truth.detections.id", "ground_truth.detections.label", "ground_truth.detections.tags",
         "ground_truth.detections.mislabel_previous"])
    rows = [(i, c, t or [], p) for si, sc, st, sp in zip(ids, labels, tags, previous) for i, c, t, p in
            zip(si or [], sc or [], st or [], sp or [None] * len(si or []))]
    by_tag = {tag: [r for r in rows if tag in r[2]] for tag in (TAG_ACCEPTED, TAG_REJECTED, TAG_REANNOTATE)}
    assert {tag: len(found) for tag, found in by_tag.items()} == {TAG_ACCEPTED: 1, TAG_REJECTED: 1, TAG_REANNOTATE: 1}
    (accepted,), (rejected,), (resent,) = by_tag.values()
    assert {accepted[0], rejected[0], resent[0]} <= set(suggested)  # three suspects the grid showed
    assert accepted[1] == suggested[accepted[0]] != accepted[3]  # relabeled, the previous class kept aside
    assert rejected[1] != suggested[rejected[0]]  # kept as it was
    resent_sample = dataset.select_labels(ids=[resent[0]], fields="ground_truth").first()
    assert resent_sample[BATCH_FIELD] == "reannotate" and "reannotate" in dataset.list_saved_views()
