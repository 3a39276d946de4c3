"""FiftyOne Brain's Milvus similarity backend for curate-loop runs: Milvus Lite (a local file) by default, a Milvus
server or cluster by URL (``http://host:19530``).

A thin subclass of Brain's backend, because Brain's alone does not serve our runs:

- Brain keeps ``uri`` private (never stored with the run), so the App server, another process, would connect to
  ``localhost:19530`` instead of the run's file or server. Ours stores ``uri``; ``user``/``password``/``token`` stay
  private and come, in every process, from FiftyOne Brain's config (``FIFTYONE_BRAIN_SIMILARITY_MILVUS_USER`` ...).
- exact search (a ``FLAT`` index) by default, so results agree with the faiss backend; ``index_type="HNSW"`` for
  large server collections (then ``k <= ef``).
- text prompts are embedded by the run's open_clip model (Brain only knows zoo models).
- deleting the run drops its collection (Brain's leaves it behind), except a clone's run, which points at its
  source dataset's collection and leaves it alone.

Milvus Lite runs inside the process that opens the file and locks it: ONE process at a time. The builder releases
the file before returning (:func:`release_lite`), so the App server can open it for "sort by similarity"; the App
then holds it until it exits. Several processes at once need a Milvus server.
"""

from __future__ import annotations

import fcntl
import logging
import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from fiftyone.brain.internal.core.milvus import MilvusSimilarity, MilvusSimilarityConfig, MilvusSimilarityIndex

from curate_loop.errors import InvalidInputError, SetupError
from curate_loop.paths import curate_loop_home
from curate_loop.vectors import normalize_rows

INSTALL_HINT = "pip install 'curate-loop[milvus]'"
INDEX_TYPES = ("FLAT", "HNSW")
CONNECT_TIMEOUT_S = 10
_SECRETS = ("user", "password", "token")  # never stored with the run


class MilvusNotInstalled(SetupError):
    """pymilvus (or milvus-lite, for a local file) is not installed."""


class MilvusUnavailableError(SetupError):
    """The Milvus server or Milvus Lite file of a similarity run cannot be opened."""


# -- where the index lives ------------------------------------------------------------------------------------------

def default_uri(dataset) -> str:
    """``<curate-loop home>/milvus/<dataset id>.db``: one Milvus Lite file per dataset, a collection per brain key."""
    return str(curate_loop_home().expanduser().resolve() / "milvus" / f"{dataset._doc.id}.db")


def collection_name(dataset, brain_key: str) -> str:
    """Unique on a server shared by many datasets; the dataset id in it says which dataset owns the collection."""
    return f"curate_loop_{dataset._doc.id}_{brain_key}"


def is_lite(uri: str) -> bool:
    return str(uri).endswith(".db")


def resolve_uri(uri: str | None, dataset) -> str:
    """The run's uri: the dataset's default Milvus Lite file, an absolute ``.db`` path, or a server URL."""
    if uri is None:
        return default_uri(dataset)
    uri = str(uri)
    if is_lite(uri):
        return str(Path(uri).expanduser().resolve())  # absolute: the App server has another working directory
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https", "tcp", "unix"):
        raise InvalidInputError(f"milvus uri {uri!r} is neither a Milvus Lite file (*.db) nor a server URL such as "
                                "http://localhost:19530.")
    if parsed.username or parsed.password:
        raise InvalidInputError(f"milvus uri {uri!r} holds credentials, which would be stored with the run; pass the "
                                "bare URL and set FIFTYONE_BRAIN_SIMILARITY_MILVUS_USER / _PASSWORD / _TOKEN instead.")
    return uri


# -- connections ----------------------------------------------------------------------------------------------------

def require_pymilvus(uri: str | None = None):
    """pymilvus (and milvus_lite for a ``.db`` uri), or a one-line error saying how to install them."""
    try:
        import pymilvus
        from pymilvus.decorators import PyMilvusDeprecationWarning

        if uri is None or is_lite(uri):
            import milvus_lite  # noqa: F401
    except ImportError as exc:
        raise MilvusNotInstalled(f"the Milvus similarity backend needs pymilvus and milvus-lite: {INSTALL_HINT}") \
            from exc
    # Brain's backend uses pymilvus' ORM API, which warns on every call in pymilvus 3.0.
    warnings.filterwarnings("ignore", category=PyMilvusDeprecationWarning)
    return pymilvus


