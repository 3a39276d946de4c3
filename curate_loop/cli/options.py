"""What several command groups share: the tag filter, the cluster-size option, opening the view, a progress bar."""

from __future__ import annotations

import click

tag_option = click.option("--tag", "tags", multiple=True, help="Only samples with this tag (repeatable).")
min_cluster_size_option = click.option(
    "--min-cluster-size", type=click.IntRange(2), default=None,
    help="Smallest group that counts as a cluster (default: sqrt(pool size) / 3; lower it for finer clusters).")


def open_view(dataset_name: str, tags=()):
    """The dataset named ``dataset_name``, narrowed to ``tags`` when given (a clear error for unknown names/tags)."""
    from curate_loop.runs.datasets import open_dataset, tagged_view

    return tagged_view(open_dataset(dataset_name), tags)


class ProgressBar:
    """A CLI progress bar fed by the library's ``progress(fraction, label)`` callbacks."""

    def __init__(self, label: str):
        from tqdm import tqdm

        self.bar = tqdm(total=1000, desc=label, unit="‰", bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")

    def __call__(self, fraction: float, label: str) -> None:
        self.bar.set_description_str(label[:60])
        self.bar.update(max(0, int(fraction * 1000) - self.bar.n))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
