"""Getting set up: `curate-loop doctor`, `curate-loop plugin install`, `curate-loop example build`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from curate_loop.paths import curate_loop_home


@click.command()
@click.option("--without-key", is_flag=True,
              help="Check that the Label Studio server is installed instead of a key and a running server (CI, where "
                   "every test starts its own server).")
def doctor(without_key: bool) -> None:
    """Check everything curate-loop needs; exit 1 and print the fix when something is broken."""
    from curate_loop.doctor import ALL_CHECKS, check_label_studio, check_label_studio_installed, run_checks

    click.echo("curate-loop doctor")
    failed = 0
    checks = [check_label_studio_installed if without_key and c is check_label_studio else c for c in ALL_CHECKS]
    for check in checks:
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


@click.group()
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


@click.group()
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
