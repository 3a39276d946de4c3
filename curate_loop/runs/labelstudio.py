"""Label Studio sync on a FiftyOne dataset: push a batch as tasks, pull finished annotations back, batch status.

The glue around :mod:`curate_loop.adapters.labelstudio`: bulk reads of the batch, one import per chunk, bulk
writes of the pulled labels, and a run per batch (``labelstudio_<batch>``) that records the project, the tasks,
each pull (with the labels it replaced, so a pull can be undone) and the batch's state:

    pushed       tasks exist, nobody finished one yet
    in_progress  some tasks have finished annotations
    annotated    every task has a finished (or cancelled) annotation
    pulled       the finished annotations were applied, and nothing was finished since

A pull reads everything before it writes anything: when the server stops answering mid-way the dataset is left as
it was and the error says what to re-run. Labels that a pull writes carry ``ls_annotator`` and ``ls_annotated_at``;
labels born in Label Studio also carry ``ls_region_id`` (how a second pull recognises them: pulling twice changes
nothing). Tasks pre-annotated with a model's predictions are recorded with their regions, and each pull measures
how the annotators changed them (``model_assist``: accepted, relabeled, moved, deleted, added per class). The API
key is never stored: the run records the server URL only. Pushes of one batch hold a lock
(:mod:`curate_loop.adapters.labelstudio.locks`), so two at once never import the same samples twice.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import bson
from bson import json_util

from curate_loop.adapters.labelstudio import assist
from curate_loop.adapters.labelstudio import tasks as ls_tasks
from curate_loop.adapters.labelstudio.client import BATCH_KEY, DATASET_KEY, SAMPLE_KEY, Connection, connect
from curate_loop.adapters.labelstudio.errors import (LabelStudioAPIError, LabelStudioKeyMissing, LabelStudioSyncError,
                                                     LabelStudioUnreachable)
from curate_loop.adapters.labelstudio.labelconfig import IMAGE_KEY
from curate_loop.adapters.labelstudio.mapping import (Region, classification_region, detection_region, model_prediction,
                                                      parse_result, same_box, stored_region)
from curate_loop.adapters.labelstudio.reconcile import DEFAULT_POLICY, Annotation, check_policy, reconcile
from curate_loop.errors import InvalidInputError
from curate_loop.runs.embeddings import Progress
from curate_loop.runs.pool import BATCH_FIELD, REASON_FIELD
from curate_loop.runs.pool import label_kind as _label_kind

METHOD = "curate_loop.labelstudio"
STATES = ("pushed", "in_progress", "annotated", "pulled")
SCORE_FIELDS = {"mislabel_score": "mislabel_max", "edge_score": "edge_score", "curation_score": "curation_score"}
ANNOTATOR, ANNOTATED_AT, REGION_ID = "ls_annotator", "ls_annotated_at", "ls_region_id"
PRE_ANNOTATIONS = ("auto", "predictions", "labels")


def run_key(batch: str) -> str:
    return f"labelstudio_{batch}"


@dataclass
class PushSummary:
    batch: str
    label_field: str
    url: str
    project_id: int
    project_title: str
    view_id: int
    tasks: int
    created: int
    already_there: int
    duplicates_deleted: int
    uploaded: int = 0  # images uploaded because the server could not read them from disk or the cloud
    # tasks of the batch whose pre-annotation is the model's predictions, and their regions
    model_tasks: int = 0
    model_regions: int = 0
    model_version: str | None = None
    # predicted regions left out of this push's new tasks because the project offers no such class: class -> n
    dropped_prediction_classes: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PullSummary:
    batch: str
    policy: str
    tasks_read: int
    applied: int  # tasks whose reconciled annotation was applied
    changed_samples: int  # samples whose labels changed (0 on a repeated pull)
    cancelled: int  # cancelled annotations dropped
    conflicts: list = field(default_factory=list)  # [{"task", "sample", "annotators", "reason"}]
    ties: int = 0
    labels_updated: int = 0
    labels_added: int = 0
    labels_removed: int = 0
    # pulled labels whose class the manifest's ``classes`` lack: class -> count (applied all the same: the annotator
    # chose them; reported so the manifest or the labels get fixed)
    outside_classes: dict = field(default_factory=dict)
    # how the annotators changed the model's pre-annotations (``adapters.labelstudio.assist``): {"model_version",
    # "per_class": {cls: {accepted, relabeled, moved, deleted, added, predicted}}, "totals": {..., tasks, rate}},
    # over every applied task of the batch that had model predictions; None when none had
    model_assist: dict | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# -- reading the batch ---------------------------------------------------------------------------------------------
def label_kind(samples, label_field: str) -> str:
    return _label_kind(samples, label_field, needed_for=": Label Studio sync supports those two.")


def batch_members(dataset, batch: str):
    from fiftyone import ViewField as F

    members = dataset.match(F(BATCH_FIELD) == batch) if dataset.has_field(BATCH_FIELD) else dataset.limit(0)
    if not len(members):
        batches = sorted(b for b in dataset.distinct(BATCH_FIELD) if b) if dataset.has_field(BATCH_FIELD) else []
        raise InvalidInputError(f"Batch {batch!r} of {dataset.name!r} has no samples; batches: {batches or 'none'} "
                                "(pick one with `curate-loop curate select`).")
    return members


def _classes(dataset, label_field: str, kind: str, extra) -> list[str]:
    path = f"{label_field}.detections.label" if kind == "detections" else f"{label_field}.label"
    found = set(dataset.distinct(path))
    found |= set(dataset.classes.get(label_field, [])) | set(dataset.default_classes or []) | set(extra or [])
    return sorted(c for c in found if c is not None)


def _label_dicts(doc: dict | None, kind: str) -> list[dict]:
    """The labels of one sample's stored label document as plain dicts ``{"id", "label", "bounding_box"}``."""
    if doc is None:
        return []
    docs = [doc] if kind == "classification" else (doc.get("detections") or [])
    return [{"id": str(d["_id"]), "label": d.get("label"), "bounding_box": d.get("bounding_box")} for d in docs]


