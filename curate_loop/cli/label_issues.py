"""`curate-loop label-issues`: find box-level label errors, then accept (and undo), reject or re-annotate them."""

from __future__ import annotations

import click

from .options import ProgressBar, open_view, tag_option

_manifest_option = click.option("--manifest", "manifest_path", type=click.Path(exists=True, dir_okay=False),
                                help="Take the dataset's label field and the model step's predictions field from "
                                     "this loop manifest.")


def _fields(dataset_name, manifest_path, label_field, predictions_field):
    """The label and predictions fields: given ones first, then the manifest's, then the defaults."""
    if manifest_path:
        from curate_loop.errors import InvalidInputError
        from curate_loop.loop.manifest import load_manifest

        manifest = load_manifest(manifest_path)
        if manifest.dataset != dataset_name:
            raise InvalidInputError(f"Manifest {manifest_path} drives dataset {manifest.dataset!r}, not "
                                    f"{dataset_name!r}.")
        label_field = label_field or manifest.label_field
        predictions_field = predictions_field or (manifest.model.field if manifest.model else None)
    return label_field or "ground_truth", predictions_field or "predictions"


@click.group("label-issues")
def label_issues() -> None:
    """Box-level label errors from a detector's predictions: overlooked, mislocated, spurious, duplicate and swapped
    boxes, each with a fix to accept (undoable), reject, or send to re-annotation."""


@label_issues.command("find")
@click.argument("dataset_name")
@click.option("--label-field", default=None, help="Detections field to check (default: the manifest's, else "
                                                  "ground_truth).")
@click.option("--predictions-field", default=None, help="Detections field of a detector's predictions, with "
                                                        "confidences (default: the manifest's model field, else "
                                                        "predictions).")
@click.option("--no-predictions", is_flag=True, help="Without a detector: duplicates and embedding swaps only.")
@click.option("--key", "embeddings_key", default=None,
              help="Object embeddings of the boxes: run the mislabel scan first, for the class-swap evidence.")
@_manifest_option
@tag_option
def issues_find(dataset_name, label_field, predictions_field, no_predictions, embeddings_key, manifest_path, tags):
    """Score every box and raise the likely errors as issue cards (saved view label_issues)."""
    from curate_loop.runs.label_issues import find_label_issues

    label_field, predictions_field = _fields(dataset_name, manifest_path, label_field, predictions_field)
    view = open_view(dataset_name, tags)
    with ProgressBar("label issues") as bar:
        summary = find_label_issues(view, label_field, None if no_predictions else predictions_field,
                                    embeddings_key=embeddings_key, progress=bar)
    kinds = ", ".join(f"{n} {kind}" for kind, n in summary.by_kind.items())
    click.echo(f"Scored {summary.scored_labels} labels of {label_field!r} on {summary.scored_samples} samples: "
               f"{summary.issues} label issues ({kinds}); saved view {summary.view_name!r}.")
    if summary.still_dismissed:
        click.echo(f"  {summary.still_dismissed} rejected or re-annotated before and unchanged: not raised again.")
    click.echo(f"  {summary.scoring_note}")
    for warning in summary.warnings:
        click.echo(f"  warning: {warning}")


@label_issues.command("list")
@click.argument("dataset_name")
@click.option("-n", "limit", type=click.IntRange(1), default=20, show_default=True)
def issues_list(dataset_name, limit):
    """The open issue cards, worst first: card id, kind, score, fix."""
    from curate_loop.runs.label_issues import open_issues

    rows = open_issues(open_view(dataset_name), limit)
    for row in rows:
        click.echo(f"{row['id']}  {row['kind']}  {row['score']:.3f}  {row['fix']}")
    if not rows:
        click.echo("No open label issues.")


_ids_argument = click.argument("issue_ids", nargs=-1, required=True)


@label_issues.command("accept")
@click.argument("dataset_name")
@_ids_argument
@click.option("--by", "changed_by", help="Who accepts (recorded on the label; default: your user name).")
def issues_accept(dataset_name, issue_ids, changed_by):
    """Apply the fix of ISSUE_IDS (card ids) to the labels; `undo` restores them."""
    from curate_loop.runs.label_issues import accept_issues

    count = accept_issues(open_view(dataset_name), list(issue_ids), changed_by=changed_by)
    click.echo(f"Accepted {count} fix(es); `curate-loop label-issues undo {dataset_name}` restores the labels.")


@label_issues.command("undo")
@click.argument("dataset_name")
@click.argument("issue_ids", nargs=-1)
def issues_undo(dataset_name, issue_ids):
    """Restore the labels of accepted ISSUE_IDS exactly (none given: the last accept)."""
    from curate_loop.runs.label_issues import undo_issue

    count = undo_issue(open_view(dataset_name), list(issue_ids) or None)
    click.echo(f"Undid {count} accepted fix(es); their cards are open again.")


@label_issues.command("reject")
@click.argument("dataset_name")
@_ids_argument
def issues_reject(dataset_name, issue_ids):
    """Mark ISSUE_IDS "not an error": not raised again until the label changes."""
    from curate_loop.runs.label_issues import reject_issues

    count = reject_issues(open_view(dataset_name), list(issue_ids))
    click.echo(f"Rejected {count} issue(s).")


@label_issues.command("reannotate")
@click.argument("dataset_name")
@_ids_argument
@click.option("--batch", default=None,
              help="Batch the Label Studio push takes (default: the loop manifest's mislabels.reannotate_batch, else "
                   "'reannotate'); the fix goes in field label_issue_fix as the pre-annotation.")
def issues_reannotate(dataset_name, issue_ids, batch):
    """Send the samples of ISSUE_IDS to re-annotation, with the fix as the pre-annotation."""
    from curate_loop.loop.runner import reannotate_batch_name
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.label_issues import (FIX_FIELD, ISSUES_FIELD, PUSH_MODEL_VERSION,
                                               send_issues_for_reannotation)

    dataset = open_dataset(dataset_name)
    batch = batch or reannotate_batch_name(dataset)
    count = send_issues_for_reannotation(dataset, list(issue_ids), batch_name=batch)
    label_field = dataset.select_labels(ids=list(issue_ids), fields=ISSUES_FIELD).values(
        f"{ISSUES_FIELD}.detections.label_field", unwind=True)[0]
    click.echo(f"Batch {batch!r} now holds {count} sample(s) for re-annotation; push it with the fixes as "
               f"pre-annotations: `curate-loop push {dataset_name} {batch} --label-field {label_field} "
               f"--predictions-field {FIX_FIELD} --pre-annotations predictions "
               f"--model-version '{PUSH_MODEL_VERSION}'`.")
