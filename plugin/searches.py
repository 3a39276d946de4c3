"""Operators: save a similarity search (selected samples/objects or a text prompt) and apply one."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .forms import (DelegableOperator, cannot_run, complete_embedding_keys, dropdown, form, operator_config,
                    reports_errors, results, target_samples, with_notice)


class SaveSearch(foo.Operator):
    @property
    def config(self):
        return operator_config("save_search", "curate-loop: save similarity search",
                               "Keep the selected samples (or a text prompt) as a named search to score new data later")

    def resolve_input(self, ctx):
        inputs = types.Object()
        keys = complete_embedding_keys(ctx.dataset)
        if not keys:
            return cannot_run(inputs, "No finished embeddings yet: run 'compute embeddings' first.")
        inputs.str("name", required=True, label="Search name", description="letters, digits and underscores")
        dropdown(inputs, "key", keys, "Embeddings")
        n_selected = len(ctx.selected) + len(ctx.selected_labels)
        inputs.str("text", label="Text prompt (CLIP models)",
                   description=f"Leave empty to use the {n_selected} selected sample(s)/object(s) as examples")
        return form(inputs, "Save similarity search")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.errors import InvalidInputError
        from curate_loop.runs.searches import save_search

        text = (ctx.params.get("text") or "").strip() or None
        examples = None if text else (list(ctx.selected) or [label["label_id"] for label in ctx.selected_labels])
        if not text and not examples:
            raise InvalidInputError("Select example samples (or objects) in the grid, or type a text prompt.")
        save_search(ctx.dataset, ctx.params["name"], ctx.params["key"], example_ids=examples, text=text)
        return with_notice({"name": ctx.params["name"], "examples": len(examples or []), "text": text or ""},
                           ctx.dataset, ctx.params["key"])

    def resolve_output(self, ctx):
        return results(ctx, "Search saved", [("name", str, "Saved search"), ("examples", int, "Example items"),
                                             ("text", str, "Text prompt")])


class ApplySearch(DelegableOperator):
    @property
    def config(self):
        return operator_config("apply_search", "curate-loop: apply saved search",
                               "Score the current view with a saved search and sort by it", delegable=True)

    def resolve_input(self, ctx):
        from curate_loop.runs.searches import list_searches

        inputs = types.Object()
        names = list_searches(ctx.dataset)
        if not names:
            return cannot_run(inputs, "No saved searches yet: run 'save similarity search' first.")
        dropdown(inputs, "name", names, "Saved search")
        return form(inputs, "Apply saved search")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.searches import apply_search

        view = target_samples(ctx)
        field = apply_search(view, ctx.params["name"])
        if not ctx.delegated and ctx.dataset.has_sample_field(field):
            ctx.ops.set_view(view=view.sort_by(field, reverse=True))
        else:
            ctx.trigger("reload_dataset")
        scored = view.exists(field).count() if ctx.dataset.has_sample_field(field) else 0
        key = ctx.dataset.get_run_info(ctx.params["name"]).config.embeddings_key  # the search's embeddings
        return with_notice({"field": field, "scored": scored}, ctx.dataset, key)

    def resolve_output(self, ctx):
        return results(ctx, "Search applied", [("field", str, "Scores written to"), ("scored", int, "Samples scored")])
