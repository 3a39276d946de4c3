"""Test harness: an isolated FiftyOne database and plugins dir per run, the real Label Studio server,
the example dataset, and the FiftyOne App in Debian's Chromium.

The environment is set before anything imports FiftyOne, so tests never touch a user's datasets.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

RUN_DIR = Path(tempfile.mkdtemp(prefix="curate-loop-tests-"))
ARTIFACTS_DIR = Path(__file__).resolve().parent.parent / "test-artifacts"
for _var in ("FIFTYONE_DATABASE_URI", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "CURATE_LOOP_LABEL_STUDIO_BIN"):
    os.environ.pop(_var, None)
os.environ.update(
    FIFTYONE_DATABASE_DIR=str(RUN_DIR / "db"),
    FIFTYONE_DATABASE_NAME=f"curate-loop-tests-{os.getpid()}",
    FIFTYONE_PLUGINS_DIR=str(RUN_DIR / "plugins"),
    FIFTYONE_DEFAULT_DATASET_DIR=str(RUN_DIR / "fiftyone"),
    FIFTYONE_DATABASE_VALIDATION="false",
    FIFTYONE_DO_NOT_TRACK="true",
    CURATE_LOOP_HOME=str(RUN_DIR / "home"),
)

# Registered before FiftyOne is imported, so it runs after FiftyOne has stopped its mongod.
atexit.register(shutil.rmtree, RUN_DIR, ignore_errors=True)


def _attach_to_own_database_only() -> None:
    """FiftyOne attaches to any running database service of this machine, whatever its database dir: a second test
    run (or a demo) would use this run's mongod, and lose it when this run ends and deletes its folder. Here a test
    run only attaches to a service started with its own ``FIFTYONE_DATABASE_DIR``."""
    import psutil
    from fiftyone.service import util

    find = util.find_processes_by_args

    def own_only(args):
        for process in find(args):
            try:
                if process.environ().get("FIFTYONE_DATABASE_DIR") == os.environ["FIFTYONE_DATABASE_DIR"]:
                    yield process
            except psutil.Error:
                continue

    util.find_processes_by_args = own_only


_attach_to_own_database_only()

import pytest  # noqa: E402

from curate_loop.examples.digits_canvas import ExampleSpec  # noqa: E402

# Small enough to build in seconds, large enough to hold every kind of sample.
SMALL_SPEC = ExampleSpec(n_labeled=30, n_pool=60, n_near_dup_groups=3, near_dup_group_size=4, n_outliers=4, seed=7)
EXAMPLE_DATASET_NAME = "example-tests"


@pytest.fixture(scope="session")
def run_dir() -> Path:
    return RUN_DIR


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture(scope="session")
def media_root(run_dir) -> Path:
    """Everything the tests write as media lives here; Label Studio serves local files from it."""
    path = run_dir / "media"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def plugin_installed(run_dir) -> Path:
    from curate_loop.plugin_install import install_plugin

    return install_plugin(run_dir / "plugins")


@pytest.fixture(scope="session")
def example_dataset(media_root, plugin_installed):
    """The bundled example at a small size, in the run's own database (real MongoDB)."""
    from curate_loop.examples.build import build_example_dataset

    return build_example_dataset(media_root / "example", name=EXAMPLE_DATASET_NAME, spec=SMALL_SPEC, overwrite=True)


@pytest.fixture(scope="session")
def labelstudio(run_dir, media_root):
    """The real Label Studio server, from its own virtualenv, started once per test run."""
    from curate_loop.adapters.labelstudio.server import start_label_studio

    server = start_label_studio(data_dir=run_dir / "labelstudio", document_root=media_root)
    yield server
    server.stop()


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item so fixtures can tell whether the test failed."""
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())


APP_START_WAIT_S = 300  # FiftyOne waits 60 s for its App server to listen; a busy 2-core machine can take longer


@pytest.fixture(scope="session", autouse=True)
def patient_app_start():
    """Give the App server (started by the browser tests) more than FiftyOne's fixed 60 s to listen."""
    from fiftyone.core import service

    wait = service.Service._wait_for_child_port

    def patient(self, port=None, timeout=60):
        return wait(self, port=port, timeout=max(timeout, APP_START_WAIT_S))

    service.Service._wait_for_child_port = patient
    yield
    service.Service._wait_for_child_port = wait


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed: run `make browser` (apt-get install chromium chromium-driver)")
    return path


