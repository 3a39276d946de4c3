"""The `curate-loop` command line: a thin click layer over the ``curate_loop`` package.

Errors we raise on purpose (:class:`CurateLoopError`) are caught once, here, and printed as
``ErrorName: message`` with exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
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


def main() -> None:
    cli(prog_name="curate-loop")


if __name__ == "__main__":
    main()
