"""Which samples of a view are labeled, queued in a batch, or excluded: the state curation starts from.

Read with bulk ``values`` calls and aligned to the rows of an embeddings run, so the array-level algorithms
get plain boolean masks.

*Excluded* samples never enter a batch: near-duplicates that are not their group's representative
(``dup_keep == False``) and samples kept out by the data quality checks (``quality_exclude == True``, set by the
manifest's ``quality:`` policy or by "exclude from curation" in the App's Data Quality panel).

*Labeled* has one definition, here (:func:`is_labeled`, :func:`labeled_expression`): the sample's label field
holds a label document. Not its file name, its ``split`` field or its tags: a pool sample (``pool_*.jpg``,
tagged ``pool``) whose batch came back from Label Studio is labeled, and an empty ``Detections`` (an annotator
found nothing) is labeled too. Reports, summaries and the loop count with these, so their numbers agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate_loop.errors import InvalidInputError

BATCH_FIELD = "curate_batch"  # the batch a sample was picked into (None: not queued)
REASON_FIELD = "curate_reason"  # why it was picked
DUP_KEEP_FIELD = "dup_keep"  # False on near-duplicates that are not their group's representative
QUALITY_EXCLUDE_FIELD = "quality_exclude"  # True on samples the data quality checks keep out of curation
DEFAULT_LABEL_FIELD = "ground_truth"


@dataclass
class PoolState:
    """Masks over the rows of an embeddings run (``ids``)."""

    ids: np.ndarray
    labeled: np.ndarray  # has labels in the label field
    queued: np.ndarray  # already picked into a batch (other than the one being redone)
    excluded: np.ndarray  # near-duplicates marked not to keep, and samples the quality checks exclude
    label_field: str | None

    @property
    def covered(self) -> np.ndarray:
        """Labeled or queued: what the next batch need not cover again."""
        return self.labeled | self.queued

    @property
    def available(self) -> np.ndarray:
        return ~self.covered & ~self.excluded

    def counts(self) -> dict[str, int]:
        """Disjoint counts a report shows: labeled, queued (not labeled), set aside (neither), available."""
        queued = self.queued & ~self.labeled
        return {"labeled": int(self.labeled.sum()), "queued": int(queued.sum()),
                "excluded": int((self.excluded & ~self.covered).sum()), "available": int(self.available.sum())}


def is_labeled(label) -> bool:
    """Whether one value of a label field makes its sample labeled: any label document; None is unlabeled."""
    return label is not None


def labeled_expression(label_field: str):
    """The same test as :func:`is_labeled`, as a FiftyOne filter: ``samples.match(labeled_expression(field))``."""
    from fiftyone import ViewField as F

    return F(label_field).exists()


def labeled_view(samples, label_field: str):
    """The labeled samples of ``samples`` (see :func:`is_labeled`)."""
    return samples.match(labeled_expression(label_field))


def unlabeled_view(samples, label_field: str):
    """The samples of ``samples`` that are not labeled (see :func:`is_labeled`)."""
    return samples.match(~labeled_expression(label_field))


def resolve_label_field(samples, label_field: str | None) -> str | None:
    """``label_field`` checked against the schema; default ``ground_truth`` when the dataset has it."""
    schema = samples.get_field_schema()
    if label_field is None:
        return DEFAULT_LABEL_FIELD if DEFAULT_LABEL_FIELD in schema else None
    if label_field not in schema:
        raise InvalidInputError(f"No field {label_field!r} on {samples._dataset.name!r}; label fields: "
                                f"{sorted(label_fields(samples))}")
    return label_field


REVIEW_FIELDS = ("label_issues", "label_issue_fix")  # the label-issue review's own Detections: cards and fixes


def label_fields(samples) -> list[str]:
    """The Detections / Classification fields a user labels or predicts into (not the review's cards and fixes)."""
    import fiftyone.core.labels as fol

    schema = samples.get_field_schema(embedded_doc_type=(fol.Detections, fol.Classification))
    return sorted(f for f in schema if f not in REVIEW_FIELDS)


def pool_state(samples, ids: np.ndarray, label_field: str | None, *, redo_batch: str | None = None) -> PoolState:
    """Masks for ``ids`` (sample ids of an image-level run, in any order).

    One ``values`` call of presence tests that MongoDB evaluates (:func:`labeled_expression` and its kin): no label
    document is loaded or tested in Python, which at 1M samples was most of the time this took."""
    from fiftyone import ViewField as F

    tests = {}
    if label_field:
        tests["labeled"] = labeled_expression(label_field)
    if samples.has_field(BATCH_FIELD):
        queued = F(BATCH_FIELD).exists()
        tests["queued"] = queued if redo_batch is None else queued & (F(BATCH_FIELD) != redo_batch)
    excluded = ([F(DUP_KEEP_FIELD) == False] if samples.has_field(DUP_KEEP_FIELD) else []) + (  # noqa: E712
        [F(QUALITY_EXCLUDE_FIELD) == True] if samples.has_field(QUALITY_EXCLUDE_FIELD) else [])  # noqa: E712
    if excluded:
        tests["excluded"] = excluded[0] if len(excluded) == 1 else excluded[0] | excluded[1]
    columns = samples.values(["id", *tests.values()])
    rows = _rows_of(np.asarray(columns[0], dtype=str), np.asarray(ids, dtype=str))
    masks = {name: np.asarray(column, dtype=bool)[rows] for name, column in zip(tests, columns[1:])}
    none = np.zeros(len(ids), dtype=bool)
    return PoolState(ids=ids, labeled=masks.get("labeled", none), queued=masks.get("queued", none),
                     excluded=masks.get("excluded", none), label_field=label_field)


def _rows_of(sample_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each of ``ids`` in ``sample_ids`` (sorted search, not a million-entry dict)."""
    if len(ids) == len(sample_ids) and np.array_equal(ids, sample_ids):
        return np.arange(len(ids))
    order = np.argsort(sample_ids, kind="stable")
    rows = order[np.clip(np.searchsorted(sample_ids, ids, sorter=order), 0, max(len(sample_ids) - 1, 0))]
    if len(ids) and (not len(sample_ids) or (sample_ids[rows] != ids).any()):
        missing = ids[sample_ids[rows] != ids] if len(sample_ids) else ids
        raise InvalidInputError(f"{len(missing)} of {len(ids)} ids are not samples of this view (e.g. {missing[0]}).")
    return rows


def label_kind(samples, label_field: str, *, needed_for: str) -> str:
    """"detections" or "classification" for ``label_field``; otherwise an error ending with ``needed_for``."""
    import fiftyone.core.labels as fol

    if not samples.has_field(label_field):
        raise InvalidInputError(f"No field {label_field!r} on {samples._dataset.name!r}.")
    doc_type = getattr(samples.get_field(label_field), "document_type", None)
    if doc_type is not None and issubclass(doc_type, fol.Detections):
        return "detections"
    if doc_type is not None and issubclass(doc_type, fol.Classification):
        return "classification"
    raise InvalidInputError(f"{label_field!r} holds neither Detections nor a Classification{needed_for}")


def _label_path(samples, field: str) -> str:
    """The path of the class names in ``field`` (Detections or Classification), or an error listing the choices."""
    import fiftyone.core.labels as fol

    doc_type = getattr(samples.get_field(field), "document_type", None)
    if doc_type is None or not issubclass(doc_type, (fol.Detections, fol.Classification)):
        raise InvalidInputError(f"{field!r} is not a Detections or Classification field; choose one of "
                                f"{label_fields(samples)}.")
    return f"{field}.detections.label" if issubclass(doc_type, fol.Detections) else f"{field}.label"


def class_of_each(samples, ids: np.ndarray, class_field: str) -> np.ndarray:
    """One class per sample (a Classification's label, or the most frequent class of its Detections), None if
    it has none; for class coverage in the report."""
    sample_ids, labels = samples.values(["id", _label_path(samples, class_field)])
    by_id = {}
    for sample_id, label in zip(sample_ids, labels):
        if isinstance(label, list):
            label = max(set(label), key=label.count) if label else None
        by_id[sample_id] = label
    return np.asarray([by_id.get(i) for i in ids.tolist()], dtype=object)


def class_count_matrix(samples, label_field: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(sample ids, counts (n, n_classes), classes)``: objects of each class per sample of ``label_field``."""
    sample_ids, labels = samples.values(["id", _label_path(samples, label_field)])
    per_sample = [lab if isinstance(lab, list) else ([] if lab is None else [lab]) for lab in labels]
    classes = sorted({c for labs in per_sample for c in labs if c is not None})
    if not classes:
        raise InvalidInputError(f"No labels in {label_field!r} of this view: a class-balanced subset needs labeled "
                                "samples.")
    column = {c: j for j, c in enumerate(classes)}
    flat = np.fromiter((column[c] for labs in per_sample for c in labs if c is not None), dtype=np.int64)
    owner = np.repeat(np.arange(len(per_sample)), [sum(c is not None for c in labs) for labs in per_sample])
    counts = np.zeros((len(per_sample), len(classes)), dtype=np.int64)
    np.add.at(counts, (owner, flat), 1)
    return np.asarray(sample_ids, dtype=str), counts, classes
