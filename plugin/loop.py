"""The curation loop in the App: the "Curation loop" panel and the "run one loop iteration" operator.

Thin layers over ``curate_loop.loop.runner``. The panel finds the dataset's manifest (``$CURATE_LOOP_MANIFEST``, the
one the last iteration ran, or ``./manifest.yml``; a path can be typed in), shows the iterations, each batch's
state with a link to its Label Studio tab, the top mislabel suspects and the loop report, and has buttons for the
next step. Its buttons run inline; for long iterations the operator allows delegated execution. The Label Studio
URL and key come from the plugin secrets, as for the push and pull operators.
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .forms import DelegableOperator, operator_config, progress, reports_errors, results, show_result, with_notice
from .labelstudio import _credentials

PANEL_NAME = "curation_loop"


def _load_manifest(path):
    from curate_loop.loop.manifest import load_manifest

    return load_manifest(path)


class RunLoopIteration(DelegableOperator):
    @property
    def config(self):
        return operator_config("run_loop_iteration", "curate-loop: run one loop iteration",
                               "Pull finished batches, embed what is new, scan for mislabels, curate and push the next "
                               "batch", delegable=True)

    def resolve_input(self, ctx):
        from curate_loop.loop.runner import manifest_path_for

        inputs = types.Object()
        inputs.str("manifest", required=True, default=manifest_path_for(ctx.dataset) or "", label="manifest.yml",
                   description="The loop's manifest (its dataset must be this one)")
        return types.Property(inputs)

    @reports_errors
    def execute(self, ctx):
        from curate_loop.loop.runner import run_iteration

        manifest = _load_manifest(ctx.params["manifest"])
        summary = run_iteration(manifest, progress=progress(ctx), **_credentials(ctx))
        show_result(ctx)
        return with_notice({"iteration": summary.iteration, "batch": summary.batch, "selected": summary.selected,
                            "pushed": summary.pushed, "report": summary.loop_report_path},
                           ctx.dataset, *_embeddings_keys(manifest))

    def resolve_output(self, ctx):
        return results(ctx, "Loop iteration done", [("iteration", int, "Iteration"), ("batch", str, "Batch picked"),
                                                    ("selected", int, "Samples picked"),
                                                    ("pushed", int, "Tasks pushed to Label Studio"),
                                                    ("report", str, "Loop report (HTML)")])


def _embeddings_keys(manifest) -> tuple[str, str]:
    """The loop's image and box embeddings: what its batches and mislabel scans are built on."""
    return manifest.embeddings.key, manifest.embeddings.objects_key


class CurationLoopPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name=PANEL_NAME,
            label="Curation loop",
            icon="autorenew",
            help_markdown="Iterations, batch status in Label Studio, top mislabel suspects, and the next step.",
        )

    # -- events ---------------------------------------------------------------------------------------------------
    def on_load(self, ctx):
        from curate_loop.loop.runner import manifest_path_for

        ctx.panel.state.manifest = ctx.panel.state.manifest or manifest_path_for(ctx.dataset)
        self._refresh(ctx)

    def on_change_dataset(self, ctx):
        ctx.panel.state.manifest = None
        self.on_load(ctx)

    def set_manifest(self, ctx):
        ctx.panel.state.manifest = (ctx.params.get("value") or "").strip() or None
        self._refresh(ctx)

    def refresh(self, ctx):
        self._refresh(ctx)

    def run_next(self, ctx):
        from curate_loop.loop.runner import run_iteration

        def act(manifest):
            s = run_iteration(manifest, **_credentials(ctx))
            pulled = sum(c.get("applied", 0) for c in s.pulled.values())
            return (f"Iteration {s.iteration}: pulled {pulled} annotated tasks, embedded {s.embedded}, picked "
                    f"{s.selected} for {s.batch}, pushed {s.pushed} new tasks.")

        self._act(ctx, act)

    def pull(self, ctx):
        from curate_loop.loop.runner import pull_finished
        from curate_loop.runs.datasets import open_dataset

        def act(manifest):
            pulled = pull_finished(open_dataset(manifest.dataset), **_credentials(ctx))
            if not pulled:
                return "Nothing to pull: no batch has finished annotations yet."
            return "Pulled " + ", ".join(f"{b} ({c.get('applied', 0)} tasks, {c.get('labels_updated', 0)} labels "
                                         f"corrected, {c.get('labels_added', 0)} added, {c.get('labels_removed', 0)} "
                                         "removed" + _assist_clause(c) + ")" for b, c in pulled.items()) + "."

        self._act(ctx, act)

    def push(self, ctx):
        from curate_loop.loop.runner import push_pending
        from curate_loop.runs.datasets import open_dataset

        def act(manifest):  # the picked batches not in Label Studio yet, and what the QA review re-queued
            pushed = push_pending(open_dataset(manifest.dataset), manifest, **_credentials(ctx))
            return ("Pushed " + ", ".join(f"{b} ({n} new tasks)" for b, n in pushed.items()) + "."
                    if pushed else "Nothing to push: every picked and re-annotation batch is in Label Studio.")

        self._act(ctx, act)

    def review_suspects(self, ctx):
        from curate_loop.runs.mislabels import SUSPECTS_VIEW

        ctx.ops.set_view(name=SUSPECTS_VIEW)

    # -- state ----------------------------------------------------------------------------------------------------
    def _act(self, ctx, action):
        """Run one step; its outcome (or the error, which says what to do) becomes the panel's message."""
        from curate_loop.errors import CurateLoopError

        path = ctx.panel.state.manifest
        if not path:
            ctx.panel.state.message = "No manifest: type the path of this dataset's manifest.yml first."
            return
        try:
            ctx.panel.state.message = action(_load_manifest(path))
        except CurateLoopError as exc:
            ctx.panel.state.message = f"{type(exc).__name__}: {exc}"
        self._refresh(ctx)
        ctx.trigger("reload_dataset")

    def _refresh(self, ctx):
        from curate_loop.errors import CurateLoopError
        from curate_loop.loop.runner import status

        path = ctx.panel.state.manifest
        if not path:
            ctx.panel.state.overview = None
            return
        try:
            manifest = _load_manifest(path)
            if manifest.dataset != ctx.dataset.name:
                raise ValueError(f"{path} drives the dataset {manifest.dataset!r}, not {ctx.dataset.name!r}.")
            ctx.panel.state.overview = status(manifest, **_credentials(ctx))
            ctx.panel.state.notice = with_notice({}, ctx.dataset, *_embeddings_keys(manifest)).get("notice")
        except (CurateLoopError, ValueError) as exc:
            ctx.panel.state.overview = None
            ctx.panel.state.notice = None
            ctx.panel.state.message = f"{type(exc).__name__}: {exc}"

    # -- layout ---------------------------------------------------------------------------------------------------
    def render(self, ctx):
        panel = types.Object()
        state = ctx.panel.state
        overview = state.overview
        panel.md(f"#### Curation loop\n\nmanifest: `{state.manifest or 'none found'}`", name="title")
        if not overview:
            panel.str("manifest_input", label="manifest.yml path", default=state.manifest or "",
                      description="$CURATE_LOOP_MANIFEST or ./manifest.yml are found automatically",
                      on_change=self.set_manifest)
        buttons = panel.h_stack("actions", align_x="left", gap=2)
        buttons.btn("run_next", label="Run next iteration", icon="play_arrow", variant="contained",
                    on_click=self.run_next, disabled=not overview)
        buttons.btn("pull", label="Pull finished batches", icon="download", on_click=self.pull, disabled=not overview)
        buttons.btn("push", label="Push pending batches", icon="upload", on_click=self.push, disabled=not overview)
        buttons.btn("refresh", label="Refresh", icon="refresh", on_click=self.refresh)
        if state.message:
            panel.md(f"> {state.message}", name="message")
        if state.notice:
            panel.md(f"**{state.notice}**", name="notice")
        if overview:
            panel.md(_iterations_md(overview), name="iterations")
            panel.md(_batches_md(overview), name="batches")
            panel.md(_suspects_md(overview), name="suspects")
            if overview.get("suspects"):
                panel.btn("review", label="Review suspects", icon="fact_check", on_click=self.review_suspects)
            if overview.get("report_path"):
                panel.md(f"Loop report (saturation curve, label changes): `{overview['report_path']}`", name="report")
        return types.Property(panel, view=types.GridView(orientation="vertical", align_x="left", gap=2))


