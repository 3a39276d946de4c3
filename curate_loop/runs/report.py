"""The curation report of a batch: the metrics, thumbnails of the sparsest and densest clusters, and the 2-D map
with the batch highlighted, in one self-contained HTML file under ``<curate-loop home>/reports/<dataset id>/``.

Its counts and its map legend come from the same :class:`curate_loop.runs.pool.PoolState` (one definition of
labeled), and it carries the random-weights notice of its embeddings when there is one."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from curate_loop.paths import curate_loop_home

THUMBNAILS_PER_CLUSTER = 6
MAP_PCA_ABOVE = 20_000  # without a saved map, UMAP up to here (seconds), PCA above (a report should not take minutes)


def report_path(dataset, name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset.name).strip("-") or "dataset"
    return curate_loop_home() / "reports" / f"{slug}-{dataset._doc.id}" / f"{name}.html"


def render_batch_report(samples, summary, metrics: dict, *, ids: np.ndarray, picks: np.ndarray, state,
                        clusters, embeddings_key: str, vectors: np.ndarray, seed: int = 0) -> str:
    """The page of batch ``summary``; ``state``: the :class:`PoolState` it was picked from (rows of ``ids``)."""
    from curate_loop.curation.report_html import render_report

    filepaths = _filepaths(samples, ids)
    thumbnails = {}
    for kind in ("sparsest", "densest"):
        for cluster in metrics.get(f"{kind}_clusters", []):
            rows = np.flatnonzero(clusters.labels == cluster)
            rows = rows[np.isin(rows, picks)].tolist() + rows[~np.isin(rows, picks)].tolist()
            thumbnails[f"cluster {cluster} ({kind})"] = _thumbnails(filepaths[rows[:THUMBNAILS_PER_CLUSTER]],
                                                                    ids[rows[:THUMBNAILS_PER_CLUSTER]], set(ids[picks]))
    thumbnails["the batch"] = _thumbnails(filepaths[picks[:12]], ids[picks[:12]], set(ids[picks]))
    points = _map_points(samples._dataset, embeddings_key, ids, vectors, seed)
    highlight = np.zeros(len(ids), dtype=bool)
    highlight[picks] = True
    title = f"Curation report: batch {summary.name!r} of {samples._dataset.name!r}"
    return render_report({**metrics, "batch": {**summary.to_dict(), "pool": state.counts()}}, title=title,
                         thumbnails=thumbnails, map_points=points, map_highlight=highlight, map_labeled=state.labeled,
                         map_queued=state.queued & ~state.labeled,
                         notices=[summary.notice] if summary.notice else [])


def _filepaths(samples, ids: np.ndarray) -> np.ndarray:
    sample_ids, paths = samples.values(["id", "filepath"])
    by_id = dict(zip(sample_ids, paths))
    return np.asarray([by_id[i] for i in ids.tolist()], dtype=object)


def _thumbnails(paths, ids, picked: set) -> list[tuple[str, bytes]]:
    from curate_loop.curation.report_html import thumbnail_bytes

    out = []
    for path, sample_id in zip(paths, ids):
        data = thumbnail_bytes(path)
        if data is not None:
            out.append((f"{Path(path).name}{' (in batch)' if sample_id in picked else ''}", data))
    return out


def _map_points(dataset, embeddings_key: str, ids: np.ndarray, vectors: np.ndarray, seed: int) -> np.ndarray:
    """The saved map of the run when it has every id (built with the similarity index), else a fresh projection."""
    from curate_loop.embeddings.projection import project_2d
    from curate_loop.runs.maps import load_map

    try:
        map_ids, points = load_map(dataset, embeddings_key)
        position = {i: j for j, i in enumerate(map_ids.tolist())}
        if all(i in position for i in ids.tolist()):
            return points[[position[i] for i in ids.tolist()]]
    except (OSError, KeyError, ValueError):
        pass
    if len(vectors) < 3:
        return np.zeros((len(vectors), 2), dtype=np.float32)
    return project_2d(vectors, method="umap" if len(vectors) <= MAP_PCA_ABOVE else "pca", seed=seed)
