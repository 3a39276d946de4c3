"""The `curate-loop` command line: a thin click layer over the ``curate_loop`` package.

Errors we raise on purpose (:class:`CurateLoopError`) are caught once, here, and printed as
``ErrorName: message`` with exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from curate_loop.errors import CurateLoopError
from curate_loop.interrupt import wait_until_interrupted
from curate_loop.paths import curate_loop_home


class _CurateLoopGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CurateLoopError as exc:
            click.secho(f"{type(exc).__name__}: {exc}", fg="red", err=True)
            ctx.exit(1)


@click.group(cls=_CurateLoopGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (INFO level).")
def cli(verbose: bool) -> None:
    """curate-loop: embedding-based data curation for FiftyOne, synced with Label Studio."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
def doctor() -> None:
    """Check everything curate-loop needs; exit 1 and print the fix when something is broken."""
    from curate_loop.doctor import ALL_CHECKS, run_checks

    click.echo("curate-loop doctor")
    failed = 0
    for check in ALL_CHECKS:
        (result,) = run_checks([check])
        mark = click.style("ok  ", fg="green") if result.ok else click.style("FAIL", fg="red")
        click.echo(f"  {mark} {result.name:<18} {result.detail}")
        if not result.ok:
            failed += 1
            click.echo(f"       fix: {result.fix}")
    if failed:
        click.secho(f"{failed} check(s) failed.", fg="red")
        sys.exit(1)
    click.secho("Everything curate-loop needs is in place.", fg="green")


@cli.group()
def plugin() -> None:
    """The FiftyOne plugin (operators in the App)."""


@plugin.command("install")
@click.option("--plugins-dir", type=click.Path(file_okay=False, path_type=Path),
              help="FiftyOne's plugins dir (default: fo.config.plugins_dir / FIFTYONE_PLUGINS_DIR).")
@click.option("--copy", is_flag=True, help="Copy the plugin instead of linking it.")
@click.option("--force", is_flag=True, help="Replace a folder of the same name that is not ours.")
def plugin_install(plugins_dir: Path | None, copy: bool, force: bool) -> None:
    """Make the curate-loop operators visible in the FiftyOne App."""
    from curate_loop.plugin_install import install_plugin

    target = install_plugin(plugins_dir, copy=copy, force=force)
    click.echo(f"Installed the curate-loop plugin at {target}" + ("" if copy else f" -> {target.resolve()}"))
    click.echo("Restart a running FiftyOne App to see its operators (press ` in the App).")


@cli.group()
def labelstudio() -> None:
    """A local Label Studio server (the default for the demo and the tests)."""


@labelstudio.command("install")
@click.option("--venv", type=click.Path(file_okay=False, path_type=Path),
              help="Virtualenv to install into (default: .venv-labelstudio in a checkout, else ~/.curate-loop).")
def labelstudio_install(venv: Path | None) -> None:
    """Install the pinned Label Studio server into its own virtualenv (idempotent)."""
    from curate_loop.adapters.labelstudio.server import LABEL_STUDIO_VERSION, install_label_studio

    exe = install_label_studio(venv)
    click.echo(f"Label Studio {LABEL_STUDIO_VERSION} is installed: {exe}")


@labelstudio.command("serve")
@click.option("--port", type=click.IntRange(1, 65535), help="Loopback port (default: a free one).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Label Studio's data folder (default: ~/.curate-loop/labelstudio).")
@click.option("--media-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=".",
              show_default=True, help="Folder under which Label Studio may serve local media files.")
@click.option("--executable", type=click.Path(dir_okay=False, path_type=Path),
              help="A label-studio executable (default: curate-loop's own install).")
@click.option("--timeout", type=click.FloatRange(1), default=240, show_default=True,
              help="Seconds to wait for the server to answer.")
