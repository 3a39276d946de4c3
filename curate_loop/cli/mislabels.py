"""`curate-loop mislabels`: find suspect labels, then accept, reject or send them to re-annotation."""

from __future__ import annotations

import click

from .notices import echo_embedding_notice
from .options import ProgressBar, open_view, tag_option

_field_option = click.option("--label-field", default="ground_truth", show_default=True,
                             help="Detections or Classification field to check.")


@click.group()
def mislabels() -> None:
    """Mislabel detection and review: find suspects, then accept, reject or send them to re-annotation."""


@mislabels.command("find")
@click.argument("dataset_name")
@_field_option
@click.option("--key", required=True, help="Object embeddings of the boxes (Detections) or image embeddings.")
@tag_option
def mislabels_find(dataset_name, label_field, key, tags):
    """Score every label, suggest a class, raise suspects (saved view mislabel_suspects)."""
    from curate_loop.runs.mislabels import find_mislabels

    view = open_view(dataset_name, tags)
    with ProgressBar("mislabels") as bar:
        summary = find_mislabels(view, label_field, key, progress=bar)
    click.echo(f"Scored {summary.scored} labels of {label_field!r}: {summary.suspects} suspects "
               f"({summary.still_rejected} rejected before and unchanged); saved view {summary.view_name!r}.")
    echo_embedding_notice(view, key)
    if summary.without_vectors:
        click.echo(f"  {summary.without_vectors} labels have no {key!r} vector: compute embeddings to score them.")
    for row in summary.noise_rates[:5]:
        click.echo(f"  estimated noise: {row['rate']:.1%} of true {row['true']!r} labeled {row['given']!r}")


@mislabels.command("list")
@click.argument("dataset_name")
@_field_option
@click.option("-n", "limit", type=click.IntRange(1), default=20, show_default=True)
def mislabels_list(dataset_name, label_field, limit):
    """The top suspects (label id, score, given -> suggested class)."""
    from curate_loop.runs.mislabels import noise_report, top_suspects

    dataset = open_view(dataset_name)
    report = noise_report(dataset, label_field)  # a clear error when there is no run yet
    rows = top_suspects(dataset, label_field, limit)
    for row in rows:
        click.echo(f"{row['label_id']}  {row['score']:.3f}  {row['given']} -> {row['suggested']}")
    if not rows:
        click.echo("No open suspects.")
    echo_embedding_notice(dataset, report.get("embeddings_key"))  # after the rows: scripts read the first column


def _review(dataset_name, label_field, label_ids, action, **kwargs):
    return action(open_view(dataset_name), label_field, list(label_ids), **kwargs)


@mislabels.command("accept")
@click.argument("dataset_name")
@click.argument("label_ids", nargs=-1, required=True)
@_field_option
@click.option("--by", "changed_by", help="Who accepts (recorded on the label; default: your user name).")
def mislabels_accept(dataset_name, label_ids, label_field, changed_by):
    """Relabel LABEL_IDS to their suggested class."""
    from curate_loop.runs.mislabels import accept_suggestions

    count = _review(dataset_name, label_field, label_ids, accept_suggestions, changed_by=changed_by)
    click.echo(f"Relabeled {count} label(s) to the suggested class.")


@mislabels.command("reject")
@click.argument("dataset_name")
@click.argument("label_ids", nargs=-1, required=True)
@_field_option
def mislabels_reject(dataset_name, label_ids, label_field):
    """Mark LABEL_IDS "not a mislabel" (not raised again unless they change)."""
    from curate_loop.runs.mislabels import reject_suspects

    count = _review(dataset_name, label_field, label_ids, reject_suspects)
    click.echo(f"Marked {count} label(s) as not mislabeled.")


@mislabels.command("reannotate")
@click.argument("dataset_name")
@click.argument("label_ids", nargs=-1, required=True)
@_field_option
@click.option("--batch", default=None,
              help="Batch the Label Studio push takes (default: the loop manifest's mislabels.reannotate_batch, which "
                   "`curate-loop run` pushes; else 'reannotate').")
def mislabels_reannotate(dataset_name, label_ids, label_field, batch):
    """Send LABEL_IDS to re-annotation: their samples join batch --batch."""
    from curate_loop.loop.runner import reannotate_batch_name
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.mislabels import send_for_reannotation

    batch = batch or reannotate_batch_name(open_dataset(dataset_name))
    count = _review(dataset_name, label_field, label_ids, send_for_reannotation, batch_name=batch)
    click.echo(f"Batch {batch!r} now holds {count} sample(s) for re-annotation.")
