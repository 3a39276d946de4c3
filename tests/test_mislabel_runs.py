"""Mislabel detection and the review flow on the example dataset in real FiftyOne, with injected label noise.

The example keeps its true boxes and classes aside (``true_ground_truth``). A copy of them gets 15% of its classes
flipped to the next digit (class-conditional "pair-flip" noise, the hard kind); the detector sees only the noisy
copy and object vectors computed from the box crops' pixels (the digit's ink, as scikit-learn's digits are
8x8 ink images): offline there is no pretrained model, and random-weight CLIP does not tell digits apart.
"""

import numpy as np
import pytest
from click.testing import CliRunner

from curate_loop.cli import cli
from curate_loop.errors import InvalidInputError
from curate_loop.plugin_install import PLUGIN_NAME
from curate_loop.runs import embeddings as runs
from curate_loop.runs.mislabels import (SUSPECT, TAG_ACCEPTED, TAG_REANNOTATE, TAG_REJECTED, accept_suggestions,
                                        find_mislabels, reject_suspects, send_for_reannotation)
from conftest import fresh_clone

NOISE_RATE = 0.15
INJECTED = {}  # label id -> whether its class was flipped (the truth the detector does not see)


def ink_descriptor(filepath, boxes):
    """Per box: the digit's ink (distance of each pixel from the crop's border colour) on an 8x8 grid."""
    from PIL import Image

    img = np.asarray(Image.open(filepath).convert("RGB"), dtype=np.float32)
    h, w = img.shape[:2]
    rows = []
    for x, y, bw, bh in boxes:
        x0, y0 = int(x * w), int(y * h)
        crop = img[y0:max(y0 + 1, int((y + bh) * h)), x0:max(x0 + 1, int((x + bw) * w))]
        border = np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]])
        ink = np.linalg.norm(crop - np.median(border, axis=0), axis=2)
        small = np.asarray(Image.fromarray(ink).resize((8, 8), Image.BILINEAR), dtype=np.float32).ravel()
        rows.append(small / (np.linalg.norm(small) + 1e-6))
    return rows


@pytest.fixture(scope="module")
def noisy(example_dataset):
    """A clone with ``noisy`` (pair-flipped copy of the truth) and ink vectors of its boxes as run "ink"."""
    import fiftyone as fo

    name = "mislabel-tests"
    dataset = fresh_clone(example_dataset, name)
    dataset.clone_sample_field("true_ground_truth", "noisy")
    ids, labels = dataset.values(["noisy.detections.id", "noisy.detections.label"], unwind=True)
    rng = np.random.default_rng(3)
    flipped = rng.random(len(ids)) < NOISE_RATE
    dataset.set_label_values("noisy.detections.label",
                             {i: str((int(c) + 1) % 10) for i, c, f in zip(ids, labels, flipped) if f})
    filepaths, boxes = dataset.values(["filepath", "noisy.detections.bounding_box"])
    vectors = [v for path, bxs in zip(filepaths, boxes) for v in ink_descriptor(path, bxs or [])]
    runs.import_embeddings(dataset, "ink", np.asarray(vectors), patches_field="noisy")
    INJECTED.update({i: bool(f) for i, f in zip(ids, flipped)})
    yield dataset
    dataset.delete()


def _average_precision(scores, positives):
    order = np.argsort(-scores, kind="stable")
    hits = positives[order]
    return float((np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits].mean())


def test_injected_errors_rank_near_the_top_with_the_true_class_suggested(noisy):
    summary = find_mislabels(noisy, "noisy", "ink")
    ids, scores, given, suggested, true = noisy.values(
        ["noisy.detections.id", "noisy.detections.mislabel_score", "noisy.detections.label",
         "noisy.detections.mislabel_suggestion", "true_ground_truth.detections.label"], unwind=True)
    scores = np.asarray(scores, dtype=float)
    errors = np.asarray([INJECTED[i] for i in ids])
    assert summary.scored == len(ids) and errors.sum() >= 20
    ap = _average_precision(scores, errors)
    assert ap >= 0.7, ap  # chance: the error rate, ~0.15
    top = np.argsort(-scores)[: errors.sum()]
    assert errors[top].mean() >= 0.6  # precision at k = number of errors
    caught = top[errors[top]]
    assert np.mean([suggested[i] == true[i] for i in caught]) >= 0.8
    assert summary.suspects > 0 and len(noisy.load_saved_view("mislabel_suspects")) == summary.suspects
    first = noisy.load_saved_view("mislabel_suspects").first()
    assert first.noisy.mislabel_score == pytest.approx(scores.max(), abs=1e-6)
    assert noisy.get_run_info("mislabels_noisy").config.embeddings_key == "ink"