def labelstudio_serve(port, data_dir, media_root, executable, timeout) -> None:
    """Start a local Label Studio server, print its URL and token, and stop it on Ctrl-C."""
    from curate_loop.adapters.labelstudio.server import start_label_studio

    click.echo("Starting Label Studio (the first start runs its database migrations, ~30 s)...")
    server = start_label_studio(port=port, data_dir=data_dir or curate_loop_home() / "labelstudio",
                                document_root=media_root, executable=executable, timeout_s=timeout)
    with server:
        click.echo(f"Label Studio is running at {server.url}")
        click.echo(f"  login:    {server.credentials.username} / {server.credentials.password}")
        click.echo(f"  export LABEL_STUDIO_URL={server.url}")
        click.echo(f"  export LABEL_STUDIO_API_KEY={server.token}")
        click.echo(f"  data:     {server.data_dir}   media root: {server.document_root}")
        click.echo("Press Ctrl-C to stop.", nl=True)
        sys.stdout.flush()
        if not wait_until_interrupted(server.is_running):
            raise click.ClickException(f"Label Studio exited unexpectedly; see {server.log_path}")
        click.echo("Stopping Label Studio...")
    click.echo("Label Studio stopped.")


@cli.group()
def example() -> None:
    """The bundled example dataset (real digits on real photos)."""


