"""Similarity search: cosine kNN on arrays with faiss (:mod:`.knn`: indexes, searches, the kNN graph every array
package uses), and a FiftyOne Brain backend on top (:mod:`.faiss_backend`) so the App's "sort by similarity"
scales past brain's all-pairs sklearn index.

This package imports only the array side: no FiftyOne, and nothing registered with it. The backend is FiftyOne
glue: :func:`~curate_loop.similarity.faiss_backend.build_similarity_index` registers ``backend="faiss"`` with
FiftyOne Brain in its process (call ``register_faiss_backend()`` to use ``fob.compute_similarity(...,
backend="faiss")`` directly). Runs saved with it load in any process (the App server too) without that step:
FiftyOne imports the config class by the name the run recorded.
"""

from curate_loop.similarity.knn import build_index, knn_graph, load_index, recall_at_k, save_index, search

__all__ = ["build_index", "knn_graph", "load_index", "recall_at_k", "save_index", "search"]
