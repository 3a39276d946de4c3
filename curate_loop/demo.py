"""`make demo`: the whole curation loop on the bundled example, and where to look.

Embeddings, the similarity index and map, near-duplicates and edge cases; then the loop driven by the repository's
``manifest.yml`` against a local Label Studio server: iteration 1 picks and pushes a batch; with
``--simulate-annotator`` its tasks are answered from the example's kept-aside true labels (marked as simulated) and
iteration 2 pulls them back, scans for mislabels, and pushes the next batch, which is left for you to annotate.

Headless by default when there is no terminal (CI); with a terminal it keeps the FiftyOne App and
Label Studio running until Ctrl-C so you can look around.
"""

from __future__ import annotations

import os
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
@click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("manifest.yml"), show_default=True, help="The loop's manifest (its dataset is the example).")
@click.option("--simulate-annotator", is_flag=True,
              help="Answer the first batch from the kept-aside true labels (marked as simulated) and pull it back.")
def demo(keep_running: bool | None, labelstudio_data_dir: Path | None, app_port: int | None, rebuild: bool,
         manifest_path: Path, simulate_annotator: bool) -> None:
    """Run the curate-loop demo on the bundled example."""
    from curate_loop.adapters.labelstudio.server import free_port, start_label_studio
    from curate_loop.errors import CurateLoopError
    from curate_loop.examples.build import build_example_dataset
    from curate_loop.loop.manifest import load_manifest
    from curate_loop.mongodb import connect
    from curate_loop.plugin_install import install_plugin
    from curate_loop.summary import summarize

    if keep_running is None:
        keep_running = sys.stdin.isatty()
    try:
        manifest = load_manifest(manifest_path)
        if manifest.dataset != DEMO_DATASET:
            raise click.UsageError(f"{manifest_path} drives {manifest.dataset!r}; the demo needs {DEMO_DATASET!r}.")
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
        click.echo(f"    {summary['samples']} samples ({summary['labeled_samples']} labeled, "
                   f"{summary['samples'] - summary['labeled_samples']} in the unlabeled pool); "
                   f"ground_truth objects per class: {summary['labels_per_class']}")
        click.echo(f"    edge cases planted: {dataset.match({'example_kind': 'outlier'}).count()} outliers, "
                   f"{len(set(dataset.exists('near_dup_group').values('near_dup_group')))} near-duplicate groups")

        _run_curation_steps(dataset, manifest)

        _step("Starting a local Label Studio server (first start runs migrations, ~30 s)")
        server = start_label_studio(data_dir=labelstudio_data_dir or curate_loop_home() / "labelstudio",
                                    document_root=media_dir)
    except CurateLoopError as exc:
        click.secho(f"{type(exc).__name__}: {exc}", fg="red", err=True)
        sys.exit(1)

    with server:
        from curate_loop.adapters.labelstudio.keyfile import write_env_file

        key_file = write_env_file(server.url, server.token)
        # the App's loop panel and the push/pull operators read these (plugin secrets are environment variables)
        os.environ.update(LABEL_STUDIO_URL=server.url, LABEL_STUDIO_API_KEY=server.token,
                          LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(server.document_root),
                          CURATE_LOOP_MANIFEST=str(manifest_path.resolve()))
        try:
            pending = _run_loop(manifest, server, simulate_annotator)
        except CurateLoopError as exc:
            click.secho(f"{type(exc).__name__}: {exc}", fg="red", err=True)
            sys.exit(1)
        dataset.reload()
        session = None
        if keep_running:  # headless (CI) the demo stops right away: an App nobody can open is only noise
            _step("Launching the FiftyOne App")
            from curate_loop.quiet import app_launch_messages_silenced

            with app_launch_messages_silenced():  # the URL is printed below, once
                session = fo.launch_app(dataset, remote=True, port=app_port or free_port(), address="127.0.0.1",
                                        auto=False)
        click.echo("")
        click.secho("The demo is ready:", fg="green", bold=True)
        if session is not None:
            click.echo(f"  FiftyOne App:  {session.url.rstrip('/')}/datasets/{DEMO_DATASET}")
        else:
            click.echo(f"  FiftyOne App:  not started (headless); `fiftyone app launch {DEMO_DATASET}` opens it")
        click.echo("                 press ` (backtick) and type 'curate-loop' to run our operators")
        click.echo(f"  Label Studio:  {server.url}   login {server.credentials.username} / {server.credentials.password}")
        click.echo(f"  Other shells:  source {key_file}   (the URL and API key; curate-loop commands also read it)")
        click.echo(f"  Python:        fo.load_dataset({DEMO_DATASET!r})")
        click.echo("  In the App:    '+' next to Samples -> Curation loop (iterations, batches, suspects, next step);")
        click.echo("                 saved views batch_NN, edge_cases, near_duplicates, mislabel_suspects, label_issues")
        if pending:
            click.echo(f"  Your turn:     annotate {pending['batch']} at {pending['tab_url']}, then press 'Pull finished "
                       "batches' in the panel (or run `curate-loop run manifest.yml` for the next iteration)")
        if keep_running:
            click.echo("Press Ctrl-C to stop the App and Label Studio.")
            wait_until_interrupted(server.is_running)
        if session is not None:
            session.close()
    click.echo("Demo finished; the dataset stays in FiftyOne for next time.")


