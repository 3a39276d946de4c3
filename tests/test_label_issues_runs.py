"""Box-level label issues on the example in real FiftyOne: one planted error of each kind, predictions that see the
true boxes, the review flow (accept each kind exactly as suggested, undo, reject, re-annotate with the fix pushed to
the real Label Studio server), the CLI and the operators, and bad input refused before anything is written.

The labeled samples' ``ground_truth`` is reset to the example's kept-aside truth, then five samples get one planted
error each; ``predictions`` are the true boxes with a confidence of 0.95 (a detector that is right), so each planted
error is exactly what the scan must raise, with the truth as its fix.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from curate_loop.cli import cli
from curate_loop.errors import InvalidInputError
from curate_loop.plugin_install import PLUGIN_NAME
from conftest import fresh_clone
from curate_loop.runs.label_issues import (FIX_FIELD, ISSUES_FIELD, VIEW_NAME, accept_issues, find_label_issues,
                                           issue_ids_of_selection, reject_issues, send_issues_for_reannotation,
                                           undo_issue)

KINDS = ("overlooked", "mislocated", "spurious", "duplicate", "swapped")
CONFIDENCE = 0.95
EMPTY_CORNER = [0.0, 0.0, 0.06, 0.06]  # where the example's canvases draw no digit... checked in `planted`


@pytest.fixture(scope="module")
def base(example_dataset):
    import fiftyone as fo

    name = "label-issues-tests"
    dataset = fresh_clone(example_dataset, name)
    yield dataset
    dataset.delete()


def _detections(dicts):
    import fiftyone as fo

    return fo.Detections(detections=[fo.Detection(**d) for d in dicts])


@pytest.fixture
def planted(base):
    return plant_errors(base)


def plant_errors(dataset):
    """Reset ``ground_truth`` / ``predictions`` of the labeled samples to the truth, remove every earlier scan and
    decision, then plant one error per kind on five samples; returns {kind: (sample id, what was planted)}."""
    from fiftyone import ViewField as F

    for field in (ISSUES_FIELD, FIX_FIELD, "label_issue_dismissed", "label_quality", "curate_batch", "curate_reason"):
        if dataset.has_field(field):
            dataset.delete_sample_field(field)
    for key in dataset.list_runs():
        dataset.delete_run(key)
    labeled = dataset.match(F("split") == "labeled")
    ids, truth = labeled.values(["id", "true_ground_truth.detections"])
    gt, preds = {}, {}
    for sid, dets in zip(ids, truth):
        gt[sid] = [{"label": d.label, "bounding_box": list(d.bounding_box)} for d in dets]
        preds[sid] = [{"label": d.label, "bounding_box": list(d.bounding_box), "confidence": CONFIDENCE}
                      for d in dets]
    multi = [sid for sid in ids if len(gt[sid]) >= 2]
    assert len(multi) >= 5
    plant = {}
    a, b, c, d, e = multi[:5]
    plant["overlooked"] = (a, gt[a].pop(0))
    x, y, w, h = gt[b][0]["bounding_box"]
    gt[b][0]["bounding_box"] = [x + w / 2, y, w, h]  # IoU 1/3 with the truth
    plant["mislocated"] = (b, {"truth": [x, y, w, h]})
    assert all(_iou(EMPTY_CORNER, t["bounding_box"]) == 0 for t in gt[c])
    gt[c].append({"label": "3", "bounding_box": EMPTY_CORNER})
    plant["spurious"] = (c, {"box": EMPTY_CORNER})
    x, y, w, h = gt[d][0]["bounding_box"]
    gt[d].append({"label": gt[d][0]["label"], "bounding_box": [x + 0.05 * w, y, w, h]})
    plant["duplicate"] = (d, {"of": 0})
    true_class = gt[e][0]["label"]
    gt[e][0]["label"] = str((int(true_class) + 1) % 10)
    plant["swapped"] = (e, {"truth": true_class})
    dataset.set_values("ground_truth", {sid: _detections(v) for sid, v in gt.items()}, key_field="id")
    dataset.set_values("predictions", {sid: _detections(v) for sid, v in preds.items()}, key_field="id")
    return plant


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


def _cards(dataset):
    """kind -> list of (sample id, card) of the open cards."""
    found = {}
    for sid, cards in zip(*dataset.values(["id", f"{ISSUES_FIELD}.detections"])):
        for card in cards or []:
            if not card.decision:
                found.setdefault(card.kind, []).append((sid, card))
    return found


def _planted_card(dataset, plant, kind):
    sample_id = plant[kind][0]
    matches = [card for sid, card in _cards(dataset).get(kind, []) if sid == sample_id]
    assert len(matches) == 1, (kind, _cards(dataset))
    return matches[0]


def _gt(dataset, sample_id):
    """The sample's labels as stored, every attribute included."""
    return [{**d.to_dict(), "_id": d.id} for d in dataset[sample_id].ground_truth.detections]


