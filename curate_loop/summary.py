"""What a dataset holds, at a glance: splits, label counts per class, curate-loop runs.

Used by the App's summary operator, `curate-loop status` and the demo; bulk aggregations only.
"""

from __future__ import annotations

from typing import Any


def label_fields(collection) -> list[str]:
    """The Detections and Classification fields of a collection, in schema order."""
    import fiftyone as fo

    schema = collection.get_field_schema(embedded_doc_type=None)
    kinds = (fo.Detections, fo.Classification)
    return [
        name
        for name, field in schema.items()
        if getattr(field, "document_type", None) in kinds
    ]


def default_label_field(fields: list[str]) -> str | None:
    """``ground_truth`` when present (the convention), else the first label field."""
    if "ground_truth" in fields:
        return "ground_truth"
    return fields[0] if fields else None


def summarize(collection, label_field: str | None = None) -> dict[str, Any]:
    """Counts for a view or dataset: samples, tags, and labels per class of ``label_field``; ``labeled_samples``
    counts with the one definition of labeled (:func:`curate_loop.runs.pool.is_labeled`), never by tag or split."""
    from curate_loop.runs.pool import labeled_view

    fields = label_fields(collection)
    if label_field is None:
        label_field = default_label_field(fields)
    summary: dict[str, Any] = {
        "dataset": collection._dataset.name,
        "samples": collection.count(),
        "tags": dict(sorted(collection.count_sample_tags().items())),
        "label_fields": fields,
        "label_field": label_field,
        "labels_per_class": {},
        "labeled_samples": 0,
    }
    if label_field:
        path = _label_path(collection, label_field)
        counts = collection.count_values(path)
        summary["labels_per_class"] = {str(k): v for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if k is not None}
        summary["labeled_samples"] = labeled_view(collection, label_field).count()
    return summary


def _label_path(collection, label_field: str) -> str:
    import fiftyone as fo

    field = collection.get_field(label_field)
    if getattr(field, "document_type", None) is fo.Detections:
        return f"{label_field}.detections.label"
    return f"{label_field}.label"
