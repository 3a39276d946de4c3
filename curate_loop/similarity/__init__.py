"""Similarity search: cosine kNN on arrays with faiss (:mod:`.knn`), and a FiftyOne Brain backend on top
(:mod:`.faiss_backend`) so the App's "sort by similarity" scales past brain's all-pairs sklearn index.

Importing this package registers ``backend="faiss"`` with FiftyOne Brain in the current process; runs
saved with it load in any process (the App server too) without that step.
"""

from curate_loop.similarity.knn import build_index, knn_graph, load_index, recall_at_k, save_index, search
from curate_loop.similarity.faiss_backend import (  # noqa: E402  (needs .knn imported first)
    FaissSimilarityConfig,
    FaissSimilarityIndex,
    OpenClipPromptModel,
    build_similarity_index,
    register_faiss_backend,
)

register_faiss_backend()

__all__ = [
    "FaissSimilarityConfig",
    "FaissSimilarityIndex",
    "OpenClipPromptModel",
    "build_index",
    "build_similarity_index",
    "knn_graph",
    "load_index",
    "recall_at_k",
    "register_faiss_backend",
    "save_index",
    "search",
]
