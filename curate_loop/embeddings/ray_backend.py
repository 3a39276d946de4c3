"""Embed images on a Ray cluster: decoding and the model run in a pool of Ray actors, the driver writes the store.

Why Ray: past one machine, the model and decoding must move to many (GPU) machines. The driver streams batches of
``(position, path)`` rows to a fixed pool of actors (one GPU each where the cluster has GPUs, else
``cpus_per_actor`` CPU threads each; two batches in flight per actor, so none waits for the driver); every actor
loads the model ONCE and decodes with the very code of the in-process path
(:class:`curate_loop.embeddings.images.ImageFiles`, :func:`model_encoder`), so the vectors are the same
(open_clip's random init is seeded in :func:`load_model`; a fitted classical model is shipped as it is). The driver
is the only writer: it hands the actors' raw vectors to :func:`curate_loop.embeddings.loop.run_embedding_loop`,
which normalises, flushes every ``flush_every``, records failures and reports progress exactly as in-process, so
resuming, failures and the run record do not change.

The pool stays up while the connection does (a warm pool): starting an actor costs a worker process, importing
torch and open_clip and building the model (15-20 s on 2 cores, measured in BENCH ``embed_ray``), so a process that
holds a connection (``with ray_cluster(address): ...``, or its own ``ray.init``) pays it once, and later calls with
the same model, threads and device start at once. Why not Ray Data's ``map_batches`` with an ``ActorPoolStrategy``
(the first version): each of its executions starts a new pool, and on 2,000 images that start was most of Ray's
94% overhead. A pool that does not fit next to the others is made room for by stopping the others (:func:`close_pools`
stops them all); a pool whose call failed is stopped, so the next call starts afresh.

``address=None`` starts a local cluster for the call (this machine's cores and GPUs; no dashboard) and stops it
after; an address (``HOST:PORT``, ``ray://HOST:10001``, ``auto``) connects to a running cluster for the call.
Inside a process that already called ``ray.init``, that connection is used and left open. The nodes need
curate-loop installed (``pip install 'curate-loop[ray]'``) and must see the image files at the same paths.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np

from curate_loop.embeddings.loop import DEFAULT_FLUSH_EVERY, EmbedReport, run_embedding_loop
from curate_loop.embeddings.models import LoadedModel, ModelSpec
from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.errors import CurateLoopError, EmbeddingModelError, InvalidInputError, SetupError

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'curate-loop[ray]'"
LOCAL_START_ATTEMPTS = 3
IN_FLIGHT_PER_ACTOR = 2  # batches queued per actor: the next one is there when it finishes the last
# A warm pool is stopped after this long without a call: long enough for a loop's or a bench's next call, short
# enough that a pool left behind does not keep other jobs off the cluster's CPUs for long.
POOL_IDLE_S = 30.0
POOL_IDLE_ENV = "CURATE_LOOP_RAY_POOL_IDLE_S"

__all__ = ["RayEmbedReport", "close_pools", "embed_images_ray", "ray_cluster"]


@dataclass
class RayEmbedReport(EmbedReport):
    """An :class:`EmbedReport` plus how the pool ran: actors, CPUs per actor, GPU or not."""

    actors: int = 0
    cpus_per_actor: int = 0
    gpu: bool = False


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise SetupError(f"Embedding with backend ray needs Ray, which is not installed: {INSTALL_HINT} "
                         f"(or use backend local). ({exc})") from exc
    return ray


@contextmanager
def ray_cluster(address: str | None = None, *, num_cpus: int | None = None):
    """Connect to the cluster at ``address``, or start a local one (``num_cpus``: default all cores) and stop it
    on exit; an existing ``ray.init`` of this process is used as it is."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if address:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            _start_local(ray, num_cpus or os.cpu_count() or 1, quiet)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError, depending on what is wrong
        if address:
            raise SetupError(f"Cannot connect to the Ray cluster at {address!r}: {str(exc)[:200]}. Check the "
                             "address (`ray status` on the head node prints it), or leave it out to start a local "
                             "cluster.") from exc
        raise SetupError(f"Could not start a local Ray cluster: {str(exc)[:200]}.") from exc
    try:
        yield ray
    finally:
        close_pools()
        ray.shutdown()


