"""Operator: what the current view holds (samples, tags, labels per class)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from curate_loop.summary import default_label_field, label_fields, summarize

from .forms import dropdown, form, operator_config, reports_errors, results, target_samples


class DatasetSummary(foo.Operator):
    @property
    def config(self):
        return operator_config("dataset_summary", "curate-loop: summarize this view",
                               "Counts samples, tags and labels per class in the current view")

    def resolve_input(self, ctx):
        inputs = types.Object()
        fields = label_fields(ctx.dataset)
        if fields:
            dropdown(inputs, "label_field", fields, "Label field", default=default_label_field(fields), required=False)
        else:
            inputs.view("note", types.Notice(label="This dataset has no Detections or Classification field."))
        return form(inputs, "Summarize this view")

    @reports_errors
    def execute(self, ctx):
        summary = summarize(target_samples(ctx), ctx.params.get("label_field"))
        classes = ", ".join(f"{k}: {v}" for k, v in summary["labels_per_class"].items()) or "none"
        tags = ", ".join(f"{k}: {v}" for k, v in summary["tags"].items()) or "none"
        return {
            "samples": summary["samples"],
            "labeled_samples": summary["labeled_samples"],
            "tags": tags,
            "labels_per_class": classes,
        }

    def resolve_output(self, ctx):
        return results(ctx, "curate-loop summary", [("samples", int, "Samples in view"),
                                                    ("labeled_samples", int, "Samples with labels"),
                                                    ("tags", str, "Sample tags"),
                                                    ("labels_per_class", str, "Labels per class")])