# -- push ----------------------------------------------------------------------------------------------------------
def push_batch(dataset, batch: str, label_field: str, *, url: str | None = None, api_key: str | None = None,
               connection: Connection | None = None, document_root=None, classes=None, media: str = "local_files",
               chunk_size: int = ls_tasks.CHUNK_SIZE, predictions_field: str | None = None,
               model_version: str | None = None, pre_annotations: str = "auto",
               progress: Progress | None = None) -> PushSummary:
    """Send batch ``batch`` of ``dataset`` to Label Studio, its ``label_field`` labels (or a model's predictions) as
    pre-annotations.

    Safe to repeat and to resume: samples that already have a task of this batch are not imported again, and a
    sample never ends with two tasks; a second push of the same batch while one runs stops at once
    (:class:`~curate_loop.adapters.labelstudio.errors.BatchBusyError`, nothing pushed). ``url``/``api_key`` default to
    ``$LABEL_STUDIO_URL``/``$LABEL_STUDIO_API_KEY``, then the key file; ``document_root`` (default
    ``$LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) is the server's local-files root.

    ``classes`` (the manifest's ``classes``): the classes the project's label config offers, in this order (an
    existing project keeps the classes it has and gains these); a pre-annotation outside them is refused. ``None``:
    every class the dataset knows for ``label_field``. ``media`` (the manifest's ``labelstudio.media``):
    ``"local_files"`` serves files under the server's root from disk and uploads the rest, ``"upload"`` uploads every
    local file, ``"cloud"`` refuses local files.

    Model pre-annotations: ``predictions_field`` (the model step's field, same kind as ``label_field``) gives a
    sample's pre-annotation when ``pre_annotations`` (the manifest's ``labelstudio.pre_annotations``) says so:
    ``"auto"`` for samples without ``label_field`` labels (the pool), ``"predictions"`` for every sample the model
    predicted, ``"labels"`` never. Such a task's prediction carries ``model_version`` (default: the field's name), a
    ``score`` per region (its confidence) and the mean confidence as the task's score; predicted regions of classes
    the project lacks are left out and counted (``dropped_prediction_classes``). The push record keeps each such
    task's regions, so the pull can measure how annotators changed them (``PullSummary.model_assist``). A field the
    model has not written yet gives no model pre-annotations (the labels, as without a model).
    """
    from curate_loop.adapters.labelstudio.locks import batch_lock

    started = time.perf_counter()
    step = progress or (lambda fraction, label: None)
    dataset = dataset._dataset
    kind = label_kind(dataset, label_field)
    model = _model_source(dataset, label_field, kind, predictions_field, model_version, pre_annotations)
    members = batch_members(dataset, batch)
    step(0.02, "reading the batch")
    if members.exists("metadata.width", False).count():
        members.exists("metadata.width", False).compute_metadata()
    given = classes is not None
    classes = (_manifest_classes(members, label_field, kind, classes, batch) if given
               else _classes(dataset, label_field, kind, None))
    rerun = (f"Re-run `curate-loop push {dataset.name} {batch} --label-field {label_field}` when the server answers "
             "again: it is safe (tasks already created are not created twice).")
    with batch_lock(str(dataset._doc.id), batch, dataset_name=dataset.name):
        record = _load_record(dataset, batch)  # read under the lock: the other push may just have saved it
        if record and record["label_field"] != label_field:
            raise InvalidInputError(f"Batch {batch!r} was pushed with label field {record['label_field']!r}; push "
                                    f"it with that field, or pick another batch for {label_field!r}.")
        try:
            summary, task_ids, predicted = _push(dataset, members, batch, label_field, kind, classes, media, url,
                                                 api_key, connection, document_root, chunk_size, step, model)
        except (LabelStudioUnreachable, LabelStudioAPIError) as exc:
            raise type(exc)(f"{exc} {rerun}") from exc
        model_tasks = _model_tasks(record, task_ids, predicted, summary)
        summary.seconds = round(time.perf_counter() - started, 2)
        _save_push(dataset, batch, summary, task_ids, record, classes if given else None, model_tasks)
    step(1.0, f"{summary.tasks} tasks in project {summary.project_id}")
    return summary


