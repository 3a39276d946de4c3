"""One loop iteration walked through the FiftyOne App in Chromium, on the "Curation loop" panel, against the real
Label Studio server: open the panel from the grid's "+" menu, run the next iteration (it picks and pushes a batch),
let an annotator answer in Label Studio (the simulated one, through its API), pull the batch back from the panel.
"""

from __future__ import annotations

import re

import pytest
from conftest import loop_copy, open_panel

BUDGET = 6
WAIT_MS = 240_000  # one iteration embeds the dataset and scans its boxes on 2 CPU cores
UI_WAIT_MS = 60_000  # like the page's default timeout; expect() alone waits only 5 s (a busy CI machine took longer)


@pytest.fixture(scope="module")
def loop_app(example_dataset, labelstudio, tmp_path_factory):
    """A copy of the example, its manifest, and an App server that sees the Label Studio secrets and the manifest."""
    import fiftyone as fo

    from curate_loop.adapters.labelstudio.server import free_port

    dataset, path = loop_copy(example_dataset, "browser-loop", tmp_path_factory.mktemp("browser-loop"),
                              labelstudio.url, BUDGET)
    with pytest.MonkeyPatch.context() as env:  # the App server process inherits these when it starts
        env.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
        env.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
        env.setenv("CURATE_LOOP_MANIFEST", str(path))
        session = fo.Session(dataset, remote=True, port=free_port(), address="127.0.0.1", auto=False)
    yield session, dataset
    session.close()
    dataset.delete()


def test_one_iteration_through_the_loop_panel(loop_app, labelstudio, chromium_path, artifacts_dir):
    from conftest import CHROMIUM_ARGS
    from playwright.sync_api import expect, sync_playwright

    from curate_loop.loop.runner import history
    from curate_loop.loop.simulate import answer_batch

    session, dataset = loop_app
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            open_panel(page, session, dataset, "Curation loop")
            # found the manifest by itself
            expect(page.get_by_text("No iteration yet")).to_be_visible(timeout=UI_WAIT_MS)

            page.get_by_role("button", name="Run next iteration").click()
            expect(page.get_by_text(re.compile(r"Iteration 1: pulled 0 annotated tasks"))).to_be_visible(
                timeout=WAIT_MS)
            expect(page.get_by_text(re.compile(r"batch_01: pushed \(0/6 finished\)"))).to_be_visible(timeout=UI_WAIT_MS)
            link = page.get_by_role("link", name="open in Label Studio")
            assert re.search(rf"^{re.escape(labelstudio.url)}/projects/\d+/data\?tab=\d+$", link.get_attribute("href"))
            page.screenshot(path=str(artifacts_dir / "loop_panel_pushed.png"))

            # the annotator's turn, in Label Studio (simulated, from the kept-aside true labels)
            dataset.reload()  # the App's server process pushed: read its run records
            assert answer_batch(dataset, "batch_01", url=labelstudio.url, api_key=labelstudio.token) == BUDGET
            page.get_by_role("button", name="Refresh").click()
            expect(page.get_by_text(re.compile(r"batch_01: annotated \(6/6 finished\)"))).to_be_visible(
                timeout=UI_WAIT_MS)

            page.get_by_role("button", name="Pull finished batches").click()
            expect(page.get_by_text(re.compile(r"Pulled batch_01 \(6 tasks"))).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_text(re.compile(r"batch_01: pulled"))).to_be_visible(timeout=UI_WAIT_MS)
            page.screenshot(path=str(artifacts_dir / "loop_panel_pulled.png"))
        finally:
            browser.close()

    dataset.reload()
    assert [it["iteration"] for it in history(dataset)] == [1]
    batch = dataset.load_saved_view("batch_01")
    assert len(batch) == BUDGET
    for sample in batch:  # the answers came back into ground_truth, label by label
        assert sorted(d.label for d in sample.ground_truth.detections) == \
            sorted(d.label for d in sample.true_ground_truth.detections)
