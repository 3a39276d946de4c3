"""A faiss similarity backend for FiftyOne Brain: ``compute_similarity(..., backend="faiss")`` once
:func:`register_faiss_backend` has run in the process (:func:`build_similarity_index` runs it; importing this
module does not, so importing changes no FiftyOne config).

Brain's default sklearn backend keeps every embedding in MongoDB and an all-pairs distance matrix
in memory (up to 15k items). This one keeps the vectors and a faiss index (exact up to 20k items,
IVF above: see :mod:`curate_loop.similarity.knn`) in a folder on disk whose path lives in the run's
config, so the App server, which rebuilds the run from the class names stored in MongoDB, finds it in
its own process. Vectors are cosine-normalised; distances reported to FiftyOne are ``1 - cosine``.

Prompt (text) queries work when the run records an open_clip ``model_name``/``pretrained``: the
index's :meth:`FaissSimilarityIndex.get_model` then returns an :class:`OpenClipPromptModel`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import faiss
import numpy as np

import eta.core.utils as etau
import fiftyone.brain.internal.core.utils as fbu
import fiftyone.core.utils as fou
from fiftyone.brain.similarity import DuplicatesMixin, Similarity, SimilarityConfig, SimilarityIndex

from curate_loop.errors import InvalidInputError
from curate_loop.paths import curate_loop_home
from curate_loop.similarity import knn
from curate_loop.vectors import normalize_rows

logger = logging.getLogger(__name__)

BACKEND_NAME = "faiss"
CONFIG_CLS = "curate_loop.similarity.faiss_backend.FaissSimilarityConfig"
DATA_FILE = "data.npz"  # normalised vectors + sample/label ids: the source of truth
INDEX_FILE = "index.faiss"  # derived from DATA_FILE; rebuilt if missing or stale
_EMPTY_IDS = np.array([], dtype="<U24")


def register_faiss_backend() -> None:
    """Make ``backend="faiss"`` known to ``fob.compute_similarity`` in this process (idempotent).

    Loading an existing run needs no registration: FiftyOne imports the config class by its stored name.
    """
    import fiftyone.brain as fob

    fob.brain_config.similarity_backends.setdefault(BACKEND_NAME, {}).setdefault("config_cls", CONFIG_CLS)


def default_index_dir(dataset_name: str, brain_key: str) -> Path:
    """``<curate-loop home>/similarity/<dataset slug>/<brain key>``."""
    return curate_loop_home() / "similarity" / fou.to_slug(dataset_name) / brain_key


class FaissSimilarityConfig(SimilarityConfig):
    """Configuration of a faiss similarity run.

    Args:
        index_dir (None): folder for the index files; default :func:`default_index_dir` (set when the run
            is created, then stored with the run so other processes find it)
        model_name (None): the open_clip model that computed the embeddings; enables prompt queries
        pretrained (None): its open_clip ``pretrained`` tag or checkpoint file (None: random weights)
        exact (None): force an exact (True) or IVF (False) index; None picks by size
        metric ("cosine"): the only supported metric
        **kwargs: keyword arguments for :class:`fiftyone.brain.similarity.SimilarityConfig`
    """

    def __init__(self, index_dir=None, model_name=None, pretrained=None, exact=None, metric="cosine", **kwargs):
        if metric != "cosine":
            raise InvalidInputError(f"the faiss backend measures cosine similarity only, got metric={metric!r}.")
        super().__init__(**kwargs)
        # Absolute, so the App server (another working directory) finds the same folder.
        self.index_dir = None if index_dir is None else str(Path(index_dir).expanduser().resolve())
        self.model_name = model_name
        self.pretrained = pretrained
        self.exact = exact
        self.metric = metric
        if model_name is not None:
            # compute_similarity() passes supports_prompts=False when given no model object; the App looks
            # for this flag to offer text search, so the stored open_clip model decides.
            self.supports_prompts = True

    @property
    def method(self):
        return BACKEND_NAME

    @property
    def max_k(self):
        return None

    @property
    def supports_least_similarity(self):
        return True

    @property
    def supported_aggregations(self):
        return ("mean",)


class FaissSimilarity(Similarity):
    """Creates :class:`FaissSimilarityIndex` instances and deletes their folder with the run."""

    def initialize(self, samples, brain_key):
        dataset = samples._root_dataset
        if self.config.index_dir is None and brain_key is not None:
            self.config.index_dir = str(default_index_dir(dataset.name, brain_key))
            # The run doc was written before this path existed: store it for the App process.
            self.update_run_config(samples, brain_key, self.config)
        if self.config.index_dir is not None:
            _check_owner(self.config.index_dir, dataset)
            _remove_index_files(self.config.index_dir)  # a new run never inherits a stale folder's vectors
        return FaissSimilarityIndex(samples, self.config, brain_key, backend=self)

    def cleanup(self, samples, brain_key):
        """Called by ``dataset.delete_brain_run()``: removes the index folder.

        A cloned dataset's run points at the original's folder; deleting the clone's run leaves it alone.
        """
        if self.config.index_dir is not None and _owned_by(self.config.index_dir, samples._root_dataset):
            _remove_index_files(self.config.index_dir)


class FaissSimilarityIndex(SimilarityIndex, DuplicatesMixin):
    """A faiss index over cosine-normalised embeddings, persisted in ``config.index_dir``.

    ``get_embeddings()`` returns the normalised vectors (what the index holds), not the raw inputs.
    """

    def __init__(self, samples, config, brain_key, backend=None):
        self._vectors = None  # (n, d) float32 unit rows, row i <-> sample_ids[i] (and label_ids[i])
        self._sample_ids = _EMPTY_IDS
        self._label_ids = _EMPTY_IDS if config.patches_field is not None else None
        self._index = None
        self._sorted_ids = None  # (argsort, ids) cache for id -> row lookups
        SimilarityIndex.__init__(self, samples, config, brain_key, backend=backend)
        DuplicatesMixin.__init__(self)
        self._load()

    # -- what the base class asks for -------------------------------------------------------------------

    @property
    def sample_ids(self):
        return self._sample_ids

    @property
    def label_ids(self):
        return self._label_ids

    @property
    def total_index_size(self):
        return len(self._sample_ids)

    @property
    def index_dir(self) -> Path | None:
        return None if self.config.index_dir is None else Path(self.config.index_dir)

    @property
    def supports_prompts(self):
        if self.config.model_name is not None:
            return True
        return super().supports_prompts

    def get_model(self):
        """An :class:`OpenClipPromptModel` for the run's open_clip model, else brain's zoo-model lookup."""
        if self._model is None and self.config.model_name is not None:
            self._model = OpenClipPromptModel(self.config.model_name, self.config.pretrained)
        return super().get_model()

    def add_to_index(self, embeddings, sample_ids, label_ids=None, overwrite=True, allow_existing=True,
                     warn_existing=False, reload=True):
        self._add_unit_rows(normalize_rows(embeddings, zero_rows="raise", what="embeddings"), sample_ids, label_ids,
                            overwrite=overwrite, allow_existing=allow_existing, warn_existing=warn_existing,
                            reload=reload)

    def _add_unit_rows(self, vectors, sample_ids, label_ids=None, *, overwrite=True, allow_existing=True,
                       warn_existing=False, reload=True):
        """:meth:`add_to_index` of rows normalised already: a 1M x 512 build holds each 2 GB copy only once."""
        sample_ids = _as_ids(sample_ids)
        label_ids = None if label_ids is None else _as_ids(label_ids)
        _check_rows(vectors, sample_ids, label_ids)
        if self.config.patches_field is not None and label_ids is None:
            raise InvalidInputError(f"this index is over patches ({self.config.patches_field!r}): pass label_ids.")
        n = self.total_index_size
        if n and vectors.shape[1] != self._vectors.shape[1]:
            raise InvalidInputError(
                f"embeddings have {vectors.shape[1]} dimensions but the index has {self._vectors.shape[1]}; "
                "use the model that computed the indexed embeddings, or build a new index."
            )
        all_sample_ids, all_label_ids, ii, jj = fbu.add_ids(
            sample_ids, label_ids, self._sample_ids, self._label_ids, patches_field=self.config.patches_field,
            overwrite=overwrite, allow_existing=allow_existing, warn_existing=warn_existing,
        )
        if ii.size == 0:
            return
        if n == 0 and np.array_equal(ii, np.arange(len(vectors))) and np.array_equal(jj, ii):
            merged = vectors  # a new index of exactly these rows: no copy
        else:
            merged = np.empty((len(all_sample_ids), vectors.shape[1]), dtype=np.float32)
            if n:
                merged[:n] = self._vectors
            merged[jj] = vectors[ii]
        self._replace(merged, all_sample_ids, all_label_ids)
        if reload:
            self.reload()

    def remove_from_index(self, sample_ids=None, label_ids=None, allow_missing=True, warn_missing=False,
                          reload=True):
        sample_ids = None if sample_ids is None else _as_ids(sample_ids)
        label_ids = None if label_ids is None else _as_ids(label_ids)
        kept_sample_ids, kept_label_ids, rm_inds = fbu.remove_ids(
            sample_ids, label_ids, self._sample_ids, self._label_ids, patches_field=self.config.patches_field,
            allow_missing=allow_missing, warn_missing=warn_missing,
        )
        if rm_inds.size == 0:
            return
        self._replace(np.delete(self._vectors, rm_inds, axis=0), kept_sample_ids, kept_label_ids)
        if reload:
            self.reload()

    def get_embeddings(self, sample_ids=None, label_ids=None, allow_missing=True, warn_missing=False):
        if self.total_index_size == 0:
            raise InvalidInputError("this similarity index is empty: add embeddings first.")
        patches = self.config.patches_field is not None
        if label_ids is not None:
            if not patches:
                raise InvalidInputError("this index is over samples, not labels: pass sample_ids.")
            rows = self._rows(_as_ids(label_ids), allow_missing, warn_missing)
        elif sample_ids is not None and patches:
            rows = np.flatnonzero(np.isin(self._sample_ids, _as_ids(sample_ids)))
        elif sample_ids is not None:
            rows = self._rows(_as_ids(sample_ids), allow_missing, warn_missing)
        else:
            rows = np.arange(self.total_index_size)
        return (self._vectors[rows].copy(), self._sample_ids[rows].copy(),
                self._label_ids[rows].copy() if patches else None)

    def cleanup(self):
        """Deletes the index folder (unless another dataset owns it) and empties this index."""
        if self.index_dir is not None and _owned_by(self.index_dir, self.samples._root_dataset):
            _remove_index_files(self.index_dir)
        self._vectors, self._index, self._sorted_ids = None, None, None
        self._sample_ids = _EMPTY_IDS
        self._label_ids = _EMPTY_IDS if self.config.patches_field is not None else None

    # -- queries ----------------------------------------------------------------------------------------

    def _kneighbors(self, query=None, k=None, reverse=False, aggregation=None, return_dists=False):
        if aggregation not in (None, "mean"):
            raise InvalidInputError(f"aggregation={aggregation!r} is not supported by the faiss backend; use 'mean'.")
        keep = self._current_inds  # rows of the active view, or None for the whole index
        vectors = self._vectors if keep is None else self._vectors[keep]
        if vectors is None or len(vectors) == 0:
            raise InvalidInputError("this similarity index has no embeddings in the current view.")
        if query is None:
            return self._kneighbors_all(vectors, keep, k, return_dists)

        queries, single = self._query_vectors(query)
        if aggregation == "mean":
            mean = queries.mean(axis=0, keepdims=True)
            queries, single = normalize_rows(mean, zero_rows="raise", what="mean query"), True
        n = len(vectors)
        if k is None:  # sort everything: the full similarity row is needed anyway
            sims = queries @ vectors.T
            order = np.argsort(sims if reverse else -sims, axis=1, kind="stable")
            sims = np.take_along_axis(sims, order, axis=1)
        elif keep is None and not reverse:  # top-k over the whole index: the (possibly IVF) index answers
            sims, order = knn.search(self._index, queries, min(k, n))
        else:  # a view or least-similar: exact, memory-blocked brute force over the active rows
            sims, order = faiss.knn(-queries if reverse else queries, vectors, min(k, n),
                                    metric=faiss.METRIC_INNER_PRODUCT)
            sims = -sims if reverse else sims
        return self._format(order, 1.0 - sims, single, return_dists)

    def _radius_neighbors(self, query=None, thresh=None, return_dists=False):
        if thresh is None:
            raise InvalidInputError("pass thresh, a cosine distance (1 - cosine similarity) in [0, 2].")
        keep = self._current_inds
        vectors = self._vectors if keep is None else self._vectors[keep]
        if vectors is None or len(vectors) == 0:
            raise InvalidInputError("this similarity index has no embeddings in the current view.")
        if keep is None:
            index = self._index
        else:
            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(vectors)
        queries, single = (vectors, False) if query is None else self._query_vectors(query)
        # faiss keeps inner products strictly above the radius; the epsilon keeps dist == thresh (e.g. 0) in.
        lims, sims, rows = index.range_search(queries, 1.0 - float(thresh) - 1e-6)
        owner = np.repeat(np.arange(len(queries)), np.diff(lims).astype(np.int64))
        if query is None:  # neighbours of every point, like sklearn: not the point itself
            keep_hits = rows != owner
            rows, sims, owner = rows[keep_hits], sims[keep_hits], owner[keep_hits]
        splits = np.cumsum(np.bincount(owner, minlength=len(queries)))[:-1]
        inds, dists = np.split(rows, splits), np.split(1.0 - sims, splits)
        if query is None:
            return (inds, dists) if return_dists else inds
        return self._format(inds, dists, single, return_dists)

    def _kneighbors_all(self, vectors, keep, k, return_dists):
        """Every active point's k nearest other points, as integer rows of the active view (brain's format)."""
        if k is None:
            raise InvalidInputError("pass k to get the neighbours of every indexed point.")
        index = self._index if keep is None else None
        inds, sims = knn.knn_graph(vectors, min(k, len(vectors) - 1), index=index)
        if return_dists:
            return list(inds), list(1.0 - sims)
        return list(inds)

    def _query_vectors(self, query) -> tuple[np.ndarray, bool]:
        """Query ids or vectors -> (normalised query vectors, whether it was a single query)."""
        if etau.is_str(query):
            ids, single = np.array([query]), True
        else:
            array = np.asarray(query)
            if np.issubdtype(array.dtype, np.number):
                single = array.ndim == 1
                vectors = normalize_rows(array.reshape(1, -1) if single else array, zero_rows="raise",
                                         what="query vectors")
                if self.total_index_size and vectors.shape[1] != self._vectors.shape[1]:
                    raise InvalidInputError(
                        f"query vectors have {vectors.shape[1]} dimensions but the index has "
                        f"{self._vectors.shape[1]}; embed queries with the model that embedded the index."
                    )
                return vectors, single
            ids, single = _as_ids(array), False
        return self._vectors[self._rows(ids, allow_missing=False)], single

    def _format(self, inds, dists, single, return_dists):
        """Rows of the active view -> brain's (sample_ids, label_ids[, dists]) lists."""
        sample_ids = [self.current_sample_ids[i].tolist() for i in inds]
        label_ids = None
        if self.config.patches_field is not None:
            label_ids = [self.current_label_ids[i].tolist() for i in inds]
        dists = [np.asarray(d).tolist() for d in dists]
        if single:
            sample_ids, dists = sample_ids[0], dists[0]
            label_ids = None if label_ids is None else label_ids[0]
        return (sample_ids, label_ids, dists) if return_dists else (sample_ids, label_ids)

    # -- storage ----------------------------------------------------------------------------------------

    def _rows(self, ids: np.ndarray, allow_missing: bool, warn_missing: bool = False) -> np.ndarray:
        """Index rows of ``ids`` (label ids for patches, else sample ids), by binary search."""
        index_ids = self._label_ids if self.config.patches_field is not None else self._sample_ids
        if self._sorted_ids is None:
            order = np.argsort(index_ids)
            self._sorted_ids = (order, index_ids[order])
        order, sorted_ids = self._sorted_ids
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
        found = sorted_ids[pos] == ids if len(sorted_ids) else np.zeros(len(ids), dtype=bool)
        if not found.all():
            missing = ids[~found]
            if not allow_missing:
                raise InvalidInputError(
                    f"{len(missing)} id(s) are not in this similarity index (e.g. {missing[0]!r}); query with "
                    "ids of indexed samples/labels, or add their embeddings with add_to_index()."
                )
            if warn_missing:
                logger.warning("Ignoring %d ids not in the index (e.g. %r)", len(missing), missing[0])
        return order[pos[found]]

    def _replace(self, vectors, sample_ids, label_ids) -> None:
        """Swap in new contents, rebuild the faiss index and persist both."""
        self._vectors, self._sample_ids, self._label_ids = vectors, sample_ids, label_ids
        self._sorted_ids = None
        self._index = knn.build_index(vectors, exact=self.config.exact, unit_rows=True) if len(vectors) else None
        self._save()

    def _save(self) -> None:
        if self.index_dir is None:
            return  # no brain key: an in-memory index
        if self.total_index_size == 0:
            _remove_index_files(self.index_dir)
            return
        self.index_dir.mkdir(parents=True, exist_ok=True)
        arrays = {"vectors": self._vectors, "sample_ids": self._sample_ids,
                  "dataset_id": np.array(str(self.samples._root_dataset._doc.id))}
        if self._label_ids is not None:
            arrays["label_ids"] = self._label_ids
        _write_npz_atomic(self.index_dir / DATA_FILE, arrays)
        knn.save_index(self._index, self.index_dir / INDEX_FILE)

    def _load(self) -> None:
        if self.index_dir is None or not (self.index_dir / DATA_FILE).is_file():
            return  # a new run, or a run with nothing added yet
        with np.load(self.index_dir / DATA_FILE) as data:
            self._vectors = data["vectors"]
            self._sample_ids = data["sample_ids"]
            self._label_ids = data["label_ids"] if "label_ids" in data.files else None
        index_path = self.index_dir / INDEX_FILE
        index = knn.load_index(index_path) if index_path.is_file() else None
        if index is None or index.ntotal != len(self._vectors):  # missing or from an interrupted write
            index = knn.build_index(self._vectors, exact=self.config.exact, unit_rows=True)  # stored normalised
        self._index = index

    @classmethod
    def _from_dict(cls, d, samples, config, brain_key):
        return cls(samples, config, brain_key)