def check_connection(uri: str) -> None:
    """Raise :class:`MilvusUnavailableError` naming ``uri`` when it cannot be opened now; else return quietly.

    A Milvus Lite file is checked for another process's lock (the error Milvus Lite itself gives is a traceback in
    the log and "Open local milvus failed"); a server is asked for its collections.
    """
    pymilvus = require_pymilvus(uri)
    if is_lite(uri):
        if _lite_open_here(uri):
            return
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        if _lite_locked(uri):
            raise MilvusUnavailableError(
                f"the Milvus Lite file {uri} is open in another process (the FiftyOne App, or another curate-loop "
                "command): close that process and retry, or use a Milvus server (--milvus-uri http://HOST:19530)."
            )
        return
    alias = f"curate_loop_check_{os.getpid()}"
    try:
        pymilvus.connections.connect(alias=alias, uri=uri, timeout=CONNECT_TIMEOUT_S, **_credentials())
        pymilvus.utility.list_collections(using=alias, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:  # pymilvus raises MilvusException, grpc errors, or plain timeouts
        raise MilvusUnavailableError(
            f"cannot reach the Milvus server at {uri} ({type(exc).__name__}): start it, check the address, and set "
            "FIFTYONE_BRAIN_SIMILARITY_MILVUS_USER / _PASSWORD / _TOKEN if it needs credentials."
        ) from exc
    finally:
        try:
            pymilvus.connections.disconnect(alias)
        except Exception:
            pass


def release_lite(uri: str) -> None:
    """Close this process's Milvus Lite server for ``uri`` (and its lock), so another process can open the file.

    Any connection or cached results of this process pointing at it are dead afterwards; the next load reopens it.
    """
    if not is_lite(uri) or not _lite_open_here(uri):
        return
    pymilvus = require_pymilvus(uri)
    from milvus_lite.server_manager import server_manager_instance

    for alias, _ in pymilvus.connections.list_connections():
        if _LITE_ALIASES.get(alias) == uri:
            pymilvus.connections.disconnect(alias)
            _LITE_ALIASES.pop(alias, None)
    server_manager_instance.release_server(uri)


def count_vectors(results) -> int:
    """How many vectors the run's collection holds, deleted ones excluded (``num_entities`` counts those too)."""
    results._ensure_open()
    if results.collection is None:
        return 0
    return int(results.collection.query("", output_fields=["count(*)"])[0]["count(*)"])


def drop_collection(uri: str, name: str) -> None:
    """Drop collection ``name`` at ``uri`` if it exists (a leftover of a run whose cleanup could not reach it)."""
    pymilvus = require_pymilvus(uri)
    alias = f"curate_loop_drop_{os.getpid()}"
    _connect(pymilvus, alias, uri, **_credentials())
    try:
        if pymilvus.utility.has_collection(name, using=alias):
            pymilvus.utility.drop_collection(name, using=alias)
    finally:
        pymilvus.connections.disconnect(alias)
        _LITE_ALIASES.pop(alias, None)


_LITE_ALIASES: dict[str, str] = {}  # pymilvus alias -> Milvus Lite file it was opened on, in this process


def _connect(pymilvus, alias: str, uri: str, **kwargs) -> None:
    try:
        pymilvus.connections.connect(alias=alias, uri=uri, **kwargs)
    except Exception as exc:
        check_connection(uri)  # says why, when it can tell
        raise MilvusUnavailableError(f"cannot open Milvus at {uri} ({type(exc).__name__}: {exc}).") from exc
    if is_lite(uri):
        _LITE_ALIASES[alias] = uri


def _credentials() -> dict:
    import fiftyone.brain as fob

    params = fob.brain_config.similarity_backends.get("milvus", {})
    return {key: params[key] for key in _SECRETS if params.get(key) is not None}


def _lite_open_here(uri: str) -> bool:
    """Whether this process runs Milvus Lite's server for ``uri`` (milvus_lite's manager keeps one per path)."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return False
    return os.path.abspath(uri) in server_manager_instance._servers


def _lite_locked(uri: str) -> bool:
    """Whether another process holds Milvus Lite's lock on ``uri`` (its ``LOCK`` file, an exclusive flock)."""
    lock = Path(uri) / "LOCK"
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# -- the Brain backend ----------------------------------------------------------------------------------------------

class CurateMilvusSimilarityConfig(MilvusSimilarityConfig):
    """Brain's Milvus config, with ``uri`` stored with the run, an exact index by default, and open_clip prompts.

    Args:
        uri: a Milvus Lite file (``*.db``) or a server URL; stored with the run so every process finds it
        model_name (None): the open_clip model that computed the embeddings; enables prompt queries
        pretrained (None): its open_clip ``pretrained`` tag or checkpoint (None: random weights)
        index_type ("FLAT"): ``"FLAT"`` (exact) or ``"HNSW"`` (approximate; then ``k <= ef``)
        ef (256): HNSW's search breadth
        metric ("cosine"): the only supported metric, as in the faiss backend
        **kwargs: keyword arguments for Brain's :class:`MilvusSimilarityConfig`
    """

    def __init__(self, uri=None, model_name=None, pretrained=None, index_type="FLAT", ef=256, metric="cosine",
                 **kwargs):
        if metric != "cosine":
            raise InvalidInputError(f"curate-loop's Milvus runs measure cosine similarity only, got metric={metric!r}.")
        if index_type not in INDEX_TYPES:
            raise InvalidInputError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}.")
        super().__init__(uri=uri, metric=metric, **kwargs)
        self.model_name = model_name
        self.pretrained = pretrained
        self.index_type = index_type
        self.ef = int(ef)
        if model_name is not None:
            self.supports_prompts = True  # the App offers text search when this is set

    def attributes(self):
        return super().attributes() + ["uri"]

    def load_credentials(self, uri=None, **kwargs):
        """The stored ``uri`` wins over Brain's config; the secrets come from Brain's config / env vars."""
        super().load_credentials(uri=uri or self.uri, **kwargs)

    @property
    def max_k(self):
        return self.ef if self.index_type == "HNSW" else 16384  # Milvus' own limit on top-k

    @property
    def index_params(self):
        if self.index_type == "HNSW":
            return {"metric_type": "COSINE", "index_type": "HNSW", "params": {"M": 16, "efConstruction": 200}}
        return {"metric_type": "COSINE", "index_type": "FLAT", "params": {}}

    @property
    def search_params(self):
        params = {"ef": self.ef} if self.index_type == "HNSW" else {}
        return {"metric_type": "COSINE", "params": params}


