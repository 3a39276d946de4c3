"""Label Studio: `curate-loop labelstudio` (install, serve, status) and the sync commands `push` and `pull`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from curate_loop.interrupt import wait_until_interrupted
from curate_loop.paths import curate_loop_home

from .options import ProgressBar, open_view

_ls_url_option = click.option("--url", envvar="LABEL_STUDIO_URL",
                              help="Label Studio URL (default: $LABEL_STUDIO_URL, else the key file's).")
# The key comes from the environment or the key file only, so it never lands in shell history or process lists.


def note_key_source(*urls: str | None) -> None:
    """Say on stderr when the key for one of ``urls`` (None: whichever server the key file names) comes from the key
    file. The connection itself resolves the key the same way (:func:`~curate_loop.adapters.labelstudio.keyfile.
    resolve_credentials`), so a key file's key only ever goes to the server it names."""
    from curate_loop.adapters.labelstudio.keyfile import resolve_credentials

    for url in dict.fromkeys(urls):
        creds = resolve_credentials(url)
        if creds.from_file:
            click.echo(f"Label Studio: key for {creds.url} from {creds.key_source} (LABEL_STUDIO_API_KEY is not set).",
                       err=True)
            return


def fallback_line(statuses: list[dict]) -> str | None:
    """One line saying the batch states shown are the recorded ones, and why (None when the server answered)."""
    reasons = {s.get("server") for s in statuses} - {"ok"}
    if not reasons:
        return None
    from curate_loop.adapters.labelstudio.keyfile import default_env_file

    if "no key" in reasons:
        return (f"Label Studio: no key (LABEL_STUDIO_API_KEY unset, no key file at {default_env_file()}): showing the "
                "last recorded state. `source` the key file or export the key for live counts.")
    url = next(s["url"] for s in statuses if s.get("server") != "ok")
    return f"Label Studio at {url} does not answer: showing the last recorded state."


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
    from curate_loop.adapters.labelstudio.keyfile import write_env_file

    with server:
        env_file = write_env_file(server.url, server.token)
        click.echo(f"Label Studio is running at {server.url}")
        click.echo(f"  login:    {server.credentials.username} / {server.credentials.password}")
        click.echo(f"  export LABEL_STUDIO_URL={server.url}")
        click.echo(f"  export LABEL_STUDIO_API_KEY={server.token}")
        click.echo(f"  or, in any terminal: source {env_file}")
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
        return
    from curate_loop.runs.labelstudio import recorded_url

    note_key_source(*[url or recorded_url(dataset, batch) for batch in batches])
    statuses = [batch_status(dataset, batch, url=url) for batch in batches]
    note = fallback_line(statuses)
    if note:
        click.echo(note)
    rows = [("batch", "state", "tasks", "finished", "cancelled", "project", "field")]
    for s in statuses:
        live = s.get("server") == "ok"
        rows.append((s["batch"], s["state"] + ("" if live else " (recorded)"), str(s["tasks"]),
                     str(s["finished"]) if live else "?", str(s["cancelled"]) if live else "?", str(s["project_id"]),
                     s["label_field"]))
    for line in table_lines(rows):
        click.echo(line)


def table_lines(rows: list[tuple]) -> list[str]:
    """Rows as aligned columns (the first row is the header)."""
    widths = [max(len(str(row[k])) for row in rows) for k in range(len(rows[0]))]
    return ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]


@click.command("push")
@click.argument("dataset_name")
@click.argument("batch")
@click.option("--label-field", required=True, help="Detections or Classification field sent as pre-annotations.")
@_ls_url_option
@click.option("--document-root", type=click.Path(exists=True, file_okay=False),
              help="The server's local-files root (default: $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT).")
@click.option("--chunk-size", type=click.IntRange(1), default=1000, show_default=True, help="Tasks per import request.")
@click.option("--media", type=click.Choice(["local_files", "upload", "cloud"]), default="local_files", show_default=True,
              help="local_files: served from disk when under the server's root (else uploaded); upload: always "
                   "uploaded; cloud: filepaths must be cloud URLs.")
@click.option("--classes", help="Comma-separated classes the label config offers (default: the dataset's).")
@click.option("--predictions-field", help="A model's predictions (same kind as --label-field) sent as "
                                          "pre-annotations, per --pre-annotations.")
@click.option("--model-version", help="Label Studio model_version of those predictions (default: the field's name).")
@click.option("--pre-annotations", type=click.Choice(["auto", "predictions", "labels"]), default="auto",
              show_default=True, help="auto: the model's predictions for samples without labels; predictions: for "
                                      "every sample the model predicted; labels: never the model's.")
