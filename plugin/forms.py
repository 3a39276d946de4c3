"""What every operator of the plugin does the same way, written once.

An operator here reads its params, resolves the target view, makes one library call and reports; the pieces around
that call live in this module: the config (dynamic forms; immediate or delegated execution for long jobs), the
default choice of delegation by size, the target samples (a patches, clips or frames view stands for its source
samples), the form widgets (dropdowns, radio groups, "cannot run yet" notices), the progress callback, the result
form (with its random-weights notice, or the one-line error of an expected failure), and showing the result in the
App (reload, open the saved view).
"""

import functools

import fiftyone.operators as foo
import fiftyone.operators.types as types

DELEGATE_ABOVE = 2000  # images to embed: past this, delegated execution is the default; cheaper steps scale it up


def operator_config(name, label, description, *, delegable=False):
    """The operator's config: dynamic forms; ``delegable`` ones may also run delegated (``fiftyone delegated launch``)."""
    delegation = {"allow_immediate_execution": True, "allow_delegated_execution": True} if delegable else {}
    return foo.OperatorConfig(name=name, label=label, description=description, dynamic=True, **delegation)


class DelegableOperator(foo.Operator):
    """An operator that runs delegated by default once the collection it works on exceeds ``delegate_above`` samples.

    ``delegate_above = None`` leaves the choice to the user. ``counts_whole_dataset`` is for operators that work on
    the dataset (a Label Studio batch) rather than on the App's target view.
    """

    delegate_above = None
    counts_whole_dataset = False

    def resolve_delegation(self, ctx):
        if self.delegate_above is None:
            return None
        collection = ctx.dataset if self.counts_whole_dataset else ctx.target_view()
        return len(collection) > self.delegate_above


def target_samples(ctx):
    """The samples the App's target (current view, selection, dataset) stands for, as a view of the dataset: after
    "find mislabels" the App shows a patches view, whose items are boxes of a generated dataset that holds none of
    the runs; its source samples are what an operator works on."""
    from curate_loop.runs.views import sample_level_view

    return sample_level_view(ctx.target_view())


def reports_errors(execute):
    """For ``execute``: an expected failure (a ``CurateLoopError``, whose message says what to do) becomes the result's
    one-line ``error``, shown by ``results`` instead of a stack; anything else is a bug and still raises."""

    @functools.wraps(execute)
    def guarded(self, ctx):
        from curate_loop.errors import CurateLoopError

        try:
            return execute(self, ctx)
        except CurateLoopError as exc:
            return {"error": " ".join(str(exc).split())}

    return guarded


def with_notice(result, dataset, *embeddings_keys):
    """``result`` with the random-weights ``notice`` of the first of ``embeddings_keys`` that has one (results built
    on random-weight vectors must say so); unchanged when none has."""
    from curate_loop.runs.embeddings import random_weights_notice

    for key in embeddings_keys:
        notice = random_weights_notice(dataset, key) if key else None
        if notice:
            return {**result, "notice": notice}
    return result


def progress(ctx):
    """The library's ``progress(fraction, label)`` callback, reported to the App (or the delegated run)."""
    return lambda fraction, label: ctx.set_progress(progress=float(fraction), label=label)


def complete_embedding_keys(dataset, level=None):
    """Keys of the finished embeddings runs, of one ``level`` ("image" or "object") or of any when None."""
    from curate_loop.runs.embeddings import list_embeddings

    return [row["key"] for row in list_embeddings(dataset)
            if row["status"] == "complete" and (level is None or row.get("level") == level)]


def dropdown(inputs, name, choices, label, default=None, description=None, required=True):
    """A choice among ``choices`` (strings), the first one by default."""
    view = types.DropdownView()
    for choice in choices:
        view.add_choice(choice, label=choice)
    inputs.enum(name, view.values(), default=default or (choices[0] if choices else None), required=required,
                label=label, description=description, view=view)


def radio(inputs, name, choices, label, default):
    """A choice among ``choices`` ({value: label}), shown as radio buttons."""
    view = types.RadioGroup()
    for value, choice_label in choices.items():
        view.add_choice(value, label=choice_label)
    inputs.enum(name, view.values(), default=default, label=label, view=view)


def form(inputs, title):
    """The input form, titled."""
    return types.Property(inputs, view=types.View(label=title))


def cannot_run(inputs, message):
    """The form of an operator that has nothing to work on yet: ``message`` says what to do first."""
    inputs.view("none", types.Error(label=message))
    return types.Property(inputs)


def results(ctx, title, fields):
    """The output form: ``fields`` are ``(name, int or str, label)`` rows, shown in order, under the result's
    random-weights ``notice`` if it has one; only the ``error`` line when the operator could not run."""
    outputs = types.Object()
    result = getattr(ctx, "results", None) or {}
    if result.get("error"):
        outputs.view("error", types.Error(label=result["error"]))
        return types.Property(outputs, view=types.View(label=f"{title}: not done"))
    if result.get("notice"):
        outputs.view("notice", types.Warning(label=result["notice"]))
    for name, kind, label in fields:
        (outputs.int if kind is int else outputs.str)(name, label=label)
    return types.Property(outputs, view=types.View(label=title))


def show_result(ctx, saved_view=None, *, keep_view=False):
    """Refresh the App after an operator changed the dataset; when run immediately, also open ``saved_view`` (a
    name) if given.

    ``keep_view`` (a review in the grid): no dataset reload, which raced with restoring the view (the App sometimes
    landed on the whole dataset, and the reviewer's next selection then meant whole images instead of suspect boxes).
    ``saved_view`` is opened as saved now (the review re-saved it, so its patches are regenerated), else the grid's
    samples are fetched again in the same view."""
    if ctx.delegated:
        ctx.trigger("reload_dataset")
        return
    if keep_view:
        if saved_view:
            ctx.ops.set_view(name=saved_view)
        ctx.ops.reload_samples()
        return
    ctx.trigger("reload_dataset")
    if saved_view:
        ctx.ops.set_view(view=ctx.dataset.load_saved_view(saved_view))