def build_similarity_index(view_or_dataset, embeddings, sample_ids, brain_key: str, *, model_name=None,
                           pretrained=None, patches_field=None, label_ids=None, index_dir=None, exact=None):
    """Register a faiss similarity run ``brain_key`` over precomputed ``embeddings`` (rows <-> ``sample_ids``,
    or ``label_ids`` of ``patches_field`` objects) and return its results; an existing run of that key is
    deleted first (with its index folder). ``model_name``/``pretrained`` name the open_clip model that
    computed the embeddings, which enables text-prompt sorting in the App.
    """
    import fiftyone.brain as fob

    if (patches_field is None) != (label_ids is None):
        raise InvalidInputError("pass patches_field and label_ids together (object-level index), or neither.")
    if not brain_key or not str(brain_key).isidentifier():
        raise InvalidInputError(f"brain_key must be a Python identifier such as 'clip_sim', got {brain_key!r}.")
    # Checked before the old run is deleted or a new one registered: bad input changes nothing.
    vectors = normalize_rows(embeddings, zero_rows="raise", what="embeddings")
    _check_rows(vectors, _as_ids(sample_ids), None if label_ids is None else _as_ids(label_ids))
    dataset = view_or_dataset._root_dataset
    if index_dir is not None:
        _check_owner(index_dir, dataset)
    register_faiss_backend()
    if brain_key in dataset.list_brain_runs():
        dataset.delete_brain_run(brain_key)
    # embeddings=False: register the run without computing anything; our ids say which row is which.
    results = fob.compute_similarity(
        view_or_dataset, embeddings=False, brain_key=brain_key, backend=BACKEND_NAME, patches_field=patches_field,
        model_name=model_name, pretrained=pretrained, index_dir=index_dir, exact=exact,
    )
    try:
        results._add_unit_rows(vectors, sample_ids, label_ids=label_ids)  # normalised above
    except BaseException:
        dataset.delete_brain_run(brain_key)  # no half-made run left behind
        raise
    return results