def _run_curation_steps(dataset, manifest) -> None:
    """Embeddings with the similarity index and map, near-duplicates and edge cases, as a user would run them.

    The models are the manifest's (pretrained open_clip) when their weights can be had, else its fallback, the
    offline classical model (:mod:`curate_loop.loop.embedding_models`); the output says which.
    """
    from curate_loop.loop.embedding_models import choose_models
    from curate_loop.runs.duplicates import find_duplicates
    from curate_loop.runs.edges import score_edge_cases
    from curate_loop.runs.embeddings import compute_embeddings, random_weights_notice
    from curate_loop.runs.maps import compute_map
    from curate_loop.runs.similarity import build_similarity

    key = manifest.embeddings.key
    specs, note = choose_models(dataset, manifest, key)
    _step(f"Embedding the images with {', '.join(s.key for s in specs)}, with the similarity index and map")
    if note:
        click.secho(f"    {note}", fg="yellow")
    summary = compute_embeddings(dataset, key, specs, quality=manifest.quality.enabled)  # one decode: both measured
    build_similarity(dataset, key, backend=manifest.similarity.backend, uri=manifest.similarity.uri)
    compute_map(dataset, key)
    click.echo(f"    {summary.total_vectors} vectors ({summary.computed} computed now, {summary.skipped} reused)")
    notice = random_weights_notice(dataset, key)
    if notice:
        click.secho(f"    {notice}", fg="yellow")
    _step("Grouping near-duplicates and scoring edge cases")
    dups = find_duplicates(dataset, key)
    edges = score_edge_cases(dataset, key)
    click.echo(f"    {dups.groups} near-duplicate groups; {edges.sparse_clusters} sparse clusters, {edges.noise} outliers")
    click.echo(f"    example truth check: {_planted_groups_found(dataset)}; {_planted_outliers_found(dataset)}")


def _planted_outliers_found(dataset, share: float = 0.05) -> str:
    """How many of the example's planted outliers have an edge score in the pool's top ``share``."""
    from curate_loop.runs.edges import EDGE_FIELD

    kinds, scores = dataset.exists(EDGE_FIELD).values(["example_kind", EDGE_FIELD])
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[:max(1, int(share * len(scores)))]
    hits = sum(kinds[i] == "outlier" for i in top)
    return f"{hits} of the {kinds.count('outlier')} planted outliers in the top {share:.0%} of edge scores"


