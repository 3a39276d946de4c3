"""Curation on the example dataset in real FiftyOne: batches, edge cases, near-duplicates, the report, the
balanced subset, and the same through the CLI and the App's operators.

Offline there is no pretrained model, and random-weight CLIP maps every image to nearly the same direction, so
quality is measured with a model-free descriptor of the images (colour histograms, gradient energy and HOG,
standardised over the dataset): it sees what the example's near-duplicates and most outliers are made of. The
"tiny crowd" outlier is a photo with small digits on it: only a semantic model tells it apart, so it is not
asked for here.
"""

from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner

from curate_loop.cli import cli
from curate_loop.errors import InvalidInputError
from curate_loop.plugin_install import PLUGIN_NAME
from curate_loop.runs import embeddings as runs
from curate_loop.runs.curation import (delete_batch, list_batches, saturation_history, select_balanced_subset,
                                       select_batch)
from curate_loop.runs.duplicates import exclude_near_duplicates_view, find_duplicates
from curate_loop.runs.edges import score_edge_cases
from curate_loop.runs.pool import BATCH_FIELD
from conftest import fresh_clone

DUP_THRESHOLD = 0.965  # thumbnails of the example: planted copies >= .978, any other pair <= .953


def thumbnails(filepaths):
    """16x16 grey thumbnails, each minus its own mean: what near-duplicate (perceptual hash) checks compare;
    a brightness change does not move them."""
    from PIL import Image

    rows = np.stack([np.asarray(Image.open(p).convert("L").resize((16, 16)), dtype=np.float32).ravel()
                     for p in filepaths])
    return rows - rows.mean(axis=1, keepdims=True)


def image_descriptor(filepaths):
    """Colour histograms, gradient energy, brightness and contrast, standardised over the dataset, plus a
    constant column: cosine geometry then also sees how far from typical a sample is, not only in which way."""
    from PIL import Image

    rows = []
    for path in filepaths:
        pixels = np.asarray(Image.open(path).convert("RGB").resize((64, 64)), dtype=np.float32) / 255
        hist = np.concatenate([np.histogram(pixels[..., c], bins=8, range=(0, 1))[0] / 4096 for c in range(3)])
        grads = [np.abs(np.diff(pixels, axis=a)).mean() for a in (0, 1)]
        rows.append(np.concatenate([hist, grads, [pixels.mean(), pixels.std()]]))
    features = np.asarray(rows)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    typical_norm = np.median(np.linalg.norm(features, axis=1))
    return np.hstack([features, np.full((len(features), 1), typical_norm)]).astype(np.float32)


@pytest.fixture(scope="module")
def curated(example_dataset):
    """A clone of the example (these tests write batch fields), with descriptor vectors as run "desc" and
    thumbnails as run "thumbs"."""
    import fiftyone as fo

    name = "curation-tests"
    dataset = fresh_clone(example_dataset, name)
    runs.import_embeddings(dataset, "desc", image_descriptor(dataset.values("filepath")))
    runs.import_embeddings(dataset, "thumbs", thumbnails(dataset.values("filepath")))
    yield dataset
    dataset.delete()


def _truth(dataset):
    return (np.asarray(dataset.values("id")), np.asarray(dataset.values("example_kind"), dtype=object),
            np.asarray(dataset.values("near_dup_group"), dtype=object),
            np.asarray(dataset.values("outlier_kind"), dtype=object))


def test_near_duplicate_groups_of_the_example_are_found_and_excludable(curated):
    summary = find_duplicates(curated, "thumbs", threshold=DUP_THRESHOLD)
    ids, kind, planted, _ = _truth(curated)
    found = np.asarray(curated.values("dup_group"), dtype=object)
    planted_groups = {frozenset(ids[planted == g]) for g in set(planted[planted != None])}  # noqa: E711
    found_groups = {frozenset(ids[found == g]) for g in set(found[found != None])}  # noqa: E711
    assert found_groups == planted_groups
    assert summary.groups == 3 and summary.in_groups == 12 and summary.redundant == 9
    kept = exclude_near_duplicates_view(curated)
    assert len(kept) == len(curated) - 9
    assert curated.load_saved_view("near_duplicates").count() == 12