def _boxes(dataset, sample_id):
    """The sample's labels as a reviewer sees them: id, class, box (a scan rewrites the score attributes)."""
    return [(d.id, d.label, d.bounding_box) for d in dataset[sample_id].ground_truth.detections]


def test_the_scan_raises_each_planted_error_with_the_truth_as_its_fix(base, planted):
    summary = find_label_issues(base, "ground_truth", "predictions")
    cards = _cards(base)
    assert summary.by_kind == {kind: 1 for kind in KINDS} and summary.issues == 5
    assert {kind: [sid for sid, _ in found] for kind, found in cards.items()} == \
        {kind: [planted[kind][0]] for kind in KINDS}
    overlooked = _planted_card(base, planted, "overlooked")
    assert overlooked.label_id is None and overlooked.suggested_label == planted["overlooked"][1]["label"]
    assert overlooked.suggested_box == pytest.approx(planted["overlooked"][1]["bounding_box"])
    assert overlooked.fix == f"add box {planted['overlooked'][1]['label']}"
    mislocated = _planted_card(base, planted, "mislocated")
    assert mislocated.suggested_box == pytest.approx(planted["mislocated"][1]["truth"], abs=1e-6)
    assert mislocated.bounding_box == pytest.approx(planted["mislocated"][1]["truth"], abs=1e-6)
    assert mislocated.fix.startswith("move box to [")
    assert _planted_card(base, planted, "spurious").fix == "delete box"
    duplicate = _planted_card(base, planted, "duplicate")
    sample = base[planted["duplicate"][0]]
    assert duplicate.label_id == sample.ground_truth.detections[-1].id  # the later of the pair
    assert duplicate.duplicate_of == sample.ground_truth.detections[0].id
    swapped = _planted_card(base, planted, "swapped")
    given = base[planted["swapped"][0]].ground_truth.detections[0].label
    assert swapped.suggested_label == planted["swapped"][1]["truth"]
    assert swapped.fix == f"relabel {given} -> {planted['swapped'][1]['truth']}"

    # the saved view: one patch per open card, worst first, kind and fix on each
    view = base.load_saved_view(VIEW_NAME)
    assert len(view) == 5 and view._is_patches
    scores = view.values(f"{ISSUES_FIELD}.score")
    assert scores == sorted(scores, reverse=True)
    assert set(view.values(f"{ISSUES_FIELD}.kind")) == set(KINDS) and all(view.values(f"{ISSUES_FIELD}.fix"))
    assert view.values(f"{ISSUES_FIELD}.tags") == [[f"{k}: {f}"] for k, f in zip(
        view.values(f"{ISSUES_FIELD}.kind"), view.values(f"{ISSUES_FIELD}.fix"))]  # shown on the App's tiles
    # per label and per sample scores, and the run record
    kinds = base.select_labels(ids=[swapped.label_id], fields="ground_truth").values(
        "ground_truth.detections.label_issue_kind", unwind=True)
    assert kinds == ["swapped"]
    quality = dict(zip(*base.values(["id", "label_quality"])))
    clean = [sid for sid, q in quality.items() if q is not None and sid not in {s for s, _ in planted.values()}]
    assert all(quality[planted[k][0]] < 0.5 for k in KINDS) and all(quality[s] > 0.5 for s in clean)
    assert base.count("label_quality") == summary.scored_samples == len(base.exists("predictions"))
    report = base.load_run_results("label_issues_ground_truth", cache=False).serialize()
    assert report["by_kind"] == summary.by_kind and "in-sample predictions" in report["scoring_note"]
    assert set(report["class_rates"]) >= {"spurious", "mislocated"}