def _start_local(ray, num_cpus: int, quiet: dict, attempts: int = LOCAL_START_ATTEMPTS) -> None:
    """``ray.init`` of a new local cluster, tried again when it times out (its raylet gets 30 s to register, which
    a busy machine can miss)."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **quiet)
            return
        except Exception as exc:
            ray.shutdown()  # stops whatever half-started
            if attempt == attempts or "timed out" not in str(exc):
                raise
            logger.warning("The local Ray cluster did not start in time (busy machine?); trying again.")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A clear error at once when nothing listens at ``HOST:PORT`` (Ray itself retries for minutes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and the like: Ray resolves them
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise SetupError(f"Cannot connect to the Ray cluster at {address!r}: nothing answers there ({exc}). Check "
                         "the address (`ray status` on the head node prints it), or leave it out to start a local "
                         "cluster.") from exc


class _Embedder:
    """One Ray actor: loads the model once, then embeds batches of ``{"position", "path"}`` rows.

    Returns, per row, its position, its raw (unnormalised) vector (zeros when it failed) and its error ("" when
    it did not), plus the data-quality metrics and content hash with ``quality``.
    """

    def __init__(self, model, device: str | None, threads: int, quality: bool):
        import torch

        from curate_loop.embeddings.loop import model_encoder
        from curate_loop.embeddings.models import load_model

        torch.set_num_threads(threads)
        self.load_error = None
        try:
            self.loaded = model if isinstance(model, LoadedModel) else load_model(model, device=device)
        except CurateLoopError as exc:  # raised at the first batch, where the driver sees it as itself (bad weights)
            self.load_error = exc
        self.model_encoder = model_encoder
        self.decoders = ThreadPoolExecutor(threads)  # PIL releases the GIL: as the in-process CPU path
        self.quality = quality

    def embed(self, batch: dict) -> dict:
        from curate_loop.embeddings.images import ImageFiles, collate

        if self.load_error is not None:
            raise self.load_error

        images = ImageFiles(batch["path"].tolist(), self.loaded.preprocess, executor=self.decoders, uint8=True,
                            quality=self.quality)
        good, inputs, bad, *measured = collate(images.__getitems__(list(range(len(images)))))
        n = len(images)
        vectors = np.zeros((n, self.loaded.dim), dtype=np.float32)
        if good:
            vectors[good] = self.model_encoder(self.loaded, images.model_input)(inputs)
        errors = np.full(n, "", dtype=object)
        for i, err in bad:
            errors[i] = err
        out = {"position": batch["position"], "vector": vectors, "error": errors.astype(str)}
        if self.quality:
            from curate_loop.quality.image_metrics import METRICS

            metrics, hashes = np.full((n, len(METRICS)), np.nan), np.full(n, "", dtype=object)
            for i, (values, content_hash) in zip(good, measured[0]):
                metrics[i] = [values[m] for m in METRICS]
                hashes[i] = content_hash
            out.update(metrics=metrics, hash=hashes.astype(str))
        return out


# -- the warm pools: one per (connection, model, device, threads, quality, actors) ---------------------------------------
@dataclass
class _Pool:
    actors: list
    kept: bool  # False: a pool for one call (a shipped LoadedModel), stopped after it
    busy: int = 0  # calls using it now (the App server runs operators in threads)
    idle_timer: threading.Timer | None = None


_POOLS: dict[tuple, _Pool] = {}
_POOLS_LOCK = threading.Lock()  # the App server runs operators in threads


def close_pools() -> None:
    """Stop every warm actor pool of this process: each holds its CPUs (or GPU) and a model in memory."""
    with _POOLS_LOCK:
        _stop_pools_locked(idle_only=False)


def _stop_pools_locked(*, idle_only: bool) -> None:
    """Stop the pools (``idle_only``: those no call is using; a busy one finishes its call and expires later).
    The caller holds ``_POOLS_LOCK``."""
    for key in [k for k, pool in _POOLS.items() if not (idle_only and pool.busy)]:
        _stop(_POOLS.pop(key))


def _stop(pool: _Pool) -> None:
    import ray

    if pool.idle_timer is not None:
        pool.idle_timer.cancel()

    for actor in pool.actors:
        try:
            ray.kill(actor)
        except Exception:  # its connection is closed already: the actor went with it
            pass


def _pool(ray, model, device: str, threads: int, quality: bool, actors: int, gpu: bool) -> tuple[tuple | None, _Pool]:
    """The warm pool for these settings on this connection, or a new one (the other idle pools stopped first when
    it would not fit beside them; a pool another thread is using is left to finish, and Ray starts the new actors
    when its CPUs come free). A shipped LoadedModel gets a pool for the call only."""
    job = ray.get_runtime_context().get_job_id()
    key = (job, _weights(model), device, threads, quality, actors, gpu) if isinstance(model, ModelSpec) else None
    with _POOLS_LOCK:
        for old in [k for k in _POOLS if k[0] != job]:  # an earlier connection's: its actors went with it
            del _POOLS[old]
        if key in _POOLS:
            pool = _POOLS[key]
            pool.busy += 1
            if pool.idle_timer is not None:
                pool.idle_timer.cancel()
            return key, pool
        free = ray.available_resources()
        if free.get("CPU", 0) < actors * threads or (gpu and free.get("GPU", 0) < actors):
            _stop_pools_locked(idle_only=True)
        remote = ray.remote(_Embedder).options(num_cpus=threads, num_gpus=1 if gpu else 0, max_restarts=0)
        pool = _Pool([remote.remote(model, device, threads, quality) for _ in range(actors)], kept=key is not None,
                     busy=1)
        if key is not None:
            _POOLS[key] = pool
    return key, pool


def _release(key: tuple | None, pool: _Pool) -> None:
    """A call is done with ``pool``: kept for the next call, stopped after ``POOL_IDLE_S`` without one (its actors
    hold cluster CPUs that other jobs may be waiting for); a pool for one call is stopped now."""
    if not pool.kept:
        _discard(key, pool)
        return
    with _POOLS_LOCK:
        pool.busy -= 1
        if pool.busy == 0:
            pool.idle_timer = threading.Timer(float(os.environ.get(POOL_IDLE_ENV, POOL_IDLE_S)), _expire, (key, pool))
            pool.idle_timer.daemon = True
            pool.idle_timer.start()


def _expire(key: tuple, pool: _Pool) -> None:
    with _POOLS_LOCK:
        if _POOLS.get(key) is not pool or pool.busy:
            return  # stopped already, or in use again
        del _POOLS[key]
    _stop(pool)


def _weights(spec: ModelSpec) -> tuple:
    """What the actors' model is: its spec, and for a checkpoint file its size and time (a file trained again under
    the same name gets new actors)."""
    path = spec.pretrained
    if path and os.path.isfile(path):
        stat = os.stat(path)
        return spec, stat.st_size, stat.st_mtime_ns
    return (spec,)


def _discard(key: tuple | None, pool: _Pool) -> None:
    with _POOLS_LOCK:
        if key is not None and _POOLS.get(key) is pool:
            del _POOLS[key]
    _stop(pool)


def _pool_outputs(ray, pool: _Pool, paths: list[str], batch_size: int):
    """The actors' outputs for ``paths`` in batches, as they finish; ``IN_FLIGHT_PER_ACTOR`` batches queued per actor
    so that an actor never waits for the driver."""
    starts = iter(range(0, len(paths), batch_size))
    pending = {}

    def submit(actor) -> None:
        start = next(starts, None)
        if start is not None:
            stop = min(start + batch_size, len(paths))
            batch = {"position": np.arange(start, stop), "path": np.asarray(paths[start:stop])}
            pending[actor.embed.remote(batch)] = actor

    for _ in range(IN_FLIGHT_PER_ACTOR):
        for actor in pool.actors:
            submit(actor)
    while pending:
        [ready], _ = ray.wait(list(pending), num_returns=1)
        submit(pending.pop(ready))
        yield ray.get(ready)


def _pool_size(ray, num_actors: int | None, cpus_per_actor: int | None, use_gpu: bool | None):
    """``(actors, CPUs per actor, GPU or not)`` that fit the cluster: by default one GPU per actor and the CPUs
    shared out, else one actor per node's worth of cores (a model's threads work best together on one node)."""
    total = ray.cluster_resources()
    cpus, gpus = int(total.get("CPU", 0)), int(total.get("GPU", 0))
    node_cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [cpus]
    if use_gpu is None:
        use_gpu = gpus > 0
    if use_gpu and not gpus:
        raise InvalidInputError("use_gpu=True, but the Ray cluster has no GPU; leave it out for CPU actors.")
    if num_actors is not None and num_actors < 1:
        raise InvalidInputError(f"ray actors must be at least 1 (got {num_actors}).")
    if num_actors is None:
        num_actors = gpus if use_gpu else max(1, cpus // (cpus_per_actor or max(node_cpus)))
    if cpus_per_actor is None:
        cpus_per_actor = max(1, min(max(node_cpus), cpus // num_actors))
    if use_gpu and num_actors > gpus:
        raise InvalidInputError(f"{num_actors} GPU actors asked for, but the Ray cluster has {gpus} GPU(s).")
    if num_actors * cpus_per_actor > cpus:
        raise InvalidInputError(f"{num_actors} actors x {cpus_per_actor} CPUs do not fit the Ray cluster's {cpus} "
                                f"CPUs; ask for at most {max(1, cpus // cpus_per_actor)} actors.")
    return num_actors, cpus_per_actor, bool(use_gpu)


def embed_images_ray(ids: list[str], filepaths: list[str], model_spec: ModelSpec | LoadedModel,
                     store: EmbeddingStore, *, num_actors: int | None = None, address: str | None = None,
                     batch_size: int = 32, flush_every: int = DEFAULT_FLUSH_EVERY,
                     progress: Callable[[int, int], None] | None = None, use_gpu: bool | None = None,
                     cpus_per_actor: int | None = None, quality: bool = False) -> RayEmbedReport:
    """Embed the images whose ids are not in ``store`` yet on a Ray cluster; failures are recorded, not raised.

    The contract of :func:`curate_loop.embeddings.compute.embed_images` (same store, vectors, failures, progress).
    ``model_spec``: a ModelSpec each actor loads itself, or a LoadedModel shipped to them as it is (the classical
    model with its fitted basis). ``use_gpu``: None = one GPU per actor when the cluster has GPUs.
    ``cpus_per_actor``: the torch and decoding threads of each actor (default: the cluster's CPUs shared out).
    """
    if len(ids) != len(filepaths):
        raise ValueError(f"ids ({len(ids)}) and filepaths ({len(filepaths)}) must have the same length")
    if isinstance(model_spec, ModelSpec) and model_spec.is_classical:
        raise InvalidInputError("The classical model needs its fitted basis: pass the LoadedModel "
                                "(curate_loop.runs.embeddings.compute_embeddings does).")
    done = set(store.stored_ids().tolist())
    todo = [k for k, sample_id in enumerate(ids) if sample_id not in done]
    if not todo:  # nothing to embed: no cluster to start or reach
        return RayEmbedReport(0, len(ids), {})
    with ray_cluster(address) as ray:
        actors, cpus, gpu = _pool_size(ray, num_actors, cpus_per_actor, use_gpu)
        report = RayEmbedReport(0, len(ids) - len(todo), {}, actors=actors, cpus_per_actor=cpus, gpu=gpu)
        key, pool = _pool(ray, model_spec, "cuda" if gpu else "cpu", cpus, quality, actors, gpu)
        outputs = _pool_outputs(ray, pool, [filepaths[k] for k in todo], batch_size)
        try:
            done_report = run_embedding_loop(_driver_batches(outputs, quality), [ids[k] for k in todo],
                                             lambda v: v, store, total=len(todo), skipped=report.skipped,
                                             flush_every=flush_every, progress=progress)
        except BaseException as exc:  # a lost actor, a bad file system, Ctrl-C: the next call starts a fresh pool
            _discard(key, pool)
            clear = _clear_error(exc) if isinstance(exc, Exception) else exc
            if clear is exc:
                raise
            raise clear from exc
        _release(key, pool)
    report.computed, report.failed, report.quality = done_report.computed, done_report.failed, done_report.quality
    return report


def _driver_batches(outputs, quality: bool):
    """The actors' outputs as ``run_embedding_loop`` batches: (good positions, raw vectors, failures[, measured])."""
    from curate_loop.quality.image_metrics import METRICS

    for batch in outputs:
        positions, errors = batch["position"].astype(np.int64), batch["error"].astype(str)
        ok = errors == ""
        good = positions[ok].tolist()
        bad = [(int(p), str(e)) for p, e in zip(positions[~ok], errors[~ok])]
        if not quality:
            yield good, batch["vector"][ok], bad
            continue
        measured = [({m: float(v) for m, v in zip(METRICS, row)}, str(h))
                    for row, h in zip(batch["metrics"][ok], batch["hash"][ok])]
        yield good, batch["vector"][ok], bad, measured


def _clear_error(exc: Exception) -> Exception:
    """Our own error raised in an actor (bad weights, bad input) as itself; any other Ray failure in one line;
    anything else (the store's disk is full, say) unchanged."""
    seen = exc
    while seen is not None:
        cause = getattr(seen, "cause", None)  # a RayTaskError carries the actor's exception as it was raised
        if isinstance(cause, BaseException):
            seen = cause
        elif isinstance(seen, CurateLoopError):
            return seen
        else:
            seen = seen.__cause__ or seen.__context__
    if not type(exc).__module__.startswith("ray"):
        return exc
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return EmbeddingModelError(f"The Ray embedding pipeline failed: {first[:300]}. Check that every node has "
                               f"curate-loop installed ({INSTALL_HINT}) and sees the image files; backend local "
                               "runs without Ray.")
