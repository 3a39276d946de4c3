"""Label Studio sync against the real server: push, annotate through the API as annotators would, pull, check.

Each test works on its own clone of the example dataset (its own project on the server).
"""

from __future__ import annotations

import itertools
import json
import random

import pytest

from curate_loop.adapters.labelstudio import tasks as ls_tasks
from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, Connection
from curate_loop.adapters.labelstudio.errors import LabelStudioUnreachable
from curate_loop.adapters.labelstudio.labelconfig import config_classes
from curate_loop.adapters.labelstudio.mapping import Region
from curate_loop.adapters.labelstudio.reconcile import Annotation, reconcile
from curate_loop.runs import labelstudio as sync

pytestmark = pytest.mark.labelstudio
_names = itertools.count()


def _clone(example_dataset, n: int, batch: str = "b1", min_dets: int = 3):
    """A clone with batch ``batch`` = ``n`` labeled samples, those with the most boxes first."""
    from fiftyone import ViewField as F

    ds = example_dataset.clone(f"ls-sync-{next(_names)}-{random.randrange(10**6)}")
    labeled = ds.match(F("ground_truth.detections").length() >= min_dets)
    ids = labeled.sort_by(F("ground_truth.detections").length(), reverse=True).limit(n).values("id")
    ds.set_values("curate_batch", {i: batch for i in ids}, key_field="id")
    return ds, ids


def _snapshot(label):
    """A detached copy keeping label ids (``Label.copy()`` makes new ids)."""
    return None if label is None else type(label).from_dict(label.to_dict())


def _conn(server) -> Connection:
    return Connection(server.url, server.token)


def _tasks_by_sample(conn, project_id, batch="b1"):
    tasks = conn.get_json("/api/tasks", {"project": project_id, "fields": "all", "page_size": 1000},
                          what="test read")["tasks"]
    by_sample = {}
    for t in tasks:
        if t["data"].get("fo_batch") == batch:
            by_sample.setdefault(t["data"][SAMPLE_KEY], []).append(t)
    return by_sample


def _prediction(task):
    return json.loads(json.dumps(task["predictions"][0]["result"]))


def _annotate(conn, task_id, result, *, user=None, cancelled=False):
    kwargs = {"completed_by": user} if user else {}
    return conn.sdk.annotations.create(id=task_id, result=result, was_cancelled=cancelled, lead_time=2.5, **kwargs)


def _user(conn, name):
    for u in conn.sdk.users.list():
        if u.username == name:
            return u
    return conn.sdk.users.create(username=name, email=f"{name}@example.com", password=f"pw-{name}-123456")


def _push(ds, server, **kwargs):
    return sync.push_batch(ds, "b1", "ground_truth", url=server.url, api_key=server.token,
                           document_root=server.document_root, **kwargs)


def _labels(ds, sample_id):
    return {d.id: d for d in ds[sample_id].ground_truth.detections}


