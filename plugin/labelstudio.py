"""Operators: push a batch to Label Studio, pull its finished annotations back (with the batch's status).

Thin layers over ``curate_loop.runs.labelstudio``. The server URL and API key come from the plugin secrets
``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` (environment variables in open-source FiftyOne); the key is passed
to the library and nowhere else: not in params, outputs or messages.
"""

import os

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .embeddings import DELEGATE_ABOVE, _dropdown, _progress

POLICY_LABELS = {
    "latest": "Latest finished annotation wins",
    "majority": "Majority per region",
    "agreement": "Require agreement (conflicts are reported, not applied)",
}


def _credentials(ctx):
    return {"url": ctx.secret("LABEL_STUDIO_URL") or None, "api_key": ctx.secret("LABEL_STUDIO_API_KEY") or None}


def _batches(dataset):
    from curate_loop.runs.pool import BATCH_FIELD

    if not dataset.has_field(BATCH_FIELD):
        return []
    return sorted(b for b in dataset.distinct(BATCH_FIELD) if b)


class PushToLabelStudio(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="push_to_labelstudio",
            label="curate-loop: push a batch to Label Studio",
            description="Create (or complete) the batch's tasks with the current labels as pre-annotations",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        from curate_loop.runs.pool import label_fields

        inputs = types.Object()
        batches, fields = _batches(ctx.dataset), label_fields(ctx.dataset)
        if not batches or not fields:
            inputs.view("none", types.Error(label="Needs a batch (pick one with 'pick the next labeling batch' or "
                                                  "send mislabels for re-annotation) and a Detections/"
                                                  "Classification field."))
            return types.Property(inputs)
        _dropdown(inputs, "batch", batches, "Batch")
        _dropdown(inputs, "label_field", fields, "Label field", default="ground_truth" if "ground_truth" in fields
                  else None, description="Its labels become pre-annotations; annotations come back into it")
        inputs.str("document_root", default=os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", ""),
                   label="Server's local-files root", description="The folder Label Studio serves media from")
        return types.Property(inputs, view=types.View(label="Push to Label Studio"))

    def resolve_delegation(self, ctx):
        return len(ctx.dataset) > 10 * DELEGATE_ABOVE

    def execute(self, ctx):
        from curate_loop.runs.labelstudio import push_batch

        p = ctx.params
        summary = push_batch(ctx.dataset, p["batch"], p["label_field"], document_root=p.get("document_root") or None,
                             progress=_progress(ctx), **_credentials(ctx))
        return {"tasks": summary.tasks, "created": summary.created, "already_there": summary.already_there,
                "project": f"{summary.url}/projects/{summary.project_id}/data?tab={summary.view_id}"}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("tasks", label="Tasks of the batch")
        outputs.int("created", label="Created now")
        outputs.int("already_there", label="Already there (not created again)")
        outputs.str("project", label="Open in Label Studio")
        return types.Property(outputs, view=types.View(label="Pushed"))


class PullFromLabelStudio(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="pull_from_labelstudio",
            label="curate-loop: pull annotations from Label Studio",
            description="Apply the batch's finished annotations (reconciling several annotators)",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        from curate_loop.runs.labelstudio import batch_status, list_pushed_batches

        inputs = types.Object()
        batches = list_pushed_batches(ctx.dataset)
        if not batches:
            inputs.view("none", types.Error(label="No batch was pushed to Label Studio yet."))
            return types.Property(inputs)
        _dropdown(inputs, "batch", batches, "Batch")
        batch = ctx.params.get("batch") or batches[0]
        status = batch_status(ctx.dataset, batch, **_credentials(ctx))
        counts = (f"{status['finished']}/{status['tasks']} tasks finished" if status.get("server") == "ok"
                  else "server unreachable")
        inputs.view("status", types.Notice(label=f"{batch}: {status['state']} ({counts})"))
        policies = types.RadioGroup()
        for value, label in POLICY_LABELS.items():
            policies.add_choice(value, label=label)
        inputs.enum("policy", policies.values(), default="latest", label="Several annotators", view=policies)
        return types.Property(inputs, view=types.View(label="Pull from Label Studio"))

    def resolve_delegation(self, ctx):
        return len(ctx.dataset) > 10 * DELEGATE_ABOVE

    def execute(self, ctx):
        from curate_loop.runs.labelstudio import pull_batch

        p = ctx.params
        summary = pull_batch(ctx.dataset, p["batch"], policy=p.get("policy", "latest"), progress=_progress(ctx),
                             **_credentials(ctx))
        ctx.trigger("reload_dataset")
        return {"applied": summary.applied, "changed": summary.changed_samples,
                "labels": f"{summary.labels_updated} updated, {summary.labels_added} added, "
                          f"{summary.labels_removed} removed",
                "conflicts": len(summary.conflicts), "cancelled": summary.cancelled}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("applied", label="Annotated tasks applied")
        outputs.int("changed", label="Samples changed")
        outputs.str("labels", label="Labels")
        outputs.int("conflicts", label="Conflicts left unapplied")
        outputs.int("cancelled", label="Cancelled annotations skipped")
        return types.Property(outputs, view=types.View(label="Pulled"))
