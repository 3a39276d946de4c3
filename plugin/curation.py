"""Operators: pick the next labeling batch, score edge cases, group near-duplicates.

Thin layers over ``curate_loop.runs``: read the form, call the library with ``ctx.set_progress`` as the progress
callback, open the result (the batch's saved view, the edge-case view, the duplicate groups) in the App.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .embeddings import DELEGATE_ABOVE, _dropdown, _progress

STRATEGY_LABELS = {
    "cluster_balanced": "Cluster-balanced (covers every cluster, keeps edge cases)",
    "typicality": "Typicality (most typical samples)",
    "kcenter": "Diversity (k-center greedy)",
    "random": "Random (the baseline)",
}


def _image_keys(dataset, level="image"):
    from curate_loop.runs.embeddings import list_embeddings

    return [row["key"] for row in list_embeddings(dataset)
            if row["status"] == "complete" and (level is None or row.get("level") == level)]


def _no_embeddings(inputs, what):
    inputs.view("none", types.Error(label=f"No finished {what} embeddings yet: run 'compute embeddings' first."))
    return types.Property(inputs)


def _open_saved_view(ctx, name):
    ctx.ops.set_view(view=ctx.dataset.load_saved_view(name))


def _min_cluster_size_input(inputs):
    inputs.int("min_cluster_size", required=False, label="Smallest cluster (samples)",
               description="Empty: the square root of the pool size / 3, which grows with the pool; lower it to see "
                           "finer clusters")


def _min_cluster_size(params):
    value = params.get("min_cluster_size")
    return None if value in (None, "") else int(value)


class SelectBatch(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="select_batch",
            label="curate-loop: pick the next labeling batch",
            description="Cluster-aware batch selection with a report against random picks of the same size",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        from curate_loop.runs.pool import label_fields, resolve_label_field

        inputs = types.Object()
        keys = _image_keys(ctx.dataset)
        if not keys:
            return _no_embeddings(inputs, "image")
        batches = ctx.dataset.list_runs(method="curate_loop.batch")
        inputs.str("name", default=f"batch_{len(batches) + 1:02d}", required=True, label="Batch name",
                   description="Letters, digits and underscores; the batch becomes a saved view of that name")
        inputs.int("k", default=min(50, len(ctx.target_view())), required=True, label="Batch size (K)")
        _dropdown(inputs, "key", keys, "Embeddings")
        strategies = types.RadioGroup()
        for value, label in STRATEGY_LABELS.items():
            strategies.add_choice(value, label=label)
        inputs.enum("strategy", strategies.values(), default="cluster_balanced", label="Strategy", view=strategies)
        fields = label_fields(ctx.dataset)
        if fields:
            default = resolve_label_field(ctx.dataset, None) or fields[0]
            _dropdown(inputs, "label_field", fields, "Labeled samples are those with", default=default)
        _min_cluster_size_input(inputs)
        inputs.bool("overwrite", default=False, label="Replace a batch of the same name")
        return types.Property(inputs, view=types.View(label="Pick the next labeling batch"))

    def resolve_delegation(self, ctx):
        return len(ctx.target_view()) > 50 * DELEGATE_ABOVE

    def execute(self, ctx):
        from curate_loop.runs.curation import select_batch

        p = ctx.params
        summary = select_batch(ctx.target_view(), p["name"], int(p["k"]), p["key"],
                               strategy=p.get("strategy", "cluster_balanced"), label_field=p.get("label_field"),
                               min_cluster_size=_min_cluster_size(p), overwrite=bool(p.get("overwrite")),
                               progress=_progress(ctx))
        ctx.trigger("reload_dataset")
        if not ctx.delegated:
            _open_saved_view(ctx, summary.view_name)
        coverage = summary.coverage.get("cluster_coverage", {})
        return {"batch": summary.name, "picked": summary.picked, "view": summary.view_name,
                "clusters": f"{summary.clusters_reached} of {summary.clusters} "
                            f"(random: {coverage.get('random_mean', float('nan')):.1%} of clusters)",
                "edge_gain": f"{summary.saturation['gain']:+.1%}", "report": summary.report_path}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("batch", label="Batch")
        outputs.int("picked", label="Samples picked")
        outputs.str("view", label="Saved view")
        outputs.str("clusters", label="Clusters reached")
        outputs.str("edge_gain", label="Edge-case coverage added")
        outputs.str("report", label="Report (HTML)")
        return types.Property(outputs, view=types.View(label="Batch picked"))


class ScoreEdgeCases(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="score_edge_cases",
            label="curate-loop: score edge cases",
            description="Rare and outlying samples or objects, highest score first",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        keys = _image_keys(ctx.dataset, level=None)
        if not keys:
            return _no_embeddings(inputs, "")
        _dropdown(inputs, "key", keys, "Embeddings (images or objects)")
        _min_cluster_size_input(inputs)
        return types.Property(inputs, view=types.View(label="Score edge cases"))

    def resolve_delegation(self, ctx):
        return len(ctx.target_view()) > 50 * DELEGATE_ABOVE

    def execute(self, ctx):
        from curate_loop.runs.edges import score_edge_cases

        summary = score_edge_cases(ctx.target_view(), ctx.params["key"],
                                   min_cluster_size=_min_cluster_size(ctx.params), progress=_progress(ctx))
        ctx.trigger("reload_dataset")
        if not ctx.delegated:
            _open_saved_view(ctx, summary.view_name)
        return {"scored": summary.scored, "sparse_clusters": summary.sparse_clusters, "noise": summary.noise,
                "view": summary.view_name}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("scored", label="Scored")
        outputs.int("sparse_clusters", label="Sparse clusters")
        outputs.int("noise", label="Outliers (in no cluster)")
        outputs.str("view", label="Saved view")
        return types.Property(outputs, view=types.View(label="Edge cases scored"))


class FindNearDuplicates(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="find_near_duplicates",
            label="curate-loop: find near-duplicates",
            description="Group near-identical samples and keep one per group",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        keys = _image_keys(ctx.dataset)
        if not keys:
            return _no_embeddings(inputs, "image")
        _dropdown(inputs, "key", keys, "Embeddings")
        inputs.float("threshold", default=0.98, label="Cosine similarity threshold",
                     description="Two samples at least this similar are near-duplicates")
        return types.Property(inputs, view=types.View(label="Find near-duplicates"))

    def resolve_delegation(self, ctx):
        return len(ctx.target_view()) > 50 * DELEGATE_ABOVE

    def execute(self, ctx):
        from curate_loop.runs.duplicates import find_duplicates

        summary = find_duplicates(ctx.target_view(), ctx.params["key"], threshold=float(ctx.params.get("threshold", 0.98)),
                                  progress=_progress(ctx))
        ctx.trigger("reload_dataset")
        if not ctx.delegated and summary.groups:
            _open_saved_view(ctx, summary.view_name)
        return {"groups": summary.groups, "in_groups": summary.in_groups, "redundant": summary.redundant}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("groups", label="Groups")
        outputs.int("in_groups", label="Samples in groups")
        outputs.int("redundant", label="Redundant copies (skipped by batches)")
        return types.Property(outputs, view=types.View(label="Near-duplicates found"))
