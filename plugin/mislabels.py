"""Operators: find likely mislabels, and review them (accept the suggestion, not a mislabel, re-annotate).

The review flow: run "find mislabels", which opens the ``mislabel_suspects`` view (one patch per suspect box, best
first, with the suggested class on it); select suspects (in the grid, or labels in the sample modal) and run
"review mislabels" with the decision. Decisions are label tags, so they show in the sidebar and filter.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .embeddings import DELEGATE_ABOVE, _dropdown, _progress

DECISIONS = {
    "accept": "Accept the suggestion (relabel)",
    "reject": "Not a mislabel",
    "reannotate": "Send for re-annotation (Label Studio batch)",
}


def _label_fields(dataset):
    from curate_loop.runs.pool import label_fields

    return label_fields(dataset)


class FindMislabels(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="find_mislabels",
            label="curate-loop: find mislabels",
            description="Labels whose class disagrees with visually similar labels, with a suggested class",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        from curate_loop.runs.embeddings import list_embeddings

        inputs = types.Object()
        fields = _label_fields(ctx.dataset)
        keys = [r["key"] for r in list_embeddings(ctx.dataset) if r["status"] == "complete"]
        if not fields or not keys:
            inputs.view("none", types.Error(label="Needs a Detections/Classification field and finished embeddings "
                                                  "(object embeddings of that field for boxes)."))
            return types.Property(inputs)
        _dropdown(inputs, "label_field", fields, "Labels to check")
        field = ctx.params.get("label_field") or fields[0]
        matching = [r["key"] for r in list_embeddings(ctx.dataset)
                    if r["status"] == "complete" and r.get("patches_field") in (field, None)]
        _dropdown(inputs, "key", matching or keys, "Embeddings",
                  description="Object embeddings of these boxes (Detections) or image embeddings (Classification)")
        return types.Property(inputs, view=types.View(label="Find mislabels"))

    def resolve_delegation(self, ctx):
        return len(ctx.target_view()) > 10 * DELEGATE_ABOVE

    def execute(self, ctx):
        from curate_loop.runs.mislabels import find_mislabels

        summary = find_mislabels(ctx.target_view(), ctx.params["label_field"], ctx.params["key"],
                                 progress=_progress(ctx))
        ctx.trigger("reload_dataset")
        if not ctx.delegated and summary.suspects:
            ctx.ops.set_view(view=ctx.dataset.load_saved_view(summary.view_name))
        pairs = ", ".join(f"{r['given']}->{r['true']} {r['rate']:.0%}" for r in summary.noise_rates[:5]) or "none"
        return {"scored": summary.scored, "suspects": summary.suspects, "still_rejected": summary.still_rejected,
                "noise": pairs, "view": summary.view_name}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("scored", label="Labels scored")
        outputs.int("suspects", label="Suspects to review")
        outputs.int("still_rejected", label="Rejected before, unchanged (not raised again)")
        outputs.str("noise", label="Estimated noise (given -> likely true class)")
        outputs.str("view", label="Saved view")
        return types.Property(outputs, view=types.View(label="Mislabels found"))


class ReviewMislabels(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="review_mislabels",
            label="curate-loop: review mislabels",
            description="Accept the suggested class, mark not a mislabel, or send the selected suspects to re-annotation",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        fields = _label_fields(ctx.dataset)
        if not fields:
            inputs.view("none", types.Error(label="This dataset has no label field."))
            return types.Property(inputs)
        default = fields[0]
        if ctx.view._is_patches:
            default = ctx.view._label_fields[0] if getattr(ctx.view, "_label_fields", None) else default
        _dropdown(inputs, "label_field", fields, "Label field", default=default if default in fields else None)
        decisions = types.RadioGroup()
        for value, label in DECISIONS.items():
            decisions.add_choice(value, label=label)
        inputs.enum("decision", decisions.values(), default="accept", label="Decision", view=decisions)
        if ctx.params.get("decision") == "reannotate":
            inputs.str("batch", default="reannotate", label="Batch name (for the Label Studio push)")
        count = len(ctx.selected_labels) or len(ctx.selected)
        if not count:
            inputs.view("nothing", types.Warning(label="Select suspects in the grid (or labels in a sample) first."))
        return types.Property(inputs, view=types.View(label=f"Review {count} selected"))

    def execute(self, ctx):
        from curate_loop.runs.mislabels import (accept_suggestions, label_ids_of_selection, reject_suspects,
                                                send_for_reannotation)

        field = ctx.params["label_field"]
        ids = label_ids_of_selection(ctx.view, field, selected_labels=ctx.selected_labels,
                                     selected_samples=ctx.selected)
        decision = ctx.params.get("decision", "accept")
        if decision == "accept":
            count = accept_suggestions(ctx.dataset, field, ids, changed_by=f"App review ({ctx.user_id or 'local'})")
        elif decision == "reject":
            count = reject_suspects(ctx.dataset, field, ids)
        else:
            count = send_for_reannotation(ctx.dataset, field, ids, ctx.params.get("batch") or "reannotate")
        ctx.ops.clear_selected_samples()
        ctx.trigger("reload_dataset")
        return {"decision": DECISIONS[decision], "count": count}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("decision", label="Decision")
        outputs.int("count", label="Labels (samples, for re-annotation)")
        return types.Property(outputs, view=types.View(label="Reviewed"))