@pytest.fixture(scope="session")
def app_session(example_dataset):
    """The FiftyOne App server on a free loopback port, serving the example dataset."""
    import fiftyone as fo

    from curate_loop.adapters.labelstudio.server import free_port

    session = fo.launch_app(example_dataset, remote=True, port=free_port(), address="127.0.0.1", auto=False)
    yield session
    session.close()


@pytest.fixture
def app_page(app_session, chromium_path, artifacts_dir, request):
    """A Chromium page on the App; on failure a screenshot goes to test-artifacts/<test>.png."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        yield page
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            page.screenshot(path=str(artifacts_dir / f"{request.node.name}.png"))
        browser.close()


@pytest.fixture
def migrated_labelstudio_data(labelstudio, tmp_path) -> Path:
    """A copy of the session server's data dir: a second server starts on it without ~30 s of migrations."""
    data_dir = tmp_path / "labelstudio-copy"
    shutil.copytree(labelstudio.data_dir, data_dir, ignore=shutil.ignore_patterns("*.log"))
    return data_dir


def fresh_clone(source, name: str):
    """``source`` cloned as ``name``, replacing a dataset of that name a crashed run left behind."""
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    return source.clone(name)


def loop_copy(example_dataset, name: str, folder: Path, labelstudio_url: str, budget: int):
    """A fresh copy ``name`` of the example and a manifest for it (random-weight CLIP, the given Label Studio);
    returns ``(dataset, manifest path)``."""
    import fiftyone as fo
    import yaml

    dataset = fresh_clone(example_dataset, name)
    path = folder / "manifest.yml"
    path.write_text(yaml.safe_dump({
        "dataset": name, "label_field": "ground_truth", "classes": [str(d) for d in range(10)],
        "embeddings": {"key": "clip", "models": [{"name": "ViT-B-32", "pretrained": None}]},
        "curation": {"budget": budget, "strategy": "cluster_balanced"},
        "labelstudio": {"url": labelstudio_url, "media": "local_files"},
    }))
    return dataset, path


def jittered_proposals(dataset, truth_field: str, out_field: str, *, jitter_px: float = 3.0, n_random: int = 2,
                       seed: int = 0) -> None:
    """A stand-in for a region proposer on the pool: each true box moved by up to ``jitter_px`` pixels, plus
    ``n_random`` random boxes per image (boxes a proposer would also return: background, or parts of digits)."""
    import fiftyone as fo
    import numpy as np
    from fiftyone import ViewField as F

    rng = np.random.default_rng(seed)
    pool = dataset.match(~F("ground_truth").exists())
    if pool.exists("metadata.width", False).count():
        pool.compute_metadata()
    values = []
    for boxes, width, height in zip(*pool.values([f"{truth_field}.detections.bounding_box", "metadata.width",
                                                  "metadata.height"])):
        scale = np.array([width, height, width, height], dtype=float)
        shifted = [np.clip(np.asarray(b) + rng.uniform(-jitter_px, jitter_px, 4) / scale, 0, 1) for b in boxes or []]
        size = rng.uniform(0.1, 0.25, (n_random, 2))
        random = [np.r_[rng.uniform(0, 1 - s, 2), s] for s in size]
        values.append(fo.Detections(detections=[fo.Detection(label="object", bounding_box=b.tolist())
                                                for b in shifted + random]))
    pool.set_values(out_field, values)


APP_SETTLE_MS = 3_000  # how long a freshly ticked tile is watched for the App's page re-query
APP_REQUERY_MS = 1_000  # the page query that follows that navigation


