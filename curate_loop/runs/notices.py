"""The one-line notices a result built on embeddings carries, gathered for the results recorded on a dataset.

Today there is one kind: :func:`curate_loop.runs.embeddings.random_weights_notice`, shown whenever the vectors a
result rests on came from random open_clip weights, so nobody mistakes such numbers for real ones.
"""

from __future__ import annotations


def embedding_notices(dataset, keys) -> list[str]:
    """The notices of embeddings runs ``keys`` (None and unknown keys skipped), each once, in order."""
    from curate_loop.runs.embeddings import random_weights_notice

    notices = []
    for key in keys:
        notice = random_weights_notice(dataset, key) if key else None
        if notice and notice not in notices:
            notices.append(notice)
    return notices


def recorded_result_notices(dataset) -> list[str]:
    """The notices of the embeddings behind the batches and mislabel scans recorded on ``dataset`` (what the loop
    report and `curate list` summarize)."""
    from curate_loop.runs.curation import METHOD as BATCH_METHOD
    from curate_loop.runs.mislabels import METHOD as MISLABELS_METHOD

    keys = [getattr(dataset.get_run_info(name).config, "embeddings_key", None)
            for method in (BATCH_METHOD, MISLABELS_METHOD) for name in dataset.list_runs(method=method)]
    return embedding_notices(dataset, keys)
