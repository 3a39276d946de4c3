"""The sample-level view behind whatever the App shows.

The App leaves a user on generated views: a patches view (``to_patches``, ``to_evaluation_patches``: one item per
box), a clips view or a frames view. Their items are not the dataset's samples and their ``_dataset`` is a generated
dataset that holds none of the runs, embeddings or batches curate-loop records, so every library call wants the
samples those items come from, as a view of the root dataset.
"""

from __future__ import annotations


def sample_level_view(view):
    """The view of ``view``'s root dataset holding the samples its items come from, in the order they first appear.

    A dataset or a (filtered, sorted, ...) view of one is returned as it is, so its filters still apply. In every
    generated view (patches, evaluation patches, clips, frames, patches of frames) each item's ``sample_id`` is the
    id of its sample in the root dataset: one bulk read of them, then a ``select`` on the root.
    """
    if not view._is_generated:
        return view
    sample_ids = list(dict.fromkeys(view.values("sample_id")))  # unique, in order
    return view._root_dataset.select(sample_ids, ordered=True)