def _model_source(dataset, label_field: str, kind: str, predictions_field: str | None, model_version: str | None,
                  pre_annotations: str) -> dict | None:
    """``{"field", "model_version", "mode"}`` when the push may use model predictions, else None; a predictions field
    of another kind than ``label_field`` is refused before anything is pushed."""
    if pre_annotations not in PRE_ANNOTATIONS:
        raise InvalidInputError(f"push: pre_annotations={pre_annotations!r}; choose one of {PRE_ANNOTATIONS} "
                                "(labelstudio.pre_annotations in the manifest).")
    if predictions_field is None or pre_annotations == "labels" or not dataset.has_field(predictions_field):
        return None
    predicted_kind = _label_kind(dataset, predictions_field,
                                 needed_for=": model pre-annotations need Detections or a Classification.")
    if predicted_kind != kind:
        raise InvalidInputError(f"push: the predictions field {predictions_field!r} holds {predicted_kind} but the "
                                f"label field {label_field!r} holds {kind}; nothing was pushed. Point model.field at "
                                f"a {kind} field (or fix the model so it writes {kind}).")
    return {"field": predictions_field, "model_version": model_version or predictions_field, "mode": pre_annotations}


def _model_tasks(record: dict | None, task_ids: dict, predicted: dict, summary: PushSummary) -> dict:
    """task id -> ``{"model_version", "regions"}`` for the batch's tasks whose pre-annotation is the model's: those
    the record knew, and those new to it that were built with model predictions (a task already on the server is
    never imported again, so what it was built with stays true). Fills the summary's model counts."""
    known = dict((record or {}).get("model_predictions") or {})
    recorded_tasks = {str(t) for t in ((record or {}).get("task_ids") or {}).values()}
    dropped: dict[str, int] = {}
    for sample_id, task_id in task_ids.items():
        entry = predicted.get(sample_id)
        if entry is None or str(task_id) in recorded_tasks:
            continue
        known[str(task_id)] = {"model_version": entry["model_version"], "regions": entry["regions"]}
        for cls, n in entry["dropped"].items():
            dropped[cls] = dropped.get(cls, 0) + n
    batch_tasks = {str(t) for t in task_ids.values()}
    mine = {t: e for t, e in known.items() if t in batch_tasks}
    summary.model_tasks = len(mine)
    summary.model_regions = sum(len(e["regions"]) for e in mine.values())
    versions = sorted({e["model_version"] for e in mine.values()})
    summary.model_version = ", ".join(versions) or None
    summary.dropped_prediction_classes = dict(sorted(dropped.items()))
    return known


def _push(dataset, members, batch, label_field, kind, classes, media, url, api_key, connection, document_root,
          chunk_size, step, model=None) -> tuple[PushSummary, dict, dict]:
    """The server side of :func:`push_batch`: project, media, tab, tasks."""
    # The batch is read from MongoDB while the server finds or creates the project: neither waits for the other.
    with ThreadPoolExecutor(1) as pool:
        building = pool.submit(_build_tasks, dataset, members, batch, label_field, kind,
                               ls_tasks.document_root(document_root), media, model, classes)
        conn = connection or connect(url, api_key)
        try:
            step(0.1, "preparing the project")
            project, fresh = ls_tasks.ensure_project(conn, dataset.name, label_field, kind, classes,
                                                     _known_project(dataset, label_field, conn.url),
                                                     dataset_id=str(dataset._doc.id))
            tasks = building.result()
            urls, folders, predicted = tasks.pop("urls"), tasks.pop("folders"), tasks.pop("predicted")
            for folder in folders:
                first_local = next(u for u in urls if u and u.startswith(ls_tasks.LOCAL_FILES_PREFIX))
                ls_tasks.ensure_local_storage(conn, project.id, folder, first_local, fresh=fresh)
            uploaded = _upload_missing_media(conn, project.id, batch, tasks["tasks"], urls, tasks.pop("filepaths"),
                                             fresh=fresh, progress=lambda f, label: step(0.1 + 0.05 * f, label))
            view_id = ls_tasks.ensure_view(conn, project.id, batch, fresh=fresh)
            report = ls_tasks.import_missing(conn, project.id, batch, tasks["tasks"], chunk_size=chunk_size,
                                             fresh=fresh, progress=lambda f, label: step(0.15 + 0.8 * f, label))
        finally:
            if connection is None:
                conn.close()
    summary = PushSummary(batch=batch, label_field=label_field, url=conn.url, project_id=project.id,
                          project_title=project.title, view_id=view_id, tasks=len(report.task_ids),
                          created=report.created, already_there=report.already_there,
                          duplicates_deleted=report.duplicates_deleted, uploaded=uploaded)
    return summary, report.task_ids, predicted