@pytest.mark.parametrize("kind", KINDS)
def test_accept_applies_the_fix_exactly_and_undo_restores_it(base, planted, kind):
    find_label_issues(base, "ground_truth", "predictions")
    card = _planted_card(base, planted, kind)
    sample_id = planted[kind][0]
    before = _gt(base, sample_id)
    others = {sid: _gt(base, sid) for sid, _ in planted.values() if sid != sample_id}

    assert accept_issues(base, [card.id], changed_by="qa-reviewer-2") == 1
    after = base[sample_id].ground_truth.detections
    if kind == "overlooked":
        assert len(after) == len(before) + 1
        added = after[-1]
        assert added.label == card.suggested_label and added.bounding_box == pytest.approx(card.suggested_box)
        assert added.label_issue_changed_by == "qa-reviewer-2" and added.label_issue_fixed == "overlooked"
    elif kind in ("spurious", "duplicate"):
        assert [d.id for d in after] == [d["_id"] for d in before if d["_id"] != card.label_id]
    else:
        changed = next(d for d in after if d.id == card.label_id)
        if kind == "mislocated":
            assert changed.bounding_box == pytest.approx(card.suggested_box) and changed.label == \
                next(d for d in before if d["_id"] == card.label_id)["label"]
        else:
            assert changed.label == card.suggested_label
        assert changed.label_issue_changed_by == "qa-reviewer-2" and changed.label_issue_changed_at
        assert len(after) == len(before)
    assert {sid: _gt(base, sid) for sid in others} == others  # nothing else changed
    assert card.id not in base.load_saved_view(VIEW_NAME).values("id")  # out of the review queue
    with pytest.raises(InvalidInputError, match="decided already"):
        accept_issues(base, [card.id])

    assert undo_issue(base) == 1  # the last accept
    assert _gt(base, sample_id) == before
    assert card.id in base.load_saved_view(VIEW_NAME).values("id")  # open again
    with pytest.raises(InvalidInputError, match="No accepted label issue"):
        undo_issue(base)


def test_accepting_every_kind_at_once_then_rescanning_leaves_nothing(base, planted):
    find_label_issues(base, "ground_truth", "predictions")
    ids = [_planted_card(base, planted, kind).id for kind in KINDS]
    before = {sid: _boxes(base, sid) for sid, _ in planted.values()}
    assert accept_issues(base, ids) == 5
    rescan = find_label_issues(base, "ground_truth", "predictions")
    assert rescan.issues == 0 and len(base.load_saved_view(VIEW_NAME)) == 0
    assert undo_issue(base, [ids[0], ids[2]]) == 2
    assert _boxes(base, planted["overlooked"][0]) == before[planted["overlooked"][0]]
    assert _boxes(base, planted["spurious"][0]) == before[planted["spurious"][0]]
    assert _boxes(base, planted["mislocated"][0]) != before[planted["mislocated"][0]]  # still accepted
    assert undo_issue(base) == 3  # the rest of that accept
    assert {sid: _boxes(base, sid) for sid in before} == before


def test_rejected_issues_are_not_raised_again_until_the_label_changes(base, planted):
    find_label_issues(base, "ground_truth", "predictions")
    spurious, overlooked = (_planted_card(base, planted, k) for k in ("spurious", "overlooked"))
    assert reject_issues(base, [spurious.id, overlooked.id]) == 2
    assert len(base.load_saved_view(VIEW_NAME)) == 3

    again = find_label_issues(base, "ground_truth", "predictions")
    assert again.by_kind["spurious"] == 0 and again.by_kind["overlooked"] == 0 and again.still_dismissed == 2
    assert again.issues == 3

    # the rejected spurious box is moved: it is a new question
    x, y, w, h = EMPTY_CORNER
    base.set_label_values("ground_truth.detections.bounding_box", {spurious.label_id: [x + 0.01, y, w, h]})
    moved = find_label_issues(base, "ground_truth", "predictions")
    assert moved.by_kind["spurious"] == 1 and moved.still_dismissed == 1
    assert _cards(base)["spurious"][0][1].label_id == spurious.label_id


