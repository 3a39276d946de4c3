"""Every operator of the plugin (and the Curation loop panel's push) executed as the App executes them, through
FiftyOne's operator executor, against the real parts: FiftyOne and its MongoDB, the real Label Studio server.

- Operators act on the samples behind the view the App leaves a user on: patches, evaluation patches, clips, frames
  (``curate_loop.runs.views.sample_level_view``).
- An expected failure is a one-line ``error`` in the result, never an exception out of the operator.
- Results built on random-weight embeddings carry the ``notice`` line.

Vectors are imported (one-hot class codes plus noise) so the scores are known without a model; the loop iteration
runs the real (random-weight) open_clip model, which is what makes its notice appear.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import loop_copy, fresh_clone

from curate_loop.plugin_install import PLUGIN_NAME
from curate_loop.runs import embeddings as runs
from curate_loop.runs.mislabels import SUSPECTS_VIEW, TAG_ACCEPTED, TAG_REANNOTATE, TAG_REJECTED
from curate_loop.runs.pool import BATCH_FIELD
from curate_loop.runs.views import sample_level_view

FLIPPED = 3  # boxes whose class the fixture flips: the mislabels the scan must raise


def run(name, **ctx):
    """Execute operator ``name`` the way the App does; the operator itself must never raise."""
    from fiftyone.operators import execute_operator

    result = execute_operator(f"{PLUGIN_NAME}/{name}", ctx=ctx)
    assert result.error is None, result.error
    return result.result


def one_line_error(result) -> str:
    assert set(result) == {"error"}, result
    message = result["error"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


def _codes(classes, rng, dim=12, noise=0.05):
    """One-hot class codes plus a little noise: vectors whose neighbours share their class."""
    index = np.asarray([int(c) if c is not None else 10 for c in classes])
    vectors = rng.normal(scale=noise, size=(len(index), dim)).astype(np.float32)
    vectors[np.arange(len(index)), index] += 1.0
    return vectors


@pytest.fixture(scope="module")
def ops(example_dataset):
    """A copy of the example with image vectors ``img`` and box vectors ``boxes`` (of ``ground_truth``, computed from
    its classes before ``FLIPPED`` of them are flipped to the next digit)."""
    import fiftyone as fo

    name = "operators-all"
    dataset = fresh_clone(example_dataset, name)
    rng = np.random.default_rng(0)
    first_class = [labels[0] if labels else None for labels in dataset.values("true_ground_truth.detections.label")]
    runs.import_embeddings(dataset, "img", _codes(first_class, rng))
    ids, classes = dataset.values(["ground_truth.detections.id", "ground_truth.detections.label"], unwind=True)
    runs.import_embeddings(dataset, "boxes", _codes(classes, rng), patches_field="ground_truth")
    flipped = [int(i) for i in rng.choice(len(ids), FLIPPED, replace=False)]
    dataset.set_label_values("ground_truth.detections.label",
                             {ids[i]: str((int(classes[i]) + 1) % 10) for i in flipped})
    dataset.info["flipped"] = {ids[i]: classes[i] for i in flipped}  # label id -> its class before the flip
    dataset.save()
    yield dataset
    dataset.delete()


@pytest.fixture(scope="module")
def videos():
    """Eight videos without media (frames carry file paths): enough for clips, frames and their patches views."""
    import fiftyone as fo

    dataset = fo.Dataset("operators-videos", overwrite=True)
    samples = []
    for i in range(8):
        sample = fo.Sample(filepath=f"/nonexistent/video{i}.mp4",
                           metadata=fo.VideoMetadata(total_frame_count=3, frame_rate=1.0, frame_width=64,
                                                     frame_height=64, duration=3.0))
        sample["events"] = fo.TemporalDetections(detections=[fo.TemporalDetection(label="a", support=[1, 1]),
                                                             fo.TemporalDetection(label="b", support=[2, 3])])
        for f in (1, 2, 3):
            sample.frames[f] = fo.Frame(filepath=f"/nonexistent/video{i}_{f}.jpg", objs=fo.Detections(
                detections=[fo.Detection(label="x", bounding_box=[0.1, 0.1, 0.3, 0.3])]))
        samples.append(sample)
    dataset.add_samples(samples)
    runs.import_embeddings(dataset, "img", _codes([str(i % 2) for i in range(8)], np.random.default_rng(1)))
    yield dataset
    dataset.delete()


@pytest.fixture
def ls_env(labelstudio, monkeypatch):
    """The App server's environment: the operators read the Label Studio URL and key as plugin secrets."""
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
    return labelstudio


