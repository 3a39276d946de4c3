"""`curate-loop embed shards`: an embedding run split into shards that `fiftyone delegated launch` workers run."""

from __future__ import annotations

import click

from .options import ProgressBar, open_view, tag_option

key_option = click.option("--key", default="clip", show_default=True, help="The embeddings run.")


@click.group("shards")
def shards() -> None:
    """Embeddings on FiftyOne's delegated workers: queue shards, watch them, wait for the run."""


@shards.command("queue")
@click.argument("dataset_name")
@key_option
@click.option("--model", "models", multiple=True, default=["ViT-B-32"], show_default=True,
              help="open_clip NAME or NAME@PRETRAINED, or classical; repeat to combine models.")
@click.option("--shards", "n_shards", type=click.IntRange(1), required=True,
              help="Delegated operations to split the run into (at least one per worker).")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--flush-every", type=click.IntRange(1), default=1024, show_default=True,
              help="Vectors per stored chunk: the most work a killed worker loses.")
@click.option("--device", help="cpu, cuda, cuda:1 ... on the workers (default: CUDA when present).")
@click.option("--heartbeat", "heartbeat_s", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds between a running shard's heartbeats; 4 missed beats mark its worker dead.")
@tag_option
def shards_queue(dataset_name, key, models, n_shards, batch_size, flush_every, device, heartbeat_s, tags):
    """Queue DATASET's images as N shards; then start `fiftyone delegated launch` on each worker machine."""
    from curate_loop.runs.shards import queue_sharded_embeddings, shard_status

    view = open_view(dataset_name, tags)
    run_id = queue_sharded_embeddings(view, key, list(models), n_shards, batch_size=batch_size,
                                      flush_every=flush_every, device=device, heartbeat_s=heartbeat_s)
    status = shard_status(view._dataset, key)
    click.echo(f"Queued embeddings {key!r} as {status['shards']} shards (run {run_id}). Start workers with "
               "`fiftyone delegated launch` (any machine sharing the database and the store), then "
               f"`curate-loop embed shards wait {dataset_name} --key {key}`.")


@shards.command("status")
@click.argument("dataset_name")
@key_option
@click.option("--requeue-dead", is_flag=True, help="Re-queue shards whose worker died.")
def shards_status(dataset_name, key, requeue_dead):
    """How many shards of the run are queued, running, done or failed; which workers died."""
    from curate_loop.runs.shards import requeue_dead_shards, shard_status

    dataset = open_view(dataset_name)._dataset
    if requeue_dead:
        for index in requeue_dead_shards(dataset, key):
            click.echo(f"Shard {index} re-queued: its worker died.")
    _echo_status(shard_status(dataset, key))


def _echo_status(status: dict) -> None:
    click.echo(f"Embeddings {status['key']!r} in {status['shards']} shards: {status['queued']} queued, "
               f"{status['running']} running, {status['completed']} done, {status['failed']} failed"
               + (f", dead workers on shards {status['dead']}" if status["dead"] else "")
               + (f"; {status['requeued']} re-queued" if status["requeued"] else "")
               + ("; run finished." if status["finished"] else "."))
    for row in status["rows"]:
        detail = row["progress"] if row["state"] == "running" else (row["error"] or [""])[0]
        click.echo(f"  shard {row['shard']}: {row['samples']} samples, {row['state']}"
                   + (" (worker dead)" if row["dead"] else "") + (f", {row['attempts']} attempts" if
                                                                  row["attempts"] > 1 else "")
                   + (f" - {detail}" if detail else ""))


@shards.command("wait")
@click.argument("dataset_name")
@key_option
@click.option("--timeout", type=click.FloatRange(min=1), help="Give up after this many seconds.")
@click.option("--stale-after", type=click.FloatRange(min=1),
              help="Seconds without a heartbeat before a worker counts as dead (default: 4 heartbeats).")
@click.option("--retry-failed", is_flag=True, help="First re-queue shards that failed (after fixing the cause).")
@click.option("--index/--no-index", default=True, show_default=True, help="Then build the similarity index.")
@click.option("--map/--no-map", "draw_map", default=True, show_default=True, help="Then build the 2-D map.")
def shards_wait(dataset_name, key, timeout, stale_after, retry_failed, index, draw_map):
    """Wait for the run to finish, re-queuing shards whose worker died; then index and map it."""
    from curate_loop.runs.shards import requeue_dead_shards, wait_for_sharded_run

    from .embed import _index_and_map

    view = open_view(dataset_name)
    if retry_failed:
        requeue_dead_shards(view._dataset, key, stale_after=stale_after, failed=True)
    with ProgressBar("shards") as bar:
        status = wait_for_sharded_run(view._dataset, key, timeout=timeout, stale_after=stale_after, progress=bar)
    _echo_status(status)
    _index_and_map(view, key, index, draw_map)
