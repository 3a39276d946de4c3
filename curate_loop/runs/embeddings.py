"""Embedding runs on a FiftyOne dataset: compute, import, load, list and delete.

The vectors live in stores (one per model, see :mod:`curate_loop.embeddings.store`) under
``<store base>/<dataset id>/<key>/``, the base being ``store_url`` / ``$CURATE_LOOP_STORE_URL`` (any fsspec URL,
e.g. ``s3://bucket/prefix``) or ``<curate-loop home>/embeddings``; the dataset records the run, with where its
stores are (so any process or machine on the same database opens the same run), (``dataset.list_runs()``)
with its models, parameters, counts and failures, and whether it finished. Nothing is written per
sample to MongoDB, so a 1M-sample run loads in seconds.

Image-level runs are keyed by sample id, object-level runs (``patches_field``) by label id.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from curate_loop.embeddings.combine import concat_normalized
from curate_loop.embeddings.crops import DEFAULT_MARGIN, DEFAULT_MIN_CROP_PX
from curate_loop.embeddings.models import ModelSpec
from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.errors import InvalidInputError
from curate_loop.paths import curate_loop_home

logger = logging.getLogger(__name__)

METHOD = "curate_loop.embeddings"
Progress = Callable[[float, str], None]


@dataclass
class EmbeddingRunSummary:
    """What a compute/import call did: counts per call, and the run's totals."""

    key: str
    level: str  # "image" or "object"
    computed: int
    skipped: int
    failed: dict[str, str] = field(default_factory=dict)
    total_vectors: int = 0
    dim: int = 0
    seconds: float = 0.0
    backend: str = "local"  # where the model ran: "local" (this process) or "ray"
    ray_actors: int | None = None  # the Ray actor pool's size (backend ray)


# -- parsing ---------------------------------------------------------------------------------------
def parse_models(models) -> list[ModelSpec]:
    """Accept ``"ViT-B-32"``, ``"ViT-B-32@laion2b_s34b_b79k"``, ``"RN50@/path/ckpt.pt"``, ModelSpecs, or a list."""
    if isinstance(models, (str, ModelSpec)):
        models = [models]
    specs = []
    for item in models or []:
        if isinstance(item, ModelSpec):
            specs.append(item)
        elif isinstance(item, str) and item.strip():
            name, _, pretrained = item.strip().partition("@")
            specs.append(ModelSpec(name, pretrained or None))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            specs.append(ModelSpec(item[0], item[1]))
        else:
            raise InvalidInputError(f"Cannot read model {item!r}: use 'NAME' or 'NAME@PRETRAINED' (a tag or a file).")
    if not specs:
        raise InvalidInputError("No model given: e.g. models='ViT-B-32@laion2b_s34b_b79k'.")
    return specs


# -- where things live -----------------------------------------------------------------------------
STORE_URL_ENV = "CURATE_LOOP_STORE_URL"


def store_base(store_url: str | None = None) -> Path | str:
    """Where new runs' stores go: ``store_url``, else ``$CURATE_LOOP_STORE_URL``, else ``<home>/embeddings``."""
    return _local_or_url(store_url or os.environ.get(STORE_URL_ENV) or curate_loop_home() / "embeddings")


def run_dir(dataset, key: str, store_url: str | None = None) -> Path | str:
    """The run's stores: a Path on a local disk (``file://`` URLs included), else a URL string.

    Keyed by the dataset's id so renaming a dataset keeps its embeddings. A recorded run stays where it was made
    (its record keeps the place); ``store_url`` (else the environment) only places new runs.
    """
    if key in dataset.list_runs() and dataset.get_run_info(key).config.method == METHOD:
        recorded = getattr(dataset.load_run_results(key, cache=False), "store_url", None)
        if recorded is None:  # runs recorded before stores could live elsewhere are in the curate-loop home
            return _join(curate_loop_home() / "embeddings", str(dataset._doc.id), key)
        if os.fspath(recorded).rstrip("/").endswith(f"{dataset._doc.id}/{key}"):
            return _local_or_url(recorded)
        # a clone's copy of its source's record: the clone never writes to, or deletes, its source's vectors
    return _join(store_base(store_url), str(dataset._doc.id), key)


def _local_or_url(url) -> Path | str:
    url = os.fspath(url)
    if "://" not in url:
        return Path(url).expanduser()
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    return url.rstrip("/")


def _join(base: Path | str, *parts: str) -> Path | str:
    return base.joinpath(*parts) if isinstance(base, Path) else "/".join([base, *parts])


