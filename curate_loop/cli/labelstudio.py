"""Label Studio: `curate-loop labelstudio` (install, serve, status) and the sync commands `push` and `pull`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from curate_loop.interrupt import wait_until_interrupted
from curate_loop.paths import curate_loop_home

from .options import ProgressBar, open_view

_ls_url_option = click.option("--url", envvar="LABEL_STUDIO_URL", help="Label Studio URL (default: $LABEL_STUDIO_URL).")
# The key comes from the environment only, so it never lands in shell history or process lists.


@click.group()
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


@labelstudio.command("status")
@click.argument("dataset_name")
@_ls_url_option
def ls_status(dataset_name, url):
    """State of each pushed batch of DATASET_NAME: pushed, in_progress, annotated or pulled."""
    from curate_loop.runs.labelstudio import batch_status, list_pushed_batches

    dataset = open_view(dataset_name)
    batches = list_pushed_batches(dataset)
    if not batches:
        click.echo(f"No batch of {dataset_name!r} was pushed to Label Studio yet.")
    for batch in batches:
        s = batch_status(dataset, batch, url=url)
        counts = (f"{s['finished']}/{s['tasks']} finished, {s['cancelled']} cancelled" if s.get("server") == "ok"
                  else f"{s['tasks']} tasks (server unreachable: last recorded state)")
        click.echo(f"{batch:<20} {s['state']:<12} {counts}  project {s['project_id']} field {s['label_field']}")


@click.command("push")
@click.argument("dataset_name")
@click.argument("batch")
@click.option("--label-field", required=True, help="Detections or Classification field sent as pre-annotations.")
@_ls_url_option
@click.option("--document-root", type=click.Path(exists=True, file_okay=False),
              help="The server's local-files root (default: $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT).")
@click.option("--chunk-size", type=click.IntRange(1), default=1000, show_default=True, help="Tasks per import request.")
def push(dataset_name, batch, label_field, url, document_root, chunk_size):
    """Push BATCH of DATASET_NAME to Label Studio (safe to re-run: no task is ever created twice)."""
    from curate_loop.runs.labelstudio import push_batch

    with ProgressBar("pushing") as bar:
        summary = push_batch(open_view(dataset_name), batch, label_field, url=url, document_root=document_root,
                             chunk_size=chunk_size, progress=bar)
    click.echo(f"Batch {batch!r}: {summary.tasks} tasks in project {summary.project_id} ({summary.project_title!r}) "
               f"at {summary.url}: {summary.created} new, {summary.already_there} already there"
               + (f", {summary.duplicates_deleted} duplicates removed" if summary.duplicates_deleted else "") + ".")
    click.echo(f"  open: {summary.url}/projects/{summary.project_id}/data?tab={summary.view_id}")


@click.command("pull")
@click.argument("dataset_name")
@click.argument("batch")
@click.option("--policy", type=click.Choice(["latest", "majority", "agreement"]), default="latest", show_default=True,
              help="How to reconcile several annotators of a task.")
@_ls_url_option
def pull(dataset_name, batch, policy, url):
    """Apply the finished annotations of BATCH back to DATASET_NAME (everything is read before anything is written)."""
    from curate_loop.runs.labelstudio import pull_batch

    with ProgressBar("pulling") as bar:
        summary = pull_batch(open_view(dataset_name), batch, policy=policy, url=url, progress=bar)
    click.echo(f"Batch {batch!r}: {summary.applied} annotated tasks applied ({policy}), {summary.changed_samples} "
               f"samples changed: {summary.labels_updated} labels updated, {summary.labels_added} added, "
               f"{summary.labels_removed} removed; {summary.cancelled} cancelled annotations skipped.")
    for conflict in summary.conflicts[:10]:
        click.echo(f"  conflict: task {conflict['task']} (sample {conflict['sample']}): {conflict['reason']}")
    if summary.conflicts:
        click.echo(f"  {len(summary.conflicts)} conflicting tasks were left unapplied; resolve them in Label Studio "
                   "or pull with --policy latest/majority.")