def _manifest_classes(members, label_field: str, kind: str, classes, batch: str) -> list[str]:
    """``classes`` as a list, after checking the batch's pre-annotations use no other class."""
    classes = [str(c) for c in classes]
    if not classes:
        raise InvalidInputError("classes is empty: a Label Studio project needs at least one class.")
    path = f"{label_field}.detections.label" if kind == "detections" else f"{label_field}.label"
    outside = sorted(c for c in members.distinct(path) if c is not None and c not in set(classes))
    if outside:
        raise InvalidInputError(f"Batch {batch!r} holds {label_field} labels of classes not in the manifest's classes: "
                                f"{outside}; nothing was pushed. Add them to `classes` or relabel those samples.")
    return classes


def _build_tasks(dataset, members, batch: str, label_field: str, kind: str, root, media: str = "local_files",
                 model: dict | None = None, classes=None) -> dict:
    """The import payload of the batch; ``predicted``: sample id -> ``{"model_version", "regions", "dropped"}`` for
    the samples whose pre-annotation is the model's (see :func:`push_batch`)."""
    score_paths = {key: path for key, path in SCORE_FIELDS.items() if dataset.has_field(path)}
    paths = ["id", "filepath", "metadata.width", "metadata.height", label_field]
    extra = list(score_paths.values()) + ([REASON_FIELD] if dataset.has_field(REASON_FIELD) else [])
    if model is not None and model["field"] != label_field:
        extra.append(model["field"])
    from curate_loop.runs.quality import issues_to_show

    shown = issues_to_show(dataset) if dataset.has_field("quality_issues") else set()
    extra += ["quality_issues"] if shown else []  # the loop's "flag" issues: the annotator sees them
    allowed = set(map(str, classes or []))
    predicted = {}
    # stored documents, not label objects: building 10k Detections objects cost as much as the import itself
    values = dict(zip(paths + extra, members.values(paths + extra, _raw=True)))
    values["id"] = [str(i) for i in values["id"]]
    urls, folders = ls_tasks.media_urls(values["filepath"], root, media)
    tasks = []
    for i, sample_id in enumerate(values["id"]):
        width, height = values["metadata.width"][i], values["metadata.height"][i]
        data = {IMAGE_KEY: urls[i], SAMPLE_KEY: sample_id, BATCH_KEY: batch, DATASET_KEY: dataset.name}
        scores = {key: values[path][i] for key, path in score_paths.items() if values[path][i] is not None}
        data.update({k: round(float(v), 6) for k, v in scores.items()})
        if REASON_FIELD in values and values[REASON_FIELD][i]:
            data["curate_reason"] = values[REASON_FIELD][i]
        issues = [issue for issue in values["quality_issues"][i] or [] if issue in shown] if shown else []
        if issues:
            data["quality_issues"] = issues
        labels = _label_dicts(values[label_field][i], kind)
        priority = max(scores.values(), default=0.0)
        if model is not None and _use_model(model["mode"], labels, values[model["field"]][i]):
            pred = model_prediction(values[model["field"]][i], kind, width, height, allowed)
            predicted[sample_id] = {"model_version": model["model_version"], "regions": pred.regions,
                                    "dropped": pred.dropped}
            score = pred.score if pred.score is not None else priority
            tasks.append({"data": data, "predictions": [{"model_version": model["model_version"],
                                                          "score": round(float(score), 6), "result": pred.result}]})
            continue
        if kind == "detections":
            result = [detection_region(d["id"], d["label"], d["bounding_box"], width, height) for d in labels
                      if d["label"] is not None and d["bounding_box"] is not None]
        else:
            result = [classification_region(d["id"], d["label"]) for d in labels if d["label"] is not None]
        tasks.append({"data": data, "predictions": [{"model_version": batch, "score": round(float(priority), 6),
                                                      "result": result}]})
    return {"tasks": tasks, "urls": urls, "folders": folders, "filepaths": values["filepath"], "predicted": predicted}