def run_stores(dataset, key: str, n: int, store_url: str | None = None) -> list[EmbeddingStore]:
    """The ``n`` stores (one per model part) of run ``key``; shared with the shard workers (``runs.shards``)."""
    where = run_dir(dataset, key, store_url)
    return [EmbeddingStore(_join(where, f"part-{i}")) for i in range(n)]


def _validate_key(key: str) -> None:
    if not isinstance(key, str) or not key.isidentifier():
        raise InvalidInputError(f"Invalid embeddings key {key!r}: use letters, digits and underscores, e.g. 'clip'.")


def _dataset(samples):
    return samples._dataset


# -- inputs from FiftyOne (bulk reads only) --------------------------------------------------------
def _object_inputs(samples, patches_field: str):
    """Per image: its label ids and relative boxes, read with one bulk ``values`` call."""
    import fiftyone.core.labels as fol

    schema_field = samples.get_field(patches_field)
    doc_type = getattr(schema_field, "document_type", None)
    if doc_type is None or not issubclass(doc_type, fol.Detections):
        raise InvalidInputError(
            f"{patches_field!r} is not a Detections field of this dataset; object embeddings need boxes. "
            f"Detections fields: {sorted(samples.get_field_schema(embedded_doc_type=fol.Detections))}"
        )
    filepaths, label_ids, boxes = samples.values(
        ["filepath", f"{patches_field}.detections.id", f"{patches_field}.detections.bounding_box"]
    )
    return filepaths, [ids or [] for ids in label_ids], [b or [] for b in boxes]


def item_ids(samples, patches_field: str | None = None) -> np.ndarray:
    """The ids a run on ``samples`` is keyed by: sample ids, or the label ids of ``patches_field``."""
    if patches_field is None:
        return np.asarray(samples.values("id"), dtype=str)
    ids = samples.values(f"{patches_field}.detections.id", unwind=True)
    return np.asarray([i for i in ids if i is not None], dtype=str)


# -- the run record --------------------------------------------------------------------------------
def record_run(dataset, key: str, config: dict, results: dict, store_url: str | None = None) -> None:
    """Register run ``key`` (or overwrite its record) with ``results``: the one way a run record is written here
    and by the shard workers."""
    where = str(run_dir(dataset, key, store_url))  # kept in every record: other processes open the same stores
    run_config = dataset.init_run(method=METHOD, **config)
    dataset.register_run(key, run_config, overwrite=True, cleanup=False)
    dataset.save_run_results(key, dataset.init_run_results(key, **{"store_url": where, **results}), overwrite=True)


def _existing_config(dataset, key: str) -> dict | None:
    if key not in dataset.list_runs():
        return None
    info = dataset.get_run_info(key)
    if info.config.method != METHOD:
        raise InvalidInputError(f"Run {key!r} on dataset {dataset.name!r} is not an embeddings run; choose another key.")
    return {k: v for k, v in info.config.serialize().items() if k not in ("cls", "type", "method")}


def _check_same_config(dataset, key: str, config: dict) -> None:
    existing = _existing_config(dataset, key)
    if existing is None:
        return
    for name in ("level", "patches_field", "models", "source", "margin", "min_crop_px"):
        if existing.get(name) != config.get(name):
            raise InvalidInputError(
                f"Embeddings {key!r} on {dataset.name!r} were made with {name}={existing.get(name)!r}, not "
                f"{config.get(name)!r}. Use another key, or delete_embeddings(dataset, {key!r}) first."
            )


def finish_run(dataset, key: str, config: dict, stores: list[EmbeddingStore], summary: EmbeddingRunSummary) -> None:
    """Record run ``key`` as done, with what its stores hold and their failures (a single run or a run's last
    shard)."""
    counts = [len(s.stored_ids()) for s in stores]
    failures = {}
    for store in stores:
        failures.update(store.failures())
    summary.total_vectors = min(counts)
    for store in stores:
        store.mark_complete({"vectors": int(len(store.stored_ids()))})
    record_run(dataset, key, config, {
        "status": "complete", "vectors": summary.total_vectors, "dim": summary.dim, "failures": len(failures),
        "failure_examples": dict(list(failures.items())[:20]), "last_computed": summary.computed,
        "last_seconds": round(summary.seconds, 2),
        **({"ray_actors": summary.ray_actors} if summary.ray_actors else {}),
    })