def test_round_trip_with_annotators(example_dataset, labelstudio):
    ds, ids = _clone(example_dataset, 5)
    before = {i: _snapshot(ds[i].ground_truth) for i in ids}
    summary = _push(ds, labelstudio)
    assert (summary.tasks, summary.created, summary.already_there) == (5, 5, 0)
    again = _push(ds, labelstudio)
    assert (again.tasks, again.created, again.already_there, again.project_id) == (5, 0, 5, summary.project_id)

    conn = _conn(labelstudio)
    project = conn.sdk.projects.get(id=summary.project_id)
    assert 'canRotate="false"' in project.label_config
    assert set(config_classes(project.label_config)) >= set(ds.distinct("ground_truth.detections.label"))
    tasks = _tasks_by_sample(conn, summary.project_id)
    assert sorted(tasks) == sorted(ids) and all(len(v) == 1 for v in tasks.values())
    a, b, c, d, e = ids
    task = {i: tasks[i][0] for i in ids}
    meta = ds[a].metadata
    pred = task[a]["predictions"][0]
    assert pred["model_version"] == "b1"
    assert {r["id"] for r in pred["result"]} == {det.id for det in before[a].detections}
    assert {(r["original_width"], r["original_height"]) for r in pred["result"]} == {(meta.width, meta.height)}
    assert task[a]["data"]["image"].startswith("/data/local-files/?d=example/")
    assert task[a]["data"]["fo_dataset"] == ds.name
    import httpx

    image = httpx.get(labelstudio.url + task[a]["data"]["image"], headers={"Authorization": f"Token {labelstudio.token}"})
    assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"

    # Sample a: class fix, moved box, new box, deleted box -- by one annotator.
    result = _prediction(task[a])
    fixed, moved, deleted = result[0], result[1], result[2]
    new_class = "7" if fixed["value"]["rectanglelabels"][0] != "7" else "1"
    fixed["value"]["rectanglelabels"] = [new_class]
    moved["value"]["x"] += 5.0
    moved["value"]["width"] -= 1.0
    result.remove(deleted)
    result.append({**json.loads(json.dumps(moved)), "id": "newbox0001",
                   "value": {"x": 1.0, "y": 2.0, "width": 10.0, "height": 12.0, "rotation": 0,
                             "rectanglelabels": ["3"]}})
    ann1 = _user(conn, "annotator1")
    ann2 = _user(conn, "annotator2")
    _annotate(conn, task[a]["id"], result, user=ann1.id)
    # Sample b: a cancelled task.
    _annotate(conn, task[b]["id"], [], user=ann1.id, cancelled=True)
    # Sample c: two annotators disagree on the first box's class; annotator2 is later.
    r1, r2 = _prediction(task[c]), _prediction(task[c])
    r1[0]["value"]["rectanglelabels"] = ["8"]
    r2[0]["value"]["rectanglelabels"] = ["9"]
    _annotate(conn, task[c]["id"], r1, user=ann1.id)
    _annotate(conn, task[c]["id"], r2, user=ann2.id)
    # Sample d: accepted as is. Sample e: untouched.
    _annotate(conn, task[d]["id"], _prediction(task[d]), user=ann2.id)
    assert sync.batch_status(ds, "b1", url=labelstudio.url, api_key=labelstudio.token)["state"] == "in_progress"

    # Requiring agreement: c is a conflict, left as it was and reported.
    strict = sync.pull_batch(ds, "b1", policy="agreement", url=labelstudio.url, api_key=labelstudio.token)
    assert [x["sample"] for x in strict.conflicts] == [c]
    assert "classes differ" in strict.conflicts[0]["reason"]
    assert ds[c].ground_truth.detections[0].label == before[c].detections[0].label

    pulled = sync.pull_batch(ds, "b1", url=labelstudio.url, api_key=labelstudio.token)  # latest wins
    assert pulled.conflicts == [] and pulled.applied == 3  # the cancelled-only task is not even read

    labels_a = _labels(ds, a)
    assert labels_a[fixed["id"]].label == new_class
    assert labels_a[fixed["id"]].bounding_box == pytest.approx(before[a].detections[0].bounding_box)
    old_box = before[a].detections[1].bounding_box
    assert labels_a[moved["id"]].bounding_box == pytest.approx([old_box[0] + 0.05, old_box[1], old_box[2] - 0.01,
                                                                old_box[3]])
    assert labels_a[moved["id"]].label == before[a].detections[1].label
    assert deleted["id"] not in labels_a
    new = [det for det in labels_a.values() if getattr(det, "ls_region_id", None) == "newbox0001"]
    assert len(new) == 1 and new[0].label == "3" and new[0].bounding_box == pytest.approx([0.01, 0.02, 0.10, 0.12])
    assert len(labels_a) == len(before[a].detections)  # one deleted, one added
    assert {det.ls_annotator for det in labels_a.values()} == {ann1.email}
    assert all(det.ls_annotated_at for det in labels_a.values())
    for det in before[a].detections[3:]:  # untouched boxes keep class and box exactly
        assert labels_a[det.id].label == det.label and labels_a[det.id].bounding_box == det.bounding_box

    assert ds[b].ground_truth == before[b]  # cancelled: nothing applied
    assert ds[e].ground_truth == before[e]  # not annotated
    labels_c = ds[c].ground_truth.detections
    assert labels_c[0].label == "9" and labels_c[0].ls_annotator == ann2.email
    assert [(x.id, x.label, x.bounding_box) for x in labels_c[1:]] == \
        [(x.id, x.label, x.bounding_box) for x in before[c].detections[1:]]
    labels_d = ds[d].ground_truth.detections
    assert [(x.id, x.label, x.bounding_box) for x in labels_d] == \
        [(x.id, x.label, x.bounding_box) for x in before[d].detections]

    again = sync.pull_batch(ds, "b1", url=labelstudio.url, api_key=labelstudio.token)
    assert again.changed_samples == 0 and again.applied == 3
    status = sync.batch_status(ds, "b1", url=labelstudio.url, api_key=labelstudio.token)
    assert (status["state"], status["tasks"], status["finished"], status["cancelled"]) == ("pulled", 5, 3, 1)
    run = json.dumps(ds.load_run_results("labelstudio_b1", cache=False).serialize(), default=str)
    assert labelstudio.token not in run
    assert labelstudio.token not in json.dumps(ds.get_run_info("labelstudio_b1").serialize(), default=str)


