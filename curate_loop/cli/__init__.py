"""The `curate-loop` command line: a thin click layer over the ``curate_loop`` package.

One module per command group (``embed``, ``search``, ``curate``, ``mislabels``, ``labelstudio`` with push/pull,
``loop`` for run/status, ``environment`` for doctor/plugin/example); this module holds the top-level group.
Errors we raise on purpose (:class:`CurateLoopError`) are caught once, here, and printed as
``ErrorName: message`` with exit code 1; anything else is a bug and keeps its traceback. FiftyOne's noise is
silenced for every command (:mod:`curate_loop.quiet`).
"""

from __future__ import annotations

import logging

import click

from curate_loop.errors import CurateLoopError
from curate_loop.quiet import quiet_fiftyone

from . import curate, embed, environment, label_issues, labelstudio, loop, mislabels, quality, search


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
    quiet_fiftyone()


for _command in (environment.doctor, environment.plugin, environment.example, labelstudio.labelstudio,
                 labelstudio.push, labelstudio.pull, embed.embed, search.search, curate.curate, mislabels.mislabels,
                 loop.run, loop.status, label_issues.label_issues, quality.quality):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="curate-loop")
