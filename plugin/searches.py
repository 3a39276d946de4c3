"""Operators: save a similarity search (selected samples/objects or a text prompt) and apply one."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .embeddings import _dropdown, _embedding_keys


class SaveSearch(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="save_search",
            label="curate-loop: save similarity search",
            description="Keep the selected samples (or a text prompt) as a named search to score new data later",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        keys = _embedding_keys(ctx.dataset)
        if not keys:
            inputs.view("none", types.Error(label="No finished embeddings yet: run 'compute embeddings' first."))
            return types.Property(inputs)
        inputs.str("name", required=True, label="Search name", description="letters, digits and underscores")
        _dropdown(inputs, "key", keys, "Embeddings")
        n_selected = len(ctx.selected) + len(ctx.selected_labels)
        inputs.str("text", label="Text prompt (CLIP models)",
                   description=f"Leave empty to use the {n_selected} selected sample(s)/object(s) as examples")
        return types.Property(inputs, view=types.View(label="Save similarity search"))

    def execute(self, ctx):
        from curate_loop.runs.searches import save_search

        text = (ctx.params.get("text") or "").strip() or None
        examples = None if text else (list(ctx.selected) or [label["label_id"] for label in ctx.selected_labels])
        if not text and not examples:
            raise ValueError("Select example samples (or objects) in the grid, or type a text prompt.")
        save_search(ctx.dataset, ctx.params["name"], ctx.params["key"], example_ids=examples, text=text)
        return {"name": ctx.params["name"], "examples": len(examples or []), "text": text or ""}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("name", label="Saved search")
        outputs.int("examples", label="Example items")
        outputs.str("text", label="Text prompt")
        return types.Property(outputs, view=types.View(label="Search saved"))


class ApplySearch(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="apply_search",
            label="curate-loop: apply saved search",
            description="Score the current view with a saved search and sort by it",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx):
        from curate_loop.runs.searches import list_searches

        inputs = types.Object()
        names = list_searches(ctx.dataset)
        if not names:
            inputs.view("none", types.Error(label="No saved searches yet: run 'save similarity search' first."))
            return types.Property(inputs)
        _dropdown(inputs, "name", names, "Saved search")
        return types.Property(inputs, view=types.View(label="Apply saved search"))

    def execute(self, ctx):
        from curate_loop.runs.searches import apply_search

        view = ctx.target_view()
        field = apply_search(view, ctx.params["name"])
        if not ctx.delegated and ctx.dataset.has_sample_field(field):
            ctx.ops.set_view(view=view.sort_by(field, reverse=True))
        else:
            ctx.trigger("reload_dataset")
        return {"field": field, "scored": view.exists(field).count() if ctx.dataset.has_sample_field(field) else 0}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("field", label="Scores written to")
        outputs.int("scored", label="Samples scored")
        return types.Property(outputs, view=types.View(label="Search applied"))
