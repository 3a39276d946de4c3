"""Model predictions as Label Studio pre-annotations, against the real server: what the tasks carry (read back
through the Label Studio API), the simulated annotator correcting them, and the model-assist counts of the pull
against what was planted in the predictions.

Each test works on its own clone of the example dataset (its own project on the server).
"""

from __future__ import annotations

import itertools
import random

import pytest

from curate_loop.adapters.labelstudio.assist import count_outcomes
from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, Connection
from curate_loop.errors import InvalidInputError
from curate_loop.loop.simulate import answer_batch
from curate_loop.runs import labelstudio as sync

pytestmark = pytest.mark.labelstudio
_names = itertools.count()
EXTRA_BOX = [0.0, 0.0, 0.02, 0.02]  # a corner no digit covers: a prediction of nothing
OUTSIDE = "zebra"  # a class the project does not offer


def _clone(example_dataset):
    ds = example_dataset.clone(f"preannot-{next(_names)}-{random.randrange(10**6)}")
    return ds


def _pool_ids(ds, n, skip=0):
    from fiftyone import ViewField as F

    pool = ds.match(~F("ground_truth").exists()).match(F("true_ground_truth.detections").length() >= 2)
    return pool.sort_by("filepath").skip(skip).limit(n).values("id")


def _labeled_ids(ds, n):
    from fiftyone import ViewField as F

    return ds.match(F("ground_truth.detections").length() >= 2).sort_by("filepath").limit(n).values("id")


def _plant(ds, ids, *, outside: bool = True, by_sample: dict | None = None):
    """Write ``predictions`` on ``ids`` from their true boxes, planting each kind of change (and, with ``outside``, a
    region of a class the project lacks); returns the model-assist counts a correcting annotator must produce:
    class -> {outcome: n} (zeros left out), and the predicted regions (id -> (label, box, confidence)) as pushed.
    ``by_sample`` (given): filled with sample id -> [(class, outcome), ...]."""
    import fiftyone as fo

    expected: dict[str, dict[str, int]] = {}
    pushed: dict[str, tuple] = {}
    by_sample = {} if by_sample is None else by_sample
    current: list = []

    def count(cls, outcome):
        row = expected.setdefault(cls, {})
        row[outcome] = row.get(outcome, 0) + 1
        current.append((cls, outcome))

    k = 0
    values = {}
    for n, sample_id in enumerate(ids):
        truth = ds[sample_id].true_ground_truth.detections
        dets, current = [], by_sample.setdefault(sample_id, [])
        if n == len(ids) - 1:  # the model saw nothing on the last one: every true box is added
            for t in truth:
                count(t.label, "added")
            values[sample_id] = fo.Detections(detections=[])
            continue
        for t in truth:
            plan, k = k % 5, k + 1
            conf = round(0.3 + 0.05 * (k % 10), 2)
            x, y, w, h = t.bounding_box
            if plan == 1:  # wrong class: relabeled, under the predicted class
                label = str((int(t.label) + 1) % 10)
                dets.append(fo.Detection(label=label, bounding_box=[x, y, w, h], confidence=conf))
                count(label, "relabeled")
            elif plan == 2:  # shifted by a tenth of its width (IoU 0.82): moved
                dx = 0.1 * w if x + 1.1 * w <= 1 else -0.1 * w
                dets.append(fo.Detection(label=t.label, bounding_box=[x + dx, y, w, h], confidence=conf))
                count(t.label, "moved")
            elif plan == 3:  # missed: the annotator adds it
                count(t.label, "added")
            else:  # exact: accepted
                dets.append(fo.Detection(label=t.label, bounding_box=[x, y, w, h], confidence=conf))
                count(t.label, "accepted")
        extra = str(n % 10)
        dets.append(fo.Detection(label=extra, bounding_box=EXTRA_BOX, confidence=0.2))  # nothing there: deleted
        count(extra, "deleted")
        if outside:
            dets.append(fo.Detection(label=OUTSIDE, bounding_box=[0.5, 0.5, 0.1, 0.1], confidence=0.9))  # dropped
        values[sample_id] = fo.Detections(detections=dets)
        pushed.update({d.id: (d.label, d.bounding_box, d.confidence) for d in dets if d.label != OUTSIDE})
    ds.set_values("predictions", values, key_field="id")
    return expected, pushed


def _tasks_by_sample(server, project_id, batch):
    conn = Connection(server.url, server.token)
    tasks = conn.get_json("/api/tasks", {"project": project_id, "fields": "all", "page_size": 1000},
                          what="test read")["tasks"]
    return {t["data"][SAMPLE_KEY]: t for t in tasks if t["data"].get("fo_batch") == batch}


