"""`curate-loop curate`: pick the next labeling batch, score edge cases, group near-duplicates, balanced subsets."""

from __future__ import annotations

import click

from .notices import echo_embedding_notice, echo_notices
from .options import ProgressBar, min_cluster_size_option, open_view, tag_option

# curate_loop.model.uncertainty.UNCERTAINTY_SCORES, not imported: the CLI starts without numpy (a test keeps them equal)
UNCERTAINTY_SCORES = ("margin", "least_confidence", "entropy")


@click.group()
def curate() -> None:
    """Curation: pick the next labeling batch, score edge cases, group near-duplicates."""


@curate.command("select")
@click.argument("dataset_name")
@click.argument("batch_name")
@click.option("-k", "--size", "k", type=click.IntRange(1), required=True, help="How many samples to pick.")
@click.option("--key", default="clip", show_default=True, help="Image embeddings run to pick with.")
@click.option("--strategy", type=click.Choice(["cluster_balanced", "typicality", "kcenter", "random"]),
              default="cluster_balanced", show_default=True)
@click.option("--label-field", help="Samples with labels here are labeled (default: ground_truth when present).")
@click.option("--class-field", help="Labels or predictions to measure class coverage with, when there are any.")
@min_cluster_size_option
@click.option("--predictions", "predictions_field", metavar="FIELD",
              help="A model's Classification or Detections field: the batch then weighs the model's uncertainty and "
                   "predicted classes with diversity (cluster_balanced strategy, once some samples are labeled).")
@click.option("--diversity", type=click.FloatRange(0), help="Strength of diversity (default: Objectives' default).")
@click.option("--uncertainty", type=click.FloatRange(0),
              help="Strength of the model's uncertainty (0: off; larger: fewer, more uncertain candidates).")
@click.option("--class-balance", type=click.FloatRange(0),
              help="Strength of predicted-class balance (0: off; larger: closer to a uniform share per class).")
@click.option("--uncertainty-score", type=click.Choice(UNCERTAINTY_SCORES),
              help="How predictions become uncertainty (default: margin; without logits least_confidence is used).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Pick an existing batch again (its samples go back to the pool).")
@tag_option
def curate_select(dataset_name, batch_name, k, key, strategy, label_field, class_field, min_cluster_size,
                  predictions_field, diversity, uncertainty, class_balance, uncertainty_score, seed, overwrite, tags):
    """Pick BATCH_NAME: K samples to label next, with a report against random picks of the same size."""
    from curate_loop.curation.objectives import Objectives
    from curate_loop.runs.curation import contributions_line, select_batch

    given = {"diversity": diversity, "uncertainty": uncertainty, "class_balance": class_balance,
             "uncertainty_score": uncertainty_score}
    objectives = Objectives(**{name: value for name, value in given.items() if value is not None})
    view = open_view(dataset_name, tags)
    with ProgressBar("curating") as bar:
        summary = select_batch(view, batch_name, k, key, strategy=strategy, label_field=label_field,
                               class_field=class_field, min_cluster_size=min_cluster_size, seed=seed,
                               overwrite=overwrite, progress=bar, predictions_field=predictions_field,
                               objectives=objectives)
    click.echo(f"Batch {summary.name!r}: {summary.picked} of {summary.pool_size} pool samples "
               f"({summary.strategy}); saved view {summary.view_name!r}.")
    echo_notices([summary.notice])
    click.echo(f"  mode: {summary.mode}")
    contributions = contributions_line(summary.contributions)
    if contributions:
        click.echo(f"  contributions: {contributions}")
    if summary.uncertainty.get("note"):
        click.echo(f"  note: {summary.uncertainty['note']}")
    pool = summary.pool
    click.echo(f"  labeled {pool['labeled']}, queued in earlier batches {pool['queued']}, near-duplicates set aside "
               f"{pool['excluded']}")
    click.echo(f"  clusters reached {summary.clusters_reached}/{summary.clusters}, sparse {summary.sparse_reached}/"
               f"{summary.sparse_clusters}; near-duplicates skipped {summary.near_duplicates_skipped}")
    for metric, row in summary.coverage.items():
        if isinstance(row, dict) and "ours" in row:
            click.echo(f"  {metric}: ours {row['ours']:.3f} vs random {row.get('random_mean', float('nan')):.3f}")
    sat = summary.saturation
    click.echo(f"  edge cases covered {sat['covered_before']:.0%} -> {sat['covered_after']:.0%} "
               f"(+{sat['gain']:.1%})")
    if summary.without_vectors:
        click.echo(f"  {summary.without_vectors} samples have no {key!r} vectors and were not considered: run "
                   f"`curate-loop embed compute {dataset_name} --key {key}` to add them.")
    if summary.report_path:
        click.echo(f"  report: {summary.report_path}")