def _use_model(mode: str, labels: list[dict], prediction: dict | None) -> bool:
    """Whether a sample's pre-annotation is the model's: it has a prediction (an empty one counts: the model saw
    nothing there) and ``mode`` is ``"predictions"``, or ``"auto"`` and the sample has no labels."""
    return prediction is not None and (mode == "predictions" or not labels)


def _upload_missing_media(conn, project_id: int, batch: str, tasks: list[dict], urls: list, filepaths: list[str], *,
                          fresh: bool, progress: Progress) -> int:
    """Give every task an image URL: the ones the server cannot read from disk or the cloud are uploaded, except
    for samples that already have a task of this batch (a re-run reuses that task's URL; a ``fresh`` project has
    none). Returns the uploads."""
    missing = [i for i, url in enumerate(urls) if url is None]
    if not missing:
        return 0
    existing = {} if fresh else {t["data"].get(SAMPLE_KEY): t["data"].get(IMAGE_KEY)
                                 for t in ls_tasks.batch_tasks(conn, project_id, batch, include="id,data")}
    to_upload = sorted({filepaths[i] for i in missing if not existing.get(tasks[i]["data"][SAMPLE_KEY])})
    uploaded = ls_tasks.upload_files(conn, project_id, to_upload, progress=progress) if to_upload else {}
    for i in missing:
        tasks[i]["data"][IMAGE_KEY] = existing.get(tasks[i]["data"][SAMPLE_KEY]) or uploaded[filepaths[i]]
    return len(uploaded)


def _known_project(dataset, label_field: str, url: str) -> int | None:
    for key in dataset.list_runs(method=METHOD):
        config = dataset.get_run_info(key).config
        if config.label_field == label_field and config.url == url:
            return config.project_id
    return None


def _load_record(dataset, batch: str) -> dict | None:
    key = run_key(batch)
    if key not in dataset.list_runs(method=METHOD):
        if key in dataset.list_runs():
            raise InvalidInputError(f"{key!r} is already another kind of run on {dataset.name!r}.")
        return None
    config = dataset.get_run_info(key).config
    results = dataset.load_run_results(key, cache=False)
    record = {k: getattr(config, k) for k in ("batch", "label_field", "url", "project_id", "view_id")}
    record.update(getattr(results, "record", None) or {})
    return record


def _save_record(dataset, batch: str, record: dict) -> None:
    key = run_key(batch)
    config = dataset.init_run(method=METHOD, batch=batch, label_field=record["label_field"], url=record["url"],
                              project_id=record["project_id"], view_id=record["view_id"])
    dataset.register_run(key, config, overwrite=True, cleanup=False)
    results = {k: v for k, v in record.items() if k not in ("batch", "label_field", "url", "project_id", "view_id")}
    dataset.save_run_results(key, dataset.init_run_results(key, record=results), overwrite=True)


def _save_push(dataset, batch: str, summary: PushSummary, task_ids: dict, record: dict | None,
               classes: list[str] | None = None, model_tasks: dict | None = None) -> None:
    record = dict(record or {})
    if classes is not None:
        record["classes"] = list(classes)  # what pulls of this batch report classes outside of
    if model_tasks:
        record["model_predictions"] = model_tasks  # task id -> what the model pre-annotated (model assist on pull)
    record.update(batch=batch, label_field=summary.label_field, url=summary.url, project_id=summary.project_id,
                  view_id=summary.view_id, pushed_at=time.time(), task_ids=task_ids,
                  project_title=summary.project_title)
    record.setdefault("pulls", [])
    record.setdefault("state", "pushed")
    _save_record(dataset, batch, record)


def _record_or_error(dataset, batch: str) -> dict:
    record = _load_record(dataset, batch)
    if record is None:
        raise InvalidInputError(f"Batch {batch!r} of {dataset.name!r} was never pushed to Label Studio; push it "
                                f"first (`curate-loop push {dataset.name} {batch} --label-field FIELD`).")
    return record