def test_planted_outliers_rank_high_in_edge_score(curated):
    summary = score_edge_cases(curated, "desc")
    assert summary.scored == len(curated)
    ids, kind, _, outlier_kind = _truth(curated)
    scores = np.asarray(curated.values("edge_score"), dtype=float)
    assert ((0 <= scores) & (scores <= 1)).all()
    percentile = np.argsort(np.argsort(scores)) / (len(scores) - 1)  # 1.0: the highest score
    rank = dict(zip(outlier_kind[kind == "outlier"], percentile[kind == "outlier"]))
    # unlike anything else in colour and contrast: in the top 10% (random ranks: 0.5 on average)
    assert min(rank["inverted_giant"], rank["rotated_stretched"]) >= 0.9, rank
    assert np.mean([rank["inverted_giant"], rank["rotated_stretched"], rank["static_noise"]]) >= 0.75, rank
    top = curated.load_saved_view("edge_cases").first()
    assert top.edge_score == scores.max() and top.curate_cluster_kind in ("sparse", "noise", "regular", "dense")


def test_batch_reaches_every_cluster_and_records_itself(curated, artifacts_dir):
    k = 12
    find_duplicates(curated, "thumbs", threshold=DUP_THRESHOLD)  # batches skip the redundant copies
    summary = select_batch(curated, "batch_01", k, "desc")
    assert summary.picked == k and summary.clusters >= 2
    assert k >= summary.clusters and summary.clusters_reached == summary.clusters
    picked = curated.load_saved_view("batch_01")
    assert len(picked) == k and set(picked.values(BATCH_FIELD)) == {"batch_01"}
    assert all(gt is None for gt in picked.values("ground_truth"))  # labeled samples are never picked
    assert set(picked.values("id")) == set(summary.sample_ids)
    # no two picks from the same planted near-duplicate group
    groups = [g for g in picked.values("near_dup_group") if g is not None]
    assert len(groups) == len(set(groups))
    coverage = summary.coverage["cluster_coverage"]
    assert coverage["ours"] == 1.0 and coverage["ours"] >= coverage["random_mean"]
    assert 0 <= summary.saturation["covered_before"] <= summary.saturation["covered_after"] <= 1
    assert [b["name"] for b in list_batches(curated)] == ["batch_01"]
    info = curated.get_run_info("batch_01")
    assert info.config.strategy == "cluster_balanced" and info.config.k == k

    html = open(summary.report_path, encoding="utf-8").read()
    (artifacts_dir / "curation-report-example.html").write_text(html, encoding="utf-8")  # to look at
    parser = HTMLParser()
    parser.feed(html)
    assert "random" in html.lower() and "cluster" in html.lower() and "<svg" in html
    assert "data:image/" in html  # thumbnails inline: the file is self-contained

    second = select_batch(curated, "batch_02", 6, "desc", strategy="random", seed=3)
    assert not set(second.sample_ids) & set(summary.sample_ids)  # queued samples are not picked again
    history = saturation_history(curated)
    assert [row["name"] for row in history["batches"]] == ["batch_01", "batch_02"]
    assert history["batches"][1]["covered_before"] == pytest.approx(history["batches"][0]["covered_after"])

    with pytest.raises(InvalidInputError, match="already exists.*overwrite"):
        select_batch(curated, "batch_01", 4, "desc")
    redo = select_batch(curated, "batch_01", 5, "desc", overwrite=True)
    assert redo.picked == 5 and len(curated.load_saved_view("batch_01")) == 5
    assert delete_batch(curated, "batch_02") == 6
    assert len(curated.exists(BATCH_FIELD)) == 5 and "batch_02" not in curated.list_runs()


def test_bad_curation_input_says_what_to_do_and_writes_nothing(curated):
    before = curated.count_values(BATCH_FIELD) if curated.has_field(BATCH_FIELD) else {}
    with pytest.raises(InvalidInputError, match="k must be between 1 and the"):
        select_batch(curated, "too_big", 10_000, "desc")
    with pytest.raises(InvalidInputError, match="Invalid batch name"):
        select_batch(curated, "my batch", 3, "desc")
    with pytest.raises(InvalidInputError, match="Unknown strategy"):
        select_batch(curated, "b", 3, "desc", strategy="best")
    with pytest.raises(InvalidInputError, match="No embeddings 'nope'"):
        select_batch(curated, "b", 3, "nope")
    assert (curated.count_values(BATCH_FIELD) if curated.has_field(BATCH_FIELD) else {}) == before
    assert "too_big" not in curated.list_runs()


