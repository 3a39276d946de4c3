"""A simulated annotator for headless loops (the demo, the tests, the label-efficiency bench): answers a pushed
batch's Label Studio tasks with the true labels the example keeps aside.

Its annotations are made through the Label Studio API by a dedicated user, ``SIMULATED_USER``, so they are marked
as simulated wherever they show: in Label Studio, and on the pulled labels (``ls_annotator``).

A task pre-annotated by the model is corrected, as a person would, rather than drawn anew
(:func:`corrected_regions`): each predicted region that matches a true box (IoU >= ``assist.MATCH_IOU``) is kept
with its region id and given the true class and box, the other predicted regions are deleted and the true boxes
nothing predicted are added. So an exactly right region comes back "accepted", a wrong class "relabeled", a shifted
box "moved" -- what the pull's model-assist counts then measure. Other tasks are answered from scratch.
"""

from __future__ import annotations

import uuid

from curate_loop.adapters.labelstudio import assist
from curate_loop.adapters.labelstudio.mapping import Region
from curate_loop.errors import InvalidInputError

SIMULATED_USER = "simulated-annotator"


def answer_batch(dataset, batch: str, truth_field: str = "true_ground_truth", *, url: str | None = None,
                 api_key: str | None = None) -> int:
    """Annotate every unanswered task of ``batch`` with ``truth_field``'s labels; returns how many were answered."""
    from curate_loop.adapters.labelstudio import tasks as ls_tasks
    from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, connect
    from curate_loop.adapters.labelstudio.mapping import classification_region, detection_region, stored_region
    from curate_loop.runs.labelstudio import _record_or_error, label_kind

    if not dataset.has_field(truth_field):
        raise InvalidInputError(f"The simulated annotator answers from {truth_field!r}, which {dataset.name!r} does not "
                                "have (the example keeps its true labels there).")
    record = _record_or_error(dataset, batch)
    kind = label_kind(dataset, truth_field)
    with connect(url or record["url"], api_key) as conn:
        user = _simulated_user(conn)
        open_tasks = [t for t in ls_tasks.batch_tasks(conn, record["project_id"], batch)
                      if not t.get("total_annotations")]
        model = record.get("model_predictions") or {}
        sample_ids = [t["data"][SAMPLE_KEY] for t in open_tasks]
        view = dataset.select(sample_ids, ordered=True)
        truth = dict(zip(view.values("id"), view.values(truth_field)))
        sizes = dict(zip(view.values("id"), zip(view.values("metadata.width"), view.values("metadata.height"))))
        for task, sample_id in zip(open_tasks, sample_ids):
            labels = truth.get(sample_id)
            true = ([Region(_region_id(), d.label, tuple(d.bounding_box)) for d in labels.detections]
                    if kind == "detections" and labels else
                    [Region(_region_id(), labels.label)] if labels else [])
            entry = model.get(str(task["id"]))
            if entry is not None:
                true = corrected_regions([stored_region(row) for row in entry["regions"]], true, kind=kind)
            if kind == "detections":
                width, height = sizes[sample_id]
                result = [detection_region(r.id, r.label, r.box, width, height) for r in true]
            else:
                result = [classification_region(r.id, r.label) for r in true]
            conn.sdk.annotations.create(id=task["id"], result=result, was_cancelled=False, lead_time=1.0,
                                        completed_by=user.id)
    return len(open_tasks)


def corrected_regions(predicted: list[Region], true: list[Region], *, kind: str = "detections") -> list[Region]:
    """The true regions as an annotator correcting the model's ``predicted`` ones leaves them: a true region that a
    predicted one matches (:func:`~curate_loop.adapters.labelstudio.assist.match_regions` by overlap; for a
    Classification, the one label) takes that prediction's region id, the others keep their own (new) ids;
    unmatched predictions are gone. Order: the kept predictions first, in predicted order, then the added ones."""
    pairs = assist.match_regions(predicted, [Region(f"true-{k}", r.label, r.box) for k, r in enumerate(true)],
                                 kind=kind)
    matched = {j: i for i, j in pairs}
    kept = [Region(predicted[i].id, true[j].label, true[j].box) for i, j in pairs]
    return kept + [r for j, r in enumerate(true) if j not in matched]


def _region_id() -> str:
    return uuid.uuid4().hex[:10]


def _simulated_user(conn):
    for user in conn.sdk.users.list():
        if user.username == SIMULATED_USER:
            return user
    return conn.sdk.users.create(username=SIMULATED_USER, email=f"{SIMULATED_USER}@example.com",
                                 first_name="Simulated", last_name="annotator (curate-loop)")
