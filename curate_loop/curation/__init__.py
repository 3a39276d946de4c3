"""Curation: which samples to label next, so that a small labeling budget covers the whole data distribution.

Array-level code only (vectors in, indices or scores out, scikit-learn style; no FiftyOne); FiftyOne glue lives in
``curate_loop.runs``.

- ``clustering``: the natural clusters of a pool, each dense, regular or sparse;
- ``strategies``: pick a batch (ours, cluster-balanced; and typicality, k-center, TypiClust, random);
- ``balanced``: a class- and object-balanced subset of labeled data (a test set);
- ``edges``: edge-case scores and how saturated the edge region is;
- ``duplicates``: near-duplicate groups, SemDeDup style;
- ``metrics`` and ``report_html``: the batch against random subsets of the same size, as an HTML report.
"""

from curate_loop.curation.balanced import select_class_balanced
from curate_loop.curation.clustering import ClusterResult, cluster_embeddings
from curate_loop.curation.duplicates import NearDuplicates, exclude_near_duplicates, find_near_duplicates
from curate_loop.curation.edges import (EdgeNeighborhoods, EdgeSaturation, edge_neighborhoods, edge_saturation,
                                        edge_scores, saturated)
from curate_loop.curation.metrics import selection_metrics
from curate_loop.curation.report_html import render_report, write_report
from curate_loop.curation.strategies import (SelectionResult, select_cluster_balanced, select_kcenter, select_random,
                                             select_typicality, select_typiclust)

__all__ = [
    "ClusterResult", "EdgeNeighborhoods", "EdgeSaturation", "NearDuplicates", "SelectionResult",
    "cluster_embeddings", "edge_neighborhoods", "edge_saturation", "edge_scores", "exclude_near_duplicates",
    "find_near_duplicates", "render_report", "saturated", "select_class_balanced", "select_cluster_balanced",
    "select_kcenter", "select_random", "select_typicality", "select_typiclust", "selection_metrics", "write_report",
]