# -- compute ---------------------------------------------------------------------------------------
def compute_embeddings(samples, key: str = "clip", models="ViT-B-32", *, patches_field: str | None = None,
                       margin: float = DEFAULT_MARGIN, min_crop_px: int = DEFAULT_MIN_CROP_PX,
                       batch_size: int = 32, device: str | None = None, num_workers: int | None = None,
                       flush_every: int = 4096, progress: Progress | None = None,
                       quality: bool = False, backend: str = "local", ray_address: str | None = None,
                       ray_actors: int | None = None, store_url: str | None = None) -> EmbeddingRunSummary:
    """Embed the images (or the objects of ``patches_field``) of ``samples`` with one or more open_clip models.

    Re-running with the same key resumes an interrupted run and embeds only what is new: ids already
    stored are skipped. Several models are combined by concatenating their normalised vectors.
    ``flush_every`` vectors are written per chunk: the most work an interruption can lose.
    ``quality`` (images only): measure the data-quality metrics from the same decode and record them as
    :func:`curate_loop.runs.quality.compute_quality` would (which then skips these images).
    ``backend="ray"`` (images only): decode and run the model in a (warm) Ray actor pool of ``ray_actors`` actors on
    the cluster at ``ray_address`` (None: a local cluster for this call); see
    :mod:`curate_loop.embeddings.ray_backend`. Same store, vectors and run record.
    ``store_url``: where a new run's stores go (any fsspec URL; default ``$CURATE_LOOP_STORE_URL``, else the
    curate-loop home); an existing run stays where its record says.
    """
    from curate_loop.embeddings.compute import embed_images
    from curate_loop.embeddings.models import check_spec, load_model
    from curate_loop.embeddings.objects import embed_objects

    _validate_key(key)
    if backend not in ("local", "ray"):
        raise InvalidInputError(f"Unknown embeddings backend {backend!r}: use 'local' (this process) or 'ray'.")
    if backend == "ray" and patches_field is not None:
        raise InvalidInputError("Object embeddings are not supported yet with backend ray: use backend local.")
    if quality and patches_field is not None:
        raise InvalidInputError("quality=True measures images; embed the images for it, and check boxes with "
                                "curate_loop.runs.quality.compute_quality.")
    specs = parse_models(models)
    for spec in specs:
        check_spec(spec)  # a typo in a model name is the first thing to report
    dataset = _dataset(samples)
    level = "image" if patches_field is None else "object"
    config = {"level": level, "patches_field": patches_field, "source": "open_clip",
              "models": [{"name": s.name, "pretrained": s.pretrained} for s in specs],
              "margin": margin if level == "object" else None, "min_crop_px": min_crop_px if level == "object" else None}
    _check_same_config(dataset, key, config)
    if level == "object":
        filepaths, label_ids, boxes = _object_inputs(samples, patches_field)
    else:
        ids, filepaths = samples.values(["id", "filepath"])
    stores = run_stores(dataset, key, len(specs), store_url)
    if progress:
        progress(0.0, "loading model(s)")
    models_loaded = [load_model(spec, device=device) for spec in specs]  # bad names/weights fail before any record
    run_config = {**config, "backend": backend}  # where it ran; not the stores' config: either backend resumes
    record_run(dataset, key, run_config, {"status": "running"}, store_url)
    started = time.perf_counter()
    summary = EmbeddingRunSummary(key, level, computed=0, skipped=0, backend=backend)
    for m, (spec, store, loaded) in enumerate(zip(specs, stores, models_loaded)):
        store.open({"model": spec.name, "pretrained": spec.pretrained, **config, "models": None})
        store.mark_incomplete()
        if spec.is_classical:
            classical_basis(loaded, store, level, filepaths, boxes if level == "object" else None, margin,
                            min_crop_px, progress)

        def step(done, total, m=m, spec=spec):
            if progress:
                progress((m + done / max(total, 1)) / len(specs), f"{spec.key}: {done}/{total} {level}s")

        common = dict(batch_size=batch_size, flush_every=flush_every, progress=step)
        if num_workers is not None:
            common["num_workers"] = num_workers
        if level == "object":
            report = embed_objects(label_ids, boxes, filepaths, loaded, store, margin=margin, min_crop_px=min_crop_px,
                                   **common)
        elif backend == "ray":
            from curate_loop.embeddings.ray_backend import embed_images_ray

            # actors load an open_clip model themselves; the classical one travels with its fitted basis
            report = embed_images_ray(ids, filepaths, loaded if spec.is_classical else spec, store,
                                      num_actors=ray_actors, address=ray_address,
                                      use_gpu=False if spec.is_classical else None, quality=quality and m == 0,
                                      batch_size=batch_size, flush_every=flush_every, progress=step)
            summary.ray_actors = report.actors
        else:
            report = embed_images(ids, filepaths, loaded, store, quality=quality and m == 0, **common)
        if report.quality:
            _record_quality(samples, report.quality)
        summary.computed = max(summary.computed, report.computed)
        summary.skipped = max(summary.skipped, report.skipped)
        summary.failed.update(report.failed)
        summary.dim += loaded.dim
    summary.seconds = time.perf_counter() - started
    finish_run(dataset, key, run_config, stores, summary)
    logger.info("Embeddings %r: %d computed, %d already stored, %d failed in %.1f s", key, summary.computed,
                summary.skipped, len(summary.failed), summary.seconds)
    return summary