def tick_grid_tile(page, tile, attempts: int = 3) -> None:
    """Tick ``tile`` (a locator of one ``[data-cy="looker"]`` of the App's grid) so that it stays ticked.

    On a page just opened on a saved view, the App can re-run its page query about a second after the first tick
    (a navigation to the same URL, seen as ``framenavigated``), and that drops the selection: the tick disappears
    and an operator then gets an empty selection. A person sees the tick go and ticks again; so does this helper,
    after waiting out that navigation (or ``APP_SETTLE_MS`` without one)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    box = tile.locator('[data-cy="looker-checkbox-input-"]')
    for _ in range(attempts):
        tile.scroll_into_view_if_needed()
        tile.hover()
        tile.locator('[data-cy="looker-checkbox-"]').click()
        expect(box).to_be_checked()
        try:
            page.wait_for_event("framenavigated", timeout=APP_SETTLE_MS)
            page.wait_for_timeout(APP_REQUERY_MS)
        except PlaywrightTimeout:
            pass
        if box.is_checked():
            return
    raise AssertionError(f"the App dropped the tick on a grid tile {attempts} times")


def review_in_operator_browser(page, operator: str, decision_label: str | None, *, select_tile: int | None,
                               wait_ms: int) -> None:
    """Select one tile of the App's grid (or none), open ``operator`` ("review mislabels", "review label issues")
    from the operator browser, choose ``decision_label`` (None: its default) and execute it."""
    from playwright.sync_api import expect

    if select_tile is not None:
        tick_grid_tile(page, page.locator('[data-cy="looker"]').nth(select_tile))
    page.keyboard.press("Backquote")  # the operator browser
    page.get_by_placeholder("Search operations by name...").fill(operator)
    page.get_by_text(f"curate-loop: {operator}").click()
    selected = 0 if select_tile is None else 1
    expect(page.get_by_text(f"Review {selected} selected", exact=True)).to_be_visible(timeout=wait_ms)
    if decision_label:
        page.get_by_text(decision_label, exact=True).click()
    page.get_by_role("button", name="Execute").click()


def open_panel(page, session, dataset, title: str, attempts: int = 2) -> None:
    """Open the App on ``dataset`` and add the panel named ``title`` from the "+" menu next to Samples.

    Once the menu has closed, the panel's tab carries ``title``. An App that started slowly ("Could not connect
    session" in the fixture's log) once swallowed the click: no tab, so the page is reloaded and the menu used
    again (once), as a person would."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        page.goto(f"{session.url.rstrip('/')}/datasets/{dataset.name}")
        page.get_by_text("ground_truth", exact=True).first.wait_for()  # the sidebar has loaded the dataset
        if page.get_by_role("button", name="Dismiss").count():
            page.get_by_role("button", name="Dismiss").click()
        page.locator("[data-cy=new-panel-btn]").click()
        page.get_by_text(title, exact=True).click()
        try:
            page.get_by_text(title, exact=True).first.wait_for(timeout=15_000)  # the new panel's tab
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise


# -- the App's own "sort by image similarity" (tests/test_browser_similarity*.py) ---------------------------------------
SIMILARITY_SEARCH_OPERATOR = "@voxel51/panels/similarity_search"
BROWSER_WAIT_MS = 60_000  # like the page's default timeout; expect() alone waits only 5 s


def pixel_features(images):
    """16x16 grey thumbnails, centred: near-duplicates of the example are near-identical in pixels."""
    import numpy as np

    return np.stack([np.asarray(img.convert("L").resize((16, 16)), dtype=np.float32).ravel() - 127 for img in images])


def _post_json(request) -> dict:
    import json

    try:
        return json.loads(request.post_data or "{}")
    except ValueError:
        return {}


def _is_search(response) -> bool:
    return (response.url.endswith("/operators/execute")
            and _post_json(response.request).get("operator_uri") == SIMILARITY_SEARCH_OPERATOR)