def _iterations_md(overview) -> str:
    rows = sorted(overview.get("iterations") or [], key=lambda it: it["iteration"])
    if not rows:
        return "##### Iterations\n\nNo iteration yet: press **Run next iteration**."
    lines = ["##### Iterations", "",
             "| iteration | batch | selected | pushed | pulled back | suspects | model | model assist |",
             "|---|---|---|---|---|---|---|---|"]
    for it in rows:
        pulled = sum(c.get("applied", 0) for c in (it.get("pulled") or {}).values())
        suspects = "–" if it.get("suspects") is None else it["suspects"]
        lines.append(f"| {it['iteration']} | {it['batch']} | {it.get('selected', 0)} | {it.get('pushed', 0)} | "
                     f"{pulled} | {suspects} | {_model_md(it.get('model'))} | {assist_md(it)} |")
    return "\n".join(lines)


def _assist_clause(counts: dict) -> str:
    """", model assist 72% (18/25 accepted)" for a pull that compared model pre-annotations, else ""."""
    text = assist_md({"pulled": {"batch": counts}})
    return "" if text == "–" else f", model assist {text}"


def _model_md(model) -> str:
    """The iteration's model in a few words: name, labels trained on, cross-validated accuracy."""
    if not model:
        return "–"
    words = [str(model.get("name") or model.get("kind") or "model")]
    if model.get("trained_on") is not None:
        words.append(f"on {model['trained_on']} labels")
    if model.get("cv_accuracy") is not None:
        words.append(f"cv {model['cv_accuracy']:.0%}")
    return ", ".join(words)


def assist_md(iteration: dict) -> str:
    """The model-assist rate of the iteration's pulls: ``"72% (18/25 accepted)"``, or "–" when no pulled task had
    the model's pre-annotations."""
    from curate_loop.adapters.labelstudio.assist import merge

    merged = merge(p.get("model_assist") for p in (iteration.get("pulled") or {}).values())
    if merged is None or merged["totals"]["rate"] is None:
        return "–"
    totals = merged["totals"]
    return f"{totals['rate']:.0%} ({totals['accepted']}/{totals['predicted']} accepted)"


def _batches_md(overview) -> str:
    lines = ["##### Batches in Label Studio", ""]
    for b in overview.get("batches") or []:
        counts = (f"{b.get('finished', 0)}/{b['tasks']} finished" if b.get("server") == "ok"
                  else f"{b['tasks']} tasks, server unreachable")
        lines.append(f"- **{b['batch']}**: {b['state']} ({counts}) — "
                     f"[open in Label Studio]({b['tab_url']})")
    for name in overview.get("unpushed") or []:
        lines.append(f"- **{name}**: picked, not pushed yet")
    return "\n".join(lines) if len(lines) > 2 else "##### Batches in Label Studio\n\nNone pushed yet."


def _suspects_md(overview) -> str:
    rows = overview.get("suspects") or []
    if not rows:
        return "##### Top mislabel suspects\n\nNo open suspects."
    lines = ["##### Top mislabel suspects", "", "| score | given | suggested | label |", "|---|---|---|---|"]
    lines += [f"| {r['score']:.2f} | {r['given']} | {r['suggested']} | `{r['label_id']}` |" for r in rows]
    return "\n".join(lines)