# -- pull ----------------------------------------------------------------------------------------------------------
def pull_batch(dataset, batch: str, *, policy: str = DEFAULT_POLICY, url: str | None = None,
               api_key: str | None = None, connection: Connection | None = None, classes=None,
               chunk_size: int = ls_tasks.EXPORT_CHUNK, progress: Progress | None = None) -> PullSummary:
    """Apply the finished annotations of ``batch`` to its label field (reconciled with ``policy`` when several
    annotators did a task). Everything is read first; nothing is written when reading fails.

    ``classes`` (default: the manifest classes the batch was pushed with, if any): pulled labels of other classes
    are applied and counted in ``outside_classes``."""
    started = time.perf_counter()
    step = progress or (lambda fraction, label: None)
    check_policy(policy)
    dataset = dataset._dataset
    record = _record_or_error(dataset, batch)
    label_field = record["label_field"]
    kind = label_kind(dataset, label_field)
    conn = connection or connect(url or record["url"], api_key)
    rerun = f"Nothing was written to {dataset.name!r}; re-run `curate-loop pull {dataset.name} {batch}` when the " \
            f"server at {conn.url} answers again."
    try:
        step(0.02, "reading annotations")
        tasks = ls_tasks.annotated_tasks(conn, record["project_id"], record["task_ids"].values(),
                                         chunk_size=chunk_size, progress=lambda f, label: step(0.02 + 0.68 * f, label))
        users = ls_tasks.user_names(conn)
    except LabelStudioUnreachable as exc:
        raise LabelStudioUnreachable(f"{exc} {rerun}") from exc
    except LabelStudioSyncError as exc:
        raise type(exc)(f"{exc} {rerun}") from exc
    finally:
        if connection is None:
            conn.close()

    step(0.75, "reconciling")
    summary = PullSummary(batch=batch, policy=policy, tasks_read=len(tasks), applied=0, changed_samples=0,
                          cancelled=0)
    resolved: dict[str, tuple] = {}
    for task in tasks:
        sample_id = task["data"].get(SAMPLE_KEY)
        finished = [a for a in task["annotations"] if not a.get("was_cancelled")]
        summary.cancelled += len(task["annotations"]) - len(finished)
        if not finished:
            continue
        annotations = [Annotation(a["id"], users.get(ls_tasks.annotator_id(a), str(ls_tasks.annotator_id(a))),
                                  a.get("updated_at") or a.get("created_at") or "", parse_result(a["result"], kind))
                       for a in finished]
        resolution = reconcile(annotations, policy, kind=kind)
        if resolution.regions is None:
            summary.conflicts.append({"task": task["id"], "sample": sample_id, "annotators": resolution.annotators,
                                      "reason": resolution.conflict})
            continue
        summary.ties += len(resolution.ties)
        resolved[sample_id] = (resolution, task["id"])
    summary.applied = len(resolved)
    allowed = classes if classes is not None else record.get("classes")
    if allowed is not None:
        summary.outside_classes = _outside_classes(resolved, set(map(str, allowed)))
    summary.model_assist = _model_assist(record, resolved, kind)

    step(0.85, "applying labels")
    changes, previous = _apply(dataset, label_field, kind, resolved, summary)
    if changes:
        dataset.set_values(label_field, changes, key_field="id", validate=False)
    summary.changed_samples = len(changes)
    summary.seconds = round(time.perf_counter() - started, 2)
    _save_pull(dataset, batch, record, summary, previous, tasks)
    step(1.0, f"applied {summary.applied} tasks, {summary.changed_samples} samples changed")
    return summary


def _model_assist(record: dict, resolved: dict, kind: str) -> dict | None:
    """How the applied annotations changed the model's pre-annotations (:mod:`~curate_loop.adapters.labelstudio.
    assist`), over every applied task the push gave model predictions; None when the batch had none."""
    predictions = record.get("model_predictions") or {}
    if not predictions:
        return None
    outcomes, versions, compared = [], set(), 0
    for resolution, task_id in resolved.values():
        entry = predictions.get(str(task_id))
        if entry is None:
            continue
        predicted = [stored_region(row) for row in entry["regions"]]
        outcomes += assist.region_outcomes(predicted, list(resolution.regions or []), kind=kind)
        versions.add(entry["model_version"])
        compared += 1
    if not compared:  # annotated tasks so far all had labels as pre-annotations
        versions = {e["model_version"] for e in predictions.values()}
    return assist.summarize(assist.count_outcomes(outcomes), model_version=", ".join(sorted(versions)) or None,
                            tasks=compared)


def _outside_classes(resolved: dict, allowed: set) -> dict:
    counts: dict[str, int] = {}
    for resolution, _task_id in resolved.values():
        for region in resolution.regions or []:
            if region.label is not None and region.label not in allowed:
                counts[region.label] = counts.get(region.label, 0) + 1
    return dict(sorted(counts.items()))


