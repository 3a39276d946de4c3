"""`curate-loop embed`: compute (open_clip) or import embeddings, index them for similarity, map them in 2-D."""

from __future__ import annotations

import click

from .notices import echo_embedding_notice
from .options import ProgressBar, open_view, tag_option


@click.group()
def embed() -> None:
    """Embeddings: compute (open_clip), import your own, index for similarity, map in 2-D."""


def similarity_options(command):
    """``--similarity-backend`` and ``--milvus-uri``: where the similarity index lives."""
    command = click.option("--milvus-uri", help="Milvus Lite file (*.db) or server URL (http://HOST:19530); default: "
                           "a Milvus Lite file per dataset under the curate-loop home.")(command)
    return click.option("--similarity-backend", type=click.Choice(["faiss", "milvus"]), default="faiss",
                        show_default=True, help="Index for sort by similarity: faiss files on this machine, or "
                        "Milvus (pip install 'curate-loop[milvus]').")(command)


@embed.command("compute")
@click.argument("dataset_name")
@click.option("--key", default="clip", show_default=True, help="Name of the run; rerun to resume or add new samples.")
@click.option("--model", "models", multiple=True, default=["ViT-B-32"], show_default=True,
              help="open_clip NAME or NAME@PRETRAINED (tag or local checkpoint), or classical (offline HOG + colour); "
                   "repeat to combine models.")
@click.option("--objects", "patches_field", help="Embed the boxes of this Detections field instead of images.")
@click.option("--margin", type=click.FloatRange(0), default=0.1, show_default=True,
              help="Context added around each box, as a fraction of its size.")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
@tag_option
@click.option("--index/--no-index", default=True, show_default=True, help="Build the similarity index.")
@click.option("--map/--no-map", "draw_map", default=True, show_default=True, help="Build the 2-D map.")
@similarity_options
@click.option("--quality", is_flag=True, help="Also measure data quality (dark, blurry, duplicates...) in the same "
              "decode: `curate-loop quality list` then shows the issues.")
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where decoding and the model run: this process, or a Ray actor pool "
                   "(pip install 'curate-loop[ray]'; images only).")
@click.option("--ray-address", help="backend ray: a running cluster (HOST:PORT, ray://HOST:10001, auto); "
              "default: a local cluster for this run.")
@click.option("--ray-actors", type=click.IntRange(1), help="backend ray: actors in the pool (default: one per GPU, "
              "else one per node's cores).")
def embed_compute(dataset_name, key, models, patches_field, margin, batch_size, device, tags, index, draw_map,
                  quality, similarity_backend, milvus_uri, backend, ray_address, ray_actors):
    """Embed a dataset's images (or objects) and make them searchable in the App."""
    from curate_loop.runs.embeddings import compute_embeddings

    if quality and patches_field:
        raise click.UsageError("--quality measures images; embed them without --objects (box checks: "
                               "`curate-loop quality compute`).")
    if backend != "ray" and (ray_address or ray_actors):
        raise click.UsageError("--ray-address and --ray-actors need --backend ray.")
    view = open_view(dataset_name, tags)
    with ProgressBar("embedding") as bar:
        summary = compute_embeddings(view, key, list(models), patches_field=patches_field, margin=margin,
                                     batch_size=batch_size, device=device, progress=bar, quality=quality,
                                     backend=backend, ray_address=ray_address, ray_actors=ray_actors)
    click.echo(f"Embeddings {key!r}: {summary.computed} computed, {summary.skipped} already stored, "
               f"{len(summary.failed)} failed; {summary.total_vectors} vectors of {summary.dim} dims"
               + (f" (on Ray, {summary.ray_actors} actor(s))." if summary.ray_actors else "."))
    for item_id, reason in list(summary.failed.items())[:5]:
        click.echo(f"  failed {item_id}: {reason}")
    echo_embedding_notice(view, key)
    _index_and_map(view, key, index, draw_map, similarity_backend, milvus_uri)


def _index_and_map(view, key, index: bool, draw_map: bool, similarity_backend: str = "faiss",
                   milvus_uri: str | None = None) -> None:
    from curate_loop.runs.maps import compute_map
    from curate_loop.runs.similarity import build_similarity

    if milvus_uri and similarity_backend != "milvus":
        raise click.UsageError("--milvus-uri needs --similarity-backend milvus.")
    if index:
        brain_key = build_similarity(view, key, backend=similarity_backend, uri=milvus_uri)
        click.echo(f"Similarity index {brain_key!r} is ready: sort by similarity in the App.")
    if draw_map:
        with ProgressBar("map") as bar:
            brain_key = compute_map(view, key, progress=bar)
        click.echo(f"2-D map {brain_key!r} is ready: open the Embeddings panel in the App.")


@embed.command("import")
@click.argument("dataset_name")
@click.argument("key")
@click.argument("source")
@click.option("--objects", "patches_field", help="The vectors belong to the boxes of this Detections field.")
@tag_option
def embed_import(dataset_name, key, source, patches_field, tags):
    """Bring your own vectors: SOURCE is a .npy file (one row per sample, in dataset order) or a field name."""
    from curate_loop.runs.embeddings import import_embeddings

    summary = import_embeddings(open_view(dataset_name, tags), key, source, patches_field=patches_field)
    click.echo(f"Embeddings {key!r}: {summary.computed} imported, {summary.skipped} already stored, "
               f"{summary.dim} dims.")


@embed.command("index")
@click.argument("dataset_name")
@click.argument("key")
@click.option("--map/--no-map", "draw_map", default=True, show_default=True, help="Also build the 2-D map.")
@similarity_options
def embed_index(dataset_name, key, draw_map, similarity_backend, milvus_uri):
    """(Re)build the similarity index and the 2-D map of an embeddings run."""
    _index_and_map(open_view(dataset_name), key, True, draw_map, similarity_backend, milvus_uri)


@embed.command("list")
@click.argument("dataset_name")
def embed_list(dataset_name):
    """The embeddings runs of a dataset."""
    from curate_loop.runs.embeddings import list_embeddings

    rows = list_embeddings(open_view(dataset_name))
    if not rows:
        click.echo("No embeddings yet: `curate-loop embed compute DATASET`.")
    for row in rows:
        what = ", ".join(m["name"] if m["name"] == "classical" else f"{m['name']}@{m['pretrained'] or 'random'}"
                         for m in row["models"] or []) or row["source"]
        on = row["patches_field"] or "images"
        click.echo(f"{row['key']:<16} {row['status']:<9} {row['vectors']:>8} x {row['dim']:<5} {on:<14} {what} "
                   f"({row['failures']} failed)")


@embed.command("delete")
@click.argument("dataset_name")
@click.argument("key")
def embed_delete(dataset_name, key):
    """Delete an embeddings run and its vectors."""
    from curate_loop.runs.embeddings import delete_embeddings

    delete_embeddings(open_view(dataset_name), key)
    click.echo(f"Deleted embeddings {key!r}.")


from .shards import shards as _shards  # noqa: E402  (`curate-loop embed shards`: delegated workers)

embed.add_command(_shards)
