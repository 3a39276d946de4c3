"""Reports that agree with themselves: one definition of labeled behind a batch report's counts, its map legend and
the dataset summary (checked on the example after a real Label Studio pull), one saturation verdict computed from
the curve's numbers (for the loop report and `curate list`), and the random-weights notice beside every result
built on random-weight embeddings, and nowhere else."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from curate_loop.cli import cli
from curate_loop.curation.saturation import saturation_verdict
from curate_loop.loop.report import render_loop_report
from curate_loop.runs.pool import BATCH_FIELD, is_labeled, labeled_view
from conftest import fresh_clone

RANDOM_NOTICE = "RANDOM WEIGHTS"


def thumbnails(filepaths) -> np.ndarray:
    """16x16 grey thumbnails minus their mean: cheap vectors in which the example's planted copies are close."""
    from PIL import Image

    rows = np.stack([np.asarray(Image.open(p).convert("L").resize((16, 16)), dtype=np.float32).ravel()
                     for p in filepaths])
    return rows - rows.mean(axis=1, keepdims=True)


def curve(*points) -> list[dict]:
    """Saturation rows from (covered_after, gain) pairs."""
    return [{"name": f"batch_{i + 1:02d}", "n_edge": 40, "covered_before": after - gain, "covered_after": after,
             "gain": gain} for i, (after, gain) in enumerate(points)]


# -- the saturation verdict, from the curve's numbers ------------------------------------------------------------
@pytest.mark.parametrize("points, saturated, says", [
    ([], False, "No batch selected yet"),
    ([(1.0, 0.003)], True, "100.0% of the edge region is covered after batch_01 (+0.3%)"),  # the case
    ([(0.997, 0.4)], True, "99.7% of the edge region is covered"),  # a big last gain, but nothing left to cover
    ([(0.5, 0.01)], False, "keep curating"),  # one small gain may be bad luck
    ([(0.4, 0.3), (0.6, 0.2)], False, "batch_02 added +20.0% (60.0% of the edge region covered): keep curating"),
    ([(0.4, 0.3), (0.41, 0.01), (0.425, 0.015)], True, "the last 2 batch(es) each added under 2% of the edge region "
                                                        "(+1.0%, +1.5%; 42.5% covered)"),
    ([(0.4, 0.01), (0.6, 0.2)], False, "keep curating"),  # the last batch paid again
])
def test_verdict_follows_the_curve(points, saturated, says):
    verdict = saturation_verdict(curve(*points))
    assert verdict.saturated is saturated and says in verdict.message
    assert ("saturated" in verdict.message.lower()) is saturated or not points


def test_loop_report_derives_its_verdict_from_the_rows_it_draws():
    rows = curve((0.997, 0.997), (1.0, 0.003))  # 99.7% -> 100.0%
    page = render_loop_report([], {"batches": rows, "saturated": False}, dataset_name="d")  # a stale flag
    assert saturation_verdict(rows).message in page and "keep curating" not in page
    rows = curve((0.3, 0.3), (0.6, 0.3))
    page = render_loop_report([], {"batches": rows, "saturated": True}, dataset_name="d")
    assert "keep curating" in page and "are saturated" not in page


# -- the example after a pull ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pulled(example_dataset, labelstudio):
    """A clone of the example with thumbnail vectors, near-duplicates marked, batch_01 pushed, answered by the
    simulated annotator and pulled back, batch_02 picked (queued, not pushed) and batch_03 picked after it."""
    import fiftyone as fo

    from curate_loop.loop.simulate import answer_batch
    from curate_loop.runs import embeddings as runs
    from curate_loop.runs.curation import select_batch
    from curate_loop.runs.duplicates import find_duplicates
    from curate_loop.runs.labelstudio import pull_batch, push_batch

    name = "reports-consistent"
    dataset = fresh_clone(example_dataset, name)
    runs.import_embeddings(dataset, "thumbs", thumbnails(dataset.values("filepath")))
    duplicates = find_duplicates(dataset, "thumbs", threshold=0.965)
    assert duplicates.redundant > 0  # set-aside samples exist: the old header counted them as labeled
    select_batch(dataset, "batch_01", 8, "thumbs")
    push_batch(dataset, "batch_01", "ground_truth", url=labelstudio.url, api_key=labelstudio.token,
               document_root=labelstudio.document_root)
    assert answer_batch(dataset, "batch_01", url=labelstudio.url, api_key=labelstudio.token) == 8
    assert pull_batch(dataset, "batch_01", url=labelstudio.url, api_key=labelstudio.token).applied == 8
    select_batch(dataset, "batch_02", 6, "thumbs", seed=1)
    third = select_batch(dataset, "batch_03", 5, "thumbs", seed=2)
    yield dataset, third
    dataset.delete()


