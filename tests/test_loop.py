"""The loop end to end: `curate-loop run manifest.yml` on the example, against the real Label Studio server, with
the simulated annotator answering from the example's kept-aside true labels."""

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import loop_copy

from curate_loop.cli import cli
from curate_loop.errors import InvalidInputError
from curate_loop.loop.manifest import load_manifest
from curate_loop.loop.report import label_changes
from curate_loop.loop.runner import history, run_iteration
from curate_loop.runs.mislabels import SUSPECT
from curate_loop.runs.pool import BATCH_FIELD

BUDGET = 8


@pytest.fixture(scope="module")
def loop_setup(example_dataset, labelstudio, tmp_path_factory):
    dataset, path = loop_copy(example_dataset, "loop-tests", tmp_path_factory.mktemp("loop"), labelstudio.url, BUDGET)
    yield dataset, load_manifest(path), path
    dataset.delete()


@pytest.fixture
def ls_env(labelstudio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
    return labelstudio


def _ls_tasks(labelstudio, dataset, batch):
    from curate_loop.adapters.labelstudio import tasks as ls_tasks
    from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, connect
    from curate_loop.runs.labelstudio import _record_or_error

    record = _record_or_error(dataset, batch)
    with connect(labelstudio.url, labelstudio.token) as conn:
        return [t["data"][SAMPLE_KEY] for t in ls_tasks.batch_tasks(conn, record["project_id"], batch)]


def test_two_iterations_learn_from_the_simulated_annotator(loop_setup, ls_env):
    dataset, manifest, _ = loop_setup
    labeled_before = set(dataset.exists("ground_truth").values("id"))

    first = run_iteration(manifest, simulate_annotator=True, api_key=ls_env.token)
    assert (first.iteration, first.batch, first.selected, first.pushed) == (1, "batch_01", BUDGET, BUDGET)
    assert first.simulated_answers == BUDGET and first.embedded == len(dataset)
    batch_01 = set(dataset.load_saved_view("batch_01").values("id"))
    assert not batch_01 & labeled_before

    second = run_iteration(manifest, simulate_annotator=True, api_key=ls_env.token)
    assert second.iteration == 2 and second.embedded == 0  # nothing new to embed
    assert second.pulled["batch_01"]["applied"] == BUDGET
    # the pulled labels are the true ones, marked as coming from the simulated annotator
    pulled = dataset.select(list(batch_01))
    for sample in pulled:
        assert sorted(d.label for d in sample.ground_truth.detections) == \
            sorted(d.label for d in sample.true_ground_truth.detections)
        assert all(d.ls_annotator.startswith("simulated-annotator") for d in sample.ground_truth.detections)
    batch_02 = set(dataset.load_saved_view("batch_02").values("id"))
    assert len(batch_02) == BUDGET and not batch_02 & (batch_01 | labeled_before)  # never re-selected
    open_suspects = dataset.count_values(f"ground_truth.detections.{SUSPECT}").get(True, 0)
    assert second.suspects == open_suspects == len(dataset.load_saved_view("mislabel_suspects"))
    assert [it["iteration"] for it in history(dataset)] == [1, 2]

    # the iteration report: the saturation curve over both batches and what the pull changed
    changes = label_changes(history(dataset))
    true_boxes = sum(len(s.true_ground_truth.detections) for s in pulled)
    assert [r["applied"] for r in changes] == [0, BUDGET]
    assert changes[1]["labels_added"] == true_boxes and changes[1]["labels_removed"] == 0
    page = Path(second.loop_report_path).read_text()
    assert second.loop_report_path == first.loop_report_path  # one report for the loop, rewritten each time
    assert "<polyline" in page and "batch_01" in page and "batch_02" in page
    assert f"<td>2</td><td>{BUDGET}</td><td>0</td><td>{true_boxes}</td>" in page


def test_a_crash_between_curate_and_push_is_repaired_by_running_again(loop_setup, ls_env):
    dataset, manifest, _ = loop_setup
    with pytest.raises(RuntimeError, match="simulated crash after curate"):
        run_iteration(manifest, api_key=ls_env.token, crash_after="curate")
    picked = set(dataset.load_saved_view("batch_03").values("id"))
    assert len(picked) == BUDGET and [it["iteration"] for it in history(dataset)] == [1, 2]

    again = run_iteration(manifest, api_key=ls_env.token)
    assert again.iteration == 3 and again.reused_batch and again.pushed == BUDGET
    assert set(dataset.load_saved_view("batch_03").values("id")) == picked  # the same batch, not a new pick
    tasks = _ls_tasks(ls_env, dataset, "batch_03")
    assert sorted(tasks) == sorted(picked)  # every sample exactly once in Label Studio
    assert [it["iteration"] for it in history(dataset)] == [1, 2, 3]
    assert dataset.count_values(BATCH_FIELD)["batch_03"] == BUDGET


def test_a_crash_right_after_the_pull_ends_as_an_uninterrupted_run(loop_setup, ls_env):
    """The pull is applied, then the run dies before curating: the re-run applies nothing twice, still counts that
    pull in its iteration, and picks and pushes the next batch."""
    from curate_loop.loop.simulate import answer_batch

    dataset, manifest, _ = loop_setup
    assert answer_batch(dataset, "batch_03", url=ls_env.url, api_key=ls_env.token) == BUDGET
    with pytest.raises(RuntimeError, match="simulated crash after pull"):
        run_iteration(manifest, api_key=ls_env.token, crash_after="pull")
    assert [it["iteration"] for it in history(dataset)] == [1, 2, 3]
    batch_03 = dataset.load_saved_view("batch_03")
    applied = {s.id: sorted(d.id for d in s.ground_truth.detections) for s in batch_03}
    assert all(applied.values())  # the crashed run did apply the answers

    again = run_iteration(manifest, api_key=ls_env.token)
    assert again.iteration == 4 and again.pulled["batch_03"]["applied"] == BUDGET  # counted once, here
    assert again.pulled["batch_03"]["labels_added"] == sum(len(v) for v in applied.values())
    assert {s.id: sorted(d.id for d in s.ground_truth.detections) for s in batch_03} == applied  # not re-applied
    # (random-weight CLIP makes many pool images near-duplicates of picked ones, so fewer than BUDGET may be left)
    assert 0 < again.selected == again.pushed == len(dataset.load_saved_view("batch_04"))
    earlier = set().union(*(dataset.load_saved_view(f"batch_0{i}").values("id") for i in (1, 2, 3)))
    batch_04 = dataset.load_saved_view("batch_04").values("id")
    assert not set(batch_04) & earlier and sorted(_ls_tasks(ls_env, dataset, "batch_04")) == sorted(batch_04)
    assert [it["iteration"] for it in history(dataset)] == [1, 2, 3, 4]


def test_cli_run_status_and_an_invalid_manifest(loop_setup, ls_env, tmp_path):
    dataset, manifest, path = loop_setup
    runner = CliRunner()
    out = runner.invoke(cli, ["status", str(path)], catch_exceptions=False).output
    # tables, not Python values: an iteration row and a batch row, and each random-weights line once
    assert re.search(r"^iteration +batch +selected +pulled +suspects$", out, re.M), out
    assert re.search(r"^1 +batch_01 +\d+ ", out, re.M) and re.search(r"^batch_01 +pulled ", out, re.M), out
    assert "[" not in out and "{" not in out
    assert out.count("RANDOM WEIGHTS") == 2  # one line per embeddings key the loop uses (images, boxes)
    assert "embeddings 'clip' come from" in out and "embeddings 'boxes' come from" in out
    assert "Loop report: " in out and out.split("Loop report: ")[1].strip().endswith("loop.html")

    iterations_before = history(dataset)
    bad = tmp_path / "bad.yml"
    bad.write_text("dataset: x\nclasses: ['0']\ncuration: {budget: 0, stratgy: random}\n")
    result = runner.invoke(cli, ["run", str(bad)])
    assert result.exit_code != 0
    assert "curation.budget: Input should be greater than or equal to 1" in result.output
    assert "curation.stratgy: unknown key" in result.output
    bad.write_text("dataset: x\nclasses: ['0']\ncuration: {min_cluster_size: 1}\n")
    result = runner.invoke(cli, ["run", str(bad)])
    assert result.exit_code != 0 and "curation.min_cluster_size: Input should be greater than or equal to 2" in \
        result.output
    with pytest.raises(InvalidInputError, match="must not hold an API key"):
        bad.write_text("dataset: x\nclasses: ['0']\nlabelstudio: {api_key: secret}\n")
        load_manifest(bad)
    assert history(dataset) == iterations_before  # an invalid manifest runs nothing
