"""`curate-loop search`: keep a similarity query under a name, score new samples with it later."""

from __future__ import annotations

import click

from .options import open_view, tag_option


@click.group()
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
    from curate_loop.runs.searches import save_search

    save_search(open_view(dataset_name), name, key, example_ids=list(examples) or None, text=text)
    click.echo(f"Saved search {name!r}.")


@search.command("apply")
@click.argument("dataset_name")
@click.argument("name")
@tag_option
def search_apply(dataset_name, name, tags):
    """Score the (tagged) samples with a saved search; higher is more similar."""
    from curate_loop.runs.searches import apply_search

    field = apply_search(open_view(dataset_name, tags), name)
    click.echo(f"Scores written to {field!r}; sort by it in the App.")
