"""Operators: find likely mislabels, and review them (accept the suggestion, not a mislabel, re-annotate).

The review flow: run "find mislabels", which opens the ``mislabel_suspects`` view (one patch per suspect box, best
first, with the suggested class on it); select suspects (in the grid, or labels in the sample modal) and run
"review mislabels" with the decision. Decisions are label tags, so they show in the sidebar and filter.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .forms import (DELEGATE_ABOVE, DelegableOperator, cannot_run, dropdown, form, operator_config, progress, radio,
                    reports_errors, results, show_result, target_samples, with_notice)

DECISIONS = {
    "accept": "Accept the suggestion (relabel)",
    "reject": "Not a mislabel",
    "reannotate": "Send for re-annotation (Label Studio batch)",
}


def _label_fields(dataset):
    from curate_loop.runs.pool import label_fields

    return label_fields(dataset)


def _scan_embeddings_key(dataset, label_field):
    """The embeddings the last mislabel scan of ``label_field`` used (its suggestions come from them), or None."""
    from curate_loop.runs.mislabels import run_key

    key = run_key(label_field)
    return dataset.get_run_info(key).config.embeddings_key if key in dataset.list_runs() else None


class FindMislabels(DelegableOperator):
    delegate_above = 10 * DELEGATE_ABOVE

    @property
    def config(self):
        return operator_config("find_mislabels", "curate-loop: find mislabels",
                               "Labels whose class disagrees with visually similar labels, with a suggested class",
                               delegable=True)

    def resolve_input(self, ctx):
        from curate_loop.runs.embeddings import list_embeddings

        inputs = types.Object()
        fields = _label_fields(ctx.dataset)
        runs = [r for r in list_embeddings(ctx.dataset) if r["status"] == "complete"]
        if not fields or not runs:
            return cannot_run(inputs, "Needs a Detections/Classification field and finished embeddings "
                                      "(object embeddings of that field for boxes).")
        dropdown(inputs, "label_field", fields, "Labels to check")
        field = ctx.params.get("label_field") or fields[0]
        matching = [r["key"] for r in runs if r.get("patches_field") in (field, None)]
        dropdown(inputs, "key", matching or [r["key"] for r in runs], "Embeddings",
                 description="Object embeddings of these boxes (Detections) or image embeddings (Classification)")
        return form(inputs, "Find mislabels")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.mislabels import find_mislabels

        key = ctx.params["key"]
        summary = find_mislabels(target_samples(ctx), ctx.params["label_field"], key, progress=progress(ctx))
        show_result(ctx, summary.view_name if summary.suspects else None)
        pairs = ", ".join(f"{r['given']}->{r['true']} {r['rate']:.0%}" for r in summary.noise_rates[:5]) or "none"
        return with_notice({"scored": summary.scored, "suspects": summary.suspects,
                            "still_rejected": summary.still_rejected, "noise": pairs, "view": summary.view_name},
                           ctx.dataset, key)

    def resolve_output(self, ctx):
        return results(ctx, "Mislabels found", [
            ("scored", int, "Labels scored"), ("suspects", int, "Suspects to review"),
            ("still_rejected", int, "Rejected before, unchanged (not raised again)"),
            ("noise", str, "Estimated noise (given -> likely true class)"), ("view", str, "Saved view")])


class ReviewMislabels(foo.Operator):
    @property
    def config(self):
        return operator_config("review_mislabels", "curate-loop: review mislabels",
                               "Accept the suggested class, mark not a mislabel, or send the selected suspects to "
                               "re-annotation")

    def resolve_input(self, ctx):
        inputs = types.Object()
        fields = _label_fields(ctx.dataset)
        if not fields:
            return cannot_run(inputs, "This dataset has no label field.")
        default = fields[0]
        if ctx.view._is_patches:
            default = ctx.view._label_fields[0] if getattr(ctx.view, "_label_fields", None) else default
        dropdown(inputs, "label_field", fields, "Label field", default=default if default in fields else None)
        radio(inputs, "decision", DECISIONS, "Decision", default="accept")
        if ctx.params.get("decision") == "reannotate":
            from curate_loop.loop.runner import reannotate_batch_name

            inputs.str("batch", default=reannotate_batch_name(ctx.dataset),
                       label="Batch name (for the Label Studio push)",
                       description="The loop's re-annotation batch (mislabels.reannotate_batch of its manifest), which "
                                   "'Push pending batches' and `curate-loop run` push")
        count = len(ctx.selected_labels) or len(ctx.selected)
        if not count:
            inputs.view("nothing", types.Warning(label="Select suspects in the grid (or labels in a sample) first."))
        return form(inputs, f"Review {count} selected")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.mislabels import (SUSPECTS_VIEW, accept_suggestions, label_ids_of_selection,
                                                reject_suspects, send_for_reannotation)

        field = ctx.params["label_field"]
        ids = label_ids_of_selection(ctx.view, field, selected_labels=ctx.selected_labels,
                                     selected_samples=ctx.selected)
        decision = ctx.params.get("decision", "accept")
        if decision == "accept":
            count = accept_suggestions(ctx.dataset, field, ids, changed_by=f"App review ({ctx.user_id or 'local'})")
        elif decision == "reject":
            count = reject_suspects(ctx.dataset, field, ids)
        else:
            count = send_for_reannotation(ctx.dataset, field, ids, ctx.params.get("batch") or None)
        ctx.ops.clear_selected_samples()
        # in the suspects view (re-saved by the review, so without the reviewed ones), open it as it is now
        show_result(ctx, SUSPECTS_VIEW if ctx.view.name == SUSPECTS_VIEW else None, keep_view=True)
        return with_notice({"decision": DECISIONS[decision], "count": count}, ctx.dataset,
                           _scan_embeddings_key(ctx.dataset, field))

    def resolve_output(self, ctx):
        return results(ctx, "Reviewed", [("decision", str, "Decision"),
                                         ("count", int, "Labels (samples, for re-annotation)")])
