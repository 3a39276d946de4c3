"""Operator: what the current view holds (samples, tags, labels per class)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from curate_loop.summary import default_label_field, label_fields, summarize


class DatasetSummary(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="dataset_summary",
            label="curate-loop: summarize this view",
            description="Counts samples, tags and labels per class in the current view",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        fields = label_fields(ctx.dataset)
        if fields:
            choices = types.DropdownView()
            for name in fields:
                choices.add_choice(name, label=name)
            inputs.enum("label_field", choices.values(), default=default_label_field(fields), label="Label field", view=choices)
        else:
            inputs.view("note", types.Notice(label="This dataset has no Detections or Classification field."))
        return types.Property(inputs, view=types.View(label="Summarize this view"))

    def execute(self, ctx):
        summary = summarize(ctx.target_view(), ctx.params.get("label_field"))
        classes = ", ".join(f"{k}: {v}" for k, v in summary["labels_per_class"].items()) or "none"
        tags = ", ".join(f"{k}: {v}" for k, v in summary["tags"].items()) or "none"
        return {
            "samples": summary["samples"],
            "labeled_samples": summary["labeled_samples"],
            "tags": tags,
            "labels_per_class": classes,
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("samples", label="Samples in view")
        outputs.int("labeled_samples", label="Samples with labels")
        outputs.str("tags", label="Sample tags")
        outputs.str("labels_per_class", label="Labels per class")
        return types.Property(outputs, view=types.View(label="curate-loop summary"))