def _apply(dataset, label_field: str, kind: str, resolved: dict, summary: PullSummary) -> tuple[dict, dict]:
    """``(new label document per changed sample, previous one as BSON bytes per changed sample)``.

    Works on the stored documents themselves (``values(_raw=True)``, written back unvalidated): building and
    serialising FiftyOne label objects cost three quarters of a 1,000-task pull. Every document written here is
    either read from the dataset or built by a FiftyOne label class, so it stays valid."""
    if not resolved:
        return {}, {}
    ids, values = dataset.select(list(resolved)).values(["id", label_field], _raw=True)
    current = dict(zip(ids, values))
    missing = set(resolved) - set(current)
    if missing:
        raise InvalidInputError(f"{len(missing)} annotated tasks point at samples no longer in {dataset.name!r} "
                                f"(e.g. {sorted(missing)[0]}); they were skipped by nobody: delete those tasks or "
                                "restore the samples, then pull again.")
    update = _updated_detections if kind == "detections" else _updated_classification
    changes, previous = {}, {}
    for sample_id, (resolution, _task_id) in resolved.items():
        old = current[sample_id]
        before = None if old is None else bson.encode(old)  # taken before ``update`` edits ``old`` in place
        new = update(old, resolution.regions, ", ".join(resolution.annotators), resolution.annotated_at, summary)
        if new is not _UNCHANGED:
            changes[sample_id], previous[sample_id] = new, before
    return changes, previous


_UNCHANGED = object()


def _previous_json(previous: dict) -> str:
    """The replaced label documents (BSON bytes per sample) as one MongoDB extended-JSON text, readable and exact:
    one conversion for the whole pull (one per sample, with a parse back, cost a tenth of a 1,000-task pull)."""
    return json_util.dumps({sid: None if doc is None else bson.decode(doc) for sid, doc in previous.items()})


def _previous_docs(previous) -> dict:
    """The replaced label documents of a pull record, per sample (older records kept a JSON dict per sample)."""
    if isinstance(previous, str):
        return json_util.loads(previous)
    return {sid: None if doc is None else json_util.loads(json.dumps(doc)) for sid, doc in previous.items()}


def _label_doc(label_class, **fields) -> dict:
    """A new label as its stored document (with a fresh id), built by FiftyOne's own class."""
    return label_class(**fields).to_mongo().to_dict()


def _by_region(docs: list[dict]) -> dict:
    index = {}
    for doc in docs:
        index[str(doc["_id"])] = doc
        if doc.get(REGION_ID):
            index[doc[REGION_ID]] = doc
    return index


def _updated_detections(old: dict | None, regions: list[Region], who: str, when: str, summary: PullSummary):
    """The Detections document after the regions (``old`` edited in place), or ``_UNCHANGED``."""
    import fiftyone.core.labels as fol

    existing = (old or {}).get("detections") or []
    index = _by_region(existing)
    plan = [(index.get(r.id), r) for r in regions if r.label is not None and r.box is not None]
    kept_ids = {id(match) for match, _ in plan if match is not None}
    removed = sum(1 for d in existing if id(d) not in kept_ids)
    updated = sum(1 for match, r in plan if match is not None
                  and (match.get("label") != r.label or not same_box(match.get("bounding_box"), r.box)))
    added = sum(1 for match, _ in plan if match is None)
    restamped = any(match is not None and (match.get(ANNOTATOR), match.get(ANNOTATED_AT)) != (who, when)
                    for match, _ in plan)
    summary.labels_updated += updated
    summary.labels_added += added
    summary.labels_removed += removed
    if old is not None and not (updated or added or removed or restamped):
        return _UNCHANGED
    kept = []
    for match, region in plan:
        if match is None:
            doc = _label_doc(fol.Detection, label=region.label, bounding_box=list(region.box), **{REGION_ID: region.id})
        else:
            doc = match
            if doc.get("label") != region.label:
                doc["label"] = region.label
            if not same_box(doc.get("bounding_box"), region.box):
                doc["bounding_box"] = list(region.box)
        doc[ANNOTATOR], doc[ANNOTATED_AT] = who, when
        kept.append(doc)
    new = old if old is not None else _label_doc(fol.Detections)
    new["detections"] = kept
    return new


def _updated_classification(old: dict | None, regions: list[Region], who: str, when: str, summary: PullSummary):
    """The Classification document after the (first) region, None when it was deleted, or ``_UNCHANGED``."""
    import fiftyone.core.labels as fol

    if not regions:
        summary.labels_removed += int(old is not None)
        return None if old is not None else _UNCHANGED
    region = regions[0]
    if old is not None and region.id in (str(old["_id"]), old.get(REGION_ID)):
        changed = old.get("label") != region.label
        summary.labels_updated += int(changed)
        if not changed and (old.get(ANNOTATOR), old.get(ANNOTATED_AT)) == (who, when):
            return _UNCHANGED
        old["label"] = region.label
        new = old
    else:
        summary.labels_removed += int(old is not None)
        summary.labels_added += 1
        new = _label_doc(fol.Classification, label=region.label, **{REGION_ID: region.id})
    new[ANNOTATOR], new[ANNOTATED_AT] = who, when
    return new


