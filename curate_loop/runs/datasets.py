"""Open a dataset (and a view of it) by name for the CLI, with errors that say what exists."""

from __future__ import annotations

from curate_loop.errors import InvalidInputError


def open_dataset(name: str):
    """The FiftyOne dataset ``name``, starting FiftyOne's database if needed."""
    from curate_loop.mongodb import connect

    connect()
    import fiftyone as fo

    if name not in fo.list_datasets():
        raise InvalidInputError(f"No FiftyOne dataset named {name!r}. Datasets: {fo.list_datasets() or 'none'} "
                                "(the example is built with `curate-loop example build`).")
    return fo.load_dataset(name)


def tagged_view(dataset, tags=()):
    """The samples carrying any of ``tags`` (all samples when none are given)."""
    if not tags:
        return dataset
    view = dataset.match_tags(list(tags))
    if not len(view):
        raise InvalidInputError(f"No samples of {dataset.name!r} are tagged {list(tags)}; tags in use: "
                                f"{sorted(dataset.distinct('tags'))}")
    return view