def _push(ds, server, batch, **kwargs):
    return sync.push_batch(ds, batch, "ground_truth", url=server.url, api_key=server.token,
                           document_root=server.document_root, classes=[str(d) for d in range(10)], **kwargs)


def _nonzero(per_class):
    return {cls: {k: n for k, n in row.items() if n and k != "predicted"} for cls, row in per_class.items()}


def test_pool_tasks_carry_the_model_and_the_pull_measures_what_the_annotator_changed(example_dataset, labelstudio):
    ds = _clone(example_dataset)
    pool, labeled = _pool_ids(ds, 5), _labeled_ids(ds, 2)
    expected, pushed = _plant(ds, pool)
    _plant(ds, labeled)  # labeled samples have predictions too: under "auto" their labels win
    ds.set_values("curate_batch", {i: "b1" for i in pool + labeled}, key_field="id")
    labels_before = {i: [(d.id, d.label, d.bounding_box) for d in ds[i].ground_truth.detections] for i in labeled}

    summary = _push(ds, labelstudio, "b1", predictions_field="predictions", model_version="probe@3")
    assert (summary.tasks, summary.created, summary.model_tasks) == (7, 7, 5)
    assert summary.model_regions == len(pushed) and summary.model_version == "probe@3"
    assert summary.dropped_prediction_classes == {OUTSIDE: 4}  # one per pool sample the model saw something on

    tasks = _tasks_by_sample(labelstudio, summary.project_id, "b1")
    for sample_id in pool:
        prediction = tasks[sample_id]["predictions"][0]
        assert prediction["model_version"] == "probe@3"
        regions = {r["id"]: r for r in prediction["result"]}
        mine = {rid: v for rid, v in pushed.items() if rid in {d.id for d in ds[sample_id].predictions.detections}}
        assert set(regions) == set(mine)
        for rid, (label, box, conf) in mine.items():
            value = regions[rid]["value"]
            assert value["rectanglelabels"] == [label] and regions[rid]["score"] == pytest.approx(conf)
            assert [value["x"], value["y"], value["width"], value["height"]] == pytest.approx([100 * v for v in box])
        scores = [conf for _, _, conf in mine.values()]
        assert prediction["score"] == pytest.approx(sum(scores) / len(scores) if scores else 0.0)
    assert tasks[pool[-1]]["predictions"][0]["result"] == []  # the model saw nothing there
    for sample_id in labeled:
        prediction = tasks[sample_id]["predictions"][0]
        assert prediction["model_version"] == "b1"
        assert {r["id"] for r in prediction["result"]} == {d[0] for d in labels_before[sample_id]}

    again = _push(ds, labelstudio, "b1", predictions_field="predictions", model_version="probe@4")
    assert (again.created, again.already_there, again.model_tasks, again.model_version) == (0, 7, 5, "probe@3")

    assert answer_batch(ds, "b1", url=labelstudio.url, api_key=labelstudio.token) == 7
    pulled = sync.pull_batch(ds, "b1", url=labelstudio.url, api_key=labelstudio.token)
    assist = pulled.model_assist
    assert assist["model_version"] == "probe@3" and assist["totals"]["tasks"] == 5
    assert _nonzero(assist["per_class"]) == expected
    totals = {k: sum(row.get(k, 0) for row in expected.values())
              for k in ("accepted", "relabeled", "moved", "deleted", "added")}
    assert {k: assist["totals"][k] for k in totals} == totals
    assert assist["totals"]["predicted"] == len(pushed)
    assert assist["totals"]["rate"] == pytest.approx(totals["accepted"] / len(pushed))
    assert sync.pulls(ds, "b1")[-1]["model_assist"] == assist  # on the pull record too

    # the pulled labels are the truth, and accepted predictions keep their region ids as ls_region_id
    for sample_id in pool:
        got = sorted((d.label, tuple(round(v, 6) for v in d.bounding_box))
                     for d in ds[sample_id].ground_truth.detections)
        truth = sorted((d.label, tuple(round(v, 6) for v in d.bounding_box))
                       for d in ds[sample_id].true_ground_truth.detections)
        assert got == truth
    region_ids = {d.ls_region_id for i in pool for d in ds[i].ground_truth.detections}
    assert sum(row.get("accepted", 0) + row.get("moved", 0) + row.get("relabeled", 0)
               for row in expected.values()) == len(region_ids & set(pushed))

    assert sync.undo_pull(ds, "b1") == 7
    assert all(ds[i].ground_truth is None for i in pool)
    assert {i: [(d.id, d.label, d.bounding_box) for d in ds[i].ground_truth.detections] for i in labeled} == \
        labels_before