def test_accept_reject_and_reannotate_survive_a_rerun(noisy):
    find_mislabels(noisy, "noisy", "ink")
    suspects = noisy.load_saved_view("mislabel_suspects")
    label_ids = suspects.limit(3).values("noisy.id")
    accepted, rejected, reannotated = label_ids

    before = noisy.select_labels(ids=[accepted], fields="noisy").values("noisy.detections.label", unwind=True)[0]
    assert accept_suggestions(noisy, "noisy", [accepted], changed_by="qa-reviewer-1") == 1
    label = _label(noisy, accepted)
    assert label.label == label.mislabel_suggestion != before
    assert label.mislabel_previous == before and label.mislabel_changed_by == "qa-reviewer-1"
    assert TAG_ACCEPTED in label.tags and label[SUSPECT] is False

    assert reject_suspects(noisy, "noisy", [rejected]) == 1
    assert send_for_reannotation(noisy, "noisy", [reannotated], batch_name="fix_01") == 1
    assert len(noisy.load_saved_view("fix_01")) == 1 and TAG_REANNOTATE in _label(noisy, reannotated).tags

    rerun = find_mislabels(noisy, "noisy", "ink")
    assert rerun.still_rejected == 1
    assert _label(noisy, rejected)[SUSPECT] is False and TAG_REJECTED in _label(noisy, rejected).tags
    assert _label(noisy, reannotated)[SUSPECT] is False

    # the rejected label changes: it is reviewed again
    new_class = "7" if _label(noisy, rejected).label != "7" else "1"
    noisy.set_label_values("noisy.detections.label", {rejected: new_class})
    again = find_mislabels(noisy, "noisy", "ink")
    assert _label(noisy, rejected).label == new_class and TAG_REJECTED not in _label(noisy, rejected).tags
    assert again.still_rejected == 0


def test_accepted_or_reannotated_labels_are_scored_again_once_they_change(noisy):
    """A decision holds while the label is as decided; a changed class or box reopens it (its decision tag goes and
    it is raised like any other label); an unchanged one is not raised again."""
    from curate_loop.runs.mislabels import REVIEWED, SCORE, SUGGESTION, SUSPECT_MIN_SCORE

    find_mislabels(noisy, "noisy", "ink")
    reverted, moved, relabeled, untouched = noisy.load_saved_view("mislabel_suspects").limit(4).values("noisy.id")
    given = _label(noisy, reverted).label
    accept_suggestions(noisy, "noisy", [reverted, moved])
    send_for_reannotation(noisy, "noisy", [relabeled, untouched], batch_name="fix_02")
    assert _label(noisy, moved)[REVIEWED].startswith(f"{_label(noisy, moved).label}|")  # as decided: after the accept

    unchanged = find_mislabels(noisy, "noisy", "ink")
    assert unchanged.reopened == 0 and unchanged.still_handled >= 4
    assert all(_label(noisy, i)[SUSPECT] is False for i in (reverted, moved, relabeled, untouched))

    # a hand edit undoes the accept, a pull moves a box, an annotator picks another class
    noisy.set_label_values("noisy.detections.label", {reverted: given})
    x, y, w, h = _label(noisy, moved).bounding_box
    noisy.set_label_values("noisy.detections.bounding_box", {moved: [x + 0.01, y, w, h]})
    other = "3" if _label(noisy, relabeled).label != "3" else "4"
    noisy.set_label_values("noisy.detections.label", {relabeled: other})
    changed = find_mislabels(noisy, "noisy", "ink")
    assert changed.reopened == 3 and changed.still_handled == unchanged.still_handled - 3
    for label_id in (reverted, moved, relabeled):
        label = _label(noisy, label_id)
        assert not {TAG_ACCEPTED, TAG_REANNOTATE, TAG_REJECTED} & set(label.tags)
        assert label[SUSPECT] == (label[SCORE] >= SUSPECT_MIN_SCORE and label[SUGGESTION] != label.label)
    assert _label(noisy, reverted)[SUSPECT] is True  # the mislabel it was before the accept, raised again
    assert TAG_REANNOTATE in _label(noisy, untouched).tags and _label(noisy, untouched)[SUSPECT] is False