@curate.command("edges")
@click.argument("dataset_name")
@click.option("--key", default="clip", show_default=True, help="Image or object embeddings run.")
@min_cluster_size_option
@tag_option
def curate_edges(dataset_name, key, min_cluster_size, tags):
    """Score edge cases (rare, outlying samples or objects); saved view edge_cases, highest first."""
    from curate_loop.runs.edges import score_edge_cases

    view = open_view(dataset_name, tags)
    with ProgressBar("edge cases") as bar:
        summary = score_edge_cases(view, key, min_cluster_size=min_cluster_size, progress=bar)
    click.echo(f"Scored {summary.scored} {summary.level}s: {summary.sparse_clusters} sparse of {summary.clusters} "
               f"clusters, {summary.noise} outliers; saved view {summary.view_name!r}.")
    echo_embedding_notice(view, key)


@curate.command("duplicates")
@click.argument("dataset_name")
@click.option("--key", default="clip", show_default=True, help="Image embeddings run.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.98, show_default=True,
              help="Cosine similarity from which two samples are near-duplicates.")
@tag_option
def curate_duplicates(dataset_name, key, threshold, tags):
    """Group near-duplicates and mark one to keep per group (batches skip the rest)."""
    from curate_loop.runs.duplicates import find_duplicates

    view = open_view(dataset_name, tags)
    with ProgressBar("near-duplicates") as bar:
        summary = find_duplicates(view, key, threshold=threshold, progress=bar)
    click.echo(f"{summary.groups} near-duplicate groups ({summary.in_groups} samples, {summary.redundant} redundant); "
               f"saved view {summary.view_name!r}.")
    echo_embedding_notice(view, key)


@curate.command("subset")
@click.argument("dataset_name")
@click.argument("name")
@click.option("-k", "--size", "k", type=click.IntRange(1), required=True)
@click.option("--label-field", default="ground_truth", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True)
@tag_option
def curate_subset(dataset_name, name, k, label_field, seed, overwrite, tags):
    """Tag a class- and object-balanced subset of labeled samples (e.g. a test set) as NAME."""
    from curate_loop.runs.curation import select_balanced_subset

    result = select_balanced_subset(open_view(dataset_name, tags), name, k, label_field, seed=seed,
                                    overwrite=overwrite)
    click.echo(f"Subset {name!r}: {result['picked']} samples; rarest class has {result['min_class_objects']} objects "
               f"(random subset: {result['min_class_objects_random']}); saved view 'subset_{name}'.")


@curate.command("list")
@click.argument("dataset_name")
def curate_list(dataset_name):
    """Batches so far, how much each added to edge-case coverage, and the saturation verdict on those numbers."""
    from curate_loop.runs.curation import saturation_history

    history = saturation_history(open_view(dataset_name))
    if not history["batches"]:
        click.echo("No batches yet: `curate-loop curate select DATASET NAME -k K`.")
        return
    for row in history["batches"]:
        click.echo(f"{row['name']}: edge cases covered {row['covered_before']:.0%} -> {row['covered_after']:.0%} "
                   f"(+{row['gain']:.1%})")
    click.echo(history["verdict"])
    echo_notices(history["notices"])


@curate.command("delete")
@click.argument("dataset_name")
@click.argument("batch_name")
def curate_delete(dataset_name, batch_name):
    """Delete a batch: its samples go back to the pool."""
    from curate_loop.runs.curation import delete_batch

    count = delete_batch(open_view(dataset_name), batch_name)
    click.echo(f"Deleted batch {batch_name!r}; {count} samples are back in the pool.")