def test_undo_pull_restores_previous_labels(example_dataset, labelstudio):
    ds, ids = _clone(example_dataset, 2)
    before = _snapshot(ds[ids[0]].ground_truth)
    summary = _push(ds, labelstudio)
    conn = _conn(labelstudio)
    task = _tasks_by_sample(conn, summary.project_id)[ids[0]][0]
    _annotate(conn, task["id"], _prediction(task)[1:])
    assert sync.pull_batch(ds, "b1", url=labelstudio.url, api_key=labelstudio.token).changed_samples == 1
    assert len(ds[ids[0]].ground_truth.detections) == len(before.detections) - 1
    assert sync.undo_pull(ds, "b1") == 1
    assert [(d.id, d.label, d.bounding_box) for d in ds[ids[0]].ground_truth.detections] == \
        [(d.id, d.label, d.bounding_box) for d in before.detections]


@pytest.mark.parametrize("seed", [0, 1])
def test_push_interrupted_at_a_random_point_then_rerun_has_no_duplicates(example_dataset, labelstudio, seed,
                                                                         monkeypatch):
    """The server takes a chunk, then the client dies (Ctrl-C) or loses the answer and a retry re-sends it."""
    ds, ids = _clone(example_dataset, 12, min_dets=1)
    rng = random.Random(seed)
    stop_at = rng.randrange(1, 6)  # chunks of 2: somewhere in the 6 chunks
    real = Connection.import_tasks
    calls = {"imports": 0}

    def flaky(self, project_id, tasks, *, what):
        calls["imports"] += 1
        result = real(self, project_id, tasks, what=what)
        if calls["imports"] == stop_at:
            real(self, project_id, tasks, what=what)  # what a retry after a lost answer does: the chunk twice
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(Connection, "import_tasks", flaky)
    with pytest.raises(KeyboardInterrupt):
        _push(ds, labelstudio, chunk_size=2)
    monkeypatch.setattr(Connection, "import_tasks", real)
    conn = _conn(labelstudio)
    project_id = ls_tasks.find_project(conn, ds.name, "ground_truth", dataset_id=str(ds._doc.id)).id
    partial = _tasks_by_sample(conn, project_id)
    assert sum(len(v) for v in partial.values()) == 2 * stop_at + 2  # the dead run left a duplicated chunk

    summary = _push(ds, labelstudio, chunk_size=2)
    after = _tasks_by_sample(conn, project_id)
    assert sorted(after) == sorted(ids)
    assert all(len(v) == 1 for v in after.values())
    assert summary.duplicates_deleted == 2 and summary.tasks == 12


def test_lost_answer_is_listed_again_not_reimported(example_dataset, labelstudio, monkeypatch):
    """An import POST whose answer never comes (the server did take it): the push lists the batch and goes on."""
    import httpx

    ds, ids = _clone(example_dataset, 6, min_dets=1)
    real = Connection.import_tasks
    calls = {"imports": 0}

    def lost(self, project_id, tasks, *, what):
        calls["imports"] += 1
        if calls["imports"] == 2:
            real(self, project_id, tasks, what=what)
            raise self.translate(httpx.ReadTimeout("timed out"), what)
        return real(self, project_id, tasks, what=what)

    monkeypatch.setattr(Connection, "import_tasks", lost)
    summary = _push(ds, labelstudio, chunk_size=2)
    assert summary.tasks == 6 and summary.duplicates_deleted == 0
    after = _tasks_by_sample(_conn(labelstudio), summary.project_id)
    assert sorted(after) == sorted(ids) and all(len(v) == 1 for v in after.values())


