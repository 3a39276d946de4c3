"""The Data quality panel walked through in the FiftyOne App, in Debian's Chromium, on a copy of the example with
darkened and blurred copies planted (``test_quality_loop.plant_copies``): open the panel from the grid's "+" menu,
see the histogram of the "dark" issue (kept and flagged bars), move the threshold (typed into the slider's field),
show the flagged samples in the grid, and keep them out of curation batches; the dataset is checked after each step.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_quality_loop import clone, plant_copies

from curate_loop.runs.pool import QUALITY_EXCLUDE_FIELD
from conftest import open_panel

UI_WAIT_MS = 60_000  # a busy 2-core machine: the panel's calls and the App's grid take their time

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def quality_app(example_dataset, tmp_path_factory):
    """A copy of the example with planted copies, its quality computed, and an App server on it."""
    import fiftyone as fo

    from curate_loop.adapters.labelstudio.server import free_port
    from curate_loop.runs.quality import compute_quality

    dataset = clone(example_dataset, "browser-quality")
    ids = plant_copies(dataset, tmp_path_factory.mktemp("planted"))
    compute_quality(dataset, label_field="ground_truth")
    session = fo.Session(dataset, remote=True, port=free_port(), address="127.0.0.1", auto=False)
    yield session, dataset, ids
    session.close()
    dataset.delete()


def _flagged(dataset, issue: str) -> set[str]:
    dataset.reload()
    return set(dataset.match({"quality_issues": issue}).values("id"))


def test_the_data_quality_panel_moves_a_threshold_shows_and_excludes(quality_app, chromium_path, artifacts_dir,
                                                                     request):
    from conftest import CHROMIUM_ARGS
    from playwright.sync_api import expect, sync_playwright

    from curate_loop.runs.quality import metric_values, quality_thresholds  # read before the App writes the run

    session, dataset, ids = quality_app
    before = _flagged(dataset, "dark")
    assert set(ids["dark"]) <= before
    values = metric_values(dataset, quality_thresholds(dataset)["dark"]["metric"])
    threshold = float(np.sort(values[np.isfinite(values)])[len(before) + 1])  # two more samples than flagged now
    expected = int((values <= threshold).sum())
    assert expected > len(before)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(UI_WAIT_MS)
        try:
            open_panel(page, session, dataset, "Data quality")

            # the first issue, dark: its count, and its histogram with the flagged tail
            expect(page.get_by_text(f"{len(before)} samples flagged dark")).to_be_visible(timeout=UI_WAIT_MS)
            expect(page.locator(".js-plotly-plot g.trace.bars")).to_have_count(2, timeout=UI_WAIT_MS)
            page.screenshot(path=str(artifacts_dir / "quality_panel_dark.png"))

            # move the threshold: typed into the slider's field
            field = page.get_by_label("Max", exact=False).last
            field.fill(f"{threshold:.6f}")
            field.press("Enter")
            expect(page.get_by_text(f"dark: threshold {threshold:.4g}, {expected} flagged.")).to_be_visible(
                timeout=UI_WAIT_MS)
            expect(page.get_by_text(f"{expected} samples flagged dark")).to_be_visible(timeout=UI_WAIT_MS)
            flagged = _flagged(dataset, "dark")
            assert len(flagged) == expected and before < flagged
            expect(page.get_by_text(f"highlights ≤ {threshold:.4g}", exact=False)).to_be_visible()

            # show these samples: the grid holds the flagged ones
            page.get_by_role("button", name="Show these samples").click()
            expect(page.locator('[data-cy="entry-counts"]')).to_have_text(re.compile(rf"\b{expected} samples"),
                                                                             timeout=UI_WAIT_MS)
            expect(page.get_by_text("The grid shows the samples flagged dark")).to_be_visible(timeout=UI_WAIT_MS)
            page.screenshot(path=str(artifacts_dir / "quality_panel_shown.png"))

            # exclude from curation: exactly the flagged samples
            page.get_by_role("button", name="Exclude from curation").click()
            expect(page.get_by_text(f"{expected} samples flagged dark are excluded from curation",
                                    exact=False)).to_be_visible(timeout=UI_WAIT_MS)
            assert "Traceback" not in page.inner_text("body")
        except Exception:
            page.screenshot(path=str(artifacts_dir / f"{request.node.name}.png"))
            raise
        finally:
            browser.close()

    dataset.reload()
    assert set(dataset.match({QUALITY_EXCLUDE_FIELD: True}).values("id")) == flagged
