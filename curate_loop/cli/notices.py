"""One visible line beside every CLI result built on embeddings that used random weights."""

from __future__ import annotations

import click


def echo_notices(lines) -> None:
    """Print each notice once, in yellow, on stdout with the result it qualifies."""
    for line in dict.fromkeys(line for line in lines if line):
        click.secho(f"  {line}", fg="yellow")


def echo_embedding_notice(samples, key: str | None) -> None:
    """The random-weights notice of embeddings ``key`` of ``samples``' dataset, when there is one."""
    from curate_loop.runs.embeddings import random_weights_notice

    if key:
        echo_notices([random_weights_notice(samples._dataset, key)])
