"""Operators: find box-level label issues from a detector's predictions, and review them (accept the fix, undo,
reject, re-annotate).

The review flow: "find label issues" opens the ``label_issues`` view (one patch per issue card, worst first, its
kind and fix on it); select cards in the grid (or a card or its label in the sample modal) and run "review label
issues" with the decision. "Undo" with nothing selected undoes the last accept.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .forms import (DELEGATE_ABOVE, DelegableOperator, cannot_run, dropdown, form, operator_config, progress, radio,
                    reports_errors, results, show_result, target_samples)

DECISIONS = {
    "accept": "Accept the fix",
    "reject": "Not an error",
    "reannotate": "Send for re-annotation, the fix as pre-annotation",
    "undo": "Undo the accept (nothing selected: the last one)",
}
NO_PREDICTIONS = "(none: duplicates and embedding swaps only)"


def _box_fields(dataset):
    """Detections fields a reviewer would score, the cards' own fields left out."""
    import fiftyone.core.labels as fol

    from curate_loop.runs.label_issues import FIX_FIELD, ISSUES_FIELD

    schema = dataset.get_field_schema(embedded_doc_type=fol.Detections)
    return sorted(name for name in schema if name not in (ISSUES_FIELD, FIX_FIELD))


class FindLabelIssues(DelegableOperator):
    delegate_above = 10 * DELEGATE_ABOVE

    @property
    def config(self):
        return operator_config("find_label_issues", "curate-loop: find label issues",
                               "Overlooked, mislocated, spurious, duplicate and swapped boxes from a detector's "
                               "predictions, each with a fix", delegable=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        fields = _box_fields(ctx.dataset)
        if not fields:
            return cannot_run(inputs, "Needs a Detections field of labels (and one of a detector's predictions).")
        default = "ground_truth" if "ground_truth" in fields else fields[0]
        dropdown(inputs, "label_field", fields, "Labels to check", default=default)
        label_field = ctx.params.get("label_field") or default
        others = [f for f in fields if f != label_field]
        choice = "predictions" if "predictions" in others else (others[0] if others else NO_PREDICTIONS)
        dropdown(inputs, "predictions_field", others + [NO_PREDICTIONS], "Predictions", default=choice,
                 description="A detector's Detections with confidences (the loop's model step writes them)")
        return form(inputs, "Find label issues")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.label_issues import find_label_issues

        predictions = ctx.params.get("predictions_field")
        summary = find_label_issues(target_samples(ctx), ctx.params["label_field"],
                                    None if predictions in (None, NO_PREDICTIONS) else predictions,
                                    progress=progress(ctx))
        show_result(ctx, summary.view_name if summary.issues else None)
        return {"issues": summary.issues, "by_kind": ", ".join(f"{n} {k}" for k, n in summary.by_kind.items()),
                "still_dismissed": summary.still_dismissed, "scoring": summary.scoring_note,
                "warnings": "; ".join(summary.warnings) or "none", "view": summary.view_name}

    def resolve_output(self, ctx):
        return results(ctx, "Label issues found", [
            ("issues", int, "Issues to review"), ("by_kind", str, "By kind"),
            ("still_dismissed", int, "Rejected before, unchanged (not raised again)"),
            ("scoring", str, "Predictions"), ("warnings", str, "Warnings"), ("view", str, "Saved view")])


class ReviewLabelIssues(foo.Operator):
    @property
    def config(self):
        return operator_config("review_label_issues", "curate-loop: review label issues",
                               "Accept the fix of the selected issue cards (undoable), mark them not an error, or "
                               "send them to re-annotation with the fix as pre-annotation")

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not ctx.dataset.has_field("label_issues"):
            return cannot_run(inputs, "No label issues yet: run 'find label issues' first.")
        radio(inputs, "decision", DECISIONS, "Decision", default="accept")
        if ctx.params.get("decision") == "reannotate":
            from curate_loop.loop.runner import reannotate_batch_name

            inputs.str("batch", default=reannotate_batch_name(ctx.dataset),
                       label="Batch name (for the Label Studio push)",
                       description="The loop's re-annotation batch (mislabels.reannotate_batch of its manifest)")
        count = len(ctx.selected_labels) or len(ctx.selected)
        if not count and ctx.params.get("decision") != "undo":
            inputs.view("nothing", types.Warning(label="Select issue cards in the grid (or labels in a sample) first."))
        return form(inputs, f"Review {count} selected")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.label_issues import (VIEW_NAME, accept_issues, issue_ids_of_selection, reject_issues,
                                                   send_issues_for_reannotation, undo_issue)

        ids = issue_ids_of_selection(ctx.view, selected_labels=ctx.selected_labels, selected_samples=ctx.selected)
        decision = ctx.params.get("decision", "accept")
        if decision == "accept":
            count = accept_issues(ctx.dataset, ids, changed_by=f"App review ({ctx.user_id or 'local'})")
        elif decision == "reject":
            count = reject_issues(ctx.dataset, ids)
        elif decision == "reannotate":
            count = send_issues_for_reannotation(ctx.dataset, ids, ctx.params.get("batch") or None)
        else:
            count = undo_issue(ctx.dataset, ids or None)
        ctx.ops.clear_selected_samples()
        # in the issues view (saved again by the review, its patches regenerated), open it as it is now
        show_result(ctx, VIEW_NAME if ctx.view.name == VIEW_NAME else None, keep_view=True)
        return {"decision": DECISIONS[decision], "count": count}

    def resolve_output(self, ctx):
        return results(ctx, "Reviewed", [("decision", str, "Decision"),
                                         ("count", int, "Cards (samples, for re-annotation)")])
