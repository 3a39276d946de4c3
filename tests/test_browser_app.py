"""The FiftyOne App in a real browser: our operators are in the operator browser and run."""

import re

from conftest import EXAMPLE_DATASET_NAME, SMALL_SPEC


def test_operator_browser_lists_and_runs_our_operator(app_session, app_page, artifacts_dir):
    page = app_page
    page.goto(f"{app_session.url.rstrip('/')}/datasets/{EXAMPLE_DATASET_NAME}")
    page.get_by_text("ground_truth", exact=True).first.wait_for()  # the sidebar has loaded the dataset
    page.keyboard.press("Backquote")  # opens the operator browser
    search = page.get_by_placeholder("Search operations by name...")
    search.fill("curate-loop")
    page.get_by_text("curate-loop: summarize this view").click()
    page.get_by_role("button", name="Execute").click()
    page.get_by_text("curate-loop summary").wait_for()
    n_samples = SMALL_SPEC.n_labeled + SMALL_SPEC.n_pool
    assert page.get_by_text(f"labeled: {SMALL_SPEC.n_labeled}, pool: {SMALL_SPEC.n_pool}").is_visible()
    body = page.inner_text("body")
    assert re.search(rf"Samples in view:\s*{n_samples}\b", body)
    assert re.search(rf"Samples with labels:\s*{SMALL_SPEC.n_labeled}\b", body)
    page.screenshot(path=str(artifacts_dir / "app_operator_summary.png"))