def ls_task_samples(labelstudio, dataset, batch) -> list[str]:
    """The sample ids of ``batch``'s tasks, read from the Label Studio server."""
    from curate_loop.adapters.labelstudio import tasks as ls_tasks
    from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, connect
    from curate_loop.runs.labelstudio import batch_status

    project_id = batch_status(dataset, batch, url=labelstudio.url, api_key=labelstudio.token)["project_id"]
    with connect(labelstudio.url, labelstudio.token) as conn:
        return sorted(t["data"][SAMPLE_KEY] for t in ls_tasks.batch_tasks(conn, project_id, batch))


# -- views -----------------------------------------------------------------------------------------------------------
def test_every_view_kind_maps_to_its_source_samples(ops, videos):
    assert sample_level_view(ops) is ops
    labeled = ops.match_tags("labeled")
    assert sample_level_view(labeled) is labeled  # a plain view keeps its filters

    patches = ops.to_patches("ground_truth")
    mapped = sample_level_view(patches)
    assert mapped._dataset is ops and not mapped._is_generated
    assert mapped.values("id") == list(dict.fromkeys(patches.values("sample_id")))
    assert len(mapped) == len(ops.exists("ground_truth")) < len(patches)

    ops.clone_sample_field("ground_truth", "predictions")
    ops.evaluate_detections("predictions", gt_field="ground_truth", eval_key="ev")
    evaluation = ops.match_tags("labeled").limit(5).to_evaluation_patches("ev")
    assert sample_level_view(evaluation).values("id") == ops.match_tags("labeled").limit(5).values("id")
    ops.delete_evaluation("ev")
    ops.delete_sample_field("predictions")

    clips = videos.skip(2).to_clips("events")
    assert len(clips) == 12 and sample_level_view(clips).values("id") == videos.skip(2).values("id")
    frames = videos.limit(3).to_frames(sample_frames=False)
    assert len(frames) == 9 and sample_level_view(frames).values("id") == videos.limit(3).values("id")
    frame_patches = videos.limit(2).to_frames(sample_frames=False).to_patches("objs")
    assert sample_level_view(frame_patches).values("id") == videos.limit(2).values("id")
    assert sample_level_view(frame_patches)._dataset is videos


def test_operators_act_on_the_samples_behind_a_generated_view(ops, videos):
    """The App's "find mislabels" leaves a patches view; the next operator works on its samples (the bug: "No
    embeddings 'img' on dataset '<generated patches dataset>'")."""
    pool_patches = ops.match_tags("pool").to_patches("true_ground_truth")
    pool_ids = set(ops.match_tags("pool").values("id"))
    result = run("select_batch", view=pool_patches, params={"name": "from_patches", "k": 4, "key": "img",
                                                            "strategy": "cluster_balanced",
                                                            "label_field": "ground_truth"})
    assert result["picked"] == 4 and "error" not in result
    assert set(ops.load_saved_view("from_patches").values("id")) <= pool_ids

    result = run("dataset_summary", view=pool_patches, params={"label_field": "true_ground_truth"})
    assert result["samples"] == len(ops.match_tags("pool").exists("true_ground_truth"))
    result = run("score_edge_cases", view=pool_patches, params={"key": "img"})
    assert result["scored"] == len(ops.match_tags("pool").exists("true_ground_truth"))
    result = run("build_similarity_and_map", view=pool_patches, params={"key": "img", "build_index": True,
                                                                        "build_map": False})
    assert result == {"similarity": "img_sim"}

    # clips and frames of videos: their videos are the samples
    result = run("select_batch", view=videos.to_clips("events"), params={"name": "from_clips", "k": 2, "key": "img",
                                                                         "strategy": "random"})
    assert result["picked"] == 2 and len(videos.load_saved_view("from_clips")) == 2
    result = run("score_edge_cases", view=videos.to_frames(sample_frames=False),
                 params={"key": "img", "min_cluster_size": 2})
    assert result["scored"] == len(videos) and result["noise"] == 0
    result = run("dataset_summary", view=videos.to_frames(sample_frames=False).to_patches("objs"), params={})
    assert result["samples"] == len(videos)
    result = run("find_near_duplicates", view=videos.to_clips("events"), params={"key": "img", "threshold": 0.9})
    assert (result["groups"], result["in_groups"], result["redundant"]) == (2, 8, 6)  # two classes of four videos