def test_reannotation_queues_the_sample_and_pushes_the_fix_as_its_pre_annotation(base, planted, labelstudio):
    from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, Connection
    from curate_loop.runs.labelstudio import push_batch

    find_label_issues(base, "ground_truth", "predictions")
    swapped, spurious = (_planted_card(base, planted, k) for k in ("swapped", "spurious"))
    assert send_issues_for_reannotation(base, [swapped.id, spurious.id], batch_name="issue_fixes") == 2
    sample_ids = {planted["swapped"][0], planted["spurious"][0]}
    assert set(base.load_saved_view("issue_fixes").values("id")) == sample_ids
    fixed = base[planted["swapped"][0]][FIX_FIELD].detections
    assert next(d for d in fixed if d.id == swapped.label_id).label == swapped.suggested_label
    assert spurious.label_id not in [d.id for d in base[planted["spurious"][0]][FIX_FIELD].detections]
    assert base[planted["swapped"][0]].ground_truth.detections[0].label != swapped.suggested_label  # labels untouched
    assert find_label_issues(base, "ground_truth", "predictions").issues == 3  # not raised while pending

    summary = push_batch(base, "issue_fixes", "ground_truth", url=labelstudio.url, api_key=labelstudio.token,
                         document_root=labelstudio.document_root, classes=[str(d) for d in range(10)],
                         predictions_field=FIX_FIELD, pre_annotations="predictions",
                         model_version="curate-loop label issues")
    assert summary.model_tasks == 2
    conn = Connection(labelstudio.url, labelstudio.token)
    tasks = conn.get_json("/api/tasks", {"project": summary.project_id, "fields": "all", "page_size": 1000},
                          what="test read")["tasks"]
    by_sample = {t["data"][SAMPLE_KEY]: t for t in tasks if t["data"].get("fo_batch") == "issue_fixes"}
    regions = {r["id"]: r for r in by_sample[planted["swapped"][0]]["predictions"][0]["result"]}
    assert by_sample[planted["swapped"][0]]["predictions"][0]["model_version"] == "curate-loop label issues"
    assert regions[swapped.label_id]["value"]["rectanglelabels"] == [swapped.suggested_label]
    spurious_regions = [r["id"] for r in by_sample[planted["spurious"][0]]["predictions"][0]["result"]]
    assert spurious.label_id not in spurious_regions
    assert len(spurious_regions) == len(base[planted["spurious"][0]].ground_truth.detections) - 1


def test_an_app_selection_means_its_cards(base, planted):
    find_label_issues(base, "ground_truth", "predictions")
    view = base.load_saved_view(VIEW_NAME)
    first = view.first()
    assert issue_ids_of_selection(view, selected_samples=[first.id]) == [first.id]
    assert issue_ids_of_selection(base, selected_samples=[first.id]) == [first.id]  # sent with another view
    swapped = _planted_card(base, planted, "swapped")
    assert issue_ids_of_selection(base, selected_labels=[{"field": "ground_truth", "label_id": swapped.label_id,
                                                          "sample_id": planted["swapped"][0]}]) == [swapped.id]
    assert issue_ids_of_selection(base, selected_samples=[planted["swapped"][0]]) == [swapped.id]
    assert issue_ids_of_selection(view) == []


def test_bad_input_is_refused_before_anything_is_written(base, planted):
    import fiftyone as fo

    with pytest.raises(InvalidInputError, match="No field 'nope'"):
        find_label_issues(base, "ground_truth", "nope")
    ids = base.exists("predictions").values("id")
    base.set_values("wrong_kind", {i: fo.Classification(label="1", confidence=0.9) for i in ids}, key_field="id")
    with pytest.raises(InvalidInputError, match="holds Classification, not Detections"):
        find_label_issues(base, "ground_truth", "wrong_kind")
    with pytest.raises(InvalidInputError, match="both 'ground_truth'"):
        find_label_issues(base, "ground_truth", "ground_truth")
    first = base.exists("predictions").first()
    base.set_label_values("predictions.detections.confidence", {first.predictions.detections[0].id: None})
    with pytest.raises(InvalidInputError, match="1 of .* predictions in 'predictions' have no confidence"):
        find_label_issues(base, "ground_truth", "predictions")
    assert not base.has_field(ISSUES_FIELD) and "label_issues_ground_truth" not in base.list_runs()
    with pytest.raises(InvalidInputError, match="no label issues yet"):
        accept_issues(base, ["0" * 24])