def test_server_stopped_mid_pull_changes_nothing(example_dataset, labelstudio, migrated_labelstudio_data):
    from curate_loop.adapters.labelstudio.server import start_label_studio

    ds, ids = _clone(example_dataset, 6, min_dets=1)
    server = start_label_studio(data_dir=migrated_labelstudio_data, document_root=labelstudio.document_root)
    try:
        summary = _push(ds, server)
        conn = _conn(server)
        tasks = _tasks_by_sample(conn, summary.project_id)
        for sample_id in ids:
            task = tasks[sample_id][0]
            result = _prediction(task)
            result[0]["value"]["rectanglelabels"] = ["0" if result[0]["value"]["rectanglelabels"][0] != "0" else "1"]
            _annotate(conn, task["id"], result)
        before = {i: _snapshot(ds[i].ground_truth) for i in ids}

        def stop_after_first_page(fraction, label):
            if label.startswith("read ") and server.is_running():
                server.stop()

        with pytest.raises(LabelStudioUnreachable) as info:
            sync.pull_batch(ds, "b1", url=server.url, api_key=server.token, chunk_size=2,
                            progress=stop_after_first_page)
    finally:
        server.stop()
    message = str(info.value)
    assert "Nothing was written" in message and f"curate-loop pull {ds.name} b1" in message
    assert server.token not in message
    assert all(ds[i].ground_truth == before[i] for i in ids)
    assert sync.batch_status(ds, "b1", url=server.url, api_key=server.token)["server"] == "unreachable"


def test_xml_special_and_non_ascii_classes_round_trip(example_dataset, labelstudio):
    ds, ids = _clone(example_dataset, 2)
    names = ['cat & "dog"', "<b>bold</b>", "naïve café — 猫", "it's > 3"]
    dets = ds.select(ids).values("ground_truth.detections.id", unwind=True)
    ds.set_label_values("ground_truth.detections.label", {d: names[k % 4] for k, d in enumerate(dets)})
    summary = _push(ds, labelstudio)
    conn = _conn(labelstudio)
    project = conn.sdk.projects.get(id=summary.project_id)
    assert set(names) <= set(config_classes(project.label_config))
    assert set(names) <= set(project.parsed_label_config["label"]["labels"])
    task = _tasks_by_sample(conn, summary.project_id)[ids[0]][0]
    result = _prediction(task)
    assert {r["value"]["rectanglelabels"][0] for r in result} <= set(names)
    result[0]["value"]["rectanglelabels"] = ["naïve café — 猫"]
    result[1]["value"]["rectanglelabels"] = ['cat & "dog"']
    _annotate(conn, task["id"], result)
    sync.pull_batch(ds, "b1", url=labelstudio.url, api_key=labelstudio.token)
    labels = _labels(ds, ids[0])
    assert labels[result[0]["id"]].label == "naïve café — 猫"
    assert labels[result[1]["id"]].label == 'cat & "dog"'


def test_classification_round_trip(example_dataset, labelstudio):
    import fiftyone as fo

    ds, ids = _clone(example_dataset, 3, min_dets=1)
    ds.set_values("kind", {i: fo.Classification(label=f"class {k}") for k, i in enumerate(ids)}, key_field="id")
    summary = sync.push_batch(ds, "b1", "kind", url=labelstudio.url, api_key=labelstudio.token,
                              document_root=labelstudio.document_root)
    conn = _conn(labelstudio)
    assert "<Choices" in conn.sdk.projects.get(id=summary.project_id).label_config
    tasks = _tasks_by_sample(conn, summary.project_id)
    first = tasks[ids[0]][0]
    result = _prediction(first)
    assert result[0]["id"] == ds[ids[0]].kind.id
    result[0]["value"]["choices"] = ["class 2"]
    _annotate(conn, first["id"], result)
    _annotate(conn, tasks[ids[1]][0]["id"], [])  # no class any more
    sync.pull_batch(ds, "b1", url=labelstudio.url, api_key=labelstudio.token)
    assert ds[ids[0]].kind.label == "class 2" and ds[ids[0]].kind.id == result[0]["id"]
    assert ds[ids[1]].kind is None
    assert ds[ids[2]].kind.label == "class 2"


