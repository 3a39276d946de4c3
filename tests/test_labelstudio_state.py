"""Label Studio state against the real server: a push that dies with the server says what to re-run, concurrent
pushes of one batch leave one task per sample, projects belong to a dataset's id (not its name), the manifest's
``classes`` and ``labelstudio.media`` do what they say, and `curate-loop status` prints a table."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from click.testing import CliRunner

from curate_loop.adapters.labelstudio import tasks as ls_tasks
from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, Connection
from curate_loop.adapters.labelstudio.errors import BatchBusyError, LabelStudioUnreachable, MediaNotServedError
from curate_loop.adapters.labelstudio.labelconfig import config_classes, label_config
from curate_loop.cli import cli
from curate_loop.errors import InvalidInputError
from curate_loop.runs import labelstudio as sync
from conftest import fresh_clone

pytestmark = pytest.mark.labelstudio
DIGITS = [str(d) for d in range(10)]


def _clone(example_dataset, n: int, name: str | None = None, batch: str = "b1"):
    """A clone (``name`` or a fresh one) whose batch ``batch`` is ``n`` samples with boxes."""
    import fiftyone as fo
    from fiftyone import ViewField as F

    name = name or f"ls-state-{random.randrange(10**9)}"
    ds = fresh_clone(example_dataset, name)
    ids = ds.match(F("ground_truth.detections").length() > 0).limit(n).values("id")
    ds.set_values("curate_batch", {i: batch for i in ids}, key_field="id")
    return ds, ids


def _push(ds, server, **kwargs):
    return sync.push_batch(ds, "b1", "ground_truth", url=server.url, api_key=server.token,
                           document_root=server.document_root, **kwargs)


def _tasks_per_sample(server, project_id: int, batch: str = "b1") -> dict[str, int]:
    with Connection(server.url, server.token) as conn:
        tasks = ls_tasks.batch_tasks(conn, project_id, batch)
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["data"][SAMPLE_KEY]] = counts.get(task["data"][SAMPLE_KEY], 0) + 1
    return counts


def test_push_that_dies_with_the_server_says_what_to_rerun_and_the_rerun_finishes_it(
        example_dataset, labelstudio, migrated_labelstudio_data):
    from curate_loop.adapters.labelstudio.server import start_label_studio

    ds, ids = _clone(example_dataset, 8)
    server = start_label_studio(data_dir=migrated_labelstudio_data, document_root=labelstudio.document_root)
    try:
        def stop_after_first_chunk(fraction, label):
            if label.startswith("imported ") and server.is_running():
                server.stop()

        with pytest.raises(LabelStudioUnreachable) as info:
            _push(ds, server, chunk_size=2, progress=stop_after_first_chunk)
    finally:
        server.stop()
    message = str(info.value)
    assert f"Re-run `curate-loop push {ds.name} b1 --label-field ground_truth`" in message
    assert "it is safe" in message and server.token not in message
    assert sync.list_pushed_batches(ds) == []  # nothing recorded as pushed

    again = start_label_studio(data_dir=migrated_labelstudio_data, document_root=labelstudio.document_root)
    try:
        summary = _push(ds, again, chunk_size=2)
        assert (summary.tasks, summary.already_there, summary.created) == (8, 2, 6)
        assert _tasks_per_sample(again, summary.project_id) == {i: 1 for i in ids}
    finally:
        again.stop()


def test_a_push_of_a_batch_another_push_holds_pushes_nothing_and_says_why(example_dataset, labelstudio):
    from curate_loop.adapters.labelstudio.locks import batch_lock

    ds, ids = _clone(example_dataset, 3)
    with batch_lock(str(ds._doc.id), "b1", dataset_name=ds.name):
        with pytest.raises(BatchBusyError) as info:
            _push(ds, labelstudio)
        assert sync.list_pushed_batches(ds) == []
    assert f"Another push of batch 'b1' of '{ds.name}' is running (pid {os.getpid()}" in str(info.value)
    assert "pushed nothing" in str(info.value)
    summary = _push(ds, labelstudio)  # the lock is free again
    assert summary.created == 3 and _tasks_per_sample(labelstudio, summary.project_id) == {i: 1 for i in ids}


def test_two_concurrent_cli_pushes_of_one_batch_leave_one_task_per_sample(example_dataset, labelstudio):
    """Two real processes push the same 40-sample batch at once (one task per POST, so the pushes overlap): either
    one stops on the lock and says so, or (had one finished first) the second finds every task there."""
    ds, ids = _clone(example_dataset, 40)
    ds.persistent = True  # seen by the other processes
    env = {**os.environ, "LABEL_STUDIO_URL": labelstudio.url, "LABEL_STUDIO_API_KEY": labelstudio.token,
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(labelstudio.document_root)}
    command = [sys.executable, "-m", "curate_loop.cli", "push", ds.name, "b1", "--label-field", "ground_truth",
               "--chunk-size", "1"]
    try:
        procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
        project = ls_tasks.find_project(Connection(labelstudio.url, labelstudio.token), ds.name, "ground_truth",
                                        dataset_id=str(ds._doc.id))
        assert _tasks_per_sample(labelstudio, project.id) == {i: 1 for i in ids}
        codes = sorted(code for code, _, _ in results)
        if codes == [0, 1]:
            loser = next(err for code, _, err in results if code == 1)
            errors = [line for line in loser.splitlines() if "Error" in line]  # stderr also holds the progress bar
            assert len(errors) == 1 and errors[0].startswith("BatchBusyError: Another push of batch 'b1'")
            assert "pushed nothing" in errors[0]
        else:
            assert codes == [0, 0], results
            assert sorted("40 new" in out for _, out, _ in results) == [False, True]
    finally:
        ds.delete()


def test_a_dataset_rebuilt_under_the_same_name_gets_a_new_project(example_dataset, labelstudio):
    name = f"ls-rebuilt-{random.randrange(10**9)}"
    old, old_ids = _clone(example_dataset, 3, name=name)
    first = _push(old, labelstudio)
    old_id = str(old._doc.id)
    old.delete()
    new, new_ids = _clone(example_dataset, 2, name=name)  # same name, a new dataset (new id)
    assert str(new._doc.id) != old_id
    second = _push(new, labelstudio)
    assert second.project_id != first.project_id
    assert (second.created, second.already_there, second.tasks) == (2, 0, 2)
    assert _tasks_per_sample(labelstudio, second.project_id) == {i: 1 for i in new_ids}
    assert _tasks_per_sample(labelstudio, first.project_id) == {i: 1 for i in old_ids}  # the old project untouched


def test_a_project_recorded_before_keys_held_the_dataset_id_is_kept_and_marked(example_dataset, labelstudio):
    ds, ids = _clone(example_dataset, 2)
    first = _push(ds, labelstudio)
    conn = Connection(labelstudio.url, labelstudio.token)
    conn.sdk.projects.update(id=first.project_id, description=ls_tasks.project_key(ds.name, "ground_truth"))
    again = _push(ds, labelstudio)
    assert again.project_id == first.project_id and again.created == 0
    description = conn.sdk.projects.get(id=first.project_id).description
    assert description == ls_tasks.project_key(ds.name, "ground_truth", str(ds._doc.id))


def test_manifest_classes_define_the_config_and_a_pulled_class_outside_them_is_reported(example_dataset, labelstudio,
                                                                                       monkeypatch):
    ds, ids = _clone(example_dataset, 2)
    wanted = DIGITS + ["unknown digit"]
    summary = _push(ds, labelstudio, classes=wanted)
    conn = Connection(labelstudio.url, labelstudio.token)
    project = conn.sdk.projects.get(id=summary.project_id)
    assert config_classes(project.label_config) == wanted  # exactly the manifest's, in its order

    # someone adds a class in Label Studio's settings and uses it
    conn.sdk.projects.update(id=project.id, label_config=label_config("detections", wanted + ["cat"]))
    task = next(t for t in ls_tasks.batch_tasks(conn, project.id, "b1", include="id,data,predictions")
                if t["data"][SAMPLE_KEY] == ids[0])
    result = conn.get_json(f"/api/tasks/{task['id']}", what="reading the task")["predictions"][0]["result"]
    result[0]["value"] = {**result[0]["value"], "rectanglelabels": ["cat"]}
    conn.sdk.annotations.create(id=task["id"], result=result, was_cancelled=False, lead_time=1.0)

    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    out = CliRunner().invoke(cli, ["pull", ds.name, "b1"])
    assert out.exit_code == 0, out.output
    assert "1 pulled labels use classes outside the manifest's classes: 'cat' (1)" in out.output
    assert sync.pulls(ds, "b1")[-1]["outside_classes"] == {"cat": 1}
    assert "cat" in ds.distinct("ground_truth.detections.label")  # applied all the same: the annotator chose it


def test_a_pre_annotation_outside_the_manifest_classes_is_refused_before_anything_is_pushed(example_dataset,
                                                                                         labelstudio):
    ds, ids = _clone(example_dataset, 2)
    present = sorted(ds.select(ids).distinct("ground_truth.detections.label"))
    with pytest.raises(InvalidInputError, match="classes not in the manifest's classes") as info:
        _push(ds, labelstudio, classes=["not a digit"])
    assert str(present) in str(info.value) and "nothing was pushed" in str(info.value)
    conn = Connection(labelstudio.url, labelstudio.token)
    assert ls_tasks.find_project(conn, ds.name, "ground_truth", dataset_id=str(ds._doc.id)) is None


def test_media_upload_uploads_files_the_server_could_read_and_cloud_refuses_local_paths(example_dataset, labelstudio):
    ds, ids = _clone(example_dataset, 3)
    paths = ds.select(ids).values("filepath")
    assert all(ls_tasks.media_urls(paths, labelstudio.document_root)[0])  # local files storage would serve them
    summary = _push(ds, labelstudio, media="upload")
    assert (summary.created, summary.uploaded) == (3, 3)
    conn = Connection(labelstudio.url, labelstudio.token)
    images = [t["data"]["image"] for t in ls_tasks.batch_tasks(conn, summary.project_id, "b1", include="id,data")]
    assert len(images) == 3 and all(url.startswith("/data/upload/") for url in images)
    assert conn.sdk.import_storage.local.list(project=summary.project_id) == []  # no local storage was needed

    cloud, _ = _clone(example_dataset, 2)
    with pytest.raises(MediaNotServedError, match="labelstudio.media is 'cloud' but 2 of 2 samples are local files"):
        _push(cloud, labelstudio, media="cloud")
    assert sync.list_pushed_batches(cloud) == []


def test_status_prints_a_table_the_random_weights_notice_once_and_falls_back_without_a_key(
        example_dataset, labelstudio, monkeypatch, tmp_path):
    import yaml

    from curate_loop.runs.embeddings import compute_embeddings, random_weights_notice

    ds, ids = _clone(example_dataset, 3)
    small = ds.select(ids).clone(f"ls-status-{random.randrange(10**9)}")
    compute_embeddings(small, "clip", ["ViT-B-32"])  # random weights (no pretrained tag)
    notice = random_weights_notice(small, "clip")
    assert notice
    _push(small, labelstudio)
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(yaml.safe_dump({"dataset": small.name, "classes": DIGITS,
                                        "labelstudio": {"url": labelstudio.url}}))
    monkeypatch.setenv("CURATE_LOOP_HOME", str(tmp_path / "home"))  # no key file
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    runner = CliRunner()

    offline = runner.invoke(cli, ["status", str(manifest)])
    assert offline.exit_code == 0, offline.output
    lines = offline.stdout.splitlines()
    assert lines.count(notice) == 1
    assert sum("showing the last recorded state" in line for line in lines) == 1
    header = next(line for line in lines if line.startswith("batch "))
    assert header.split() == ["batch", "state", "tasks", "finished", "tab"]
    row = next(line for line in lines if line.startswith("b1 "))
    assert row.split()[:4] == ["b1", "pushed", "(recorded)", "3"]
    assert row.index("3") >= header.index("tasks")  # columns line up under their header
    assert "[" not in offline.stdout and "{" not in offline.stdout  # no Python values

    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    live = runner.invoke(cli, ["status", str(manifest)])
    assert live.exit_code == 0, live.output
    row = next(line for line in live.stdout.splitlines() if line.startswith("b1 "))
    assert row.split()[:4] == ["b1", "pushed", "3", "0"]
    assert "recorded state" not in live.stdout and labelstudio.token not in live.output
