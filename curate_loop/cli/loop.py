"""The loop: `curate-loop run` (one iteration from a manifest) and `curate-loop status`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .options import ProgressBar

_manifest_argument = click.argument("manifest_path", type=click.Path(dir_okay=False, path_type=Path))


def _api_key() -> str | None:
    """The Label Studio key from the environment (never an option: it would land in shell history); without one, the
    connection falls back to the key file for the server it names."""
    return os.environ.get("LABEL_STUDIO_API_KEY")


def _server_url(manifest) -> str | None:
    return manifest.labelstudio.url or os.environ.get("LABEL_STUDIO_URL")


@click.command("run")
@_manifest_argument
@click.option("--simulate-annotator", is_flag=True,
              help="Answer the pushed tasks from the kept-aside true labels (marked as simulated), for headless loops.")
@click.option("--truth-field", default="true_ground_truth", show_default=True,
              help="Where the simulated annotator reads the true labels.")
def run(manifest_path, simulate_annotator, truth_field):
    """One loop iteration: pull finished batches, embed what is new, scan for mislabels, curate and push the next
    batch. Safe to re-run at any point."""
    from curate_loop.loop.manifest import load_manifest
    from curate_loop.loop.runner import run_iteration

    from .labelstudio import note_key_source, outside_classes_line

    manifest = load_manifest(manifest_path)
    if _server_url(manifest):  # else the loop starts its own local server, with its own key
        note_key_source(_server_url(manifest))
    with ProgressBar("loop") as bar:
        summary = run_iteration(manifest, simulate_annotator=simulate_annotator, truth_field=truth_field,
                                api_key=_api_key(), progress=bar)
    for batch, counts in summary.pulled.items():
        click.echo(f"Pulled {batch}: {counts.get('applied', 0)} tasks applied, {counts.get('labels_updated', 0)} labels "
                   f"updated, {counts.get('labels_added', 0)} added, {counts.get('labels_removed', 0)} removed")
        if counts.get("outside_classes"):  # labels of classes the manifest's `classes` lack
            click.echo(outside_classes_line(counts["outside_classes"]))
    click.echo(f"Iteration {summary.iteration}: embedded {summary.embedded} new samples; "
               f"mislabel suspects {summary.suspects if summary.suspects is not None else '-'}")
    if summary.model:
        click.echo(model_line(summary.model))
    if summary.selected:
        click.echo(f"  batch {summary.batch!r}: {summary.selected} samples"
                   f"{' (reused from an interrupted run)' if summary.reused_batch else ''}, {summary.pushed} new tasks "
                   "in Label Studio")
        if summary.simulated_answers:
            click.echo(f"  simulated annotator answered {summary.simulated_answers} tasks (from {truth_field!r})")
        if summary.report_path:
            click.echo(f"  report: {summary.report_path}")
    else:
        click.echo("  nothing left to curate: every sample is labeled or queued")
    if summary.reannotate_batch:
        click.echo(f"  re-annotation batch {summary.reannotate_batch!r}: {summary.reannotate_pushed} new tasks")
    for line in [*summary.notes, *summary.notices]:
        click.secho(f"  {line}", fg="yellow")
    click.echo(f"Loop report (saturation curve, label changes): {summary.loop_report_path}")


def model_line(model: dict) -> str:
    """The model step of an iteration in one line: which model, trained on how many labels, how good, how long."""
    trained = "trained elsewhere" if model.get("trained_on") is None else f"trained on {model['trained_on']} labels"
    accuracy = model.get("cv_accuracy")
    parts = [trained, f"cv accuracy {accuracy:.2f}" if accuracy is not None else "cv accuracy -",
             f"{model.get('predicted', 0)} pool samples predicted into {model.get('field')!r}",
             f"{model.get('seconds', 0):.1f} s"]
    line = f"  model {model.get('name')} ({model.get('kind')}): " + ", ".join(parts)
    return line + (f" ({model['note']})" if model.get("note") else "")


@click.command("status")
@_manifest_argument
def status(manifest_path):
    """Loop iterations so far and the state of every batch in Label Studio."""
    from curate_loop.loop.manifest import load_manifest
    from curate_loop.loop.runner import status as loop_status
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.embeddings import random_weights_notice
    from curate_loop.runs.labelstudio import list_pushed_batches, recorded_url

    from .labelstudio import fallback_line, note_key_source, table_lines

    manifest = load_manifest(manifest_path)
    dataset = open_dataset(manifest.dataset)
    note_key_source(*([_server_url(manifest)] if _server_url(manifest) else
                      [recorded_url(dataset, b) for b in list_pushed_batches(dataset)]))
    state = loop_status(manifest, api_key=_api_key())
    notices = [n for n in (random_weights_notice(dataset, key) for key in
                           dict.fromkeys([manifest.embeddings.key, manifest.embeddings.objects_key])) if n]
    for notice in notices:
        click.echo(notice)
    if not state["iterations"]:
        click.echo(f"No iterations on {state['dataset']!r} yet: `curate-loop run {manifest_path}`.")
    else:
        rows = [("iteration", "batch", "selected", "pulled", "suspects")]
        for it in sorted(state["iterations"], key=lambda it: it["iteration"]):
            rows.append((str(it["iteration"]), it.get("batch") or "-", str(it.get("selected", 0)),
                         ", ".join(sorted(it.get("pulled") or {})) or "-",
                         "-" if it.get("suspects") is None else str(it["suspects"])))
        for line in table_lines(rows):
            click.echo(line)
    if state["batches"]:
        note = fallback_line(state["batches"])
        click.echo("")
        if note:
            click.echo(note)
        rows = [("batch", "state", "tasks", "finished", "tab")]
        for b in state["batches"]:
            live = b.get("server") == "ok"
            rows.append((b["batch"], b["state"] + ("" if live else " (recorded)"), str(b["tasks"]),
                         str(b.get("finished", "?")) if live else "?", b.get("tab_url") or "-"))
        for line in table_lines(rows):
            click.echo(line)
    if state.get("unpushed"):
        click.echo(f"Not in Label Studio yet: {', '.join(state['unpushed'])} (`curate-loop run {manifest_path}` pushes "
                   "them).")
    if state.get("report_path"):
        click.echo(f"Loop report: {state['report_path']}")

