"""Embeddings: open_clip models, an on-disk store that scales to 1M vectors, and batch computation.

Array-level code only; FiftyOne glue lives in ``curate_loop.fiftyone_embeddings`` (to come)."""
