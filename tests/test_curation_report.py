"""The curation report: coverage metrics against random batches (checked against brute force), and the HTML page.

The clusters are the planted components of a gaussian mixture, so every expected number can be worked out here.
"""

from __future__ import annotations

import io
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from curate_loop.curation.clustering import NOISE, ClusterResult
from curate_loop.curation.metrics import selection_metrics
from curate_loop.curation.report_html import MAP_MAX_POINTS, render_report, thumbnail_bytes, write_report
from curate_loop.curation.strategies import select_random
from curate_loop.errors import InvalidInputError

SIZES = (300, 250, 200, 150, 100, 60, 8, 6)  # two tiny clusters: random batches of 8 almost never reach them
KINDS = ("dense", "regular", "regular", "dense", "regular", "regular", "sparse", "sparse")
N_OUTLIERS = 10


@pytest.fixture(scope="module")
def mix():
    """(vectors (n, 32), ClusterResult of the planted components; the last N_OUTLIERS rows are noise)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(len(SIZES), 32))
    parts = [c + 0.4 * rng.normal(size=(s, 32)) for c, s in zip(centers, SIZES)]
    parts.append(3 * rng.normal(size=(N_OUTLIERS, 32)))
    labels = np.concatenate([np.repeat(np.arange(len(SIZES)), SIZES), np.full(N_OUTLIERS, NOISE)])
    clusters = ClusterResult(labels=labels, sizes=np.array(SIZES), density=np.linspace(0.9, 0.5, len(SIZES)),
                             kinds=np.array(KINDS), method="planted")
    return np.concatenate(parts).astype(np.float32), clusters


def first_of_each(clusters: ClusterResult, which=None) -> np.ndarray:
    which = range(clusters.n_clusters) if which is None else which
    return np.array([np.flatnonzero(clusters.labels == c)[0] for c in which])


def nearest_covered(x: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Brute force: cosine distance of every row to its nearest covered row."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.sqrt(np.maximum(2 - 2 * unit @ unit[covered].T, 0)).min(axis=1)


# -- metrics -------------------------------------------------------------------------------------------------------
def test_one_pick_per_cluster_reaches_every_cluster_and_random_does_not(mix):
    x, clusters = mix
    picked = first_of_each(clusters)
    m = selection_metrics(x, clusters, picked, n_random=10, seed=3)
    assert m["cluster_coverage"] == 1.0 and m["small_cluster_coverage"] == 1.0
    by_hand = [np.mean(np.isin(np.arange(8), clusters.labels[select_random(len(x), 8, seed=3 + s)]))
               for s in range(10)]
    row = m["summary"]["cluster_coverage"]
    assert row["random_mean"] == pytest.approx(np.mean(by_hand)) and row["random_mean"] < 1
    assert row["random_std"] == pytest.approx(np.std(by_hand))
    assert row["better"] and row["ratio"] == pytest.approx(1 / row["random_mean"])
    assert row["difference"] == pytest.approx(1 - row["random_mean"])
    assert m["summary"]["small_cluster_coverage"]["random_mean"] < 0.5
    assert m["edge_cases"] == {"count": 2, "noise": 0, "in_sparse_clusters": 2, "rows": picked[6:].tolist()}
    table = {r["id"]: r for r in m["clusters"]}
    assert [r["size"] for r in m["clusters"]] == sorted(SIZES, reverse=True)
    assert table[0]["expected_random"] == pytest.approx(8 * 300 / len(x)) and table[7]["picked"] == 1
    assert m["sparsest_clusters"] == [7, 6, 5] and m["densest_clusters"] == [0, 1, 2]
    assert m["counts"]["n_small_clusters"] == 2 and m["counts"]["n_noise"] == N_OUTLIERS


def test_distance_metrics_equal_brute_force(mix):
    x, clusters = mix
    picked, labeled = first_of_each(clusters, [0, 2, 4]), np.array([350, 600, 1070])
    m = selection_metrics(x, clusters, picked, labeled_idx=labeled, delta=0.6)
    distance = nearest_covered(x, np.concatenate([picked, labeled]))
    assert m["kcenter_radius"] == pytest.approx(distance.max(), abs=1e-4)
    assert m["kcenter_radius_p95"] == pytest.approx(np.quantile(distance, 0.95), abs=1e-4)
    assert m["delta_coverage"] == pytest.approx(np.mean(distance <= 0.6), abs=2 / len(x))
    assert m["delta"]["value"] == 0.6 and m["delta"]["given"]


def test_default_delta_is_the_median_distance_to_the_10th_neighbour(mix):
    x, clusters = mix
    m = selection_metrics(x, clusters, first_of_each(clusters))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = np.sqrt(np.maximum(2 - 2 * unit @ unit.T, 0))
    np.fill_diagonal(dist, np.inf)
    assert m["delta"]["value"] == pytest.approx(np.median(np.sort(dist, axis=1)[:, 9]), abs=1e-4)
    assert not m["delta"]["given"]


def test_delta_coverage_grows_with_delta(mix):
    x, clusters = mix
    picked = first_of_each(clusters)
    runs = [selection_metrics(x, clusters, picked, delta=d, n_random=3)["summary"]["delta_coverage"]
            for d in (0.2, 0.5, 0.8, 1.1, 2.0)]
    for key in ("ours", "random_mean"):
        values = [r[key] for r in runs]
        assert values == sorted(values) and values[0] < values[-1] == 1.0


def test_class_coverage_ignores_unknown_labels(mix):
    x, clusters = mix
    classes = np.array(list("abcdefgh"), dtype=object)[np.maximum(clusters.labels, 0)]
    classes[clusters.labels == 7] = None  # class "h" is never known: 7 classes present
    classes[clusters.labels == NOISE] = None
    picked = first_of_each(clusters, [0, 1, 2, 3, 7])
    classes[picked[0]] = None  # the pick in cluster 0 has no class: "a" stays uncovered
    m = selection_metrics(x, clusters, picked, class_labels=list(classes))
    assert m["class_coverage"] == pytest.approx(3 / 7)
    table = {r["class"]: r for r in m["classes"]["table"]}
    assert set(table) == set("abcdefg") and m["classes"]["n_classes"] == 7
    assert [table[c]["picked"] for c in "abcd"] == [0, 1, 1, 1] and table["a"]["rows"] == 299
    assert m["classes"]["unknown_in_batch"] == 2 and m["classes"]["unknown_rows"] == 6 + N_OUTLIERS + 1
    assert "class_coverage" in m["summary"]


def test_labeled_rows_count_as_covered(mix):
    x, clusters = mix
    picked, labeled = first_of_each(clusters, [0, 1, 2, 3]), first_of_each(clusters, [4, 5, 6, 7])
    m = selection_metrics(x, clusters, picked, labeled_idx=labeled)
    assert m["cluster_coverage"] == 1.0 and m["small_cluster_coverage"] == 1.0
    assert m["summary"]["small_cluster_coverage"]["random_mean"] == 1.0  # labeled rows reach them for random too
    table = {r["id"]: r for r in m["clusters"]}
    assert [table[c]["labeled"] for c in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert m["counts"]["n_pool"] == len(x) - 4


def test_random_batches_come_from_the_pool_only(mix):
    x, clusters = mix
    labeled = np.flatnonzero((clusters.labels >= 0) & (clusters.labels < 6))  # the pool: tiny clusters and noise
    pool = np.setdiff1d(np.arange(len(x)), labeled)
    m = selection_metrics(x, clusters, pool[:5], labeled_idx=labeled)
    assert m["summary"]["edge_cases"]["random_mean"] == 5  # every pool row is an edge case
    assert m["summary"]["edge_cases"]["random_std"] == 0
    assert all(r["expected_random"] == 0 for r in m["clusters"] if r["id"] < 6)


@pytest.mark.parametrize("change, message", [
    (dict(picked_idx=[0, 5000]), "outside"),
    (dict(picked_idx=[3, 3]), "repeats"),
    (dict(picked_idx=[3, 4], labeled_idx=[4]), "labeled already"),
    (dict(picked_idx=[]), "empty"),
    (dict(class_labels=["a"] * 7), "class_labels has 7"),
    (dict(vectors_rows=100), "clusters has labels for"),
    (dict(delta=3.0), "delta"),
    (dict(n_random=0), "n_random"),
])
def test_bad_input_is_refused(mix, change, message):
    x, clusters = mix
    args = dict(picked_idx=[0, 1], labeled_idx=None, class_labels=None, delta=None, n_random=2)
    x = x[:change.pop("vectors_rows", len(x))]
    args.update(change)
    with pytest.raises(InvalidInputError, match=message):
        selection_metrics(x, clusters, args.pop("picked_idx"), **args)


# -- HTML ----------------------------------------------------------------------------------------------------------
class _Page(HTMLParser):
    """What the tests look at: tags, pick circles, image sources, and the headline table's cells."""

    def __init__(self):
        super().__init__()
        self.tags, self.picks, self.images, self.text = [], 0, [], []
        self.cells, self._row, self._in_headline = [], None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.picks += tag == "circle" and attrs.get("class") == "pick"
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "table":
            self._in_headline = attrs.get("class") == "headline"
        if tag == "tr" and self._in_headline:
            self._row = []
        if tag == "td" and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row:
            self.cells.append(self._row)
        if tag in ("tr", "table"):
            self._row = None
        if tag == "strong" and self._row:
            self._row[-1] = "**" + self._row[-1] + "**"

    def handle_data(self, data):
        self.text.append(data)
        if self._row:
            self._row[-1] += data


