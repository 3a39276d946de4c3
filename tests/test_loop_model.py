"""The model in the loop, end to end: three iterations of `curate-loop run manifest.yml --simulate-annotator` on the
example with `model: {builtin: linear_probe, proposals: proposals}`, against the real Label Studio server, classical
embeddings (real signal, offline). Each iteration trains the probe on more labels, predicts the pool's proposal
boxes, and pushes its regions as pre-annotations; the next pull counts what the simulated annotator changed."""

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import jittered_proposals, loop_copy
from fiftyone import ViewField as F

from curate_loop.cli import cli
from curate_loop.loop.runner import history

BUDGET = 6
N_RANDOM = 1  # random boxes per pool image among the proposals (the annotator deletes them)


@pytest.fixture(scope="module")
def loop_setup(example_dataset, labelstudio, tmp_path_factory):
    """A copy of the example whose pool carries ``proposals``: the true boxes jittered by up to 2 px plus one random
    box per image, a stand-in for a region proposer (the probe classifies boxes; it does not find them)."""
    dataset, path = loop_copy(example_dataset, "loop-model-tests", tmp_path_factory.mktemp("loop-model"),
                              labelstudio.url, BUDGET)
    raw = yaml.safe_load(path.read_text())
    raw["embeddings"] = {"key": "img", "objects_key": "boxes", "models": [{"name": "classical"}]}
    raw["model"] = {"builtin": "linear_probe", "proposals": "proposals"}
    path.write_text(yaml.safe_dump(raw))
    jittered_proposals(dataset, "true_ground_truth", "proposals", jitter_px=2.0, n_random=N_RANDOM, seed=1)
    yield dataset, path
    dataset.delete()


def _tasks(labelstudio, dataset, batch):
    from curate_loop.adapters.labelstudio import tasks as ls_tasks
    from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, connect
    from curate_loop.runs.labelstudio import _record_or_error

    record = _record_or_error(dataset, batch)
    with connect(labelstudio.url, labelstudio.token) as conn:
        found = {}
        for task in ls_tasks.batch_tasks(conn, record["project_id"], batch):
            found[task["data"][SAMPLE_KEY]] = list(conn.sdk.predictions.list(task=task["id"]))
        return found


def _expected_assist(dataset, sample_ids, predicted):
    """What the simulated annotator must do to the pushed regions, from how the proposals were made: a region on a
    random box is deleted, one on a jittered true box is relabeled (wrong class) or moved (right class, the box put
    back), and a true box whose proposal got no region (too small to crop) is added."""
    view = dataset.select(sample_ids, ordered=True)
    counts = dict.fromkeys(("accepted", "relabeled", "moved", "deleted", "added"), 0)
    for sample_id, truth, proposals in zip(sample_ids, view.values("true_ground_truth.detections"),
                                           view.values("proposals.detections")):
        regions = {tuple(np.round(d.bounding_box, 9)): d.label for d in predicted[sample_id]}
        jittered, random = proposals[:len(truth)], proposals[len(truth):]
        counts["deleted"] += sum(tuple(np.round(p.bounding_box, 9)) in regions for p in random)
        for true_box, proposal in zip(truth, jittered):
            label = regions.get(tuple(np.round(proposal.bounding_box, 9)))
            if label is None:
                counts["added"] += 1
            else:
                counts["relabeled" if label != true_box.label else "moved"] += 1
    return counts


