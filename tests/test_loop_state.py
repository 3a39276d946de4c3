"""No stale loop state: moved boxes get new vectors, the loop never adopts a batch it did not pick, the re-annotation
batch goes to Label Studio and back, and a decided label that changed is scored again. Real MongoDB, the real Label
Studio server, the example dataset and random-weight CLIP (the notice says so)."""

import numpy as np
import pytest
import yaml
from conftest import loop_copy

from curate_loop.adapters.labelstudio.client import SAMPLE_KEY
from curate_loop.embeddings.objects import flat_box_array, needs_embedding
from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.loop.manifest import load_manifest
from curate_loop.loop.runner import history, loop_batches, push_pending, run_iteration, status, unpushed_batches
from curate_loop.runs import embeddings as runs
from curate_loop.runs.labelstudio import list_pushed_batches
from curate_loop.runs.mislabels import REVIEWED, TAG_REANNOTATE, send_for_reannotation
from curate_loop.runs.pool import BATCH_FIELD

BUDGET = 8
REANNOTATE = "fix_labels"  # the manifest's mislabels.reannotate_batch (not the default 'reannotate')


@pytest.fixture(scope="module")
def setup(example_dataset, labelstudio, tmp_path_factory):
    dataset, path = loop_copy(example_dataset, "loop-state-tests", tmp_path_factory.mktemp("loop-state"),
                              labelstudio.url, BUDGET)
    raw = yaml.safe_load(path.read_text())
    raw["curation"]["strategy"] = "random"  # exactly BUDGET per batch: these tests count samples, not coverage
    raw["mislabels"] = {"reannotate_batch": REANNOTATE}
    path.write_text(yaml.safe_dump(raw))
    yield dataset, load_manifest(path)
    dataset.delete()