def test_predictions_mode_uses_the_model_everywhere_and_labels_mode_never(example_dataset, labelstudio):
    ds = _clone(example_dataset)
    pool, labeled = _pool_ids(ds, 2), _labeled_ids(ds, 2)
    _plant(ds, pool + labeled)
    ds.set_values("curate_batch", {pool[0]: "everywhere", labeled[0]: "everywhere", pool[1]: "never",
                                   labeled[1]: "never"}, key_field="id")

    everywhere = _push(ds, labelstudio, "everywhere", predictions_field="predictions", model_version="m@1",
                       pre_annotations="predictions")
    assert everywhere.model_tasks == 2
    tasks = _tasks_by_sample(labelstudio, everywhere.project_id, "everywhere")
    for sample_id in (pool[0], labeled[0]):
        prediction = tasks[sample_id]["predictions"][0]
        assert prediction["model_version"] == "m@1"
        assert {r["id"] for r in prediction["result"]} == \
            {d.id for d in ds[sample_id].predictions.detections if d.label != OUTSIDE}

    never = _push(ds, labelstudio, "never", predictions_field="predictions", model_version="m@1",
                  pre_annotations="labels")
    assert never.model_tasks == 0 and never.model_version is None
    tasks = _tasks_by_sample(labelstudio, never.project_id, "never")
    assert tasks[pool[1]]["predictions"][0]["result"] == []
    assert tasks[pool[1]]["predictions"][0]["model_version"] == "never"
    assert {r["id"] for r in tasks[labeled[1]]["predictions"][0]["result"]} == \
        {d.id for d in ds[labeled[1]].ground_truth.detections}
    answer_batch(ds, "never", url=labelstudio.url, api_key=labelstudio.token)
    assert sync.pull_batch(ds, "never", url=labelstudio.url, api_key=labelstudio.token).model_assist is None


def test_bad_pre_annotation_settings_push_nothing(example_dataset, labelstudio):
    import fiftyone as fo

    ds = _clone(example_dataset)
    pool = _pool_ids(ds, 2)
    ds.set_values("curate_batch", {i: "b1" for i in pool}, key_field="id")
    ds.set_values("wrong_kind", {i: fo.Classification(label="3", confidence=0.4) for i in pool}, key_field="id")
    with pytest.raises(InvalidInputError, match="predictions field 'wrong_kind' holds classification but the label "
                                                "field 'ground_truth' holds detections; nothing was pushed"):
        _push(ds, labelstudio, "b1", predictions_field="wrong_kind")
    with pytest.raises(InvalidInputError, match=r"pre_annotations='sometimes'; choose one of \('auto', "):
        _push(ds, labelstudio, "b1", predictions_field="predictions", pre_annotations="sometimes")
    assert "labelstudio_b1" not in ds.list_runs()
    # a field the model has not written yet: the labels, as without a model
    assert _push(ds, labelstudio, "b1", predictions_field="predictions").model_tasks == 0


def test_cli_push_with_predictions_then_pull_prints_the_model_assist(example_dataset, labelstudio, monkeypatch):
    from click.testing import CliRunner

    from curate_loop.cli import cli

    ds = _clone(example_dataset)
    pool = _pool_ids(ds, 3)
    expected, pushed = _plant(ds, pool)
    ds.set_values("curate_batch", {i: "b1" for i in pool}, key_field="id")
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
    runner = CliRunner()
    typo = runner.invoke(cli, ["push", ds.name, "b1", "--label-field", "ground_truth", "--predictions-field", "pred"])
    assert typo.exit_code == 2 and "has no field 'pred'" in typo.output
    out = runner.invoke(cli, ["push", ds.name, "b1", "--label-field", "ground_truth", "--classes",
                              ",".join(map(str, range(10))), "--predictions-field", "predictions",
                              "--model-version", "cli@1"])
    assert out.exit_code == 0, out.output
    assert f"3 tasks pre-annotated by the model (cli@1): {len(pushed)} regions." in out.output
    assert f"2 predicted regions left out: their classes are not in the project: '{OUTSIDE}' (2)." in out.output
    assert answer_batch(ds, "b1", url=labelstudio.url, api_key=labelstudio.token) == 3
    pulled = runner.invoke(cli, ["pull", ds.name, "b1"])
    assert pulled.exit_code == 0, pulled.output
    totals = {k: sum(row.get(k, 0) for row in expected.values())
              for k in ("accepted", "relabeled", "moved", "deleted", "added")}
    rate = f"{totals['accepted'] / len(pushed):.0%}"
    assert (f"model assist (cli@1, 3 tasks): {totals['accepted']} of {len(pushed)} predicted regions accepted "
            f"({rate}); {totals['relabeled']} relabeled, {totals['moved']} moved, {totals['deleted']} deleted; "
            f"{totals['added']} added.") in pulled.output
    assert labelstudio.token not in out.output + pulled.output


