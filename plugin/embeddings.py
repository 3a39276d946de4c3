"""Operators: compute embeddings (images or objects), and build the similarity index and 2-D map.

Thin layers over ``curate_loop.runs``: read the form, call the library with ``ctx.set_progress`` as the
progress callback, report counts. Both may run delegated (``fiftyone delegated launch``) for long jobs.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

DELEGATE_ABOVE = 2000  # images: past this, offer delegated execution by default


def _progress(ctx):
    return lambda fraction, label: ctx.set_progress(progress=float(fraction), label=label)


def _detections_fields(dataset):
    import fiftyone.core.labels as fol

    return sorted(dataset.get_field_schema(embedded_doc_type=fol.Detections))


def _embedding_keys(dataset):
    from curate_loop.runs.embeddings import list_embeddings

    return [row["key"] for row in list_embeddings(dataset) if row["status"] == "complete"]


def _dropdown(inputs, name, choices, label, default=None, description=None):
    view = types.DropdownView()
    for choice in choices:
        view.add_choice(choice, label=choice)
    inputs.enum(name, view.values(), default=default or (choices[0] if choices else None), required=True,
                label=label, description=description, view=view)


class ComputeEmbeddings(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="compute_embeddings",
            label="curate-loop: compute embeddings",
            description="Embed the images or the objects of the current view with open_clip models",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("key", default="clip", required=True, label="Embeddings key",
                   description="Name of the run; computing again with the same key embeds only what is new")
        level = types.RadioGroup()
        level.add_choice("image", label="Images")
        level.add_choice("object", label="Objects (box crops)")
        inputs.enum("level", level.values(), default="image", label="Embed", view=level)
        if ctx.params.get("level") == "object":
            fields = _detections_fields(ctx.dataset)
            if not fields:
                inputs.view("no_boxes", types.Error(label="This dataset has no Detections field to crop."))
            else:
                _dropdown(inputs, "patches_field", fields, "Boxes from")
                inputs.float("margin", default=0.1, label="Context margin",
                             description="Fraction of the box size added on each side")
        inputs.str("models", default="ViT-B-32", required=True, label="open_clip model(s)",
                   description="NAME or NAME@PRETRAINED (a tag or a local checkpoint); several, comma-separated, "
                               "are concatenated")
        inputs.int("batch_size", default=32, label="Batch size")
        inputs.bool("build_index", default=True, label="Build the similarity index (sort by similarity)")
        inputs.bool("build_map", default=True, label="Build the 2-D map (Embeddings panel)")
        return types.Property(inputs, view=types.View(label="Compute embeddings"))

    def resolve_delegation(self, ctx):
        return len(ctx.target_view()) > DELEGATE_ABOVE

    def execute(self, ctx):
        from curate_loop.runs.embeddings import compute_embeddings

        params = ctx.params
        view = ctx.target_view()
        patches_field = params.get("patches_field") if params.get("level") == "object" else None
        models = [m.strip() for m in params.get("models", "ViT-B-32").split(",") if m.strip()]
        summary = compute_embeddings(view, params.get("key", "clip"), models, patches_field=patches_field,
                                     margin=params.get("margin", 0.1), batch_size=params.get("batch_size", 32),
                                     progress=_progress(ctx))
        extra = _index_and_map(ctx, view, summary.key, params.get("build_index", True), params.get("build_map", True))
        ctx.trigger("reload_dataset")
        return {"key": summary.key, "computed": summary.computed, "skipped": summary.skipped,
                "failed": len(summary.failed), "vectors": summary.total_vectors, **extra}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("key", label="Embeddings key")
        outputs.int("computed", label="Embedded now")
        outputs.int("skipped", label="Already embedded (skipped)")
        outputs.int("failed", label="Failed (see the run's failures)")
        outputs.int("vectors", label="Vectors in the run")
        outputs.str("similarity", label="Similarity index (brain key)")
        outputs.str("map", label="2-D map (brain key)")
        return types.Property(outputs, view=types.View(label="Embeddings computed"))


def _index_and_map(ctx, view, key, build_index, build_map):
    from curate_loop.runs.maps import compute_map
    from curate_loop.runs.similarity import build_similarity

    out = {}
    if build_index:
        ctx.set_progress(progress=0.0, label="building the similarity index")
        out["similarity"] = build_similarity(view, key)
    if build_map:
        out["map"] = compute_map(view, key, progress=_progress(ctx))
    return out


class BuildIndexAndMap(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="build_similarity_and_map",
            label="curate-loop: build similarity index and map",
            description="Index an embeddings run for sort by similarity (faiss) and draw its 2-D map",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        keys = _embedding_keys(ctx.dataset)
        if not keys:
            inputs.view("none", types.Error(label="No finished embeddings yet: run 'compute embeddings' first."))
            return types.Property(inputs)
        _dropdown(inputs, "key", keys, "Embeddings")
        inputs.bool("build_index", default=True, label="Similarity index")
        inputs.bool("build_map", default=True, label="2-D map")
        return types.Property(inputs, view=types.View(label="Build similarity index and map"))

    def resolve_delegation(self, ctx):
        return len(ctx.target_view()) > 10 * DELEGATE_ABOVE

    def execute(self, ctx):
        out = _index_and_map(ctx, ctx.target_view(), ctx.params["key"], ctx.params.get("build_index", True),
                             ctx.params.get("build_map", True))
        ctx.trigger("reload_dataset")
        return out

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("similarity", label="Similarity index (brain key)")
        outputs.str("map", label="2-D map (brain key)")
        return types.Property(outputs, view=types.View(label="Built"))