@pytest.fixture
def ls_env(labelstudio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
    return labelstudio


def _batch_tasks(labelstudio, dataset, batch):
    from curate_loop.adapters.labelstudio import tasks as ls_tasks
    from curate_loop.adapters.labelstudio.client import connect
    from curate_loop.runs.labelstudio import _record_or_error

    record = _record_or_error(dataset, batch)
    with connect(labelstudio.url, labelstudio.token) as conn:
        return ls_tasks.batch_tasks(conn, record["project_id"], batch)


def _object_store(dataset, key):
    return EmbeddingStore(runs.run_dir(dataset, key) / "part-0")


# -- the store remembers each vector's box ----------------------------------------------------------------------
def test_the_store_keeps_each_vectors_box_and_an_older_store_reads_as_unknown(tmp_path):
    store = EmbeddingStore(tmp_path).open({"model": "m"})
    store.append(["b", "a"], [[1, 0], [0, 1]])  # written before boxes were kept
    store.append(["c"], [[1, 1]], boxes=[[0.1, 0.1, 0.2, 0.2]])
    store.append(["a"], [[2, 2]], boxes=[[0.3, 0.3, 0.1, 0.1]])  # re-embedded: the latest vector and box win
    ids, boxes = store.stored_boxes()
    assert ids.tolist() == ["a", "b", "c"] and store.stored_ids().tolist() == ["a", "b", "c"]
    assert boxes[0].tolist() == [0.3, 0.3, 0.1, 0.1] and np.isnan(boxes[1]).all()
    assert store.load(["a"])[1].tolist() == [[2, 2]]

    current = flat_box_array([[[0.3, 0.3, 0.1, 0.1], [0, 0, 1, 1]], [[0.1, 0.1, 0.2, 0.25], None]], [2, 2])
    todo = needs_embedding(np.array(["a", "b", "c", "d"]), current, ids, boxes)
    # a: same box -> kept; b: no box known -> once more; c: resized -> again; d: new
    assert todo.tolist() == [False, True, True, True]
    with pytest.raises(Exception, match="boxes of shape"):
        store.append(["x"], [[1, 1]], boxes=[[0.1, 0.2]])


def test_a_moved_box_is_embedded_again_and_a_relabeled_one_keeps_its_vector(setup):
    dataset, _ = setup
    view = dataset.exists("ground_truth").limit(4)
    key = "crops_state"
    first = runs.compute_embeddings(view, key, "ViT-B-32", patches_field="ground_truth")
    ids, before = runs.load_embeddings(view, key)
    assert first.computed == len(ids) >= 4
    moved, relabeled = ids[0], ids[1]
    box = dataset.select_labels(ids=[moved], fields="ground_truth").first().ground_truth.detections[0].bounding_box
    new_box = [box[0] + 0.05, box[1] + 0.02, box[2] * 1.2, box[3]]
    dataset.set_label_values("ground_truth.detections.bounding_box", {moved: new_box})
    dataset.set_label_values("ground_truth.detections.label", {relabeled: "7"})

    again = runs.compute_embeddings(view, key, "ViT-B-32", patches_field="ground_truth")
    assert (again.computed, again.skipped) == (1, len(ids) - 1)
    _, after = runs.load_embeddings(view, key)
    assert not np.allclose(after[0], before[0], atol=1e-3)  # the new crop's vector
    np.testing.assert_array_equal(after[1:], before[1:])  # the relabeled box and the others: untouched
    stored_ids, stored_boxes = _object_store(dataset, key).stored_boxes()
    assert np.allclose(stored_boxes[stored_ids.tolist().index(moved)], new_box)
    assert runs.compute_embeddings(view, key, "ViT-B-32", patches_field="ground_truth").computed == 0

    # a store written before boxes were kept: every vector is embedded once more, then compared as usual
    store = _object_store(dataset, key)
    for chunk in sorted(p for p in store.root.glob("chunk-*.npz") if not p.name.endswith(".ids.npz")):  # not the ids
        with np.load(chunk) as data:
            arrays = {"ids": data["ids"], "vectors": data["vectors"]}
        with open(chunk, "wb") as fh:
            np.savez(fh, **arrays)
    assert runs.compute_embeddings(view, key, "ViT-B-32", patches_field="ground_truth").computed == len(ids)
    np.testing.assert_allclose(runs.load_embeddings(view, key)[1], after, atol=1e-4)  # same boxes, same vectors
    assert runs.compute_embeddings(view, key, "ViT-B-32", patches_field="ground_truth").computed == 0
    runs.delete_embeddings(dataset, key)


# -- batches the loop did not pick --------------------------------------------------------------------------------
def test_a_batch_picked_by_hand_in_the_app_is_not_adopted_by_the_loop(setup, ls_env):
    """The issue's scenario: after two iterations, `batch_03` with K = 20 is picked in the App (the name its form
    suggests); the next `curate-loop run` must still pick the manifest's budget, under its own name."""
    from fiftyone.operators import execute_operator

    from curate_loop.plugin_install import PLUGIN_NAME
    from curate_loop.runs.curation import METHOD as BATCH_METHOD

    dataset, manifest = setup
    for _ in range(2):
        run_iteration(manifest, api_key=ls_env.token)
    suggested = f"batch_{len(dataset.list_runs(method=BATCH_METHOD)) + 1:02d}"  # the App form's default name
    assert suggested == "batch_03" == manifest.batch_name(3)
    result = execute_operator(f"{PLUGIN_NAME}/select_batch", ctx={
        "view": dataset.view(), "params": {"name": suggested, "k": 20, "key": "clip", "strategy": "random",
                                           "label_field": "ground_truth"}})
    assert result.result.get("picked") == 20, result.result
    by_hand = set(dataset.load_saved_view("batch_03").values("id"))

    third = run_iteration(manifest, api_key=ls_env.token)
    assert third.iteration == 3 and third.batch == "batch_03_loop" and not third.reused_batch
    assert third.selected == third.pushed == BUDGET  # the manifest's budget, not the hand-picked K
    assert len(third.notes) == 1 and "'batch_03' already exists and was not picked by this loop" in third.notes[0]
    assert "this iteration's batch is 'batch_03_loop'" in third.notes[0]
    assert set(dataset.load_saved_view("batch_03").values("id")) == by_hand  # left as it was
    assert not by_hand & set(dataset.load_saved_view("batch_03_loop").values("id"))
    assert "batch_03" not in list_pushed_batches(dataset) and "batch_03_loop" in list_pushed_batches(dataset)
    assert sorted(t["data"][SAMPLE_KEY] for t in _batch_tasks(ls_env, dataset, "batch_03_loop")) == \
        sorted(dataset.load_saved_view("batch_03_loop").values("id"))
    assert history(dataset)[-1]["notes"] == third.notes
    assert loop_batches(dataset)[3]["batch"] == "batch_03_loop"

    # a crash after its pick: the re-run reuses the loop's own batch, and the hand-picked one is still not adopted
    with pytest.raises(RuntimeError, match="simulated crash after curate"):
        run_iteration(manifest, api_key=ls_env.token, crash_after="curate")
    picked = set(dataset.load_saved_view("batch_04").values("id"))
    fourth = run_iteration(manifest, api_key=ls_env.token)
    assert (fourth.batch, fourth.reused_batch, fourth.notes) == ("batch_04", True, [])
    assert set(dataset.load_saved_view("batch_04").values("id")) == picked
    # the hand-picked batch is still waiting for its own push ("Push pending batches" pushes it on request)
    assert unpushed_batches(dataset, REANNOTATE) == ["batch_03"]


# -- the re-annotation batch --------------------------------------------------------------------------------------
def test_the_loop_pushes_the_reannotation_batch_and_rescores_what_came_back(setup, ls_env):
    from fiftyone import ViewField as F

    from curate_loop.adapters.labelstudio.client import connect
    from curate_loop.adapters.labelstudio.mapping import detection_region

    dataset, manifest = setup
    sample = (dataset.exists("ground_truth").exists(BATCH_FIELD, False)  # labeled from the start, two boxes or more
              .match(F("ground_truth.detections").length() >= 2).first())
    moved, relabeled = sample.ground_truth.detections[:2]
    # the manifest drives this dataset's loop, so its reannotate_batch is where the labels go by default
    assert send_for_reannotation(dataset, "ground_truth", [moved.id, relabeled.id]) == 1
    assert dataset.load_saved_view(REANNOTATE).values("id") == [sample.id]
    assert TAG_REANNOTATE in dataset.select_labels(ids=[moved.id]).first().ground_truth.detections[0].tags
    assert status(manifest, api_key=ls_env.token)["unpushed"] == ["batch_03", REANNOTATE]

    pushed = run_iteration(manifest, api_key=ls_env.token)
    assert (pushed.reannotate_batch, pushed.reannotate_pushed) == (REANNOTATE, 1)
    tasks = _batch_tasks(ls_env, dataset, REANNOTATE)
    assert [t["data"][SAMPLE_KEY] for t in tasks] == [sample.id]
    assert unpushed_batches(dataset, REANNOTATE) == ["batch_03"]  # nothing of the re-annotation batch left

    # the annotator moves one box and relabels the other; the rest stays as pre-annotated
    width, height = sample.metadata.width, sample.metadata.height
    new_box = [moved.bounding_box[0] + 0.03, moved.bounding_box[1], moved.bounding_box[2], moved.bounding_box[3]]
    new_class = "1" if relabeled.label != "1" else "2"
    result = []
    for d in sample.ground_truth.detections:
        label = new_class if d.id == relabeled.id else d.label
        box = new_box if d.id == moved.id else d.bounding_box
        result.append(detection_region(d.id, label, box, width, height))
    with connect(ls_env.url, ls_env.token) as conn:
        conn.sdk.annotations.create(id=tasks[0]["id"], result=result, was_cancelled=False, lead_time=1.0)

    store_before = dict(zip(*[a.tolist() for a in _object_store(dataset, manifest.embeddings.objects_key)
                              .stored_boxes()]))
    pulled = run_iteration(manifest, api_key=ls_env.token)
    assert pulled.pulled[REANNOTATE]["applied"] == 1 and pulled.pulled[REANNOTATE]["labels_updated"] == 2
    assert pulled.reannotate_batch is None  # nothing new to push
    after = dataset.select_labels(ids=[moved.id, relabeled.id]).first().ground_truth.detections
    by_id = {d.id: d for d in after}
    assert np.allclose(by_id[moved.id].bounding_box, new_box, atol=1e-4) and by_id[relabeled.id].label == new_class
    # the moved box was embedded again before the scan; the relabeled one kept its vector (same crop)
    ids, boxes = _object_store(dataset, manifest.embeddings.objects_key).stored_boxes()
    stored = dict(zip(ids.tolist(), boxes.tolist()))
    assert np.allclose(stored[moved.id], by_id[moved.id].bounding_box)
    assert stored[relabeled.id] == store_before[relabeled.id]
    # both changed since they were sent for re-annotation: the decision is dropped and they are scored again
    scan = dataset.load_run_results("mislabels_ground_truth", cache=False)
    assert scan.reopened == 2
    for d in after:
        assert TAG_REANNOTATE not in d.tags and d[REVIEWED] != f"{d.label}|" + ",".join(f"{v:.3f}" for v in
                                                                                       d.bounding_box)
        assert d.mislabel_score is not None


def test_the_iteration_says_when_its_embeddings_had_random_weights(setup, ls_env):
    dataset, manifest = setup
    last = history(dataset)[-1]
    expected = [runs.random_weights_notice(dataset, "clip"), runs.random_weights_notice(dataset, "boxes")]
    assert all(expected) and last["notices"] == expected
    assert "random weights" in expected[0].lower() and "'clip'" in expected[0]


def test_push_pending_pushes_what_the_loop_left_and_only_that(setup, ls_env):
    dataset, manifest = setup
    sample = dataset.exists("ground_truth").exists(BATCH_FIELD, False).first()
    send_for_reannotation(dataset, "ground_truth", [sample.ground_truth.detections[0].id])
    pushed = push_pending(dataset, manifest, ls_env.url, ls_env.token)
    assert pushed == {"batch_03": 20, REANNOTATE: 1}
    assert push_pending(dataset, manifest, ls_env.url, ls_env.token) == {}