def test_a_smaller_min_cluster_size_finds_finer_clusters_and_is_recorded(curated):
    coarse = select_batch(curated, "coarse", 4, "desc", report=False)
    fine = select_batch(curated, "fine", 4, "desc", min_cluster_size=2, report=False)
    assert fine.clusters > coarse.clusters
    assert curated.get_run_info("fine").config.min_cluster_size == 2
    assert curated.get_run_info("coarse").config.min_cluster_size is None
    with pytest.raises(InvalidInputError, match="min_cluster_size must be at least 2"):
        select_batch(curated, "too_fine", 4, "desc", min_cluster_size=1)
    assert "too_fine" not in curated.list_runs()
    out = CliRunner().invoke(cli, ["curate", "edges", curated.name, "--key", "desc", "--min-cluster-size", "2"],
                             catch_exceptions=False).output
    assert f"of {fine.clusters} clusters" in out
    for name in ("coarse", "fine"):
        delete_batch(curated, name)


def test_balanced_subset_lifts_the_rarest_class(curated):
    result = select_balanced_subset(curated.match_tags("labeled"), "test_set", 10, "ground_truth")
    assert result["picked"] == 10 and len(curated.match_tags("test_set")) == 10
    assert result["min_class_objects"] >= result["min_class_objects_random"]
    assert result["classes_present"] >= result["classes_present_random"]
    available = {c: v["available"] for c, v in result["classes"].items()}
    assert all(v["subset"] >= min(1, available[c]) for c, v in result["classes"].items())


def test_cli_and_operators_curate(curated):
    from fiftyone.operators import execute_operator

    runner = CliRunner()
    out = runner.invoke(cli, ["curate", "select", curated.name, "cli_batch", "-k", "4", "--key", "desc"],
                        catch_exceptions=False).output
    assert "Batch 'cli_batch': 4 of" in out and "cluster_coverage: ours" in out and "report:" in out
    out = runner.invoke(cli, ["curate", "list", curated.name], catch_exceptions=False).output
    assert "cli_batch: edge cases covered" in out
    result = runner.invoke(cli, ["curate", "select", curated.name, "x", "-k", "4", "--key", "missing"])
    assert result.exit_code != 0 and "No embeddings 'missing'" in result.output

    result = execute_operator(f"{PLUGIN_NAME}/select_batch", ctx={
        "view": curated.view(), "params": {"name": "op_batch", "k": 3, "key": "desc",
                                           "strategy": "cluster_balanced", "label_field": "ground_truth"}})
    assert result.result["picked"] == 3 and result.result["view"] == "op_batch"
    assert len(curated.load_saved_view("op_batch")) == 3
    result = execute_operator(f"{PLUGIN_NAME}/score_edge_cases", ctx={"view": curated.view(),
                                                                      "params": {"key": "desc"}})
    assert result.result["scored"] == len(curated)
    result = execute_operator(f"{PLUGIN_NAME}/find_near_duplicates", ctx={
        "view": curated.view(), "params": {"key": "thumbs", "threshold": DUP_THRESHOLD}})
    assert result.result["groups"] == 3


def test_views_with_no_group_and_no_cluster_give_results_not_errors(example_dataset):
    """Random vectors hold no near-duplicates, and 5 items make no cluster: both are results, not exceptions."""
    from curate_loop.runs.duplicates import DUP_GROUP_FIELD, find_duplicates
    from curate_loop.runs.edges import CLUSTER_KIND_FIELD, score_edge_cases
    from curate_loop.runs.embeddings import import_embeddings

    dataset = example_dataset.clone("no-groups-no-clusters")
    for field in (DUP_GROUP_FIELD, "dup_keep"):
        if dataset.has_field(field):
            dataset.delete_sample_field(field)
    import_embeddings(dataset, "noise", np.random.default_rng(0).normal(size=(len(dataset), 16)))
    assert find_duplicates(dataset, "noise").groups == 0 and dataset.count(DUP_GROUP_FIELD) == 0
    five = dataset.limit(5)
    score_edge_cases(five, "noise")
    assert five.values(CLUSTER_KIND_FIELD) == ["noise"] * 5