def push(dataset_name, batch, label_field, url, document_root, chunk_size, media, classes, predictions_field,
         model_version, pre_annotations):
    """Push BATCH of DATASET_NAME to Label Studio (safe to re-run: no task is ever created twice)."""
    from curate_loop.runs.labelstudio import push_batch

    note_key_source(url)
    wanted = [c.strip() for c in classes.split(",") if c.strip()] if classes is not None else None
    dataset = open_view(dataset_name)
    if predictions_field and not dataset.has_field(predictions_field):
        raise click.BadParameter(f"{dataset_name!r} has no field {predictions_field!r} (run the model step first).",
                                 param_hint="--predictions-field")
    with ProgressBar("pushing") as bar:
        summary = push_batch(dataset, batch, label_field, url=url, document_root=document_root,
                             chunk_size=chunk_size, media=media, classes=wanted, predictions_field=predictions_field,
                             model_version=model_version, pre_annotations=pre_annotations, progress=bar)
    click.echo(f"Batch {batch!r}: {summary.tasks} tasks in project {summary.project_id} ({summary.project_title!r}) "
               f"at {summary.url}: {summary.created} new, {summary.already_there} already there"
               + (f", {summary.duplicates_deleted} duplicates removed" if summary.duplicates_deleted else "") + ".")
    if summary.model_tasks:
        click.echo(f"  {summary.model_tasks} tasks pre-annotated by the model ({summary.model_version}): "
                   f"{summary.model_regions} regions.")
    if summary.dropped_prediction_classes:
        counts = ", ".join(f"{name!r} ({n})" for name, n in summary.dropped_prediction_classes.items())
        click.echo(f"  {sum(summary.dropped_prediction_classes.values())} predicted regions left out: their classes "
                   f"are not in the project: {counts}.")
    click.echo(f"  open: {summary.url}/projects/{summary.project_id}/data?tab={summary.view_id}")


@click.command("pull")
@click.argument("dataset_name")
@click.argument("batch")
@click.option("--policy", type=click.Choice(["latest", "majority", "agreement"]), default="latest", show_default=True,
              help="How to reconcile several annotators of a task.")
@_ls_url_option
def pull(dataset_name, batch, policy, url):
    """Apply the finished annotations of BATCH back to DATASET_NAME (everything is read before anything is written)."""
    from curate_loop.runs.labelstudio import pull_batch, recorded_url

    dataset = open_view(dataset_name)
    note_key_source(url or recorded_url(dataset, batch))
    with ProgressBar("pulling") as bar:
        summary = pull_batch(dataset, batch, policy=policy, url=url, progress=bar)
    click.echo(f"Batch {batch!r}: {summary.applied} annotated tasks applied ({policy}), {summary.changed_samples} "
               f"samples changed: {summary.labels_updated} labels updated, {summary.labels_added} added, "
               f"{summary.labels_removed} removed; {summary.cancelled} cancelled annotations skipped.")
    for conflict in summary.conflicts[:10]:
        click.echo(f"  conflict: task {conflict['task']} (sample {conflict['sample']}): {conflict['reason']}")
    if summary.outside_classes:
        click.echo(outside_classes_line(summary.outside_classes))
    for line in model_assist_lines(summary.model_assist):
        click.echo(line)
    if summary.conflicts:
        click.echo(f"  {len(summary.conflicts)} conflicting tasks were left unapplied; resolve them in Label Studio "
                   "or pull with --policy latest/majority.")


def model_assist_lines(model_assist: dict | None) -> list[str]:
    """How the annotators changed the model's pre-annotations: a totals line, then one line per predicted class."""
    if not model_assist:
        return []
    totals = model_assist["totals"]
    if not totals["tasks"]:
        return [f"  model assist ({model_assist['model_version']}): no annotated task had the model's "
                "pre-annotations yet."]
    rate = "–" if totals["rate"] is None else f"{totals['rate']:.0%}"
    lines = [f"  model assist ({model_assist['model_version']}, {totals['tasks']} tasks): {totals['accepted']} of "
             f"{totals['predicted']} predicted regions accepted ({rate}); {totals['relabeled']} relabeled, "
             f"{totals['moved']} moved, {totals['deleted']} deleted; {totals['added']} added."]
    rows = [("    class", "predicted", "accepted", "relabeled", "moved", "deleted", "added")]
    rows += [(f"    {cls}", *(str(counts[k]) for k in ("predicted", "accepted", "relabeled", "moved", "deleted",
                                                        "added")))
             for cls, counts in model_assist["per_class"].items()]
    return lines + table_lines(rows)


def outside_classes_line(outside: dict) -> str:
    """The pull's labels of classes the manifest lacks, in one line."""
    counts = ", ".join(f"{name!r} ({n})" for name, n in outside.items())
    return (f"  {sum(outside.values())} pulled labels use classes outside the manifest's classes: {counts}; add them "
            "to `classes` or relabel them in Label Studio.")