def test_labels_decided_before_fingerprints_were_kept_adopt_their_current_one(noisy):
    from curate_loop.runs.mislabels import REVIEWED

    label_id = noisy.values("noisy.detections.id", unwind=True)[-1]
    noisy.select_labels(ids=[label_id], fields="noisy").tag_labels(TAG_ACCEPTED, label_fields="noisy")
    noisy.set_label_values(f"noisy.detections.{REVIEWED}", {label_id: None})
    find_mislabels(noisy, "noisy", "ink")
    label = _label(noisy, label_id)
    assert TAG_ACCEPTED in label.tags and label[SUSPECT] is False
    assert label[REVIEWED] == f"{label.label}|" + ",".join(f"{v:.3f}" for v in label.bounding_box)


def _label(dataset, label_id):
    view = dataset.select_labels(ids=[label_id], fields="noisy")
    return view.first().noisy.detections[0]


def test_bad_input_is_explained(noisy):
    with pytest.raises(InvalidInputError, match="not of the boxes of 'true_ground_truth'"):
        find_mislabels(noisy, "true_ground_truth", "ink")
    with pytest.raises(InvalidInputError, match="No field 'nope'"):
        find_mislabels(noisy, "nope", "ink")
    with pytest.raises(InvalidInputError, match="Select at least one label"):
        reject_suspects(noisy, "noisy", [])
    with pytest.raises(InvalidInputError, match="not labels of 'noisy'"):
        reject_suspects(noisy, "noisy", ["0" * 24])


def test_cli_and_operators(noisy):
    from fiftyone.operators import execute_operator

    runner = CliRunner()
    out = runner.invoke(cli, ["mislabels", "find", noisy.name, "--label-field", "noisy", "--key", "ink"],
                        catch_exceptions=False).output
    assert "suspects" in out and "saved view 'mislabel_suspects'" in out
    out = runner.invoke(cli, ["mislabels", "list", noisy.name, "--label-field", "noisy", "-n", "3"],
                        catch_exceptions=False).output
    first_id = out.split()[0]
    out = runner.invoke(cli, ["mislabels", "reject", noisy.name, first_id, "--label-field", "noisy"],
                        catch_exceptions=False).output
    assert "Marked 1 label(s)" in out

    result = execute_operator(f"{PLUGIN_NAME}/find_mislabels", ctx={
        "view": noisy.view(), "params": {"label_field": "noisy", "key": "ink"}})
    assert result.result["suspects"] >= 1 and result.result["view"] == "mislabel_suspects"
    suspects = noisy.load_saved_view("mislabel_suspects")
    patch = suspects.first()
    result = execute_operator(f"{PLUGIN_NAME}/review_mislabels", ctx={
        "view": suspects, "selected": [patch.id], "params": {"label_field": "noisy", "decision": "accept"}})
    assert result.result["count"] == 1
    assert TAG_ACCEPTED in _label(noisy, patch.noisy.id).tags


def test_a_patch_selection_sent_with_another_view_still_means_its_labels():
    """The App can send a patches grid's selection (patch ids, which are label ids) with the whole dataset as the
    view; those ids are read as labels, and a sample id still means all of its labels."""
    import fiftyone as fo

    from curate_loop.runs.mislabels import label_ids_of_selection

    dataset = fo.Dataset()
    boxes = [fo.Detection(label=c, bounding_box=[0.1 * i, 0.1, 0.1, 0.1]) for i, c in enumerate("abc")]
    sample = fo.Sample(filepath="/tmp/selection.jpg", gt=fo.Detections(detections=boxes))
    dataset.add_sample(sample)
    ids = dataset.values("gt.detections.id", unwind=True)
    try:
        assert label_ids_of_selection(dataset.to_patches("gt"), "gt", selected_samples=[ids[0]]) == [ids[0]]
        assert label_ids_of_selection(dataset, "gt", selected_samples=[ids[1]]) == [ids[1]]
        assert sorted(label_ids_of_selection(dataset, "gt", selected_samples=[sample.id])) == sorted(ids)
        assert label_ids_of_selection(dataset, "gt", selected_samples=["0" * 24]) == []
    finally:
        dataset.delete()
