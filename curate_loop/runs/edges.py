"""Edge-case scores on a FiftyOne dataset: one per sample (image embeddings) or per object (object embeddings),
with the natural cluster each belongs to and its kind, and a saved view of the samples sorted by score.

Object runs write ``edge_score``/``curate_cluster``/``curate_cluster_kind`` on each detection and the highest
object score of a sample into its own ``edge_score``, so the same view sorts images either way.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from curate_loop.errors import InvalidInputError
from curate_loop.runs.bulk import set_sample_fields
from curate_loop.runs.embeddings import Progress, embedding_config, load_embeddings
from curate_loop.runs.pool_structure import PoolStructure

METHOD = "curate_loop.edges"
EDGE_FIELD = "edge_score"
CLUSTER_FIELD = "curate_cluster"
CLUSTER_KIND_FIELD = "curate_cluster_kind"
EDGE_VIEW = "edge_cases"


@dataclass
class EdgeSummary:
    embeddings_key: str
    level: str
    scored: int
    clusters: int
    sparse_clusters: int
    noise: int
    top: list  # (id, score) of the highest scores
    view_name: str
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def edge_run_key(embeddings_key: str) -> str:
    return f"{embeddings_key}_edges"


def score_edge_cases(samples, embeddings_key: str = "clip", *, min_cluster_size: int | None = None, seed: int = 0,
                     progress: Progress | None = None) -> EdgeSummary:
    """Score every item of ``samples`` that has a vector; writes the fields and the ``edge_cases`` saved view.
    ``min_cluster_size``: as for :func:`curate_loop.runs.curation.select_batch`."""
    from fiftyone import ViewField as F

    started = time.perf_counter()
    step = progress or (lambda fraction, label: None)
    dataset = samples._dataset
    patches_field = embedding_config(dataset, embeddings_key).get("patches_field")
    step(0.05, "loading vectors")
    ids, vectors = load_embeddings(samples, embeddings_key)
    if len(ids) < 3:
        raise InvalidInputError(f"Edge scores need at least 3 items with {embeddings_key!r} vectors in this view, "
                                f"found {len(ids)}; compute embeddings first.")
    step(0.2, f"clustering {len(ids)} items")
    structure = PoolStructure(dataset, embeddings_key, ids, vectors)
    clusters = structure.clusters(min_cluster_size=min_cluster_size, seed=seed)
    step(0.5, "scoring")
    scores = np.round(structure.neighborhoods(seed=seed).scores, 6)
    kinds = (np.where(clusters.labels < 0, "noise", clusters.kinds[np.maximum(clusters.labels, 0)])
             if len(clusters.kinds) else np.full(len(ids), "noise"))  # no cluster at all: every item is noise
    step(0.8, "writing scores")
    if patches_field is None:
        set_sample_fields(samples, ids, {EDGE_FIELD: scores, CLUSTER_FIELD: clusters.labels,
                                         CLUSTER_KIND_FIELD: np.asarray(kinds, dtype=str)})
    else:
        by_id = {"score": dict(zip(ids.tolist(), scores.tolist())),
                 "cluster": dict(zip(ids.tolist(), clusters.labels.tolist())),
                 "kind": dict(zip(ids.tolist(), kinds.tolist()))}
        nested = samples.values(f"{patches_field}.detections.id")
        for field, key in ((EDGE_FIELD, "score"), (CLUSTER_FIELD, "cluster"), (CLUSTER_KIND_FIELD, "kind")):
            values = by_id[key]
            samples.set_values(f"{patches_field}.detections.{field}",
                               [[values.get(i) for i in (row or [])] for row in nested])
        per_sample = [max((by_id["score"][i] for i in (row or []) if i in by_id["score"]), default=None)
                      for row in nested]
        samples.set_values(EDGE_FIELD, per_sample)
    dataset.save_view(EDGE_VIEW, dataset.match(F(EDGE_FIELD).exists()).sort_by(EDGE_FIELD, reverse=True),
                      overwrite=True)
    top = np.argsort(-scores, kind="stable")[:10]
    summary = EdgeSummary(
        embeddings_key=embeddings_key, level="object" if patches_field else "image", scored=len(ids),
        clusters=clusters.n_clusters, sparse_clusters=int((clusters.kinds == "sparse").sum()),
        noise=int((clusters.labels < 0).sum()), top=[[ids[i], float(scores[i])] for i in top],
        view_name=EDGE_VIEW, seconds=round(time.perf_counter() - started, 2),
    )
    key = edge_run_key(embeddings_key)
    config = dataset.init_run(method=METHOD, embeddings_key=embeddings_key, patches_field=patches_field, seed=seed)
    dataset.register_run(key, config, overwrite=True, cleanup=False)
    dataset.save_run_results(key, dataset.init_run_results(key, **summary.to_dict()), overwrite=True)
    step(1.0, f"scored {len(ids)} items")
    return summary
