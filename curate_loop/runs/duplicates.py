"""Near-duplicate groups on a FiftyOne dataset (SemDeDup-style, see :mod:`curate_loop.curation.duplicates`).

Each member of a group gets ``dup_group`` (the group number) and ``dup_keep`` (True for the one representative,
False for the rest); samples with no near-duplicate get neither. The ``near_duplicates`` saved view shows the
groups together; ``exclude_near_duplicates_view`` drops the redundant copies, and batch selection skips them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from curate_loop.curation.strategies import DEFAULT_NEAR_DUP_THRESHOLD
from curate_loop.errors import InvalidInputError
from curate_loop.runs.bulk import set_sample_fields
from curate_loop.runs.embeddings import Progress, embedding_config, load_embeddings
from curate_loop.runs.pool import DUP_KEEP_FIELD

METHOD = "curate_loop.near_duplicates"
DUP_GROUP_FIELD = "dup_group"
DUPLICATES_VIEW = "near_duplicates"


@dataclass
class DuplicateSummary:
    embeddings_key: str
    threshold: float
    groups: int
    in_groups: int
    redundant: int  # members that are not their group's representative
    view_name: str
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def duplicates_run_key(embeddings_key: str) -> str:
    return f"{embeddings_key}_dups"


def find_duplicates(samples, embeddings_key: str = "clip", *, threshold: float = DEFAULT_NEAR_DUP_THRESHOLD,
                    seed: int = 0, progress: Progress | None = None) -> DuplicateSummary:
    """Group the near-duplicates among the samples of ``samples`` (image embeddings) and mark one to keep each."""
    import fiftyone as fo
    from fiftyone import ViewField as F

    from curate_loop.curation.duplicates import find_near_duplicates

    started = time.perf_counter()
    step = progress or (lambda fraction, label: None)
    dataset = samples._dataset
    if embedding_config(dataset, embeddings_key).get("patches_field"):
        raise InvalidInputError(f"Embeddings {embeddings_key!r} are per object; near-duplicate samples are found "
                                "with image embeddings. Pass the key of an image embeddings run.")
    step(0.05, "loading vectors")
    ids, vectors = load_embeddings(samples, embeddings_key)
    if len(ids) < 2:
        raise InvalidInputError(f"Only {len(ids)} sample(s) have {embeddings_key!r} vectors; compute embeddings first.")
    step(0.2, f"searching {len(ids)} samples")
    found = find_near_duplicates(vectors, threshold=threshold, seed=seed)
    step(0.8, f"writing {found.n_groups} groups")
    grouped = found.group >= 0
    for field, kind in ((DUP_GROUP_FIELD, fo.IntField), (DUP_KEEP_FIELD, fo.BooleanField)):
        if not dataset.has_field(field):  # declared first: all-None values leave FiftyOne no type to infer
            dataset.add_sample_field(field, kind)
    # written: the members of the groups found, and None on the samples of this view an earlier run had grouped;
    # not a None on every sample (two million writes at 1M samples for a few thousand grouped)
    earlier = samples.match(F(DUP_GROUP_FIELD).exists() | F(DUP_KEEP_FIELD).exists()).values("id")
    group_of = dict.fromkeys(earlier)
    keep_of = dict(group_of)
    group_of.update(zip(ids[grouped].tolist(), found.group[grouped].tolist()))
    keep_of.update(zip(ids[grouped].tolist(), found.keep[grouped].tolist()))
    set_sample_fields(samples, list(group_of), {DUP_GROUP_FIELD: list(group_of.values()),
                                                DUP_KEEP_FIELD: [keep_of[i] for i in group_of]})
    dataset.save_view(DUPLICATES_VIEW, dataset.match(F(DUP_GROUP_FIELD).exists()).sort_by(DUP_GROUP_FIELD),
                      overwrite=True)
    summary = DuplicateSummary(
        embeddings_key=embeddings_key, threshold=float(threshold), groups=int(found.n_groups),
        in_groups=int(grouped.sum()), redundant=int((grouped & ~found.keep).sum()), view_name=DUPLICATES_VIEW,
        seconds=round(time.perf_counter() - started, 2),
    )
    key = duplicates_run_key(embeddings_key)
    config = dataset.init_run(method=METHOD, embeddings_key=embeddings_key, threshold=float(threshold), seed=seed)
    dataset.register_run(key, config, overwrite=True, cleanup=False)
    dataset.save_run_results(key, dataset.init_run_results(key, **summary.to_dict()), overwrite=True)
    step(1.0, f"{found.n_groups} near-duplicate groups")
    return summary


def exclude_near_duplicates_view(samples):
    """``samples`` without the redundant copies (every group keeps its representative)."""
    from fiftyone import ViewField as F

    if not samples.has_field(DUP_KEEP_FIELD):
        return samples
    return samples.match(F(DUP_KEEP_FIELD) != False)  # noqa: E712 (a MongoDB expression, not a Python test)