class CurateMilvusSimilarity(MilvusSimilarity):
    """Creates :class:`CurateMilvusSimilarityIndex` instances; drops the collection with the run."""

    def initialize(self, samples, brain_key):
        return CurateMilvusSimilarityIndex(samples, self.config, brain_key, backend=self)

    def cleanup(self, samples, brain_key):
        """Called by ``dataset.delete_brain_run()``; a clone's run leaves its source's collection alone."""
        dataset = samples._root_dataset
        name = self.config.collection_name
        if name is None or str(dataset._doc.id) not in name:
            return
        self.config.load_credentials()
        drop_collection(self.config.uri, name)


class CurateMilvusSimilarityIndex(MilvusSimilarityIndex):
    """Brain's Milvus index, connecting with clear errors and embedding prompts with the run's open_clip model."""

    def _initialize(self):
        require_pymilvus(self.config.uri)
        if self.config.uri is None:
            raise MilvusUnavailableError("this Milvus similarity run records no uri; rebuild it with curate-loop.")
        if is_lite(self.config.uri):
            check_connection(self.config.uri)  # a lock held elsewhere: our one line, not Milvus Lite's traceback
        try:
            super()._initialize()
        except ValueError as exc:  # Brain's "Failed to connect to Milvus backend at URI ..."
            check_connection(self.config.uri)
            raise MilvusUnavailableError(f"cannot open Milvus at {self.config.uri}: {exc.__cause__ or exc}") from exc
        if is_lite(self.config.uri):
            _LITE_ALIASES[self._alias] = self.config.uri

    def _ensure_open(self) -> None:
        """Reopen a Milvus Lite file this process released (after a build) before using the index again."""
        if is_lite(self.config.uri) and not _lite_open_here(self.config.uri):
            self._initialize()

    def _create_collection(self, dimension):
        # Milvus Lite lacks the AllocTimestamp call pymilvus makes while waiting for the new index; pymilvus copes,
        # but Lite's gRPC server logs a traceback for it at ERROR level.
        grpc_log = logging.getLogger("grpc._server")
        level = grpc_log.level
        grpc_log.setLevel(logging.CRITICAL if is_lite(self.config.uri) else level)
        try:
            super()._create_collection(dimension)
        finally:
            grpc_log.setLevel(level)

    @property
    def total_index_size(self):
        self._ensure_open()
        return super().total_index_size

    @property
    def supports_prompts(self):
        return True if self.config.model_name is not None else super().supports_prompts

    def get_model(self):
        if self._model is None and self.config.model_name is not None:
            from curate_loop.similarity.faiss_backend import OpenClipPromptModel

            self._model = OpenClipPromptModel(self.config.model_name, self.config.pretrained)
        return super().get_model()

    def add_to_index(self, embeddings, sample_ids, label_ids=None, overwrite=True, allow_existing=True,
                     warn_existing=False, reload=True, batch_size=1000):
        vectors = normalize_rows(embeddings, zero_rows="raise", what="embeddings")
        self._ensure_open()
        super().add_to_index(vectors, np.asarray(sample_ids, dtype=str),
                             label_ids=None if label_ids is None else np.asarray(label_ids, dtype=str),
                             overwrite=overwrite, allow_existing=allow_existing, warn_existing=warn_existing,
                             reload=reload, batch_size=batch_size)

    def remove_from_index(self, *args, **kwargs):
        self._ensure_open()
        return super().remove_from_index(*args, **kwargs)

    def get_embeddings(self, *args, **kwargs):
        self._ensure_open()
        return super().get_embeddings(*args, **kwargs)

    def cleanup(self):
        self._ensure_open()
        if str(self.samples._root_dataset._doc.id) in (self.config.collection_name or ""):
            super().cleanup()
        self._collection = None

    def _kneighbors(self, query=None, k=None, reverse=False, aggregation=None, return_dists=False):
        if k is None or k > self.config.max_k:
            raise InvalidInputError(f"a Milvus index answers k <= {self.config.max_k} neighbours per query, got "
                                    f"k={k}; pass k (or use the faiss backend to sort everything).")
        if reverse:
            raise InvalidInputError("Milvus cannot sort by least similarity; use the faiss backend for that.")
        self._ensure_open()
        return super()._kneighbors(query=query, k=k, reverse=reverse, aggregation=aggregation,
                                   return_dists=return_dists)


