"""Operators: push a batch to Label Studio, pull its finished annotations back (with the batch's status).

Thin layers over ``curate_loop.runs.labelstudio``. The server URL and API key come from the plugin secrets
``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` (environment variables in open-source FiftyOne); the key is passed
to the library and nowhere else: not in params, outputs or messages.
"""

import os

import fiftyone.operators.types as types

from .forms import (DELEGATE_ABOVE, DelegableOperator, cannot_run, dropdown, form, operator_config, progress, radio,
                    reports_errors, results, show_result)

POLICY_LABELS = {
    "latest": "Latest finished annotation wins",
    "majority": "Majority per region",
    "agreement": "Require agreement (conflicts are reported, not applied)",
}

NO_PREDICTIONS = "(none)"
PRE_ANNOTATIONS = {
    "auto": "Model predictions where a sample has no labels, its labels otherwise",
    "predictions": "Model predictions for every sample (instead of its labels)",
    "labels": "The samples' labels only",
}


def _credentials(ctx):
    return {"url": ctx.secret("LABEL_STUDIO_URL") or None, "api_key": ctx.secret("LABEL_STUDIO_API_KEY") or None}


def _batches(dataset):
    from curate_loop.runs.pool import BATCH_FIELD

    if not dataset.has_field(BATCH_FIELD):
        return []
    return sorted(b for b in dataset.distinct(BATCH_FIELD) if b)


class _BatchOperator(DelegableOperator):
    """A batch lives in the dataset, whatever the App shows: delegation goes by the dataset's size."""

    delegate_above = 10 * DELEGATE_ABOVE
    counts_whole_dataset = True


class PushToLabelStudio(_BatchOperator):
    @property
    def config(self):
        return operator_config("push_to_labelstudio", "curate-loop: push a batch to Label Studio",
                               "Create (or complete) the batch's tasks with the current labels as pre-annotations",
                               delegable=True)

    def resolve_input(self, ctx):
        from curate_loop.runs.pool import label_fields

        inputs = types.Object()
        batches, fields = _batches(ctx.dataset), label_fields(ctx.dataset)
        if not batches or not fields:
            return cannot_run(inputs, "Needs a batch (pick one with 'pick the next labeling batch' or send mislabels "
                                      "for re-annotation) and a Detections/Classification field.")
        dropdown(inputs, "batch", batches, "Batch")
        dropdown(inputs, "label_field", fields, "Label field", default="ground_truth" if "ground_truth" in fields
                 else None, description="Its labels become pre-annotations; annotations come back into it")
        predictions = [f for f in fields if f != "ground_truth"]
        if predictions:  # a model's predictions arrive as Label Studio predictions, to be corrected
            dropdown(inputs, "predictions_field", [NO_PREDICTIONS] + predictions, "Model predictions",
                     default="predictions" if "predictions" in predictions else NO_PREDICTIONS, required=False,
                     description="Sent as Label Studio predictions (pre-annotations an annotator corrects)")
            radio(inputs, "pre_annotations", PRE_ANNOTATIONS, "Pre-annotations", "auto")
        inputs.str("document_root", default=os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", ""),
                   label="Server's local-files root", description="The folder Label Studio serves media from")
        return form(inputs, "Push to Label Studio")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.labelstudio import push_batch

        p = ctx.params
        predictions = p.get("predictions_field")
        predictions = None if predictions in (None, "", NO_PREDICTIONS) else predictions
        summary = push_batch(ctx.dataset, p["batch"], p["label_field"], document_root=p.get("document_root") or None,
                             predictions_field=predictions, pre_annotations=p.get("pre_annotations") or "auto",
                             progress=progress(ctx), **_credentials(ctx))
        return {"tasks": summary.tasks, "created": summary.created, "already_there": summary.already_there,
                "project": f"{summary.url}/projects/{summary.project_id}/data?tab={summary.view_id}"}

    def resolve_output(self, ctx):
        return results(ctx, "Pushed", [("tasks", int, "Tasks of the batch"), ("created", int, "Created now"),
                                       ("already_there", int, "Already there (not created again)"),
                                       ("project", str, "Open in Label Studio")])


class PullFromLabelStudio(_BatchOperator):
    @property
    def config(self):
        return operator_config("pull_from_labelstudio", "curate-loop: pull annotations from Label Studio",
                               "Apply the batch's finished annotations (reconciling several annotators)",
                               delegable=True)

    def resolve_input(self, ctx):
        from curate_loop.runs.labelstudio import batch_status, list_pushed_batches

        inputs = types.Object()
        batches = list_pushed_batches(ctx.dataset)
        if not batches:
            return cannot_run(inputs, "No batch was pushed to Label Studio yet.")
        dropdown(inputs, "batch", batches, "Batch")
        batch = ctx.params.get("batch") or batches[0]
        status = batch_status(ctx.dataset, batch, **_credentials(ctx))
        counts = (f"{status['finished']}/{status['tasks']} tasks finished" if status.get("server") == "ok"
                  else f"{status['tasks']} tasks; server {status.get('server', 'unreachable')}: state as last recorded")
        inputs.view("status", types.Notice(label=f"{batch}: {status['state']} ({counts})"))
        radio(inputs, "policy", POLICY_LABELS, "Several annotators", default="latest")
        return form(inputs, "Pull from Label Studio")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.labelstudio import pull_batch

        p = ctx.params
        summary = pull_batch(ctx.dataset, p["batch"], policy=p.get("policy", "latest"), progress=progress(ctx),
                             **_credentials(ctx))
        show_result(ctx)
        return {"applied": summary.applied, "changed": summary.changed_samples,
                "labels": f"{summary.labels_updated} updated, {summary.labels_added} added, "
                          f"{summary.labels_removed} removed",
                "conflicts": len(summary.conflicts), "cancelled": summary.cancelled}

    def resolve_output(self, ctx):
        return results(ctx, "Pulled", [("applied", int, "Annotated tasks applied"), ("changed", int, "Samples changed"),
                                       ("labels", str, "Labels"), ("conflicts", int, "Conflicts left unapplied"),
                                       ("cancelled", int, "Cancelled annotations skipped")])