def test_expected_failures_are_one_line_results(ops, labelstudio, monkeypatch):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    # the forms offer only existing keys and fields (FiftyOne refuses others): these get past them
    message = one_line_error(run("find_mislabels", dataset=ops, params={"label_field": "ground_truth", "key": "img"}))
    assert message.startswith("Embeddings 'img' are not of the boxes of 'ground_truth'. Compute them with")
    message = one_line_error(run("find_mislabels", view=ops.match_tags("pool"),
                                 params={"label_field": "ground_truth", "key": "boxes"}))
    assert message == "No labels in 'ground_truth' in this view: nothing to check."
    message = one_line_error(run("select_batch", view=ops.limit(0), params={"name": "empty", "k": 3, "key": "img",
                                                                             "label_field": "ground_truth"}))
    assert message.startswith("Only 0 sample(s) of this view have 'img' vectors")
    message = one_line_error(run("review_mislabels", dataset=ops, params={"label_field": "ground_truth",
                                                                          "decision": "accept"}))
    assert message == "Select at least one label (a suspect) to review."
    assert "empty" not in ops.list_saved_views() and "mislabels_ground_truth" not in ops.list_runs()

    no_key = ops.select(ops.match_tags("pool").exists(BATCH_FIELD, False).limit(2).values("id"))
    no_key.set_values(BATCH_FIELD, ["no_key", "no_key"])
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    message = one_line_error(run("push_to_labelstudio", dataset=ops, params={"batch": "no_key",
                                                                             "label_field": "ground_truth"}))
    assert "LABEL_STUDIO_API_KEY" in message and labelstudio.token not in message
    no_key.set_values(BATCH_FIELD, [None, None])

    # the App shows the error alone, in an error box
    operator = foo.get_operator(f"{PLUGIN_NAME}/select_batch")
    form = operator.resolve_output(ExecutionContext({"dataset_name": ops.name, "results": {"error": message}}))
    shown = form.type.properties
    assert list(shown) == ["error"] and shown["error"].view.label == message


