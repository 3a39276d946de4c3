"""`curate-loop quality`: data-quality checks (dark, bright, blurry, low-information, odd and duplicate images, and
boxes), their adaptive thresholds, a user's override, and the views of what they flag."""

from __future__ import annotations

import click

from .options import ProgressBar, open_view, tag_option

_manifest_option = click.option("--manifest", "manifest_path", type=click.Path(exists=True, dir_okay=False),
                                help="Take the label field from this loop manifest and apply its `quality:` policy "
                                     "(which issues keep samples out of batches).")


def _manifest(dataset_name: str, manifest_path):
    if not manifest_path:
        return None
    from curate_loop.errors import InvalidInputError
    from curate_loop.loop.manifest import load_manifest

    manifest = load_manifest(manifest_path)
    if manifest.dataset != dataset_name:
        raise InvalidInputError(f"Manifest {manifest_path} drives dataset {manifest.dataset!r}, not {dataset_name!r}.")
    return manifest


@click.group()
def quality() -> None:
    """Data quality: measure images and boxes, flag what is far from the dataset's typical values."""


@quality.command("compute")
@click.argument("dataset_name")
@click.option("--label-field", default=None,
              help="Detections field whose boxes are checked too (default: the manifest's, else ground_truth; "
                   "skipped when the dataset has none).")
@click.option("--no-boxes", is_flag=True, help="Check images only.")
@click.option("--workers", type=click.IntRange(1), default=None, help="Decoding threads (default: CPU count).")
@click.option("--recompute", is_flag=True, help="Measure every sample again, not only what is missing.")
@_manifest_option
@tag_option
def quality_compute(dataset_name, label_field, no_boxes, workers, recompute, manifest_path, tags):
    """Measure what is not measured yet, then set thresholds, scores, flags and views for the whole dataset."""
    from curate_loop.runs.quality import apply_policy, compute_quality

    manifest = _manifest(dataset_name, manifest_path)
    label_field = None if no_boxes else (label_field or (manifest.label_field if manifest else "ground_truth"))
    view = open_view(dataset_name, tags)
    with ProgressBar("quality") as bar:
        summary = compute_quality(view, label_field=label_field, num_workers=workers, recompute=recompute,
                                  progress=bar)
    click.echo(f"Quality: {summary.measured} measured, {summary.skipped} already measured, {len(summary.failed)} "
               f"unreadable ({summary.seconds:.1f} s).")
    for sample_id, reason in list(summary.failed.items())[:5]:
        click.echo(f"  unreadable {sample_id}: {reason}")
    for label_id, reason in list(summary.box_failures.items())[:5]:
        click.echo(f"  box {label_id}: {reason}")
    if len(summary.box_failures) > 5:
        click.echo(f"  ... {len(summary.box_failures) - 5} more boxes without crop metrics")
    flagged = ", ".join(f"{issue} {n}" for issue, n in summary.flagged.items() if n) or "nothing"
    click.echo(f"Flagged: {flagged}; saved views quality_<issue>.")
    if manifest is not None:
        excluded = apply_policy(view._dataset, manifest.quality.policy())
        click.echo(f"Policy from {manifest_path}: {excluded} samples kept out of curation batches.")


@quality.command("list")
@click.argument("dataset_name")
def quality_list(dataset_name):
    """Every issue: its metric, direction, threshold (adaptive, or yours) and how many items it flags."""
    from curate_loop.runs.quality import quality_run

    run = quality_run(open_view(dataset_name))
    click.echo(f"{'issue':<18} {'metric':<20} {'dir':<4} {'threshold':>10} {'adaptive':>10} {'flagged':>8}")
    for issue, t in run["thresholds"].items():
        mark = " (yours)" if t["user"] else " (fixed)" if t["fixed"] else ""
        click.echo(f"{issue:<18} {t['metric']:<20} {t['direction']:<4} {t['threshold']:>10.4g} {t['adaptive']:>10.4g} "
                   f"{run['flagged'].get(issue, 0):>8}{mark}")
    if run["n_failures"]:
        click.echo(f"{run['n_failures']} samples could not be read: `curate-loop quality compute` retries them.")


@quality.command("threshold")
@click.argument("dataset_name")
@click.argument("issue")
@click.argument("value", type=float, required=False)
@click.option("--reset", is_flag=True, help="Go back to the adaptive threshold.")
def quality_threshold(dataset_name, issue, value, reset):
    """Set ISSUE's threshold to VALUE (in its metric's units; see `quality list`), or --reset it."""
    from curate_loop.runs.quality import set_threshold

    if (value is None) == (not reset):
        raise click.UsageError("Give a VALUE or --reset (not both).")
    flagged = set_threshold(open_view(dataset_name), issue, None if reset else value)
    click.echo(f"{issue}: {flagged} flagged with the {'adaptive' if reset else 'new'} threshold.")


@quality.command("views")
@click.argument("dataset_name")
def quality_views(dataset_name):
    """The saved view of each issue and how many samples it holds (open them in the App's view bar)."""
    from curate_loop.quality.thresholds import BOX_ISSUES, IMAGE_ISSUES
    from curate_loop.runs.quality import flagged_view, quality_run, view_name

    dataset = open_view(dataset_name)
    quality_run(dataset)
    for issue in IMAGE_ISSUES + BOX_ISSUES:
        if dataset.has_saved_view(view_name(issue)):
            click.echo(f"{view_name(issue):<26} {len(flagged_view(dataset, issue)):>7} "
                       f"{'boxes' if issue in BOX_ISSUES else 'samples'}")
