"""Operators: compute embeddings (images or objects), and build the similarity index and 2-D map.

Thin layers over ``curate_loop.runs``: read the form, call the library with ``ctx.set_progress`` as the
progress callback, report counts. Both may run delegated (``fiftyone delegated launch``) for long jobs.
"""

import fiftyone.operators.types as types

from .forms import (DELEGATE_ABOVE, DelegableOperator, cannot_run, complete_embedding_keys, dropdown, form,
                    operator_config, progress, radio, reports_errors, results, show_result, target_samples,
                    with_notice)

LEVELS = {"image": "Images", "object": "Objects (box crops)"}
INDEX_AND_MAP_RESULTS = [("similarity", str, "Similarity index (brain key)"), ("map", str, "2-D map (brain key)")]
SIMILARITY_BACKENDS = {"faiss": "faiss (files on this machine)",
                       "milvus": "Milvus (Milvus Lite file, or a Milvus server by URI)"}


def _detections_fields(dataset):
    import fiftyone.core.labels as fol

    return sorted(dataset.get_field_schema(embedded_doc_type=fol.Detections))


def _similarity_inputs(inputs, params) -> None:
    """Where the similarity index lives: faiss (default) or Milvus, with an optional Milvus URI."""
    if not params.get("build_index", True):
        return
    radio(inputs, "similarity_backend", SIMILARITY_BACKENDS, "Similarity backend", default="faiss")
    if params.get("similarity_backend") == "milvus":
        inputs.str("milvus_uri", label="Milvus URI", required=False,
                   description="empty: a Milvus Lite file per dataset under the curate-loop home (one process at a "
                               "time); a server: http://HOST:19530")


def _index_and_map(ctx, view, key, build_index, build_map):
    from curate_loop.runs.maps import compute_map
    from curate_loop.runs.similarity import build_similarity

    out = {}
    if build_index:
        ctx.set_progress(progress=0.0, label="building the similarity index")
        backend = ctx.params.get("similarity_backend") or "faiss"
        uri = ((ctx.params.get("milvus_uri") or "").strip() or None) if backend == "milvus" else None
        out["similarity"] = build_similarity(view, key, backend=backend, uri=uri)
    if build_map:
        out["map"] = compute_map(view, key, progress=progress(ctx))
    return out


class ComputeEmbeddings(DelegableOperator):
    delegate_above = DELEGATE_ABOVE

    @property
    def config(self):
        return operator_config("compute_embeddings", "curate-loop: compute embeddings",
                               "Embed the images or the objects of the current view with open_clip models",
                               delegable=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("key", default="clip", required=True, label="Embeddings key",
                   description="Name of the run; computing again with the same key embeds only what is new")
        radio(inputs, "level", LEVELS, "Embed", default="image")
        if ctx.params.get("level") == "object":
            fields = _detections_fields(ctx.dataset)
            if not fields:
                inputs.view("no_boxes", types.Error(label="This dataset has no Detections field to crop."))
            else:
                dropdown(inputs, "patches_field", fields, "Boxes from")
                inputs.float("margin", default=0.1, label="Context margin",
                             description="Fraction of the box size added on each side")
        inputs.str("models", default="ViT-B-32", required=True, label="open_clip model(s)",
                   description="NAME or NAME@PRETRAINED (a tag or a local checkpoint); several, comma-separated, "
                               "are concatenated")
        inputs.int("batch_size", default=32, label="Batch size")
        inputs.bool("build_index", default=True, label="Build the similarity index (sort by similarity)")
        _similarity_inputs(inputs, ctx.params)
        inputs.bool("build_map", default=True, label="Build the 2-D map (Embeddings panel)")
        return form(inputs, "Compute embeddings")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.embeddings import compute_embeddings

        params = ctx.params
        view = target_samples(ctx)
        patches_field = params.get("patches_field") if params.get("level") == "object" else None
        models = [m.strip() for m in params.get("models", "ViT-B-32").split(",") if m.strip()]
        summary = compute_embeddings(view, params.get("key", "clip"), models, patches_field=patches_field,
                                     margin=params.get("margin", 0.1), batch_size=params.get("batch_size", 32),
                                     progress=progress(ctx))
        extra = _index_and_map(ctx, view, summary.key, params.get("build_index", True), params.get("build_map", True))
        show_result(ctx)
        return with_notice({"key": summary.key, "computed": summary.computed, "skipped": summary.skipped,
                            "failed": len(summary.failed), "vectors": summary.total_vectors, **extra},
                           ctx.dataset, summary.key)

    def resolve_output(self, ctx):
        return results(ctx, "Embeddings computed", [("key", str, "Embeddings key"), ("computed", int, "Embedded now"),
                                                    ("skipped", int, "Already embedded (skipped)"),
                                                    ("failed", int, "Failed (see the run's failures)"),
                                                    ("vectors", int, "Vectors in the run"), *INDEX_AND_MAP_RESULTS])


class BuildIndexAndMap(DelegableOperator):
    delegate_above = 10 * DELEGATE_ABOVE

    @property
    def config(self):
        return operator_config("build_similarity_and_map", "curate-loop: build similarity index and map",
                               "Index an embeddings run for sort by similarity (faiss or Milvus) and draw its 2-D map",
                               delegable=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        keys = complete_embedding_keys(ctx.dataset)
        if not keys:
            return cannot_run(inputs, "No finished embeddings yet: run 'compute embeddings' first.")
        dropdown(inputs, "key", keys, "Embeddings")
        inputs.bool("build_index", default=True, label="Similarity index")
        _similarity_inputs(inputs, ctx.params)
        inputs.bool("build_map", default=True, label="2-D map")
        return form(inputs, "Build similarity index and map")

    @reports_errors
    def execute(self, ctx):
        key = ctx.params["key"]
        out = _index_and_map(ctx, target_samples(ctx), key, ctx.params.get("build_index", True),
                             ctx.params.get("build_map", True))
        show_result(ctx)
        return with_notice(out, ctx.dataset, key)

    def resolve_output(self, ctx):
        return results(ctx, "Built", INDEX_AND_MAP_RESULTS)
