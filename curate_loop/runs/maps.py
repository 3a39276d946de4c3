"""The 2-D map of an embeddings run, as a FiftyOne Brain visualization run (the App's Embeddings panel).

All points are projected and saved next to the vectors (the curation report reuses them); the App
gets at most ``max_points`` of them, thinned by tiles so sparse regions stay visible.
"""

from __future__ import annotations

import io

import numpy as np

from curate_loop.embeddings.projection import project_2d
from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.embeddings.tiles import tile_sample
from curate_loop.errors import InvalidInputError
from curate_loop.runs.embeddings import Progress, embedding_config, load_embeddings, run_dir

DEFAULT_MAX_POINTS = 50_000


def map_key(embeddings_key: str) -> str:
    return f"{embeddings_key}_map"


def compute_map(samples, embeddings_key: str, brain_key: str | None = None, *, method: str = "umap",
                max_points: int = DEFAULT_MAX_POINTS, seed: int = 0, progress: Progress | None = None) -> str:
    """Project the run's vectors to 2-D and register the (tile-thinned) map; returns the brain key."""
    import fiftyone.brain as fob

    dataset = samples._dataset
    brain_key = brain_key or map_key(embeddings_key)
    patches_field = embedding_config(dataset, embeddings_key).get("patches_field")
    if progress:
        progress(0.05, "loading vectors")
    ids, vectors = load_embeddings(samples, embeddings_key)
    if progress:
        progress(0.2, f"projecting {len(ids)} points with {method}")
    points = project_2d(vectors, method=method, seed=seed)
    buffer = io.BytesIO()
    np.savez(buffer, ids=ids, points=points)
    EmbeddingStore(run_dir(dataset, embeddings_key)).put_bytes(f"map-{brain_key}.npz", buffer.getvalue())
    keep = tile_sample(points, max_points, seed=seed)
    if progress:
        progress(0.9, f"registering {len(keep)} of {len(ids)} points")
    if patches_field is None:
        view = samples.select(ids[keep].tolist(), ordered=True)
        shown = points[keep]
    else:
        view = samples.select_labels(ids=ids[keep].tolist(), fields=patches_field)
        order = view.values(f"{patches_field}.detections.id", unwind=True)
        position = {label_id: i for i, label_id in enumerate(ids[keep].tolist())}
        shown = points[keep][[position[i] for i in order]]
    if brain_key in dataset.list_brain_runs():
        dataset.delete_brain_run(brain_key)
    fob.compute_visualization(view, points=shown, patches_field=patches_field, brain_key=brain_key)
    return brain_key


def load_map(dataset, embeddings_key: str, brain_key: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, points)`` of every embedded item, as saved by :func:`compute_map`."""
    name = f"map-{brain_key or map_key(embeddings_key)}.npz"
    data = EmbeddingStore(run_dir(dataset, embeddings_key)).get_bytes(name)  # beside the run's stores, any filesystem
    if data is None:
        raise InvalidInputError(f"No 2-D map {name!r} for embeddings {embeddings_key!r}: build it with "
                                f"`curate-loop embed index {dataset.name} {embeddings_key}`.")
    saved = np.load(io.BytesIO(data))
    return saved["ids"], saved["points"]