@example.command("build")
@click.option("--name", default="curate-loop-example", show_default=True, help="FiftyOne dataset name.")
@click.option("--media-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the images (default: ~/.curate-loop/examples/<name>).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: same seed, same dataset.")
@click.option("--n-labeled", type=click.IntRange(0), default=150, show_default=True, help="Labeled canvases.")
@click.option("--n-pool", type=click.IntRange(0), default=450, show_default=True, help="Unlabeled pool canvases.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset and media folder of that name.")
def example_build(name, media_dir, seed, n_labeled, n_pool, overwrite) -> None:
    """Build the example dataset into FiftyOne (deterministic, nothing downloaded)."""
    from curate_loop.examples.build import build_example_dataset
    from curate_loop.examples.digits_canvas import ExampleSpec
    from curate_loop.mongodb import connect

    try:
        spec = ExampleSpec(n_labeled=n_labeled, n_pool=n_pool, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--n-pool") from exc
    connect()
    media_dir = media_dir or curate_loop_home() / "examples" / name
    with click.progressbar(length=100, label="Building the example") as bar:
        def progress(fraction: float, _label: str) -> None:
            bar.update(int(fraction * 100) - bar.pos)

        dataset = build_example_dataset(media_dir, name=name, spec=spec, overwrite=overwrite, progress=progress)
    n_objects = dataset.count("true_ground_truth.detections")
    click.echo(f"Built dataset {dataset.name!r}: {len(dataset)} samples ({n_labeled} labeled, {n_pool} pool), "
               f"{n_objects} objects; images in {media_dir}")


class _ProgressBar:
    """A CLI progress bar fed by the library's ``progress(fraction, label)`` callbacks."""

    def __init__(self, label: str):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, desc=label, unit="‰", bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")

    def __call__(self, fraction: float, label: str) -> None:
        self.bar.set_description_str(label[:60])
        self.bar.update(max(0, int(fraction * 1000) - self.bar.n))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


_tag_option = click.option("--tag", "tags", multiple=True, help="Only samples with this tag (repeatable).")
_min_cluster_size_option = click.option(
    "--min-cluster-size", type=click.IntRange(2), default=None,
    help="Smallest group that counts as a cluster (default: sqrt(pool size) / 3; lower it for finer clusters).")


@cli.group()
def embed() -> None:
    """Embeddings: compute (open_clip), import your own, index for similarity, map in 2-D."""


@embed.command("compute")
@click.argument("dataset_name")
@click.option("--key", default="clip", show_default=True, help="Name of the run; rerun to resume or add new samples.")
@click.option("--model", "models", multiple=True, default=["ViT-B-32"], show_default=True,
              help="open_clip NAME or NAME@PRETRAINED (tag or local checkpoint); repeat to combine models.")
@click.option("--objects", "patches_field", help="Embed the boxes of this Detections field instead of images.")
@click.option("--margin", type=click.FloatRange(0), default=0.1, show_default=True,
              help="Context added around each box, as a fraction of its size.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@_tag_option
@click.option("--index/--no-index", default=True, show_default=True, help="Build the similarity index.")
@click.option("--map/--no-map", "draw_map", default=True, show_default=True, help="Build the 2-D map.")
def embed_compute(dataset_name, key, models, patches_field, margin, batch_size, device, tags, index, draw_map):
    """Embed a dataset's images (or objects) and make them searchable in the App."""
    from curate_loop.runs.datasets import open_dataset, tagged_view
    from curate_loop.runs.embeddings import compute_embeddings

    view = tagged_view(open_dataset(dataset_name), tags)
    with _ProgressBar("embedding") as bar:
        summary = compute_embeddings(view, key, list(models), patches_field=patches_field, margin=margin,
                                     batch_size=batch_size, device=device, progress=bar)
    click.echo(f"Embeddings {key!r}: {summary.computed} computed, {summary.skipped} already stored, "
               f"{len(summary.failed)} failed; {summary.total_vectors} vectors of {summary.dim} dims.")
    for item_id, reason in list(summary.failed.items())[:5]:
        click.echo(f"  failed {item_id}: {reason}")
    _index_and_map(view, key, index, draw_map)


def _index_and_map(view, key, index: bool, draw_map: bool) -> None:
    from curate_loop.runs.maps import compute_map
    from curate_loop.runs.similarity import build_similarity

    if index:
        brain_key = build_similarity(view, key)
        click.echo(f"Similarity index {brain_key!r} is ready: sort by similarity in the App.")
    if draw_map:
        with _ProgressBar("map") as bar:
            brain_key = compute_map(view, key, progress=bar)
        click.echo(f"2-D map {brain_key!r} is ready: open the Embeddings panel in the App.")


@embed.command("import")
@click.argument("dataset_name")
@click.argument("key")
@click.argument("source")
@click.option("--objects", "patches_field", help="The vectors belong to the boxes of this Detections field.")
@_tag_option
def embed_import(dataset_name, key, source, patches_field, tags):
    """Bring your own vectors: SOURCE is a .npy file (one row per sample, in dataset order) or a field name."""
    from curate_loop.runs.datasets import open_dataset, tagged_view
    from curate_loop.runs.embeddings import import_embeddings

    view = tagged_view(open_dataset(dataset_name), tags)
    summary = import_embeddings(view, key, source, patches_field=patches_field)
    click.echo(f"Embeddings {key!r}: {summary.computed} imported, {summary.skipped} already stored, "
               f"{summary.dim} dims.")


@embed.command("index")
@click.argument("dataset_name")
@click.argument("key")
@click.option("--map/--no-map", "draw_map", default=True, show_default=True, help="Also build the 2-D map.")
def embed_index(dataset_name, key, draw_map):
    """(Re)build the similarity index and the 2-D map of an embeddings run."""
    from curate_loop.runs.datasets import open_dataset

    _index_and_map(open_dataset(dataset_name), key, True, draw_map)


@embed.command("list")
@click.argument("dataset_name")
def embed_list(dataset_name):
    """The embeddings runs of a dataset."""
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.embeddings import list_embeddings

    rows = list_embeddings(open_dataset(dataset_name))
    if not rows:
        click.echo("No embeddings yet: `curate-loop embed compute DATASET`.")
    for row in rows:
        what = ", ".join(f"{m['name']}@{m['pretrained'] or 'random'}" for m in row["models"] or []) or row["source"]
        on = row["patches_field"] or "images"
        click.echo(f"{row['key']:<16} {row['status']:<9} {row['vectors']:>8} x {row['dim']:<5} {on:<14} {what} "
                   f"({row['failures']} failed)")


@embed.command("delete")
@click.argument("dataset_name")
@click.argument("key")
def embed_delete(dataset_name, key):
    """Delete an embeddings run and its vectors."""
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.embeddings import delete_embeddings

    delete_embeddings(open_dataset(dataset_name), key)
    click.echo(f"Deleted embeddings {key!r}.")


@cli.group()
def search() -> None:
    """Saved similarity searches: keep a query under a name, score new samples with it later."""


@search.command("save")
@click.argument("dataset_name")
@click.argument("name")
@click.option("--key", required=True, help="The embeddings run to search in.")
@click.option("--text", help="A text prompt (CLIP models).")
@click.option("--example", "examples", multiple=True, help="An example sample (or label) id; repeatable.")
def search_save(dataset_name, name, key, text, examples):
    """Save a search from example ids or a text prompt."""
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.searches import save_search

    save_search(open_dataset(dataset_name), name, key, example_ids=list(examples) or None, text=text)
    click.echo(f"Saved search {name!r}.")


@search.command("apply")
@click.argument("dataset_name")
@click.argument("name")
@_tag_option
def search_apply(dataset_name, name, tags):
    """Score the (tagged) samples with a saved search; higher is more similar."""
    from curate_loop.runs.datasets import open_dataset, tagged_view
    from curate_loop.runs.searches import apply_search

    view = tagged_view(open_dataset(dataset_name), tags)
    field = apply_search(view, name)
    click.echo(f"Scores written to {field!r}; sort by it in the App.")


@cli.group()
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
@_min_cluster_size_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Pick an existing batch again (its samples go back to the pool).")
@_tag_option
def curate_select(dataset_name, batch_name, k, key, strategy, label_field, class_field, min_cluster_size, seed,
                  overwrite, tags):
    """Pick BATCH_NAME: K samples to label next, with a report against random picks of the same size."""
    from curate_loop.runs.curation import select_batch
    from curate_loop.runs.datasets import open_dataset, tagged_view

    view = tagged_view(open_dataset(dataset_name), tags)
    with _ProgressBar("curating") as bar:
        summary = select_batch(view, batch_name, k, key, strategy=strategy, label_field=label_field,
                               class_field=class_field, min_cluster_size=min_cluster_size, seed=seed,
                               overwrite=overwrite, progress=bar)
    click.echo(f"Batch {summary.name!r}: {summary.picked} of {summary.pool_size} pool samples "
               f"({summary.strategy}); saved view {summary.view_name!r}.")
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
@_min_cluster_size_option
@_tag_option
def curate_edges(dataset_name, key, min_cluster_size, tags):
    """Score edge cases (rare, outlying samples or objects); saved view edge_cases, highest first."""
    from curate_loop.runs.datasets import open_dataset, tagged_view
    from curate_loop.runs.edges import score_edge_cases

    view = tagged_view(open_dataset(dataset_name), tags)
    with _ProgressBar("edge cases") as bar:
        summary = score_edge_cases(view, key, min_cluster_size=min_cluster_size, progress=bar)
    click.echo(f"Scored {summary.scored} {summary.level}s: {summary.sparse_clusters} sparse of {summary.clusters} "
               f"clusters, {summary.noise} outliers; saved view {summary.view_name!r}.")


@curate.command("duplicates")
@click.argument("dataset_name")
@click.option("--key", default="clip", show_default=True, help="Image embeddings run.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=0.98, show_default=True,
              help="Cosine similarity from which two samples are near-duplicates.")
@_tag_option
def curate_duplicates(dataset_name, key, threshold, tags):
    """Group near-duplicates and mark one to keep per group (batches skip the rest)."""
    from curate_loop.runs.datasets import open_dataset, tagged_view
    from curate_loop.runs.duplicates import find_duplicates

    view = tagged_view(open_dataset(dataset_name), tags)
    with _ProgressBar("near-duplicates") as bar:
        summary = find_duplicates(view, key, threshold=threshold, progress=bar)
    click.echo(f"{summary.groups} near-duplicate groups ({summary.in_groups} samples, {summary.redundant} redundant); "
               f"saved view {summary.view_name!r}.")


@curate.command("subset")
@click.argument("dataset_name")
@click.argument("name")
@click.option("-k", "--size", "k", type=click.IntRange(1), required=True)
@click.option("--label-field", default="ground_truth", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True)
@_tag_option
def curate_subset(dataset_name, name, k, label_field, seed, overwrite, tags):
    """Tag a class- and object-balanced subset of labeled samples (e.g. a test set) as NAME."""
    from curate_loop.runs.curation import select_balanced_subset
    from curate_loop.runs.datasets import open_dataset, tagged_view

    view = tagged_view(open_dataset(dataset_name), tags)
    result = select_balanced_subset(view, name, k, label_field, seed=seed, overwrite=overwrite)
    click.echo(f"Subset {name!r}: {result['picked']} samples; rarest class has {result['min_class_objects']} objects "
               f"(random subset: {result['min_class_objects_random']}); saved view 'subset_{name}'.")


@curate.command("list")
@click.argument("dataset_name")
def curate_list(dataset_name):
    """Batches so far and how much each added to edge-case coverage."""
    from curate_loop.runs.curation import saturation_history
    from curate_loop.runs.datasets import open_dataset

    history = saturation_history(open_dataset(dataset_name))
    if not history["batches"]:
        click.echo("No batches yet: `curate-loop curate select DATASET NAME -k K`.")
        return
    for row in history["batches"]:
        click.echo(f"{row['name']}: edge cases covered {row['covered_before']:.0%} -> {row['covered_after']:.0%} "
                   f"(+{row['gain']:.1%})")
    if history["saturated"]:
        click.echo("Edge cases are saturated: recent batches add little coverage of the sparse region.")


@curate.command("delete")
@click.argument("dataset_name")
@click.argument("batch_name")
def curate_delete(dataset_name, batch_name):
    """Delete a batch: its samples go back to the pool."""
    from curate_loop.runs.curation import delete_batch
    from curate_loop.runs.datasets import open_dataset

    count = delete_batch(open_dataset(dataset_name), batch_name)
    click.echo(f"Deleted batch {batch_name!r}; {count} samples are back in the pool.")


@cli.group()
def mislabels() -> None:
    """Mislabel detection and review: find suspects, then accept, reject or send them to re-annotation."""


_field_option = click.option("--label-field", default="ground_truth", show_default=True,
                             help="Detections or Classification field to check.")


@mislabels.command("find")
@click.argument("dataset_name")
@_field_option
@click.option("--key", required=True, help="Object embeddings of the boxes (Detections) or image embeddings.")
@_tag_option
def mislabels_find(dataset_name, label_field, key, tags):
    """Score every label, suggest a class, raise suspects (saved view mislabel_suspects)."""
    from curate_loop.runs.datasets import open_dataset, tagged_view
    from curate_loop.runs.mislabels import find_mislabels

    view = tagged_view(open_dataset(dataset_name), tags)
    with _ProgressBar("mislabels") as bar:
        summary = find_mislabels(view, label_field, key, progress=bar)
    click.echo(f"Scored {summary.scored} labels of {label_field!r}: {summary.suspects} suspects "
               f"({summary.still_rejected} rejected before and unchanged); saved view {summary.view_name!r}.")
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
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.mislabels import noise_report, top_suspects

    dataset = open_dataset(dataset_name)
    noise_report(dataset, label_field)  # a clear error when there is no run yet
    rows = top_suspects(dataset, label_field, limit)
    for row in rows:
        click.echo(f"{row['label_id']}  {row['score']:.3f}  {row['given']} -> {row['suggested']}")
    if not rows:
        click.echo("No open suspects.")


def _review(dataset_name, label_field, label_ids, action, **kwargs):
    from curate_loop.runs.datasets import open_dataset

    return action(open_dataset(dataset_name), label_field, list(label_ids), **kwargs)


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
@click.option("--batch", default="reannotate", show_default=True, help="Batch the Label Studio push takes.")
def mislabels_reannotate(dataset_name, label_ids, label_field, batch):
    """Send LABEL_IDS to re-annotation: their samples join batch --batch."""
    from curate_loop.runs.mislabels import send_for_reannotation

    count = _review(dataset_name, label_field, label_ids, send_for_reannotation, batch_name=batch)
    click.echo(f"Batch {batch!r} now holds {count} sample(s) for re-annotation.")


# -- Label Studio sync: push a batch, pull annotations back, batch status ------------------------------------------
_ls_url_option = click.option("--url", envvar="LABEL_STUDIO_URL", help="Label Studio URL (default: $LABEL_STUDIO_URL).")
# The key comes from the environment only, so it never lands in shell history or process lists.


@cli.command("push")
@click.argument("dataset_name")
@click.argument("batch")
@click.option("--label-field", required=True, help="Detections or Classification field sent as pre-annotations.")
@_ls_url_option
@click.option("--document-root", type=click.Path(exists=True, file_okay=False),
              help="The server's local-files root (default: $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT).")
@click.option("--chunk-size", type=click.IntRange(1), default=1000, show_default=True, help="Tasks per import request.")
def ls_push(dataset_name, batch, label_field, url, document_root, chunk_size):
    """Push BATCH of DATASET_NAME to Label Studio (safe to re-run: no task is ever created twice)."""
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.labelstudio import push_batch

    dataset = open_dataset(dataset_name)
    with _ProgressBar("pushing") as bar:
        summary = push_batch(dataset, batch, label_field, url=url, document_root=document_root,
                             chunk_size=chunk_size, progress=bar)
    click.echo(f"Batch {batch!r}: {summary.tasks} tasks in project {summary.project_id} ({summary.project_title!r}) "
               f"at {summary.url}: {summary.created} new, {summary.already_there} already there"
               + (f", {summary.duplicates_deleted} duplicates removed" if summary.duplicates_deleted else "") + ".")
    click.echo(f"  open: {summary.url}/projects/{summary.project_id}/data?tab={summary.view_id}")


@cli.command("pull")
@click.argument("dataset_name")
@click.argument("batch")
@click.option("--policy", type=click.Choice(["latest", "majority", "agreement"]), default="latest", show_default=True,
              help="How to reconcile several annotators of a task.")
@_ls_url_option
def ls_pull(dataset_name, batch, policy, url):
    """Apply the finished annotations of BATCH back to DATASET_NAME (everything is read before anything is written)."""
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.labelstudio import pull_batch

    dataset = open_dataset(dataset_name)
    with _ProgressBar("pulling") as bar:
        summary = pull_batch(dataset, batch, policy=policy, url=url, progress=bar)
    click.echo(f"Batch {batch!r}: {summary.applied} annotated tasks applied ({policy}), {summary.changed_samples} "
               f"samples changed: {summary.labels_updated} labels updated, {summary.labels_added} added, "
               f"{summary.labels_removed} removed; {summary.cancelled} cancelled annotations skipped.")
    for conflict in summary.conflicts[:10]:
        click.echo(f"  conflict: task {conflict['task']} (sample {conflict['sample']}): {conflict['reason']}")
    if summary.conflicts:
        click.echo(f"  {len(summary.conflicts)} conflicting tasks were left unapplied; resolve them in Label Studio "
                   "or pull with --policy latest/majority.")


@labelstudio.command("status")
@click.argument("dataset_name")
@_ls_url_option
def ls_status(dataset_name, url):
    """State of each pushed batch of DATASET_NAME: pushed, in_progress, annotated or pulled."""
    from curate_loop.runs.datasets import open_dataset
    from curate_loop.runs.labelstudio import batch_status, list_pushed_batches

    dataset = open_dataset(dataset_name)
    batches = list_pushed_batches(dataset)
    if not batches:
        click.echo(f"No batch of {dataset_name!r} was pushed to Label Studio yet.")
    for batch in batches:
        s = batch_status(dataset, batch, url=url)
        counts = (f"{s['finished']}/{s['tasks']} finished, {s['cancelled']} cancelled" if s.get("server") == "ok"
                  else f"{s['tasks']} tasks (server unreachable: last recorded state)")
        click.echo(f"{batch:<20} {s['state']:<12} {counts}  project {s['project_id']} field {s['label_field']}")


@cli.command("run")
@click.argument("manifest_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--simulate-annotator", is_flag=True,
              help="Answer the pushed tasks from the kept-aside true labels (marked as simulated), for headless loops.")
@click.option("--truth-field", default="true_ground_truth", show_default=True,
              help="Where the simulated annotator reads the true labels.")
def run_loop(manifest_path, simulate_annotator, truth_field):
    """One loop iteration: pull finished batches, embed what is new, scan for mislabels, curate and push the next
    batch. Safe to re-run at any point."""
    from curate_loop.loop.manifest import load_manifest
    from curate_loop.loop.runner import run_iteration

    manifest = load_manifest(manifest_path)
    with _ProgressBar("loop") as bar:
        summary = run_iteration(manifest, simulate_annotator=simulate_annotator, truth_field=truth_field,
                                api_key=os.environ.get("LABEL_STUDIO_API_KEY"), progress=bar)
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


@cli.command("status")
@click.argument("manifest_path", type=click.Path(dir_okay=False, path_type=Path))
def loop_status(manifest_path):
    """Loop iterations so far and the state of every batch in Label Studio."""
    from curate_loop.loop.manifest import load_manifest
    from curate_loop.loop.runner import status

    state = status(load_manifest(manifest_path), api_key=os.environ.get("LABEL_STUDIO_API_KEY"))
    if not state["iterations"]:
        click.echo(f"No iterations on {state['dataset']!r} yet: `curate-loop run {manifest_path}`.")
    for it in state["iterations"]:
        click.echo(f"iteration {it['iteration']}: batch {it['batch']} ({it['selected']} samples), pulled "
                   f"{sorted(it['pulled']) or '-'}, suspects {it['suspects'] if it['suspects'] is not None else '-'}")
    for b in state["batches"]:
        click.echo(f"batch {b['batch']}: {b['state']} ({b['tasks']} tasks, {b.get('finished', '?')} finished)")
    if state.get("report_path"):
        click.echo(f"Loop report: {state['report_path']}")


def main() -> None:
    cli(prog_name="curate-loop")


if __name__ == "__main__":
    main()
