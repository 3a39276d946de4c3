"""The similarity index of an embeddings run, as a FiftyOne Brain similarity run on our faiss backend.

Registered under ``<key>_sim``, it drives the App's native "sort by similarity": an image query for
any embeddings, and a text query when the run comes from a single open_clip model.
"""

from __future__ import annotations

import numpy as np

from curate_loop.runs.embeddings import embedding_config, load_embeddings, model_specs


def similarity_key(embeddings_key: str) -> str:
    return f"{embeddings_key}_sim"


def build_similarity(samples, embeddings_key: str, brain_key: str | None = None) -> str:
    """(Re)build the faiss index over the run's vectors for ``samples``; returns the brain key."""
    from curate_loop.similarity.faiss_backend import build_similarity_index

    dataset = samples._dataset
    brain_key = brain_key or similarity_key(embeddings_key)
    patches_field = embedding_config(dataset, embeddings_key).get("patches_field")
    ids, vectors = load_embeddings(samples, embeddings_key)
    specs = model_specs(dataset, embeddings_key)
    text = dict(model_name=specs[0].name, pretrained=specs[0].pretrained) if len(specs) == 1 else {}
    if patches_field is None:
        build_similarity_index(samples, vectors, ids.tolist(), brain_key, **text)
        return brain_key
    sample_ids, label_ids = samples.values(["id", f"{patches_field}.detections.id"])
    owner = {label_id: sample_id for sample_id, labels in zip(sample_ids, label_ids) for label_id in labels or []}
    build_similarity_index(samples, vectors, [owner[i] for i in ids.tolist()], brain_key,
                           patches_field=patches_field, label_ids=ids.tolist(), **text)
    return brain_key