def _record_quality(samples, measured: dict[str, tuple[dict, str]]) -> None:
    """Store what the embedding pass measured (id -> (metrics, hash)) as the quality run's image metrics."""
    from curate_loop.quality.image_metrics import METRICS
    from curate_loop.runs.quality import record_image_metrics

    ids = list(measured)
    metrics = {m: np.asarray([measured[i][0][m] for i in ids], dtype=np.float64) for m in METRICS}
    record_image_metrics(samples, ids, metrics, [measured[i][1] for i in ids])


def classical_basis(loaded, store: EmbeddingStore, level: str, filepaths, boxes, margin, min_crop_px,
                    progress: Progress | None) -> None:
    """The classical model's PCA basis: the one saved with the store, else fitted on these items and saved."""
    from curate_loop.embeddings.classical import BASIS_FILE, fit_on_crops, fit_on_images

    model = loaded.model
    if not model.load_bytes(store.get_bytes(BASIS_FILE)):
        if store.stored_ids().size:
            raise InvalidInputError(f"The classical embeddings in {store.url} lost their PCA basis; delete the run "
                                    "and compute it again.")
        if progress:
            progress(0.0, "classical model: fitting the PCA basis")
        if level == "object":
            fit_on_crops(model, filepaths, boxes, margin=margin, min_crop_px=min_crop_px)
        else:
            fit_on_images(model, filepaths)
        store.put_bytes(BASIS_FILE, model.to_bytes())
    loaded.dim = model.dim


def import_embeddings(samples, key: str, source, *, patches_field: str | None = None, batch_size: int = 32,
                      progress: Progress | None = None, store_url: str | None = None) -> EmbeddingRunSummary:
    """Bring your own vectors for ``samples``: an array or ``.npy`` path (rows in the order of
    ``item_ids(samples, patches_field)``), the name of a vector field, or a callable ``PIL images -> vectors``.
    """
    from curate_loop.embeddings.loop import checked_vectors
    from curate_loop.embeddings.sources import embed_with_callable, load_npy, store_vectors

    _validate_key(key)
    dataset = _dataset(samples)
    level = "image" if patches_field is None else "object"
    ids = item_ids(samples, patches_field)
    if callable(source):
        if level == "object":
            raise InvalidInputError("A callable embeds whole images; for objects pass an array or a field instead.")
        kind = f"callable:{getattr(source, '__qualname__', type(source).__name__)}"
    elif isinstance(source, str) and source.endswith(".npy"):
        kind = "npy"
    elif isinstance(source, str):
        kind = "field"
    else:
        kind = "array"
    config = {"level": level, "patches_field": patches_field, "source": kind, "models": None, "margin": None,
              "min_crop_px": None}
    _check_same_config(dataset, key, config)
    if kind == "npy":
        vectors = load_npy(source, len(ids))
    elif kind == "field":
        vectors = _field_vectors(samples, source, patches_field, len(ids))
    elif kind == "array":
        vectors = checked_vectors(source, len(ids), f"The array for {key!r}")
    store = run_stores(dataset, key, 1, store_url)[0].open({"source": kind, "level": level,
                                                            "patches_field": patches_field})
    record_run(dataset, key, config, {"status": "running"}, store_url)
    store.mark_incomplete()
    started = time.perf_counter()
    if kind.startswith("callable"):
        filepaths = samples.values("filepath")
        report = embed_with_callable(source, ids.tolist(), filepaths, store, batch_size=batch_size,
                                     progress=lambda d, t: progress and progress(d / max(t, 1), f"{d}/{t} images"))
    else:
        report = store_vectors(ids.tolist(), vectors, store, source=f"The {kind} for {key!r}")
    if kind.startswith("callable"):  # the width is known only from what the callable gave
        first = store.stored_ids()[:1]
        dim = int(store.load(first)[1].shape[1]) if len(first) else 0
    else:  # not from the store: loading one row read every chunk (2 GB at 1M x 512)
        dim = int(vectors.shape[1])
    summary = EmbeddingRunSummary(key, level, report.computed, report.skipped, report.failed, dim=dim,
                                  seconds=time.perf_counter() - started)
    finish_run(dataset, key, config, [store], summary)
    return summary


