"""The similarity index of an embeddings run, as a FiftyOne Brain similarity run: our faiss backend (default, in a
folder on this machine) or Brain's Milvus backend (Milvus Lite, a file per dataset; or a Milvus server by URL).

Registered under ``<key>_sim``, it drives the App's native "sort by similarity": an image query for
any embeddings, and a text query when the run comes from a single open_clip model.
"""

from __future__ import annotations

from curate_loop.errors import InvalidInputError
from curate_loop.runs.embeddings import embedding_config, load_embeddings, model_specs

BACKENDS = ("faiss", "milvus")


def similarity_key(embeddings_key: str) -> str:
    return f"{embeddings_key}_sim"


def build_similarity(samples, embeddings_key: str, brain_key: str | None = None, *, backend: str = "faiss",
                     uri: str | None = None) -> str:
    """(Re)build the similarity index over the run's vectors for ``samples``; returns the brain key.

    ``backend="milvus"`` stores the vectors in Milvus: ``uri`` is a Milvus Lite file (``*.db``; default
    ``<curate-loop home>/milvus/<dataset id>.db``) or a Milvus server URL. ``uri`` means nothing to faiss.
    """
    if backend not in BACKENDS:
        raise InvalidInputError(f"similarity backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "faiss" and uri is not None:
        raise InvalidInputError(f"a Milvus uri ({uri!r}) was given but the similarity backend is faiss; "
                                "choose backend 'milvus', or drop the uri.")
    if backend == "milvus":
        from curate_loop.similarity.milvus import build_milvus_index, require_pymilvus

        require_pymilvus(uri)  # before any vector is read
        build_index = build_milvus_index
        options = {"uri": uri}
    else:
        from curate_loop.similarity.faiss_backend import build_similarity_index

        build_index = build_similarity_index
        options = {}

    dataset = samples._dataset
    brain_key = brain_key or similarity_key(embeddings_key)
    patches_field = embedding_config(dataset, embeddings_key).get("patches_field")
    ids, vectors = load_embeddings(samples, embeddings_key)
    specs = model_specs(dataset, embeddings_key)
    if len(specs) == 1:
        options.update(model_name=specs[0].name, pretrained=specs[0].pretrained)
    if patches_field is None:
        build_index(samples, vectors, ids.tolist(), brain_key, **options)
        return brain_key
    sample_ids, label_ids = samples.values(["id", f"{patches_field}.detections.id"])
    owner = {label_id: sample_id for sample_id, labels in zip(sample_ids, label_ids) for label_id in labels or []}
    build_index(samples, vectors, [owner[i] for i in ids.tolist()], brain_key,
                patches_field=patches_field, label_ids=ids.tolist(), **options)
    return brain_key
