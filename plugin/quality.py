"""Data quality in the App: the "Data quality" panel, and the operators "compute quality", "exclude from curation"
and "tag quality issues".

Thin layers over ``curate_loop.runs.quality``. The panel shows one row per issue (its metric, threshold and how many
samples or boxes it flags); for the chosen issue, a histogram of its metric with the flagged tail in red and the
threshold as a dashed line, a threshold control (a slider with a typed value; a click on a bar moves it there) that
flags again with the new threshold, and buttons to show the flagged samples in the grid, tag them, or keep them out
of curation batches (and let them back in). With no quality run yet it says the one command that computes it.
"""

from __future__ import annotations

import threading

import numpy as np

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .forms import (DELEGATE_ABOVE, DelegableOperator, cannot_run, dropdown, form, operator_config, progress, radio,
                    reports_errors, results, show_result, target_samples)

PANEL_NAME = "data_quality"
PLUGIN = "@curate-loop/curate-loop"
HISTOGRAM_BINS = 40
TAG_PREFIX = "quality:"  # a tag per issue: quality:dark
KEPT_COLOR, FLAGGED_COLOR = "#7f8c9d", "#e0413a"
NO_LABEL_FIELD = "(no boxes)"
# The App server runs panel events in a thread pool: an edit of the slider's field can send its value twice, and the
# App's reload after a re-flag loads the panel again meanwhile. Re-flagging rewrites the run record and the saved
# views, so the panel's reads and writes of the quality run take turns (a repeated value then does nothing).
_QUALITY_RUN = threading.RLock()
# The slider sends its value when it mounts (the threshold in force, rounded as the panel shows it): a value this
# close to the threshold in force changes nothing.
SAME_THRESHOLD = 1e-6


def issue_tag(issue: str) -> str:
    """The sample tag "tag" gives the samples flagged with ``issue``."""
    return f"{TAG_PREFIX}{issue}"


def threshold_path(issue: str, threshold: float | None) -> str:
    """The panel state key of ``issue``'s slider, one per issue and threshold in force. Per issue: a slider never
    carries the value of the issue shown before it. Per threshold: every move renders a fresh slider (its default the
    new threshold), and an event from a slider rendered before the threshold last moved is told apart by its path.
    The App sends a slider's value when the slider mounts, on a busy machine seconds later, after a newer value has
    been applied: taken as a move, that late echo undid the newer one."""
    shown = _number(threshold)  # as the overview holds it, so the render and the event handler agree
    token = "none" if shown is None else repr(shown).replace(".", "p").replace("-", "m").replace("+", "")
    return f"threshold_{issue}_{token}"


def _same_threshold(value: float, threshold: float) -> bool:
    return abs(value - threshold) <= SAME_THRESHOLD * max(1.0, abs(threshold))


def compute_command(dataset_name: str) -> str:
    """The command that computes the quality metrics of ``dataset_name`` (what the panel says to run first)."""
    return f"curate-loop quality compute {dataset_name}"


# -- the histogram, array level ---------------------------------------------------------------------------------------
def flagged_mask(values: np.ndarray, threshold: float, direction: str) -> np.ndarray:
    """Which ``values`` an issue flags: at or below ``threshold`` for a "low" issue (dark), at or above it for a "high"
    one (as ``curate_loop.quality.thresholds`` flags them)."""
    values = np.asarray(values, dtype=float)
    return values <= threshold if direction == "low" else values >= threshold


