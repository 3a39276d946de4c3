"""Curation: which samples to label next, so that a small labeling budget covers the whole data distribution.

Array-level code only (vectors in, indices or scores out, scikit-learn style); FiftyOne glue lives in
``curate_loop.runs``.

- ``clustering``: the natural clusters of a pool, each dense, regular or sparse;
- ``strategies``: pick a batch (ours, cluster-balanced; and typicality, k-center, TypiClust, random);
- ``balanced``: a class- and object-balanced subset of labeled data (a test set);
- ``edges``: edge-case scores and how saturated the edge region is;
- ``duplicates``: near-duplicate groups, SemDeDup style;
- ``metrics`` and ``report_html``: the batch against random subsets of the same size, as an HTML report.
"""
