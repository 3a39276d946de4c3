"""Embeddings: open_clip models, an on-disk store that scales to 1M vectors, and batch computation.

Array-level code only (no FiftyOne; rows are normalised by :func:`curate_loop.vectors.normalize_rows`); the
FiftyOne glue lives in ``curate_loop.runs.embeddings``."""