def test_loop_iterations_push_the_model_and_record_its_assist_rate(example_dataset, labelstudio, tmp_path,
                                                                  monkeypatch):
    """`model: {field: predictions}` (predictions written elsewhere): the loop pushes them for the pool, the
    simulated annotator corrects them, and the next iteration's pull records the counts planted on that batch."""
    import yaml
    from conftest import loop_copy
    from fiftyone import ViewField as F

    from curate_loop.loop.manifest import load_manifest
    from curate_loop.loop.runner import history, run_iteration
    from curate_loop.plugin.loop import assist_md

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
    ds, path = loop_copy(example_dataset, f"preannot-loop-{random.randrange(10**6)}", tmp_path, labelstudio.url, 5)
    spec = yaml.safe_load(path.read_text())
    spec.update(model={"field": "predictions"}, mislabels={"enabled": False})
    path.write_text(yaml.safe_dump(spec))
    pool = ds.match(~F("ground_truth").exists()).sort_by("filepath").values("id")
    by_sample: dict = {}
    _plant(ds, pool, outside=False, by_sample=by_sample)
    manifest = load_manifest(path)

    first = run_iteration(manifest, simulate_annotator=True, api_key=labelstudio.token)
    assert first.model["model_version"] == "predictions@1" and first.simulated_answers == 5
    second = run_iteration(manifest, simulate_annotator=True, api_key=labelstudio.token)
    members = ds.load_saved_view("batch_01").values("id")
    planted = [outcome for sample_id in members for outcome in by_sample[sample_id]]
    assist = second.pulled["batch_01"]["model_assist"]
    assert assist["model_version"] == "predictions@1" and assist["totals"]["tasks"] == 5
    assert _nonzero(assist["per_class"]) == _nonzero(count_outcomes(planted))
    stored = [it for it in history(ds) if it["iteration"] == 2][0]
    assert stored["pulled"]["batch_01"]["model_assist"] == assist
    totals = assist["totals"]
    assert assist_md(stored) == f"{totals['rate']:.0%} ({totals['accepted']}/{totals['predicted']} accepted)"
    page = open(second.loop_report_path, encoding="utf-8").read()
    assert "<h3>Model assist</h3>" in page
    assert f"<td>2</td><td>predictions@1</td><th>all</th><td>{totals['predicted']}</td>" in page


def test_the_app_push_operator_sends_the_predictions_field_it_is_given(example_dataset, labelstudio, plugin_installed,
                                                                       monkeypatch):
    from fiftyone.operators import execute_operator

    from curate_loop.plugin_install import PLUGIN_NAME

    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)  # the plugin secrets, as the App server reads them
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    ds = _clone(example_dataset)
    pool, labeled = _pool_ids(ds, 3), _labeled_ids(ds, 1)
    _plant(ds, pool, outside=False)
    ds.set_values("curate_batch", {i: "op_pre" for i in pool + labeled}, key_field="id")
    params = {"batch": "op_pre", "label_field": "ground_truth", "predictions_field": "predictions",
              "pre_annotations": "predictions", "document_root": str(labelstudio.document_root)}
    result = execute_operator(f"{PLUGIN_NAME}/push_to_labelstudio", ctx={"dataset": ds, "params": params})
    assert result.error is None, result.error
    project_id = int(result.result["project"].split("/projects/")[1].split("/")[0])
    tasks = _tasks_by_sample(labelstudio, project_id, "op_pre")
    assert sorted(tasks) == sorted(pool + labeled)
    for sample_id in pool:  # "predictions": the model's regions on every task, labeled or not
        regions = tasks[sample_id]["predictions"][0]["result"]
        assert {r["id"] for r in regions} == {d.id for d in ds[sample_id].predictions.detections}
        assert tasks[sample_id]["predictions"][0]["model_version"] != "op_pre"
    kept = tasks[labeled[0]]["predictions"][0]  # no prediction on it: its own labels, under the batch's name
    assert kept["model_version"] == "op_pre"
    assert {r["id"] for r in kept["result"]} == {d.id for d in ds[labeled[0]].ground_truth.detections}
