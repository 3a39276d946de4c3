"""`make demo`: run what curate-loop can do so far on the bundled example, and say what it did.

Headless by default when there is no terminal (CI); with a terminal it keeps the FiftyOne App and
Label Studio running until Ctrl-C so you can look around. Grows with each capability.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from curate_loop.interrupt import wait_until_interrupted
from curate_loop.paths import curate_loop_home

DEMO_DATASET = "curate-loop-example"


def _step(message: str) -> None:
    click.secho(f"==> {message}", fg="cyan")


@click.command()
@click.option("--keep-running/--no-keep-running", default=None,
              help="Keep the App and Label Studio up until Ctrl-C (default: only with a terminal).")
@click.option("--labelstudio-data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Label Studio's data folder (default: ~/.curate-loop/labelstudio).")
@click.option("--app-port", type=click.IntRange(1, 65535), default=None, help="FiftyOne App port (default: free).")
@click.option("--rebuild", is_flag=True, help="Rebuild the example dataset even if it exists.")
def demo(keep_running: bool | None, labelstudio_data_dir: Path | None, app_port: int | None, rebuild: bool) -> None:
    """Run the curate-loop demo on the bundled example."""
    from curate_loop.adapters.labelstudio.server import free_port, start_label_studio
    from curate_loop.errors import CurateLoopError
    from curate_loop.examples.build import build_example_dataset
    from curate_loop.mongodb import connect
    from curate_loop.plugin_install import install_plugin
    from curate_loop.summary import summarize

    if keep_running is None:
        keep_running = sys.stdin.isatty()
    try:
        _step("Starting FiftyOne's embedded MongoDB")
        connect()
        import fiftyone as fo

        _step("Installing the curate-loop FiftyOne plugin")
        click.echo(f"    {install_plugin()}")

        media_dir = curate_loop_home() / "examples" / DEMO_DATASET
        if fo.dataset_exists(DEMO_DATASET) and not rebuild:
            _step(f"Reusing the example dataset {DEMO_DATASET!r} (pass --rebuild to regenerate it)")
            dataset = fo.load_dataset(DEMO_DATASET)
        else:
            _step("Building the example dataset: real scikit-learn digits composited on scikit-image photos")
            dataset = build_example_dataset(media_dir, name=DEMO_DATASET, overwrite=True)
        summary = summarize(dataset)
        click.echo(f"    {summary['samples']} samples ({summary['tags'].get('labeled', 0)} labeled, "
                   f"{summary['tags'].get('pool', 0)} in the unlabeled pool); "
                   f"ground_truth objects per class: {summary['labels_per_class']}")
        click.echo(f"    edge cases planted: {dataset.match({'example_kind': 'outlier'}).count()} outliers, "
                   f"{len(set(dataset.exists('near_dup_group').values('near_dup_group')))} near-duplicate groups")

        _run_curation_steps(dataset)

        _step("Starting a local Label Studio server (first start runs migrations, ~30 s)")
        server = start_label_studio(data_dir=labelstudio_data_dir or curate_loop_home() / "labelstudio",
                                    document_root=media_dir)
    except CurateLoopError as exc:
        click.secho(f"{type(exc).__name__}: {exc}", fg="red", err=True)
        sys.exit(1)

    with server:
        _step("Launching the FiftyOne App")
        session = fo.launch_app(dataset, remote=True, port=app_port or free_port(), address="127.0.0.1", auto=False)
        click.echo("")
        click.secho("The demo is ready:", fg="green", bold=True)
        click.echo(f"  FiftyOne App:  {session.url.rstrip('/')}/datasets/{DEMO_DATASET}")
        click.echo("                 press ` (backtick) and type 'curate-loop' to run our operators")
        click.echo(f"  Label Studio:  {server.url}   login {server.credentials.username} / {server.credentials.password}")
        click.echo(f"  Python:        fo.load_dataset({DEMO_DATASET!r})")
        click.echo("  In the App:    saved views batch_01 (the next batch), edge_cases, near_duplicates, mislabel_suspects")
        click.echo("Not in the demo yet: the Label Studio push/pull loop.")
        if keep_running:
            click.echo("Press Ctrl-C to stop the App and Label Studio.")
            wait_until_interrupted(server.is_running)
        session.close()
    click.echo("Demo finished; the dataset stays in FiftyOne for next time.")


def _run_curation_steps(dataset) -> None:
    """Embeddings, near-duplicates, edge cases, the next batch and a mislabel scan, as a user would run them.

    Offline the model has random weights (``pretrained: null`` in manifest.yml): every step runs for real, but
    the picks only mean something with pretrained weights (the quality figures are in ``make bench``).
    """
    from curate_loop.runs.curation import select_batch
    from curate_loop.runs.duplicates import find_duplicates
    from curate_loop.runs.edges import score_edge_cases
    from curate_loop.runs.embeddings import compute_embeddings
    from curate_loop.runs.maps import compute_map
    from curate_loop.runs.mislabels import find_mislabels
    from curate_loop.runs.similarity import build_similarity

    _step("Embedding the images (open_clip ViT-B-32; random weights offline) with the similarity index and map")
    summary = compute_embeddings(dataset, "clip", ["ViT-B-32"])
    build_similarity(dataset, "clip")
    compute_map(dataset, "clip")
    click.echo(f"    {summary.total_vectors} vectors ({summary.computed} computed now, {summary.skipped} reused)")
    _step("Grouping near-duplicates and scoring edge cases")
    dups = find_duplicates(dataset, "clip")
    edges = score_edge_cases(dataset, "clip")
    click.echo(f"    {dups.groups} near-duplicate groups; {edges.sparse_clusters} sparse clusters, {edges.noise} outliers")
    _step("Picking the next labeling batch (cluster-balanced, 50 samples) and writing its report")
    batch = select_batch(dataset, "batch_01", 50, "clip", overwrite=True)
    coverage = batch.coverage.get("cluster_coverage", {})
    click.echo(f"    clusters reached {batch.clusters_reached}/{batch.clusters} (random batches: "
               f"{coverage.get('random_mean', float('nan')):.0%} of clusters); report: {batch.report_path}")
    _step("Embedding the labeled boxes and scanning them for mislabels")
    labeled = dataset.match_tags("labeled")
    compute_embeddings(labeled, "boxes", ["ViT-B-32"], patches_field="ground_truth")
    scan = find_mislabels(labeled, "ground_truth", "boxes")
    click.echo(f"    {scan.scored} boxes scored, {scan.suspects} suspects to review")


if __name__ == "__main__":
    demo(prog_name="make demo")