def _planted_groups_found(dataset) -> str:
    """How the near-duplicate groups found compare with the ones the example planted (its kept-aside truth)."""
    from curate_loop.runs.duplicates import DUP_GROUP_FIELD

    planted, found = dataset.values(["near_dup_group", DUP_GROUP_FIELD])
    members: dict = {}
    for p, f in zip(planted, found):
        if f is not None:
            members.setdefault(f, []).append(p)
    pure = [m[0] for m in members.values() if m[0] is not None and all(q == m[0] for q in m)]
    exact, extra = set(pure), len(members) - len(pure)
    n_planted = len({p for p in planted if p is not None})
    return f"{len(exact)} of the {n_planted} planted near-duplicate groups found, {extra} other groups"


def _planted_noise_found(manifest, top: int = 20) -> str:
    """How many of the labels the example planted wrong are among the scan's top suspects (kept-aside truth)."""
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.mislabels import top_suspects

    dataset = open_dataset(manifest.dataset)
    planted = {i for ids in dataset.exists("planted_noise").values("planted_noise") for i in ids or []}
    suspects = [row["label_id"] for row in top_suspects(dataset, manifest.label_field, limit=top)]
    hits = len(planted.intersection(suspects))
    return f"{hits} of the top {len(suspects)} suspects are among the {len(planted)} labels the example planted wrong"


def _run_loop(manifest, server, simulate_annotator: bool) -> dict | None:
    """One loop iteration, or two with the simulated annotator (answer, then pull back and push the next batch).
    Returns the state of the batch left for a person to annotate, if any."""
    from curate_loop.loop.runner import run_iteration
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.labelstudio import batch_status

    plan = [True, False] if simulate_annotator else [False]
    summary = None
    for simulate in plan:
        _step("Running a loop iteration (`curate-loop run manifest.yml`): pull, embed, scan, curate, push")
        summary = run_iteration(manifest, simulate_annotator=simulate, url=server.url, api_key=server.token)
        for notice in summary.notices:
            click.secho(f"    {notice}", fg="yellow")
        for batch, counts in summary.pulled.items():
            click.echo(f"    pulled {batch}: {counts.get('applied', 0)} tasks, {counts.get('labels_updated', 0)} labels "
                       f"corrected, {counts.get('labels_added', 0)} added, {counts.get('labels_removed', 0)} removed")
            totals = (counts.get("model_assist") or {}).get("totals") or {}
            if totals.get("predicted"):
                click.echo(f"    model assist on {batch}: {totals.get('accepted', 0)} of {totals['predicted']} "
                           f"pre-annotated regions accepted as they were, {totals.get('relabeled', 0)} relabeled, "
                           f"{totals.get('moved', 0)} moved, {totals.get('deleted', 0)} deleted; "
                           f"{totals.get('added', 0)} drawn by hand")
        if summary.model:
            from curate_loop.cli.loop import model_line

            click.echo(f"  {model_line(summary.model)}")
        if summary.suspects is not None:
            click.echo(f"    mislabel scan: {summary.suspects} suspects to review")
            click.echo(f"    example truth check: {_planted_noise_found(manifest)}")
        if summary.label_issues is not None:
            click.echo(f"    box-level label issues (missing, mislocated, spurious, duplicate, swapped boxes): "
                       f"{summary.label_issues} to review in the label_issues view")
        if summary.quality is not None:
            click.echo(f"    data quality: {summary.quality.get('excluded', 0)} samples kept out of batches "
                       f"({summary.quality.get('unreadable', 0)} unreadable)")
        click.echo(f"    iteration {summary.iteration}: picked {summary.selected} samples for {summary.batch} "
                   f"({summary.batch_mode}), {summary.pushed} new tasks in Label Studio; report: {summary.report_path}")
        if summary.simulated_answers:
            click.secho(f"    SIMULATED annotator answered {summary.simulated_answers} tasks from the kept-aside true "
                        "labels", fg="yellow")
    click.echo(f"    loop report (saturation curve, label changes): {summary.loop_report_path}")
    if not summary.selected or summary.simulated_answers:
        return None
    return batch_status(open_dataset(manifest.dataset), summary.batch, url=server.url, api_key=server.token)


if __name__ == "__main__":
    demo(prog_name="make demo")