def _save_pull(dataset, batch: str, record: dict, summary: PullSummary, previous: dict, tasks: list) -> None:
    finished = sum(1 for t in tasks if any(not a.get("was_cancelled") for a in t["annotations"]))
    pull = summary.to_dict()
    pull.update(pulled_at=time.time(), finished_tasks=finished, previous=_previous_json(previous) if previous else {})
    record = dict(record)
    record["pulls"] = list(record.get("pulls", [])) + [pull]
    record["state"] = "pulled"
    _save_record(dataset, batch, record)


def undo_pull(dataset, batch: str) -> int:
    """Put back the labels the last pull of ``batch`` replaced; returns how many samples were restored."""
    dataset = dataset._dataset
    record = _record_or_error(dataset, batch)
    pulls = [p for p in record.get("pulls", []) if p.get("previous")]
    if not pulls:
        raise InvalidInputError(f"No pull of {batch!r} changed any label: nothing to undo.")
    last = pulls[-1]
    label_field = record["label_field"]
    restored = _previous_docs(last["previous"])  # stored documents, written back as they were
    dataset.set_values(label_field, restored, key_field="id", validate=False)
    last["previous"] = {}
    last["undone_at"] = time.time()
    _save_record(dataset, batch, record)
    return len(restored)


# -- status --------------------------------------------------------------------------------------------------------
def batch_status(dataset, batch: str, *, url: str | None = None, api_key: str | None = None,
                 connection: Connection | None = None) -> dict:
    """The state of ``batch`` (one of ``STATES``) with task counts read from the server; when the server does not
    answer, the state last recorded and ``"server": "unreachable"``; with no key anywhere (environment, argument, key
    file), the state last recorded and ``"server": "no key"``. A key that is there but bad (malformed, expired,
    rejected) raises :class:`LabelStudioAuthError`: showing old state would hide it."""
    dataset = dataset._dataset
    record = _record_or_error(dataset, batch)
    last_pull = (record.get("pulls") or [None])[-1]
    status = {"batch": batch, "label_field": record["label_field"], "url": record["url"],
              "project_id": record["project_id"], "tasks": len(record.get("task_ids", {})),
              "pushed_at": record.get("pushed_at"), "pulled_at": last_pull["pulled_at"] if last_pull else None,
              "conflicts": len(last_pull["conflicts"]) if last_pull else 0, "state": record.get("state", "pushed"),
              "tab_url": tab_url(record)}
    try:
        conn = connection or connect(url or record["url"], api_key)
    except LabelStudioKeyMissing:  # no key in this terminal: what was recorded is still worth showing
        return {**status, "server": "no key"}
    try:
        rows = ls_tasks.batch_tasks(conn, record["project_id"], batch,
                                    include="id,total_annotations,cancelled_annotations")
    except LabelStudioUnreachable:
        return {**status, "server": "unreachable"}
    finally:
        if connection is None:
            conn.close()
    finished = sum(1 for t in rows if t.get("total_annotations"))
    cancelled = sum(1 for t in rows if not t.get("total_annotations") and t.get("cancelled_annotations"))
    status.update(tasks=len(rows), finished=finished, cancelled=cancelled, server="ok")
    if last_pull and last_pull.get("finished_tasks") == finished and finished:
        status["state"] = "pulled"
    elif finished + cancelled == 0:
        status["state"] = "pushed"
    elif finished + cancelled < len(rows):
        status["state"] = "in_progress"
    else:
        status["state"] = "annotated"
    return status


def recorded_url(dataset, batch: str) -> str | None:
    """The server ``batch`` was pushed to (None when it never was)."""
    record = _load_record(dataset._dataset, batch)
    return record["url"] if record else None


def pulls(dataset, batch: str) -> list[dict]:
    """Every pull of ``batch`` so far, oldest first: its counts (``PullSummary`` fields) and ``pulled_at``."""
    record = _load_record(dataset._dataset, batch)
    return [{k: v for k, v in p.items() if k != "previous"} for p in (record or {}).get("pulls", [])]


def tab_url(record: dict) -> str:
    """The batch's Data Manager tab in Label Studio (its project page when the tab is not known)."""
    project = f"{record['url'].rstrip('/')}/projects/{record['project_id']}/data"
    return f"{project}?tab={record['view_id']}" if record.get("view_id") else project


def list_pushed_batches(dataset) -> list[str]:
    return sorted(key.removeprefix("labelstudio_") for key in dataset._dataset.list_runs(method=METHOD))