def test_boxes_outside_the_image_are_warned_per_label(base, planted):
    sample = base[planted["mislocated"][0]]
    label = sample.ground_truth.detections[-1]
    x, y, w, h = label.bounding_box
    base.set_label_values("ground_truth.detections.bounding_box", {label.id: [x, y, 1.2 - x, h]})
    summary = find_label_issues(base, "ground_truth", "predictions")
    assert summary.outside_image == 1 and any("leave the image" in w for w in summary.warnings)
    warnings = base.values("ground_truth.detections.label_issue_warning", unwind=True)
    assert warnings.count("box outside the image") == 1


def test_the_run_says_whether_the_predictions_were_out_of_fold(base, planted):
    from curate_loop.runs.model_step import PREDICTIONS_INFO

    base.info[PREDICTIONS_INFO] = {"predictions": {"out_of_fold": 3}}
    base.save()
    try:
        summary = find_label_issues(base, "ground_truth", "predictions")
    finally:
        base.info.pop(PREDICTIONS_INFO)
        base.save()
    assert summary.out_of_fold_folds == 3
    assert summary.scoring_note.startswith("scored on out-of-fold predictions (3 folds)")
    assert base.load_run_results("label_issues_ground_truth", cache=False).serialize()["out_of_fold_folds"] == 3


def test_without_predictions_only_duplicates_are_raised(base, planted):
    summary = find_label_issues(base, "ground_truth", None)
    assert summary.by_kind["duplicate"] == 1 and summary.issues == 1
    assert "no predictions" in summary.scoring_note


def test_cli_and_operators(base, planted):
    from fiftyone.operators import execute_operator

    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, ["label-issues", *args], catch_exceptions=False)
        return result.exit_code, result.output

    code, out = run("find", base.name, "--predictions-field", "predictions")
    assert code == 0 and "5 label issues" in out and "saved view 'label_issues'" in out and "in-sample" in out
    code, out = run("list", base.name, "-n", "10")
    rows = [line.split() for line in out.splitlines() if len(line.split()) > 2 and len(line.split()[0]) == 24]
    assert len(rows) == 5 and {r[1] for r in rows} == set(KINDS)
    by_kind = {r[1]: r[0] for r in rows}
    code, out = run("accept", base.name, by_kind["spurious"], "--by", "cli-reviewer")
    assert code == 0 and "Accepted 1" in out
    code, out = run("undo", base.name)
    assert code == 0 and "Undid 1" in out
    code, out = run("reject", base.name, by_kind["duplicate"])
    assert code == 0 and "Rejected 1" in out
    code, out = run("reannotate", base.name, by_kind["swapped"], "--batch", "cli_fixes")
    assert code == 0 and "'cli_fixes' now holds 1 sample" in out
    result = runner.invoke(cli, ["label-issues", "accept", base.name, by_kind["duplicate"]])
    assert result.exit_code == 1 and "decided already" in result.output and "Traceback" not in result.output

    result = execute_operator(f"{PLUGIN_NAME}/find_label_issues", ctx={
        "view": base.view(), "params": {"label_field": "ground_truth", "predictions_field": "predictions"}})
    assert result.result["issues"] == 3 and result.result["view"] == VIEW_NAME
    view = base.load_saved_view(VIEW_NAME)
    patch = view.first()
    result = execute_operator(f"{PLUGIN_NAME}/review_label_issues", ctx={
        "view": view, "selected": [patch.id], "params": {"decision": "accept"}})
    assert result.result["count"] == 1
    assert patch.id not in base.load_saved_view(VIEW_NAME).values("id")
    result = execute_operator(f"{PLUGIN_NAME}/review_label_issues", ctx={
        "view": view, "selected": [], "params": {"decision": "undo"}})
    assert result.result["count"] == 1 and patch.id in base.load_saved_view(VIEW_NAME).values("id")
    result = execute_operator(f"{PLUGIN_NAME}/review_label_issues", ctx={
        "view": view, "selected": [], "params": {"decision": "accept"}})
    assert "Select at least one issue card" in result.result["error"]


def test_the_loop_scan_includes_label_issues_when_the_model_wrote_predictions(base, planted):
    from curate_loop.loop.runner import _scan_label_issues

    class Model:
        field = "predictions"

    class Manifest:
        label_field = "ground_truth"
        model = Model()

    assert _scan_label_issues(base, Manifest()) == 5
    Manifest.model = None
    assert _scan_label_issues(base, Manifest()) is None
    np.testing.assert_equal(len(base.load_saved_view(VIEW_NAME)), 5)