def test_three_iterations_train_predict_and_pre_annotate(loop_setup, labelstudio, monkeypatch):
    dataset, path = loop_setup
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
    runner = CliRunner()
    pushed = {}  # batch -> {sample id: the predicted Detections pushed}
    for i in (1, 2, 3):
        result = runner.invoke(cli, ["run", str(path), "--simulate-annotator"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        it = [h for h in history(dataset) if h["iteration"] == i][0]
        model = it["model"]
        assert (model["kind"], model["name"], model["field"], model["model_version"]) == \
            ("builtin", "linear_probe", "predictions", f"linear_probe@{i}")
        assert f"model linear_probe (builtin): trained on {model['trained_on']} labels" in result.output
        assert model["trained_on"] == dataset.count("ground_truth.detections")  # every labeled box, this iteration's
        assert model["cv_accuracy"] is not None and 0.3 <= model["cv_accuracy"] <= 1  # (labels carry planted noise)

        # predictions for every pool sample with proposals; out-of-fold ones on the labeled samples with proposals
        # (those a pull labeled: the canvases labeled from the start have none)
        pool = dataset.match(~F("ground_truth").exists())
        assert model["predicted"] == pool.exists("proposals").count() == pool.exists("predictions").count()
        labeled = dataset.exists("ground_truth")
        assert model["out_of_fold_predicted"] == labeled.exists("predictions").count() == \
            labeled.exists("proposals").exists("predictions").count()
        assert model["out_of_fold"] == (3 if model["out_of_fold_predicted"] else 0)

        # the pushed tasks carry the model's regions, its version and per-region scores (read from Label Studio)
        batch = f"batch_{i:02d}"
        members = dataset.load_saved_view(batch).values("id")
        predicted = dict(zip(dataset.select(members, ordered=True).values("id"),
                             dataset.select(members, ordered=True).values("predictions.detections")))
        pushed[batch] = predicted
        tasks = _tasks(labelstudio, dataset, batch)
        assert sorted(tasks) == sorted(members)
        for sample_id, predictions in tasks.items():
            assert len(predictions) == 1 and predictions[0].model_version == f"linear_probe@{i}"
            regions = [r for r in predictions[0].result if r.get("type") == "rectanglelabels"]
            assert len(regions) == len(predicted[sample_id]) > 0
            assert sorted(r["value"]["rectanglelabels"][0] for r in regions) == \
                sorted(d.label for d in predicted[sample_id])
            assert sorted(round(r["score"], 6) for r in regions) == \
                sorted(round(d.confidence, 6) for d in predicted[sample_id])

        if i > 1:  # the pull of the previous batch measured what the simulated annotator changed
            previous = f"batch_{i - 1:02d}"
            assist = it["pulled"][previous]["model_assist"]
            assert assist["model_version"] == f"linear_probe@{i - 1}"
            totals = assist["totals"]
            expected = _expected_assist(dataset, list(pushed[previous]), pushed[previous])
            assert {k: totals[k] for k in expected} == expected
            assert totals["predicted"] == sum(len(v) for v in pushed[previous].values())

    trained = [h["model"]["trained_on"] for h in sorted(history(dataset), key=lambda h: h["iteration"])]
    assert trained[0] < trained[1] < trained[2]  # the labels the annotator gave went into the next model


@pytest.fixture(scope="module")
def detector_setup(example_dataset, labelstudio, tmp_path_factory):
    """A copy of the example whose manifest declares the example's own detector through the `callable:` hook."""
    dataset, path = loop_copy(example_dataset, "loop-detector-tests", tmp_path_factory.mktemp("loop-detector"),
                              labelstudio.url, BUDGET)
    raw = yaml.safe_load(path.read_text())
    raw["embeddings"] = {"key": "img", "objects_key": "boxes", "models": [{"name": "classical"}]}
    raw["model"] = {"callable": "curate_loop.examples.detector:predict"}
    path.write_text(yaml.safe_dump(raw))
    yield dataset, path
    dataset.delete()


def test_the_example_detector_pre_annotates_unlabeled_samples(detector_setup, labelstudio, monkeypatch):
    dataset, path = detector_setup
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
    result = CliRunner().invoke(cli, ["run", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model = history(dataset)[0]["model"]
    name = "curate_loop.examples.detector:predict"
    assert (model["kind"], model["name"], model["model_version"]) == ("callable", name, f"{name}@1")

    members = dataset.load_saved_view("batch_01")
    assert members.exists("ground_truth").count() == 0  # pool samples: nothing to pre-annotate but the model
    predicted = dict(zip(members.values("id"), members.values("predictions.detections")))
    assert sum(len(d or []) for d in predicted.values()) > 0  # the detector found digits in the batch
    tasks = _tasks(labelstudio, dataset, "batch_01")
    assert sorted(tasks) == sorted(predicted)
    for sample_id, predictions in tasks.items():
        assert len(predictions) == 1 and predictions[0].model_version == f"{name}@1"
        regions = [r for r in predictions[0].result if r.get("type") == "rectanglelabels"]
        assert sorted((r["value"]["rectanglelabels"][0], round(r["score"], 6)) for r in regions) == \
            sorted((d.label, round(d.confidence, 6)) for d in predicted[sample_id] or [])
