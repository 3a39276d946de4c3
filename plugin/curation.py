"""Operators: pick the next labeling batch, score edge cases, group near-duplicates.

Thin layers over ``curate_loop.runs``: read the form, call the library with ``ctx.set_progress`` as the progress
callback, open the result (the batch's saved view, the edge-case view, the duplicate groups) in the App.
"""

import fiftyone.operators.types as types

from .forms import (DELEGATE_ABOVE, DelegableOperator, cannot_run, complete_embedding_keys, dropdown, form,
                    operator_config, progress, radio, reports_errors, results, show_result, target_samples,
                    with_notice)

STRATEGY_LABELS = {
    "cluster_balanced": "Cluster-balanced (covers every cluster, keeps edge cases)",
    "typicality": "Typicality (most typical samples)",
    "kcenter": "Diversity (k-center greedy)",
    "random": "Random (the baseline)",
}
CURATION_DELEGATE_ABOVE = 50 * DELEGATE_ABOVE  # one pass over stored vectors: far cheaper than embedding


def _no_embeddings(inputs, what):
    return cannot_run(inputs, f"No finished {what} embeddings yet: run 'compute embeddings' first.")


def _min_cluster_size_input(inputs):
    inputs.int("min_cluster_size", required=False, label="Smallest cluster (samples)",
               description="Empty: the square root of the pool size / 3, which grows with the pool; lower it to see "
                           "finer clusters")


NO_PREDICTIONS = "none"
STRENGTHS = {"diversity": ("Diversity strength", "Cover the embedding space (0: off)"),
             "uncertainty": ("Uncertainty strength", "Prefer samples the model is unsure about (0: off; larger: "
                                                     "fewer, more uncertain candidates)"),
             "class_balance": ("Class-balance strength", "Even out the model's predicted classes (0: off)")}


def _model_inputs(inputs, prediction_fields):
    """The predictions field (a Classification or Detections field other than the label field, or none) and the
    strengths of the three objectives, defaults from ``Objectives``."""
    from curate_loop.curation.objectives import Objectives
    from curate_loop.model.uncertainty import UNCERTAINTY_SCORES

    default = Objectives()
    choices = [NO_PREDICTIONS, *prediction_fields]
    dropdown(inputs, "predictions_field", choices, "Model predictions",
             default="predictions" if "predictions" in prediction_fields else NO_PREDICTIONS,
             description="A model's Classification or Detections field; none: diversity alone", required=False)
    for name, (label, description) in STRENGTHS.items():
        inputs.float(name, default=getattr(default, name), label=label, description=description)
    dropdown(inputs, "uncertainty_score", list(UNCERTAINTY_SCORES), "Uncertainty score",
             default=default.uncertainty_score, description="Without logits, least confidence is used",
             required=False)


def _objectives(params):
    """``Objectives`` from the form; a value left empty keeps its default. A bad value raises InvalidInputError,
    which the result shows as its one-line error."""
    from curate_loop.curation.objectives import Objectives

    given = {name: float(params[name]) for name in STRENGTHS if params.get(name) not in (None, "")}
    if params.get("uncertainty_score"):
        given["uncertainty_score"] = params["uncertainty_score"]
    return Objectives(**given)


def _min_cluster_size(params):
    value = params.get("min_cluster_size")
    return None if value in (None, "") else int(value)