def test_batch_report_counts_and_legend_agree_with_the_one_definition(pulled):
    from curate_loop.summary import summarize

    dataset, summary = pulled
    labeled_ids = set(labeled_view(dataset, "ground_truth").values("id"))
    ids, truth, split, tags = dataset.values(["id", "ground_truth", "split", "tags"])
    assert labeled_ids == {i for i, label in zip(ids, truth) if is_labeled(label)}
    # the pulled pool samples are labeled, though their file name, split and tag still say "pool"
    pulled_ids = set(dataset.load_saved_view("batch_01").values("id"))
    pulled_names = dataset.select(list(pulled_ids)).values("filepath")
    assert pulled_ids <= labeled_ids and all(Path(p).name.startswith("pool_") for p in pulled_names)
    assert all(s == "pool" and "pool" in t for i, s, t in zip(ids, split, tags) if i in pulled_ids)
    n_labeled = len(labeled_ids)
    assert n_labeled == sum(1 for s in split if s == "labeled") + 8 == summarize(dataset)["labeled_samples"]

    queued = len(dataset.exists(BATCH_FIELD)) - len(pulled_ids) - summary.picked
    assert summary.pool["labeled"] == n_labeled and summary.pool["queued"] == queued == 6
    page = Path(summary.report_path).read_text(encoding="utf-8")
    header = re.search(r"labeled ([\d,]+) · queued in earlier batches ([\d,]+) · near-duplicates set aside ([\d,]+) "
                       r"· pool ([\d,]+) · batch ([\d,]+)", page)
    assert header, "the report's header names its counts"
    labeled, queued_shown, excluded, pool, batch = (int(g.replace(",", "")) for g in header.groups())
    assert (labeled, queued_shown, batch) == (n_labeled, 6, 5)
    assert f"labeled ({n_labeled:,})</span>" in page and f"queued ({queued_shown:,})</span>" in page
    assert excluded == summary.pool["excluded"] > 0 and pool == summary.pool_size
    assert labeled + queued_shown + excluded + pool == len(dataset)  # disjoint, and every sample has a vector
    assert page.count('class="labeled"') == n_labeled  # the map draws every labeled sample (small: no thinning)
    assert RANDOM_NOTICE not in page  # imported vectors: no notice


def test_curate_list_and_the_loop_report_give_the_same_verdict(pulled):
    from curate_loop.loop.runner import write_loop_report
    from curate_loop.runs.curation import saturation_history

    dataset, _ = pulled
    history = saturation_history(dataset)
    verdict = saturation_verdict(history["batches"])
    assert [r["name"] for r in history["batches"]] == ["batch_01", "batch_02", "batch_03"]
    assert history["saturated"] is verdict.saturated and history["verdict"] == verdict.message
    assert history["notices"] == []  # imported vectors
    out = CliRunner().invoke(cli, ["curate", "list", dataset.name])
    assert out.exit_code == 0, out.output
    assert verdict.message in out.output and RANDOM_NOTICE not in out.output
    page = Path(write_loop_report(dataset)).read_text(encoding="utf-8")
    assert verdict.message in page and RANDOM_NOTICE not in page


# -- the random-weights notice -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_weights(pulled):
    """Random-weight open_clip vectors of 12 pool samples of the clone (tag "rw"), computed through the CLI."""
    from fiftyone import ViewField as F

    from curate_loop.runs.pool import DUP_KEEP_FIELD, unlabeled_view

    dataset, _ = pulled
    not_queued_nor_set_aside = ~F(BATCH_FIELD).exists() & (F(DUP_KEEP_FIELD) != False)  # noqa: E712
    pool = unlabeled_view(dataset, "ground_truth").match(not_queued_nor_set_aside)
    pool.take(12, seed=0).tag_samples("rw")
    out = CliRunner().invoke(cli, ["embed", "compute", dataset.name, "--key", "rw", "--model", "ViT-B-32", "--tag",
                                   "rw", "--no-index", "--no-map", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    return dataset, out.output


def test_embed_compute_says_random_weights_once(random_weights):
    _, output = random_weights
    assert output.count(RANDOM_NOTICE) == 1


def test_batch_report_cli_and_loop_report_carry_the_notice(random_weights):
    from curate_loop.loop.runner import write_loop_report
    from curate_loop.runs.embeddings import random_weights_notice

    dataset, _ = random_weights
    notice = random_weights_notice(dataset, "rw")
    assert notice and RANDOM_NOTICE in notice
    # random strategy: random-weight vectors of 12 samples form no cluster, which cluster_balanced cannot take yet
    out = CliRunner().invoke(cli, ["curate", "select", dataset.name, "rw_batch", "-k", "3", "--key", "rw", "--tag",
                                   "rw", "--strategy", "random"])
    assert out.exit_code == 0, out.output
    assert out.output.count(notice) == 1
    report = Path(re.search(r"report: (\S+)", out.output).group(1)).read_text(encoding="utf-8")
    assert report.count(RANDOM_NOTICE) == 1
    listing = CliRunner().invoke(cli, ["curate", "list", dataset.name])
    assert listing.output.count(notice) == 1  # once, though only one of four batches used these vectors
    assert Path(write_loop_report(dataset)).read_text(encoding="utf-8").count(RANDOM_NOTICE) == 1
    # (`curate edges` says so the same way; it cannot score 12 random-weight vectors that form no cluster yet)
    duplicates = CliRunner().invoke(cli, ["curate", "duplicates", dataset.name, "--key", "rw", "--tag", "rw"])
    assert duplicates.exit_code == 0, duplicates.output
    assert duplicates.output.count(notice) == 1
    other = CliRunner().invoke(cli, ["curate", "edges", dataset.name, "--key", "thumbs"])
    assert other.exit_code == 0 and RANDOM_NOTICE not in other.output


def test_mislabel_scan_on_random_weight_boxes_says_so(random_weights):
    dataset, _ = random_weights
    dataset.exists("ground_truth").take(10, seed=0).tag_samples("rw_boxes")  # >= 21 boxes: a mislabel scan
    runner = CliRunner()
    out = runner.invoke(cli, ["embed", "compute", dataset.name, "--key", "rw_boxes", "--model", "ViT-B-32",
                              "--objects", "ground_truth", "--tag", "rw_boxes", "--no-index", "--no-map",
                              "--device", "cpu"])
    assert out.exit_code == 0, out.output
    found = runner.invoke(cli, ["mislabels", "find", dataset.name, "--key", "rw_boxes", "--tag", "rw_boxes"])
    assert found.exit_code == 0, found.output
    assert found.output.count(RANDOM_NOTICE) == 1
    listed = runner.invoke(cli, ["mislabels", "list", dataset.name])
    assert listed.exit_code == 0 and listed.output.count(RANDOM_NOTICE) == 1