def _field_vectors(samples, field_name: str, patches_field: str | None, n_rows: int) -> np.ndarray:
    path = field_name if patches_field is None else f"{patches_field}.detections.{field_name}"
    if patches_field is None and not samples.has_field(field_name):
        raise InvalidInputError(f"The dataset has no field {field_name!r} holding vectors.")
    values = samples.values(path, unwind=patches_field is not None)
    missing = sum(v is None for v in values)
    if missing:
        raise InvalidInputError(f"{missing} of {len(values)} items have no vector in {path!r}; import only the "
                                f"items that have one, e.g. samples.exists({path!r}).")
    return np.asarray(values, dtype=np.float32).reshape(n_rows, -1)


# -- read ------------------------------------------------------------------------------------------
def load_embeddings(samples, key: str, *, allow_incomplete: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, vectors)`` for the items of ``samples`` that have a vector, in the order of ``samples``.

    Items without one (failed, or added after the run) are left out; ``compute_embeddings`` again
    with the same key embeds them.
    """
    dataset = _dataset(samples)
    config = _existing_config(dataset, key)
    if config is None:
        runs = list_embeddings(dataset)
        raise InvalidInputError(f"No embeddings {key!r} on dataset {dataset.name!r}. Existing: "
                                f"{[r['key'] for r in runs] or 'none'}; compute them with `curate-loop embed`.")
    results = dataset.load_run_results(key, cache=False)
    if getattr(results, "status", None) != "complete" and not allow_incomplete:
        raise InvalidInputError(f"Embeddings {key!r} did not finish (interrupted?). Run the same compute again to "
                                "resume it; finished batches are not recomputed.")
    n_parts = len(config["models"]) if config.get("models") else 1
    stores = run_stores(dataset, key, n_parts)
    ids = item_ids(samples, config.get("patches_field"))
    have = np.ones(len(ids), dtype=bool)
    for store in stores:
        have &= np.isin(ids, store.stored_ids())
    ids = ids[have]
    if not len(ids):
        return ids, np.zeros((0, getattr(results, "dim", 0)), dtype=np.float32)
    blocks = [store.load(ids)[1] for store in stores]
    return ids, (blocks[0] if len(blocks) == 1 else concat_normalized(blocks))


def embedding_config(dataset, key: str) -> dict:
    """The recorded parameters of an embeddings run (models, level, patches_field, ...)."""
    config = _existing_config(dataset, key)
    if config is None:
        raise InvalidInputError(f"No embeddings {key!r} on dataset {dataset.name!r}.")
    return config


def list_embeddings(dataset) -> list[dict]:
    """One dict per embeddings run: key, level, models/source, status and counts."""
    rows = []
    for key in dataset.list_runs(method=METHOD):
        config = _existing_config(dataset, key)
        results = dataset.load_run_results(key, cache=False)
        rows.append({"key": key, **config, "status": getattr(results, "status", "unknown"),
                     "vectors": getattr(results, "vectors", 0), "failures": getattr(results, "failures", 0),
                     "dim": getattr(results, "dim", 0)})
    return rows


def delete_embeddings(dataset, key: str) -> None:
    """Delete the run record and its vectors on disk."""
    _existing_config(dataset, key)
    where = run_dir(dataset, key)
    if key in dataset.list_runs():
        dataset.delete_run(key)
    EmbeddingStore(where).delete()


RANDOM_WEIGHTS_NOTICE = ("RANDOM WEIGHTS: embeddings {key!r} come from open_clip {models} with random weights, so results "
                         "built on them are plumbing only, not meaningful. Offline, use the classical model "
                         "(`--model classical`, manifest `name: classical`); online, pretrained weights.")


def random_weights_notice(dataset, key: str) -> str | None:
    """One line to show beside every result built on embeddings ``key`` when they used random weights, else None.

    Random-weight open_clip vectors run every step for real but rank nothing meaningfully (a mislabel scan flags
    every label); a user must never mistake such results for real ones. Unknown keys give None.
    """
    try:
        config = _existing_config(dataset, key)
    except InvalidInputError:
        return None
    models = (config or {}).get("models") or []
    random = [m["name"] for m in models if m.get("pretrained") is None and m.get("name") != "classical"]
    return RANDOM_WEIGHTS_NOTICE.format(key=key, models=", ".join(random)) if random else None


def model_specs(dataset, key: str) -> Sequence[ModelSpec]:
    config = embedding_config(dataset, key)
    return [ModelSpec(m["name"], m["pretrained"]) for m in config.get("models") or []]