def test_cli_push_pull_status_never_print_the_key(example_dataset, labelstudio, monkeypatch):
    from click.testing import CliRunner

    from curate_loop.cli import cli

    ds, ids = _clone(example_dataset, 2)
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(labelstudio.document_root))
    runner = CliRunner()
    out = runner.invoke(cli, ["push", ds.name, "b1", "--label-field", "ground_truth"])
    assert out.exit_code == 0, out.output
    assert "2 tasks" in out.output
    out2 = runner.invoke(cli, ["pull", ds.name, "b1"])
    assert out2.exit_code == 0, out2.output
    out3 = runner.invoke(cli, ["labelstudio", "status", ds.name])
    assert out3.exit_code == 0, out3.output
    assert "b1" in out3.output and "pushed" in out3.output
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "f" * 40)
    bad = runner.invoke(cli, ["pull", ds.name, "b1"])
    assert bad.exit_code == 1 and "rejected the legacy token" in bad.output
    for result in (out, out2, out3, bad):
        assert labelstudio.token not in result.output and "f" * 40 not in result.output


# -- reconciliation, on hand-made annotations ----------------------------------------------------------------------
def _ann(i, who, when, *regions):
    return Annotation(i, who, when, [Region(*r) for r in regions])


def test_majority_keeps_regions_most_annotators_have():
    box = (0.1, 0.1, 0.2, 0.2)
    anns = [_ann(1, "a", "2026-01-01T00:00:01Z", ("L1", "cat", box), ("n1", "dog", (0.5, 0.5, 0.2, 0.2))),
            _ann(2, "b", "2026-01-01T00:00:02Z", ("L1", "cat", (0.12, 0.1, 0.2, 0.2)), ("n2", "dog", (0.51, 0.5, 0.2, 0.2))),
            _ann(3, "c", "2026-01-01T00:00:03Z", ("L1", "cow", box), ("n3", "bird", (0.0, 0.8, 0.1, 0.1)))]
    res = reconcile(anns, "majority")
    by_label = {r.label: r for r in res.regions}
    assert set(by_label) == {"cat", "dog"}  # bird: one annotator of three
    assert by_label["cat"].id == "L1" and by_label["cat"].box == pytest.approx((0.11, 0.1, 0.2, 0.2))
    assert by_label["dog"].box == pytest.approx((0.505, 0.5, 0.2, 0.2))
    assert res.ties == [] and res.annotators == ["a", "b", "c"]


def test_agreement_and_latest():
    box = (0.1, 0.1, 0.2, 0.2)
    same = [_ann(1, "a", "2026-01-01T00:00:01Z", ("L1", "cat", box)),
            _ann(2, "b", "2026-01-01T00:00:02Z", ("L1", "cat", (0.101, 0.1, 0.2, 0.2)))]
    assert reconcile(same, "agreement").conflict is None
    moved = [same[0], _ann(2, "b", "2026-01-01T00:00:02Z", ("L1", "cat", (0.2, 0.1, 0.2, 0.2)))]
    assert "boxes differ" in reconcile(moved, "agreement").conflict
    assert reconcile(moved, "latest").regions == moved[1].regions
    with pytest.raises(ValueError, match="choose one of"):
        reconcile(same, "loudest")