class OpenClipPromptModel:
    """Turns text prompts into open_clip text embeddings: what brain's prompt queries ask of a model."""

    can_embed_prompts = True

    def __init__(self, model_name: str, pretrained: str | None = None, device: str | None = None):
        self.model_name, self.pretrained, self.device = model_name, pretrained, device
        self._loaded = None

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False

    def embed_prompt(self, prompt: str) -> np.ndarray:
        return self.embed_prompts([prompt])[0]

    def embed_prompts(self, prompts) -> np.ndarray:
        """(len(prompts), dim) unit-norm float32 text embeddings; the model loads on first use."""
        from curate_loop.embeddings.models import ModelSpec, load_model
        from curate_loop.embeddings.text import embed_texts

        if self._loaded is None:
            self._loaded = load_model(ModelSpec(self.model_name, self.pretrained), self.device)
        return embed_texts([self._loaded], list(prompts))


def _check_rows(vectors, sample_ids, label_ids) -> None:
    if len(sample_ids) != len(vectors) or (label_ids is not None and len(label_ids) != len(vectors)):
        raise InvalidInputError(
            f"got {len(vectors)} embeddings but {len(sample_ids)} sample ids"
            + ("" if label_ids is None else f" and {len(label_ids)} label ids")
            + "; pass one id per embedding row."
        )