def png_bytes(color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def report(mix):
    x, clusters = mix
    picked, labeled = first_of_each(clusters), np.array([350, 600])
    m = selection_metrics(x, clusters, picked, labeled_idx=labeled, class_labels=list(clusters.labels))
    points = np.random.default_rng(1).normal(size=(len(x), 2))
    thumbs = {"cluster 7 (sparsest)": [("a <b> cat", png_bytes())], "edge cases": [("x", png_bytes((0, 0, 255)))],
              "cluster 0": [("y", png_bytes((0, 255, 0)))]}
    page = render_report(m, title="<script>alert(1)</script> batch", thumbnails=thumbs, map_points=points,
                         map_highlight=picked, map_labeled=labeled)
    parsed = _Page()
    parsed.feed(page)
    return m, page, parsed


def test_headline_table_shows_ours_against_random(report):
    m, _, page = report
    rows = {r[0]: r[1:] for r in page.cells}
    s = m["summary"]["cluster_coverage"]
    ours, rand, ratio, diff = rows["Cluster coveragenatural clusters holding a labeled or picked sample"]
    assert ours == "**100.0%**"
    assert rand == f"{s['random_mean']:.1%} ± {s['random_std']:.1%}"
    assert ratio == f"{s['ratio']:.2f}×" and diff == f"{100 * s['difference']:+.1f} pts"
    radius = next(v for k, v in rows.items() if k.startswith("k-center radiusfarthest"))
    assert radius[0].strip("*") == f"{m['kcenter_radius']:.3f}"
    assert radius[0].startswith("**") == m["summary"]["kcenter_radius"]["better"]
    assert len(page.cells) == len(m["summary"])


def test_page_is_self_contained_and_escaped(report):
    _, html_text, page = report
    assert "script" not in page.tags and "link" not in page.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt; batch" in html_text
    assert "a &lt;b&gt; cat" in html_text and "<b>" not in html_text
    assert "http://" not in html_text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert len(page.images) == 3 and all(s.startswith("data:image/png;base64,iVBOR") for s in page.images)
    assert "Classes" in page.text and "Sparsest clusters" in page.text and "edge cases" in page.text


def test_cluster_thumbnails_sit_with_their_cluster(report):
    _, html_text, _ = report
    sparsest, densest, more = (html_text.index(h) for h in ("<h2>Sparsest", "<h2>Densest", "<h2>More samples"))
    assert sparsest < html_text.index('alt="a &lt;b&gt; cat"') < densest < html_text.index('alt="y"') < more
    assert html_text.index('alt="x"') > more and "<h3>cluster 7" not in html_text


def test_map_highlights_every_pick(report):
    m, html_text, page = report
    assert "svg" in page.tags and page.picks == m["counts"]["n_picked"]
    assert html_text.count('class="labeled"') == 2


def test_large_map_is_thinned_but_keeps_every_pick():
    n, picks = 20_000, np.arange(0, 20_000, 50)  # 400 picks
    points = np.random.default_rng(0).normal(size=(n, 2))
    first = render_report({}, title="map", map_points=points, map_highlight=picks)
    page = _Page()
    page.feed(first)
    assert page.picks == 400 and page.tags.count("circle") == MAP_MAX_POINTS
    assert render_report({}, title="map", map_points=points, map_highlight=picks) == first


def test_write_report_replaces_atomically(tmp_path):
    target = tmp_path / "a" / "b" / "report.html"
    assert write_report("<p>one</p>", target) == target
    write_report("<p>two</p>", target)
    assert target.read_text(encoding="utf-8") == "<p>two</p>"
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def test_thumbnail_bytes(tmp_path):
    good, bad = tmp_path / "big.png", tmp_path / "broken.jpg"
    Image.new("RGB", (400, 200), (10, 200, 10)).save(good)
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    thumb = thumbnail_bytes(good)
    assert thumb[:2] == b"\xff\xd8" and Image.open(io.BytesIO(thumb)).size == (96, 48)
    assert thumbnail_bytes(bad) is None and thumbnail_bytes(tmp_path / "missing.png") is None


def test_header_and_legend_count_the_same_labeled_and_queued_rows_even_when_thinned():
    n = 20_000
    labeled, queued, picks = np.zeros(n, bool), np.zeros(n, bool), np.arange(0, 200, 2)
    labeled[1000:4000], queued[5000:5500] = True, True
    pool = {"labeled": 3000, "queued": 500, "excluded": 7, "available": n - 3507}
    page = render_report({"counts": {"n_rows": n, "n_picked": len(picks)}, "batch": {"pool": pool}}, title="t",
                         map_points=np.random.default_rng(0).normal(size=(n, 2)), map_highlight=picks,
                         map_labeled=labeled, map_queued=queued, notices=["RANDOM WEIGHTS: <key>"])
    assert "labeled 3,000 · queued in earlier batches 500 · near-duplicates set aside 7 · pool 16,493" in page
    assert "labeled (3,000)</span>" in page and "queued (500)</span>" in page  # every row, not only those drawn
    assert page.count("RANDOM WEIGHTS: &lt;key&gt;") == 1 and 'class="notice"' in page
    assert "queued (" not in render_report({}, title="t", map_points=np.zeros((3, 2)), map_labeled=[0])
