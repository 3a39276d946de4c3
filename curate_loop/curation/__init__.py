"""Curation: which samples to label next, so that a small labeling budget covers the whole data distribution.

Array-level code only (vectors in, indices out, scikit-learn style); FiftyOne glue lives elsewhere.
``clustering`` finds the natural clusters of a pool, ``strategies`` picks a batch from it.
"""