def _as_ids(ids) -> np.ndarray:
    """One id or many -> a 1-D array of str."""
    return np.array([ids] if etau.is_str(ids) else list(ids), dtype=str)


def _write_npz_atomic(path: Path, arrays: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _owned_by(index_dir, dataset) -> bool:
    """Whether ``index_dir`` holds no index, one written for ``dataset``, or one whose dataset is gone.

    A clone shares its source's folder (not its own); a dataset deleted with its runs still in place
    (FiftyOne does not clean runs up then) leaves a folder that a new dataset of that name may reuse.
    """
    path = Path(index_dir) / DATA_FILE
    if not path.is_file():
        return True
    with np.load(path) as data:
        owner = str(data["dataset_id"]) if "dataset_id" in data.files else None
    return owner is None or owner == str(dataset._doc.id) or not _dataset_exists(owner)


def _check_owner(index_dir, dataset) -> None:
    if not _owned_by(index_dir, dataset):
        raise InvalidInputError(
            f"{index_dir} holds the similarity index of another dataset; pass another index_dir, or none "
            "for the default folder."
        )


def _dataset_exists(dataset_id: str) -> bool:
    import fiftyone.core.odm as foo
    from bson import ObjectId

    return foo.get_db_conn().datasets.count_documents({"_id": ObjectId(dataset_id)}, limit=1) > 0


def _remove_index_files(index_dir) -> None:
    """Delete our files in ``index_dir``, then the folder if that left it empty.

    Only our own file names are removed, so a folder the user pointed us at keeps anything else in it.
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        return
    for path in index_dir.iterdir():
        if path.name in (DATA_FILE, INDEX_FILE) or path.name.startswith((f".{DATA_FILE}.", f".{INDEX_FILE}.")):
            path.unlink(missing_ok=True)
    try:
        index_dir.rmdir()
    except OSError:
        pass  # not empty: someone else's files are in it