def build_milvus_index(view_or_dataset, embeddings, sample_ids, brain_key: str, *, uri=None, model_name=None,
                       pretrained=None, patches_field=None, label_ids=None, index_type="FLAT"):
    """Register a Milvus similarity run ``brain_key`` over precomputed ``embeddings`` (rows <-> ``sample_ids``, or
    ``label_ids`` of ``patches_field`` objects), replacing an existing run of that key and its collection.

    Checked before anything is deleted: the ids, the vectors, and that ``uri`` can be opened now. A Milvus Lite file
    is released before returning, so other processes (the App) can open it. Returns the brain key.
    """
    import fiftyone.brain as fob

    if (patches_field is None) != (label_ids is None):
        raise InvalidInputError("pass patches_field and label_ids together (object-level index), or neither.")
    if not brain_key or not str(brain_key).isidentifier():
        raise InvalidInputError(f"brain_key must be a Python identifier such as 'clip_sim', got {brain_key!r}.")
    vectors = normalize_rows(embeddings, zero_rows="raise", what="embeddings")
    n_ids = len(sample_ids) if label_ids is None else len(label_ids)
    if len(sample_ids) != len(vectors) or n_ids != len(vectors):
        raise InvalidInputError(f"got {len(vectors)} embeddings but {len(sample_ids)} sample ids"
                                f"{'' if label_ids is None else f' and {len(label_ids)} label ids'}; "
                                "pass one id per embedding row.")
    dataset = view_or_dataset._root_dataset
    uri = resolve_uri(uri, dataset)
    check_connection(uri)
    name = collection_name(dataset, brain_key)
    try:
        if brain_key in dataset.list_brain_runs():
            dataset.delete_brain_run(brain_key)
        drop_collection(uri, name)  # a collection the old run's cleanup could not reach must not be appended to
        results = fob.compute_similarity(
            view_or_dataset, embeddings=False, brain_key=brain_key, backend=CurateMilvusSimilarityConfig,
            patches_field=patches_field, uri=uri, collection_name=name, model_name=model_name, pretrained=pretrained,
            index_type=index_type, **_credentials(),
        )
        try:
            results.add_to_index(vectors, sample_ids, label_ids=label_ids)
        except BaseException:
            dataset.delete_brain_run(brain_key)  # no half-made run left behind
            raise
    finally:
        release_lite(uri)  # the index reopens it when this process uses it again
    return brain_key
