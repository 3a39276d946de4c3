"""FiftyOne glue: curate-loop's work recorded as runs on a dataset (embeddings, maps, saved searches).

Algorithms live in array-level packages (``curate_loop.embeddings``, ``curate_loop.similarity``);
this package reads inputs from a dataset in bulk, calls them, and writes results back in bulk.
"""