def _is_first_page_of_selected_results(response) -> bool:
    """The App's first ``paginateSamplesQuery`` over the ordered ``Select`` view that applies the results."""
    if not response.url.endswith("/graphql"):
        return False
    body = _post_json(response.request)
    variables = body.get("variables") or {}
    return ("paginateSamplesQuery" in body.get("query", "") and variables.get("after") is None
            and any(stage.get("_cls") == "fiftyone.core.stages.Select" for stage in variables.get("view") or []))


def sort_by_image_similarity_in_app(page, app_url: str, dataset, brain_key: str) -> dict:
    """A user's path through the App: open ``dataset``, show ``near_dup_group`` on the tiles, tick the first planted
    near-duplicate, "Sort by image similarity" -> "Show similar samples", then "Show results" on ``brain_key``'s card
    in the Similarity Search panel. Returns what the App asked for and showed, read from its own network traffic:
    ``params`` (the search), ``group`` (the ticked tile's), ``shown`` (the first page's ids) and ``tiles``."""
    import json

    from playwright.sync_api import expect

    # The grid's popover has no index picker: it uses the dataset's last-used index, else the first by name.
    # Make ours the last used, as if the user had searched with it before; the request below confirms it.
    # IS_PLAYWRIGHT is FiftyOne's own switch for browser tests: no analytics, no popups over the grid.
    last_used = json.dumps({str(dataset._doc.id): brain_key})  # keyed by dataset id
    page.add_init_script(
        "window.IS_PLAYWRIGHT = true;"
        "localStorage.setItem('fiftyone-enterprise-tooltip-seen', 'true');"
        f"localStorage.setItem('lastUsedBrainKeys', {json.dumps(last_used)});"
    )
    page.goto(f"{app_url.rstrip('/')}/datasets/{dataset.name}")
    page.get_by_text("ground_truth", exact=True).first.wait_for()  # the sidebar has loaded the dataset

    # Show near_dup_group on the tiles: expand its sidebar group, tick the field.
    page.locator('[data-cy="sidebar-group-entry-EXAMPLE TRUTH (KEPT ASIDE)"]').click()
    show_group = page.locator('[data-cy="checkbox-near_dup_group"]')
    expect(show_group).to_be_in_viewport(timeout=BROWSER_WAIT_MS)
    show_group.click()

    # Select the first near-duplicate the grid shows: hover its tile, tick its checkbox.
    tiles = page.locator('[data-cy="looker"]')
    tile = tiles.filter(has=page.locator('[data-cy="tag-near_dup_group"]')).first
    tile.scroll_into_view_if_needed()
    group = int(tile.locator('[data-cy="tag-near_dup_group"]').inner_text())
    tick_grid_tile(page, tile)

    # Sort by image similarity -> Show similar samples: the App runs the search operator.
    sort_button = page.locator('[data-cy="action-sort-by-similarity"]')
    sort_button.hover()
    expect(page.get_by_text("Sort by image similarity", exact=True)).to_be_visible(timeout=BROWSER_WAIT_MS)  # tooltip
    sort_button.click()
    with page.expect_response(_is_search) as search_info:
        page.get_by_text("Show similar samples", exact=True).click()
    search = search_info.value
    assert search.ok and search.json()["error"] is None, search.text()

    # The Similarity Search panel lists the run; "Show results" applies it as the grid's view.
    run_card = page.get_by_role("button").filter(has_text="Completed").filter(has_text=brain_key)
    run_card.wait_for()
    show_results = run_card.locator('button[aria-label="Show results"]')
    assert show_results.get_attribute("disabled") is None
    with page.expect_response(_is_first_page_of_selected_results) as page_info:
        # The run card is a drag-and-drop item marked aria-disabled, which Playwright's actionability check
        # inherits; the button itself is enabled (checked above) and a real click reaches it.
        show_results.click(force=True)
    shown = [edge["node"]["id"] for edge in page_info.value.json()["data"]["samples"]["edges"]]
    return {"params": _post_json(search.request)["params"], "group": group, "shown": shown, "tiles": tiles}
