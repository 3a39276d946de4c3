"""Curation: which samples to label next, so that a small labeling budget covers the whole data distribution.

Array-level code only (vectors in, indices or scores out, scikit-learn style; no FiftyOne); FiftyOne glue lives in
``curate_loop.runs``.

- ``clustering``: the natural clusters of a pool, each dense, regular or sparse;
- ``strategies``: pick a batch (ours, cluster-balanced; and typicality, k-center, TypiClust, random);
- ``combined`` and ``objectives``: a batch from diversity, model uncertainty and class balance, each with a strength;
- ``balanced``: a class- and object-balanced subset of labeled data (a test set);
- ``edges``: edge-case scores and how saturated the edge region is;
- ``duplicates``: near-duplicate groups, SemDeDup style;
- ``metrics`` and ``report_html``: the batch against random subsets of the same size, as an HTML report.
"""

import importlib

# Each name is imported on first use (PEP 562), so that reading a manifest, which needs only ``objectives``, loads
# no clustering code.
_WHERE = {
    "select_class_balanced": "balanced", "ClusterResult": "clustering", "cluster_embeddings": "clustering",
    "NearDuplicates": "duplicates", "exclude_near_duplicates": "duplicates", "find_near_duplicates": "duplicates",
    "EdgeNeighborhoods": "edges", "EdgeSaturation": "edges", "edge_neighborhoods": "edges",
    "edge_saturation": "edges", "edge_scores": "edges", "saturated": "edges", "selection_metrics": "metrics",
    "render_report": "report_html", "write_report": "report_html", "SelectionResult": "strategies",
    "select_cluster_balanced": "strategies", "select_kcenter": "strategies", "select_random": "strategies",
    "select_typicality": "strategies", "select_typiclust": "strategies", "Objectives": "objectives",
    "CombinedSelection": "combined", "select_combined": "combined",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