def test_media_outside_the_servers_root_is_uploaded_once_and_exif_orientation_is_respected(
        example_dataset, labelstudio, tmp_path):
    """Images the server cannot read from its local-files root are uploaded (in chunks, without creating tasks);
    a re-push uploads nothing. A photo stored sideways with an EXIF orientation tag is sized as it is shown."""
    from PIL import Image

    ds, ids = _clone(example_dataset, 3, min_dets=1)
    outside = tmp_path / "elsewhere"  # not under labelstudio.document_root
    outside.mkdir()
    new_paths = {}
    paths = dict(zip(*ds.select(ids).values(["id", "filepath"])))
    for k, sample_id in enumerate(ids):
        image = Image.open(paths[sample_id]).convert("RGB").resize((80, 40))
        exif = Image.Exif()
        if k == 0:
            exif[0x0112] = 6  # stored 80x40, shown rotated: 40x80
        target = outside / f"img_{k}.jpg"
        image.save(target, exif=exif)
        new_paths[sample_id] = str(target)
    ds.set_values("filepath", new_paths, key_field="id")
    ds.select(ids).set_field("metadata", None).save()
    ds.select(ids).compute_metadata(overwrite=True)
    assert (ds[ids[0]].metadata.width, ds[ids[0]].metadata.height) == (40, 80)

    first = _push(ds, labelstudio)
    assert (first.created, first.uploaded) == (3, 3)
    conn = _conn(labelstudio)
    tasks = {sid: ts[0] for sid, ts in _tasks_by_sample(conn, first.project_id).items()}
    for sample_id in ids:
        url = tasks[sample_id]["data"]["image"]
        assert url.startswith("/data/upload/")
        served = conn._http.get(url, headers=conn._headers())
        assert served.status_code == 200 and served.content == open(new_paths[sample_id], "rb").read()
    region = tasks[ids[0]]["predictions"][0]["result"][0]
    assert (region["original_width"], region["original_height"]) == (40, 80)

    again = _push(ds, labelstudio)
    assert (again.created, again.uploaded, again.already_there) == (0, 0, 3)
    assert {sid: ts[0]["data"]["image"] for sid, ts in _tasks_by_sample(conn, first.project_id).items()} == \
        {sid: t["data"]["image"] for sid, t in tasks.items()}


def test_upload_chunks_stay_under_the_servers_limits(tmp_path):
    paths = []
    for k, size in enumerate([10, 10, 10, 25, 5]):
        path = tmp_path / f"f{k}"
        path.write_bytes(b"x" * size)
        paths.append(str(path))
    assert ls_tasks.upload_chunks(paths, max_files=2, max_bytes=30) == [paths[:2], paths[2:3], paths[3:5]]
    assert ls_tasks.upload_chunks(paths[3:4], max_files=2, max_bytes=20) == [paths[3:4]]  # one big file alone
    with pytest.raises(ls_tasks.MediaNotServedError, match="Restore the file"):
        ls_tasks.upload_chunks([str(tmp_path / "gone.jpg")])


def test_personal_access_token_round_trip_and_the_key_is_never_recorded(example_dataset, labelstudio):
    """A Personal Access Token (JWT, exchanged for short-lived access tokens) works for push, status and pull like a
    legacy token; neither key shows up in the run record, the dataset or an error message."""
    from curate_loop.adapters.labelstudio.auth import is_personal_access_token
    from curate_loop.errors import LabelStudioAuthError

    legacy = _conn(labelstudio)
    legacy.sdk.jwt_settings.update(api_tokens_enabled=True, legacy_api_tokens_enabled=True, api_token_ttl_days=30)
    pat = legacy.sdk.tokens.create().token
    assert is_personal_access_token(pat)

    ds, ids = _clone(example_dataset, 2, min_dets=1)
    pushed = sync.push_batch(ds, "b1", "ground_truth", url=labelstudio.url, api_key=pat,
                             document_root=labelstudio.document_root)
    assert pushed.created == 2
    tasks = _tasks_by_sample(legacy, pushed.project_id)
    for sample_id in ids:
        _annotate(legacy, tasks[sample_id][0]["id"], _prediction(tasks[sample_id][0]))
    assert sync.batch_status(ds, "b1", url=labelstudio.url, api_key=pat)["state"] == "annotated"
    assert sync.pull_batch(ds, "b1", url=labelstudio.url, api_key=pat).applied == 2

    record = json.dumps(ds.load_run_results(sync.run_key("b1"), cache=False).serialize(), default=str)
    stored = json.dumps([s.to_dict() for s in ds], default=str)
    for key in (pat, labelstudio.token):
        assert key not in record and key not in stored
    broken = pat[:-6] + "xxxxxx"
    with pytest.raises(LabelStudioAuthError) as info:
        sync.push_batch(ds, "b1", "ground_truth", url=labelstudio.url, api_key=broken,
                        document_root=labelstudio.document_root)
    assert "personal access token" in str(info.value) and broken not in str(info.value)