class SelectBatch(DelegableOperator):
    delegate_above = CURATION_DELEGATE_ABOVE

    @property
    def config(self):
        return operator_config("select_batch", "curate-loop: pick the next labeling batch",
                               "Cluster-aware batch selection with a report against random picks of the same size",
                               delegable=True)

    def resolve_input(self, ctx):
        from curate_loop.runs.pool import label_fields, resolve_label_field

        inputs = types.Object()
        keys = complete_embedding_keys(ctx.dataset, level="image")
        if not keys:
            return _no_embeddings(inputs, "image")
        batches = ctx.dataset.list_runs(method="curate_loop.batch")
        inputs.str("name", default=f"batch_{len(batches) + 1:02d}", required=True, label="Batch name",
                   description="Letters, digits and underscores; the batch becomes a saved view of that name")
        inputs.int("k", default=min(50, len(target_samples(ctx))), required=True, label="Batch size (K)")
        dropdown(inputs, "key", keys, "Embeddings")
        radio(inputs, "strategy", STRATEGY_LABELS, "Strategy", default="cluster_balanced")
        fields = label_fields(ctx.dataset)
        label_field = None
        if fields:
            default = resolve_label_field(ctx.dataset, None) or fields[0]
            dropdown(inputs, "label_field", fields, "Labeled samples are those with", default=default)
            label_field = ctx.params.get("label_field") or default
        _model_inputs(inputs, [f for f in fields if f != label_field])
        _min_cluster_size_input(inputs)
        inputs.bool("overwrite", default=False, label="Replace a batch of the same name")
        return form(inputs, "Pick the next labeling batch")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.curation import select_batch

        from curate_loop.runs.curation import contributions_line

        p = ctx.params
        predictions_field = p.get("predictions_field")
        summary = select_batch(target_samples(ctx), p["name"], int(p["k"]), p["key"],
                               strategy=p.get("strategy", "cluster_balanced"), label_field=p.get("label_field"),
                               min_cluster_size=_min_cluster_size(p), overwrite=bool(p.get("overwrite")),
                               progress=progress(ctx),
                               predictions_field=None if predictions_field in (None, "", NO_PREDICTIONS)
                               else predictions_field, objectives=_objectives(p))
        show_result(ctx, summary.view_name)
        coverage = summary.coverage.get("cluster_coverage", {})
        return with_notice({"batch": summary.name, "picked": summary.picked, "view": summary.view_name,
                            "mode": summary.mode, "contributions": contributions_line(summary.contributions),
                            "clusters": f"{summary.clusters_reached} of {summary.clusters} "
                                        f"(random: {coverage.get('random_mean', float('nan')):.1%} of clusters)",
                            "edge_gain": f"{summary.saturation['gain']:+.1%}", "report": summary.report_path},
                           ctx.dataset, p["key"])

    def resolve_output(self, ctx):
        return results(ctx, "Batch picked", [("batch", str, "Batch"), ("picked", int, "Samples picked"),
                                             ("view", str, "Saved view"), ("mode", str, "Mode"),
                                             ("contributions", str, "What each objective contributed"),
                                             ("clusters", str, "Clusters reached"),
                                             ("edge_gain", str, "Edge-case coverage added"),
                                             ("report", str, "Report (HTML)")])


class ScoreEdgeCases(DelegableOperator):
    delegate_above = CURATION_DELEGATE_ABOVE

    @property
    def config(self):
        return operator_config("score_edge_cases", "curate-loop: score edge cases",
                               "Rare and outlying samples or objects, highest score first", delegable=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        keys = complete_embedding_keys(ctx.dataset)
        if not keys:
            return _no_embeddings(inputs, "")
        dropdown(inputs, "key", keys, "Embeddings (images or objects)")
        _min_cluster_size_input(inputs)
        return form(inputs, "Score edge cases")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.edges import score_edge_cases

        key = ctx.params["key"]
        summary = score_edge_cases(target_samples(ctx), key, min_cluster_size=_min_cluster_size(ctx.params),
                                   progress=progress(ctx))
        show_result(ctx, summary.view_name)
        return with_notice({"scored": summary.scored, "sparse_clusters": summary.sparse_clusters,
                            "noise": summary.noise, "view": summary.view_name}, ctx.dataset, key)

    def resolve_output(self, ctx):
        return results(ctx, "Edge cases scored", [("scored", int, "Scored"),
                                                  ("sparse_clusters", int, "Sparse clusters"),
                                                  ("noise", int, "Outliers (in no cluster)"),
                                                  ("view", str, "Saved view")])


class FindNearDuplicates(DelegableOperator):
    delegate_above = CURATION_DELEGATE_ABOVE

    @property
    def config(self):
        return operator_config("find_near_duplicates", "curate-loop: find near-duplicates",
                               "Group near-identical samples and keep one per group", delegable=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        keys = complete_embedding_keys(ctx.dataset, level="image")
        if not keys:
            return _no_embeddings(inputs, "image")
        dropdown(inputs, "key", keys, "Embeddings")
        inputs.float("threshold", default=0.98, label="Cosine similarity threshold",
                     description="Two samples at least this similar are near-duplicates")
        return form(inputs, "Find near-duplicates")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.duplicates import find_duplicates

        key = ctx.params["key"]
        summary = find_duplicates(target_samples(ctx), key, threshold=float(ctx.params.get("threshold", 0.98)),
                                  progress=progress(ctx))
        show_result(ctx, summary.view_name if summary.groups else None)
        return with_notice({"groups": summary.groups, "in_groups": summary.in_groups,
                            "redundant": summary.redundant}, ctx.dataset, key)

    def resolve_output(self, ctx):
        return results(ctx, "Near-duplicates found", [("groups", int, "Groups"),
                                                      ("in_groups", int, "Samples in groups"),
                                                      ("redundant", int, "Redundant copies (skipped by batches)")])
