"""The loop: `curate-loop run` (one iteration from a manifest) and `curate-loop status`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .options import ProgressBar

_manifest_argument = click.argument("manifest_path", type=click.Path(dir_okay=False, path_type=Path))


def _api_key() -> str | None:
    """The Label Studio key, from the environment only (never an option: it would land in shell history)."""
    return os.environ.get("LABEL_STUDIO_API_KEY")


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

    manifest = load_manifest(manifest_path)
    with ProgressBar("loop") as bar:
        summary = run_iteration(manifest, simulate_annotator=simulate_annotator, truth_field=truth_field,
                                api_key=_api_key(), progress=bar)
    for batch, counts in summary.pulled.items():
        click.echo(f"Pulled {batch}: {counts.get('applied', 0)} tasks applied, {counts.get('labels_updated', 0)} labels "
                   f"updated, {counts.get('labels_added', 0)} added, {counts.get('labels_removed', 0)} removed")
    click.echo(f"Iteration {summary.iteration}: embedded {summary.embedded} new samples; "
               f"mislabel suspects {summary.suspects if summary.suspects is not None else '-'}")
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
    click.echo(f"Loop report (saturation curve, label changes): {summary.loop_report_path}")


@click.command("status")
@_manifest_argument
def status(manifest_path):
    """Loop iterations so far and the state of every batch in Label Studio."""
    from curate_loop.loop.manifest import load_manifest
    from curate_loop.loop.runner import status as loop_status

    state = loop_status(load_manifest(manifest_path), api_key=_api_key())
    if not state["iterations"]:
        click.echo(f"No iterations on {state['dataset']!r} yet: `curate-loop run {manifest_path}`.")
    for it in state["iterations"]:
        click.echo(f"iteration {it['iteration']}: batch {it['batch']} ({it['selected']} samples), pulled "
                   f"{sorted(it['pulled']) or '-'}, suspects {it['suspects'] if it['suspects'] is not None else '-'}")
    for b in state["batches"]:
        click.echo(f"batch {b['batch']}: {b['state']} ({b['tasks']} tasks, {b.get('finished', '?')} finished)")
    if state.get("report_path"):
        click.echo(f"Loop report: {state['report_path']}")
