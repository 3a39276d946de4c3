"""Saved similarity searches (Labelbox calls them functions): a query kept under a name, applied later.

A search is a query vector in an embeddings run's space — the mean of example items, or a text
prompt for CLIP-style models — recorded as a run on the dataset. Applying it scores every item of a
view that has a vector (cosine similarity, higher is closer) into a field, so samples added and
embedded later are scored by the same query.
"""

from __future__ import annotations

import numpy as np

from curate_loop.embeddings.combine import normalize_rows
from curate_loop.errors import InvalidInputError
from curate_loop.runs.embeddings import embedding_config, load_embeddings, model_specs

METHOD = "curate_loop.saved_search"


def save_search(dataset, name: str, embeddings_key: str, *, example_ids=None, text: str | None = None) -> np.ndarray:
    """Record a search from example sample/label ids, or a text prompt; returns its query vector."""
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidInputError(f"Invalid search name {name!r}: use letters, digits and underscores.")
    if (example_ids is None) == (text is None):
        raise InvalidInputError("Give either example ids or a text prompt for the search, not both.")
    config = embedding_config(dataset, embeddings_key)
    if name in dataset.list_runs() and dataset.get_run_info(name).config.method != METHOD:
        raise InvalidInputError(f"{name!r} is already a different run on {dataset.name!r}; choose another name.")
    if text is not None:
        query = _text_query(dataset, embeddings_key, text)
    else:
        example_ids = [str(i) for i in ([example_ids] if isinstance(example_ids, str) else example_ids)]
        view = dataset.select(example_ids) if config.get("patches_field") is None else \
            dataset.select_labels(ids=example_ids, fields=config["patches_field"])
        ids, vectors = load_embeddings(view, embeddings_key)
        wanted = set(example_ids)
        vectors = vectors[np.isin(ids, list(wanted))]
        if not len(vectors):
            raise InvalidInputError(f"None of the examples {example_ids[:3]} has a vector in {embeddings_key!r}; "
                                    "compute embeddings for them first.")
        query = normalize_rows(vectors.mean(axis=0, keepdims=True))[0]
    run_config = dataset.init_run(method=METHOD, embeddings_key=embeddings_key, text=text,
                                  example_ids=None if text is not None else example_ids)
    dataset.register_run(name, run_config, overwrite=True, cleanup=False)
    dataset.save_run_results(name, dataset.init_run_results(name, query=query.tolist()), overwrite=True)
    return query


def _text_query(dataset, embeddings_key: str, text: str) -> np.ndarray:
    from curate_loop.embeddings.models import load_model
    from curate_loop.embeddings.text import embed_texts

    specs = model_specs(dataset, embeddings_key)
    if not specs:
        raise InvalidInputError(f"Embeddings {embeddings_key!r} were brought in, not computed by a CLIP model: "
                                "text search needs open_clip embeddings. Use example samples instead.")
    return embed_texts([load_model(spec) for spec in specs], [text])[0]


def apply_search(samples, name: str, *, field: str | None = None) -> str:
    """Score every item of ``samples`` that has a vector; returns the field written (``search_<name>``).

    Image runs write a sample field; object runs write an attribute on each detection.
    """
    dataset = samples._dataset
    if name not in list_searches(dataset):
        raise InvalidInputError(f"No saved search {name!r} on {dataset.name!r}; saved: {list_searches(dataset)}")
    info = dataset.get_run_info(name)
    query = np.asarray(dataset.load_run_results(name, cache=False).query, dtype=np.float32)
    key = info.config.embeddings_key
    field = field or f"search_{name}"
    ids, vectors = load_embeddings(samples, key)
    if vectors.shape[1] != len(query):
        raise InvalidInputError(f"Search {name!r} has a {len(query)}-d query but {key!r} now holds {vectors.shape[1]}-d "
                                "vectors; save the search again.")
    scores = dict(zip(ids.tolist(), (vectors @ query).round(6).tolist()))
    patches_field = embedding_config(dataset, key).get("patches_field")
    if patches_field is None:
        values = [scores.get(i) for i in samples.values("id")]
        samples.set_values(field, values)
    else:
        nested = samples.values(f"{patches_field}.detections.id")
        samples.set_values(f"{patches_field}.detections.{field}",
                           [[scores.get(i) for i in (ids_ or [])] for ids_ in nested])
    return field


def list_searches(dataset) -> list[str]:
    return dataset.list_runs(method=METHOD)


def delete_search(dataset, name: str) -> None:
    if name in list_searches(dataset):
        dataset.delete_run(name)