def histogram_traces(values: np.ndarray, threshold: float, direction: str, bins: int = HISTOGRAM_BINS) -> list[dict]:
    """Two stacked plotly bar traces over the same bins: the kept values, and the flagged tail (a bin the threshold
    cuts is split between them). NaN values (unreadable images) are left out."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return []
    edges = np.histogram_bin_edges(values, bins=bins)
    flagged = flagged_mask(values, threshold, direction)
    kept_counts, _ = np.histogram(values[~flagged], bins=edges)
    flagged_counts, _ = np.histogram(values[flagged], bins=edges)
    centers = ((edges[:-1] + edges[1:]) / 2).round(6).tolist()
    width = float(edges[1] - edges[0]) if len(edges) > 1 else 1.0

    def bars(name, counts, color):
        return {"type": "bar", "name": name, "x": centers, "y": counts.tolist(), "width": width,
                "marker": {"color": color}}

    return [bars("kept", kept_counts, KEPT_COLOR), bars("flagged", flagged_counts, FLAGGED_COLOR)]


def histogram_layout(metric: str, threshold: float) -> dict:
    return {"barmode": "stack", "bargap": 0.02, "height": 260, "margin": {"l": 40, "r": 10, "t": 10, "b": 40},
            "xaxis": {"title": {"text": metric}}, "yaxis": {"title": {"text": "count"}},
            "legend": {"orientation": "h", "y": 1.1},
            "shapes": [{"type": "line", "x0": threshold, "x1": threshold, "yref": "paper", "y0": 0, "y1": 1,
                        "line": {"color": FLAGGED_COLOR, "dash": "dash", "width": 2}}]}


# -- reading the run ----------------------------------------------------------------------------------------------------
def quality_overview(dataset) -> dict | None:
    """One row per issue of the dataset's quality run (metric, direction, threshold, how many samples it flags;
    boxes for a box issue), or None before the first run."""
    from curate_loop.quality.thresholds import BOX_ISSUES
    from curate_loop.runs.quality import quality_run

    if not _has_quality_run(dataset):
        return None
    run = quality_run(dataset)
    rows = [{"issue": issue, "metric": rule.get("metric"), "direction": rule.get("direction"),
             "threshold": _number(rule.get("threshold")), "flagged": int(run.get("flagged", {}).get(issue, 0)),
             "unit": "boxes" if issue in BOX_ISSUES else "samples", "user": bool(rule.get("user"))}
            for issue, rule in run.get("thresholds", {}).items()]
    return {"issues": rows, "failures": int(run.get("n_failures", 0))}


def _has_quality_run(dataset) -> bool:
    from curate_loop.runs.quality import RUN_KEY

    return RUN_KEY in dataset.list_runs()


def _number(value):
    return None if value is None or not np.isfinite(float(value)) else round(float(value), 6)


def _issue_md(overview: dict) -> str:
    lines = ["| issue | metric | flagged at | flagged |", "|---|---|---|---|"]
    for r in overview["issues"]:
        sign = "≤" if r["direction"] == "low" else "≥" if r["direction"] == "high" else ""
        threshold = "–" if r["threshold"] is None else f"{sign} {r['threshold']:.4g}" + (" (yours)" if r["user"] else "")
        lines.append(f"| {r['issue']} | {r['metric'] or '–'} | {threshold} | {r['flagged']} {r['unit']} |")
    if overview.get("failures"):
        lines.append(f"\n{overview['failures']} files could not be read (listed in the run record `quality`).")
    return "\n".join(lines)


class DataQualityPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name=PANEL_NAME,
            label="Data quality",
            icon="image_search",
            help_markdown="Dark, bright, blurry, low-information and odd images and boxes: a histogram per metric, "
                          "its threshold, and the flagged samples (show, tag, keep out of curation batches).",
        )

    # -- events ---------------------------------------------------------------------------------------------------
    def on_load(self, ctx):
        self._refresh(ctx)

    def on_change_dataset(self, ctx):
        ctx.panel.state.issue = None
        ctx.panel.state.message = None
        self._refresh(ctx)

    def refresh(self, ctx):
        ctx.panel.state.message = None
        self._refresh(ctx)

    def select_issue(self, ctx):
        ctx.panel.state.issue = ctx.params.get("value") or None
        ctx.panel.state.message = None
        self._refresh(ctx)

    def set_threshold(self, ctx):
        self._move_threshold(ctx, ctx.params.get("value"), slider_path=ctx.params.get("path"))

    def reset_threshold(self, ctx):
        """Back to the threshold the data gives (the adaptive one)."""
        self._move_threshold(ctx, None, reset=True)

    def click_histogram(self, ctx):
        """A click on a bar moves the threshold to that bar's value."""
        self._move_threshold(ctx, ctx.params.get("x"))

    def show_samples(self, ctx):
        from curate_loop.runs.quality import flagged_view

        issue = ctx.panel.state.issue
        ctx.ops.set_view(view=flagged_view(ctx.dataset, issue))
        ctx.panel.state.message = f"The grid shows the samples flagged {issue}, worst first."

    def tag(self, ctx):
        from curate_loop.runs.quality import flagged_view

        issue = ctx.panel.state.issue
        with _QUALITY_RUN:
            view = _samples_of(flagged_view(ctx.dataset, issue))
            view.tag_samples(issue_tag(issue))
        ctx.panel.state.message = f"Tagged {len(view)} samples `{issue_tag(issue)}`."
        ctx.trigger("reload_dataset")

    def exclude(self, ctx):
        self._exclude(ctx, True)

    def include(self, ctx):
        self._exclude(ctx, False)

    def compute(self, ctx):
        ctx.prompt(f"{PLUGIN}/compute_quality")

    # -- state ----------------------------------------------------------------------------------------------------
    def _move_threshold(self, ctx, value, reset: bool = False, slider_path: str | None = None):
        from curate_loop.errors import CurateLoopError
        from curate_loop.runs.quality import quality_thresholds, set_threshold

        issue = ctx.panel.state.issue
        if not issue or (value is None and not reset):
            return
        try:
            with _QUALITY_RUN:
                rule = quality_thresholds(ctx.dataset)[issue]
                if slider_path is not None and slider_path != threshold_path(issue, rule["threshold"]):
                    return  # a slider rendered for an older threshold (threshold_path: why)
                if not reset and _same_threshold(float(value), rule["threshold"]):
                    return  # already flagged with this threshold (the slider's echo of the value it was given)
                count = set_threshold(ctx.dataset, issue, None if reset else float(value))
                value = quality_thresholds(ctx.dataset)[issue]["threshold"]
            ctx.panel.state.message = (f"{issue}: {'adaptive ' if reset else ''}threshold {float(value):.4g}, "
                                       f"{count} flagged.")
        except CurateLoopError as exc:
            ctx.panel.state.message = f"{type(exc).__name__}: {exc}"
        # no App reload here: the slider sends several events, and a reload (which re-reads the dataset in another
        # thread of the server) racing with the next re-flag broke FiftyOne's reads of the run; the grid shows the
        # new flags when it fetches next ("Show these samples")
        self._refresh(ctx)

    def _exclude(self, ctx, exclude: bool):
        from curate_loop.runs.quality import exclude_from_curation, flagged_view

        issue = ctx.panel.state.issue
        with _QUALITY_RUN:
            count = exclude_from_curation(_samples_of(flagged_view(ctx.dataset, issue)), exclude=exclude)
        ctx.panel.state.message = (f"{count} samples flagged {issue} are excluded from curation: no batch will pick "
                                   "them." if exclude else
                                   f"{count} samples flagged {issue} may enter curation batches again.")
        ctx.trigger("reload_dataset")

    def _refresh(self, ctx):
        with _QUALITY_RUN:
            self._read_run(ctx)

    def _read_run(self, ctx):
        from curate_loop.runs.quality import metric_values

        state = ctx.panel.state
        overview = quality_overview(ctx.dataset)
        state.overview = overview
        state.histogram = None
        if overview is None:
            return
        rows = {r["issue"]: r for r in overview["issues"]}
        if state.issue not in rows:
            state.issue = next(iter(rows), None)
        row = rows.get(state.issue)
        if row is None or row["threshold"] is None or not row["metric"]:
            return
        values = np.asarray(metric_values(ctx.dataset, row["metric"]), dtype=float)
        finite = values[np.isfinite(values)]
        if not len(finite):
            return
        state.histogram = histogram_traces(finite, row["threshold"], row["direction"])
        state.range = [float(finite.min()), float(finite.max())]

    # -- layout ---------------------------------------------------------------------------------------------------
    def render(self, ctx):
        panel = types.Object()
        state = ctx.panel.state
        overview = state.overview
        panel.md("#### Data quality", name="title")
        if overview is None:
            panel.md(f"No quality run on this dataset yet. Run\n\n`{compute_command(ctx.dataset.name)}`\n\n"
                     "or compute it here (for a large dataset, delegate it).", name="no_run")
            panel.btn("compute", label="Compute quality", icon="play_arrow", variant="contained",
                      on_click=self.compute)
            return types.Property(panel, view=types.GridView(orientation="vertical", align_x="left", gap=2))
        rows = {r["issue"]: r for r in overview["issues"]}
        choices = types.DropdownView()
        for issue in rows:
            choices.add_choice(issue, label=issue)
        panel.enum("issue", choices.values(), default=state.issue, label="Issue", view=choices,
                   on_change=self.select_issue)
        row = rows.get(state.issue)
        if row is not None:
            self._render_issue(panel, state, row)
        if state.message:
            panel.md(f"> {state.message}", name="message")
        panel.md("##### All issues\n\n" + _issue_md(overview), name="issues")
        return types.Property(panel, view=types.GridView(orientation="vertical", align_x="left", gap=2))

    def _render_issue(self, panel, state, row):
        issue = row["issue"]
        if state.histogram:
            panel.plot("histogram", data=state.histogram, layout=histogram_layout(row["metric"], row["threshold"]),
                       config={"displayModeBar": False, "scrollZoom": False}, on_click=self.click_histogram,
                       height="280px", width="100%")
            low, high = state.range
            panel.float(threshold_path(issue, row["threshold"]), min=low, max=high, default=row["threshold"],
                        label="Threshold", view=types.SliderView(variant="withInputs", label="Threshold",
                                                                 view_multiple_of=(high - low) / 200 or None),
                        on_change=self.set_threshold)
        side = {"low": "≤", "high": "≥"}.get(row["direction"], "")
        rule = f" ({row['metric']} {side} {row['threshold']:.4g})" if row["threshold"] is not None and side else ""
        panel.md(f"**{row['flagged']} {row['unit']} flagged {issue}**{rule}", name="flagged")
        buttons = panel.h_stack("actions", align_x="left", gap=2)
        none = not row["flagged"]
        buttons.btn("show", label="Show these samples", icon="visibility", variant="contained",
                    on_click=self.show_samples, disabled=none)
        buttons.btn("tag", label=f"Tag {issue_tag(issue)}", icon="sell", on_click=self.tag, disabled=none)
        buttons.btn("exclude", label="Exclude from curation", icon="block", on_click=self.exclude, disabled=none)
        buttons.btn("include", label="Include again", icon="undo", on_click=self.include, disabled=none)
        buttons.btn("reset", label="Adaptive threshold", icon="restart_alt", on_click=self.reset_threshold,
                    disabled=not row["user"])
        buttons.btn("refresh", label="Refresh", icon="refresh", on_click=self.refresh)