def test_the_review_flow_push_pull_and_the_panels_push(ops, ls_env, tmp_path):
    """find mislabels -> review the suspects (accept, reject, re-annotate) -> push a picked batch, answer it in Label
    Studio, pull it -> the panel's "Push pending batches" pushes the re-annotation batch."""
    import yaml

    from curate_loop.loop.simulate import answer_batch

    flipped = ops.info["flipped"]
    result = run("find_mislabels", dataset=ops, params={"label_field": "ground_truth", "key": "boxes"})
    assert result["scored"] == ops.count("ground_truth.detections") and result["view"] == SUSPECTS_VIEW
    suspects = ops.load_saved_view(SUSPECTS_VIEW)
    patch_of = dict(zip(suspects.values("ground_truth.id"), suspects.values("id")))
    assert set(flipped) <= set(patch_of), "every flipped box is raised"

    accepted, rejected, resent = sorted(flipped)
    for label_id, decision in ((accepted, "accept"), (rejected, "reject"), (resent, "reannotate")):
        params = {"label_field": "ground_truth", "decision": decision}
        if decision == "reannotate":
            params["batch"] = "reannotate"
        result = run("review_mislabels", view=suspects, selected=[patch_of[label_id]], params=params)
        assert result["count"] == 1, result
    def box(label_id):
        return ops.select_labels(ids=[label_id], fields="ground_truth").first().ground_truth.detections[0]

    assert box(accepted).label == flipped[accepted] and box(accepted).tags == [TAG_ACCEPTED]
    assert box(accepted).mislabel_previous == str((int(flipped[accepted]) + 1) % 10)
    assert box(rejected).label != flipped[rejected] and box(rejected).tags == [TAG_REJECTED]
    assert box(resent).tags == [TAG_REANNOTATE]
    resent_sample = ops.select_labels(ids=[resent], fields="ground_truth").first().id
    assert ops[resent_sample][BATCH_FIELD] == "reannotate"

    # a picked batch: push it, answer it in Label Studio, pull it back
    result = run("select_batch", dataset=ops, params={"name": "op_batch", "k": 3, "key": "img",
                                                      "label_field": "ground_truth"})
    picked = sorted(ops.load_saved_view("op_batch").values("id"))
    result = run("push_to_labelstudio", dataset=ops, params={"batch": "op_batch", "label_field": "ground_truth",
                                                             "document_root": str(ls_env.document_root)})
    assert (result["tasks"], result["created"], result["already_there"]) == (3, 3, 0), result
    assert ls_task_samples(ls_env, ops, "op_batch") == picked
    assert answer_batch(ops, "op_batch", url=ls_env.url, api_key=ls_env.token) == 3
    result = run("pull_from_labelstudio", dataset=ops, params={"batch": "op_batch", "policy": "latest"})
    assert result["applied"] == 3 and result["changed"] == 3 and result["conflicts"] == 0, result
    for sample in ops.select(picked):
        assert sorted(d.label for d in sample.ground_truth.detections) == \
            sorted(d.label for d in sample.true_ground_truth.detections)

    # the panel's "Push pending batches": op_batch is in Label Studio, the re-annotation batch (and the batch picked
    # from patches by an earlier test) not yet
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(yaml.safe_dump({
        "dataset": ops.name, "label_field": "ground_truth", "classes": [str(d) for d in range(10)],
        "embeddings": {"key": "img", "objects_key": "boxes"},
        "labelstudio": {"url": ls_env.url, "media": "local_files"}}))
    state = {"manifest": str(manifest)}
    run("curation_loop", dataset=ops, params={"__method__": "push", "panel_id": "p1", "panel_state": state})
    earlier = [f"{b} ({len(ops.load_saved_view(b))} new tasks)" for b in ("from_patches",) if ops.has_saved_view(b)]
    assert state["message"] == "Pushed " + ", ".join(earlier + ["reannotate (1 new tasks)"]) + "."  # never pushed
    assert ls_task_samples(ls_env, ops, "reannotate") == [resent_sample]
    run("curation_loop", dataset=ops, params={"__method__": "push", "panel_id": "p1", "panel_state": state})
    assert state["message"].startswith("Nothing to push")
    assert ls_task_samples(ls_env, ops, "reannotate") == [resent_sample]  # no duplicate task
    assert state.get("notice") is None  # imported vectors: nothing to warn about


def test_run_loop_iteration_operator_and_the_random_weights_notice(example_dataset, ls_env, tmp_path):
    from curate_loop.runs.embeddings import random_weights_notice

    dataset, manifest = loop_copy(example_dataset, "operators-loop", tmp_path, ls_env.url, budget=4)
    try:
        result = run("run_loop_iteration", dataset=dataset, params={"manifest": str(manifest)})
        assert "error" not in result, result
        assert (result["iteration"], result["selected"], result["pushed"]) == (1, 4, 4)
        assert result["notice"] == random_weights_notice(dataset, "clip") and "RANDOM WEIGHTS" in result["notice"]
        assert ls_task_samples(ls_env, dataset, result["batch"]) == \
            sorted(dataset.load_saved_view(result["batch"]).values("id"))

        state = {"manifest": str(manifest)}
        run("curation_loop", dataset=dataset, params={"__method__": "refresh", "panel_id": "p2", "panel_state": state})
        assert state["notice"] == result["notice"]
        result = run("build_similarity_and_map", dataset=dataset, params={"key": "clip", "build_index": True,
                                                                          "build_map": False})
        assert result["notice"].startswith("RANDOM WEIGHTS")

        message = one_line_error(run("run_loop_iteration", dataset=dataset,
                                     params={"manifest": str(tmp_path / "missing.yml")}))
        assert "missing.yml" in message
    finally:
        dataset.delete()
