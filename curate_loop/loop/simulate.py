"""A simulated annotator for headless loops (the demo, the tests, the label-efficiency bench): answers a pushed
batch's Label Studio tasks with the true labels the example keeps aside.

Its annotations are made through the Label Studio API by a dedicated user, ``SIMULATED_USER``, so they are marked
as simulated wherever they show: in Label Studio, and on the pulled labels (``ls_annotator``).
"""

from __future__ import annotations

import uuid

from curate_loop.errors import InvalidInputError

SIMULATED_USER = "simulated-annotator"


def answer_batch(dataset, batch: str, truth_field: str = "true_ground_truth", *, url: str | None = None,
                 api_key: str | None = None) -> int:
    """Annotate every unanswered task of ``batch`` with ``truth_field``'s labels; returns how many were answered."""
    from curate_loop.adapters.labelstudio import tasks as ls_tasks
    from curate_loop.adapters.labelstudio.client import SAMPLE_KEY, connect
    from curate_loop.adapters.labelstudio.mapping import classification_region, detection_region
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
        sample_ids = [t["data"][SAMPLE_KEY] for t in open_tasks]
        view = dataset.select(sample_ids, ordered=True)
        truth = dict(zip(view.values("id"), view.values(truth_field)))
        sizes = dict(zip(view.values("id"), zip(view.values("metadata.width"), view.values("metadata.height"))))
        for task, sample_id in zip(open_tasks, sample_ids):
            labels = truth.get(sample_id)
            if kind == "detections":
                width, height = sizes[sample_id]
                result = [detection_region(_region_id(), d.label, d.bounding_box, width, height)
                          for d in (labels.detections if labels else [])]
            else:
                result = [classification_region(_region_id(), labels.label)] if labels else []
            conn.sdk.annotations.create(id=task["id"], result=result, was_cancelled=False, lead_time=1.0,
                                        completed_by=user.id)
    return len(open_tasks)


def _region_id() -> str:
    return uuid.uuid4().hex[:10]


def _simulated_user(conn):
    for user in conn.sdk.users.list():
        if user.username == SIMULATED_USER:
            return user
    return conn.sdk.users.create(username=SIMULATED_USER, email=f"{SIMULATED_USER}@example.com",
                                 first_name="Simulated", last_name="annotator (curate-loop)")