def _samples_of(view):
    """The samples a (possibly label-filtered or patches) view stands for."""
    from curate_loop.runs.views import sample_level_view

    return sample_level_view(view)


# -- operators ----------------------------------------------------------------------------------------------------------
def _box_fields(dataset) -> list[str]:
    import fiftyone.core.labels as fol

    return sorted(dataset.get_field_schema(embedded_doc_type=fol.Detections))


class ComputeQuality(DelegableOperator):
    delegate_above = 5 * DELEGATE_ABOVE  # one decode pass, no model: cheaper than embedding

    @property
    def config(self):
        return operator_config("compute_quality", "curate-loop: compute quality",
                               "Brightness, contrast, sharpness, information, size, aspect ratio, grayscale and exact "
                               "copies per image, and per box; flags what is far from the dataset's typical values",
                               delegable=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        fields = _box_fields(ctx.dataset)
        dropdown(inputs, "label_field", fields + [NO_LABEL_FIELD], "Boxes to check",
                 default=fields[0] if fields else NO_LABEL_FIELD,
                 description="A Detections field whose boxes get box metrics, or none")
        inputs.int("num_workers", min=1, label="Decoding threads", required=False,
                   description="Empty: one per CPU core")
        return form(inputs, f"Compute quality of {len(ctx.target_view())} samples")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.quality import compute_quality

        field = ctx.params.get("label_field")
        summary = compute_quality(target_samples(ctx), label_field=None if field in (None, NO_LABEL_FIELD) else field,
                                  num_workers=ctx.params.get("num_workers") or None, progress=progress(ctx))
        show_result(ctx)
        return _summary_result(summary)

    def resolve_output(self, ctx):
        return results(ctx, "Quality computed", [("measured", int, "Samples measured"),
                                                 ("skipped", int, "Measured before (resumed)"),
                                                 ("failed", int, "Unreadable files (reported per sample)"),
                                                 ("flagged", str, "Flagged per issue (box issues: boxes)")])


def _summary_result(summary) -> dict:
    """The operator's result from a ``QualitySummary``."""
    return {"measured": summary.measured, "skipped": summary.skipped, "failed": len(summary.failed),
            "flagged": ", ".join(f"{issue} {n}" for issue, n in summary.flagged.items() if n) or "none"}


DECISIONS = {"exclude": "Exclude from curation batches", "include": "Let them enter curation batches again"}


class QualityExclude(foo.Operator):
    @property
    def config(self):
        return operator_config("quality_exclude", "curate-loop: exclude from curation",
                               "Keep the current view's (or the selected) samples out of curation batches, or let "
                               "them back in")

    def resolve_input(self, ctx):
        inputs = types.Object()
        radio(inputs, "decision", DECISIONS, "Decision", default="exclude")
        return form(inputs, f"{len(ctx.target_view())} samples")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.quality import exclude_from_curation

        exclude = ctx.params.get("decision", "exclude") == "exclude"
        count = exclude_from_curation(target_samples(ctx), exclude=exclude)
        show_result(ctx)
        return {"decision": DECISIONS["exclude" if exclude else "include"], "count": count}

    def resolve_output(self, ctx):
        return results(ctx, "Curation exclusions updated", [("decision", str, "Decision"), ("count", int, "Samples")])


class TagQualityIssues(foo.Operator):
    @property
    def config(self):
        return operator_config("quality_tag", "curate-loop: tag quality issues",
                               "Tag the samples flagged with each chosen issue quality:<issue>")

    def resolve_input(self, ctx):
        inputs = types.Object()
        if not _has_quality_run(ctx.dataset):
            return cannot_run(inputs, f"No quality run yet: run `{compute_command(ctx.dataset.name)}` or "
                                      "\"compute quality\" first.")
        from curate_loop.runs.quality import quality_thresholds

        issues = list(quality_thresholds(ctx.dataset))
        view = types.AutocompleteView(allow_user_input=False)
        for issue in issues:
            view.add_choice(issue, label=issue)
        inputs.list("issues", types.String(), default=issues, label="Issues", view=view)
        return form(inputs, "Tag flagged samples")

    @reports_errors
    def execute(self, ctx):
        from curate_loop.runs.quality import flagged_view

        tagged = {}
        for issue in ctx.params.get("issues") or []:
            view = _samples_of(flagged_view(ctx.dataset, issue))
            view.tag_samples(issue_tag(issue))
            tagged[issue] = len(view)
        show_result(ctx)
        return {"tagged": ", ".join(f"{issue_tag(k)} {v}" for k, v in tagged.items()) or "none"}

    def resolve_output(self, ctx):
        return results(ctx, "Tagged", [("tagged", str, "Tags (samples)")])
