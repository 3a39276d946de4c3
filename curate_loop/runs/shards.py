"""Sharded embedding runs on FiftyOne's own engine for long jobs: delegated operations.

A run too large for one process is split into shards (:func:`plan_shards`); :func:`queue_sharded_embeddings`
queues one delegated operation per shard (operator ``compute_embeddings_shard``), and any number of
``fiftyone delegated launch`` workers, on one or many machines sharing the database and the run's store, execute
them. Every shard appends to the run's ONE embedding store; the last shard to land finalises the run record, so
the result is the same run :func:`curate_loop.runs.embeddings.compute_embeddings` records.

Why a coordination document: FiftyOne's queue knows operations, not runs. One MongoDB document per run (in
FiftyOne's database, collection ``curate_loop_shards``) holds the shards' sample ids, which operations ran each
shard, and which shards are done; its updates are atomic (``find_one_and_update``), so exactly one shard
finalises even when two land at the same moment. A finaliser that dies after its claim (its process gone on its
host, or its claim older than ``FINALISE_STALE_S``) is taken over by the next caller, e.g. ``embed shards wait``:
finalising only reads the store and writes the record, so doing it again is safe.

Killed workers: an operation whose worker died stays RUNNING in FiftyOne's queue forever. Each shard operation
therefore beats a heartbeat (FiftyOne's ``updated_at``, as ``fiftyone delegated launch --monitor`` does), and
records the host and process running it. :func:`requeue_dead_shards` marks an operation dead when its process is
gone (same host) or its heartbeat is older than ``stale_after``, fails it in FiftyOne's queue and queues the shard
again; the re-run skips every id already in the store, so each sample ends up with exactly one vector.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone

import numpy as np

from curate_loop.embeddings.classical import BASIS_FILE
from curate_loop.errors import InvalidInputError

logger = logging.getLogger(__name__)

SHARD_OPERATOR = "@curate-loop/curate-loop/compute_embeddings_shard"
COLLECTION = "curate_loop_shards"  # one document per run: its shards, their operations, which are done
IDS_COLLECTION = "curate_loop_shard_ids"  # one document per shard: its sample ids (a run's would pass 16 MB)
DEFAULT_HEARTBEAT_S = 30.0
STALE_HEARTBEATS = 4  # an operation silent for this many heartbeats is dead
FINALISE_STALE_S = 600.0  # a claim to finalise this old, never finished, is taken over
MAX_IDS_PER_SHARD = 300_000  # keeps a shard's ids document well inside MongoDB's 16 MB limit
DEAD_REASON = "curate-loop: the worker running this shard stopped (process gone or no heartbeat); shard re-queued"

QUEUED, RUNNING, COMPLETED, FAILED = "queued", "running", "completed", "failed"


# -- planning (arrays in, arrays out) --------------------------------------------------------------
def split_ids(ids, n_shards: int) -> list[list[str]]:
    """``ids`` in ``n_shards`` contiguous parts of near-equal size (never an empty part)."""
    ids = np.asarray(ids, dtype=str)
    if isinstance(n_shards, bool) or not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
        raise InvalidInputError(f"n_shards must be a whole number >= 1, not {n_shards!r}.")
    if not len(ids):
        raise InvalidInputError("There is nothing to embed: the collection has no samples.")
    parts = np.array_split(ids, min(int(n_shards), len(ids)))
    if len(parts[0]) > MAX_IDS_PER_SHARD:
        raise InvalidInputError(f"{len(ids)} samples in {n_shards} shards is {len(parts[0])} per shard; use at least "
                                f"{-(-len(ids) // MAX_IDS_PER_SHARD)} shards (at most {MAX_IDS_PER_SHARD} each).")
    return [part.tolist() for part in parts]


def plan_shards(samples, n_shards: int) -> list[list[str]]:
    """The sample ids of ``samples`` (in their order) split into ``n_shards`` shards."""
    return split_ids(samples.values("id"), n_shards)


# -- the coordination document ----------------------------------------------------------------------
def _collection(name: str = COLLECTION):
    import fiftyone.core.odm as foo

    return foo.get_db_conn()[name]


def _shard_ids(run_id, index: int | None = None) -> list[str]:
    """The sample ids of one shard of a run, or of all its shards."""
    query = {"run_id": run_id} if index is None else {"run_id": run_id, "index": index}
    return [i for doc in _collection(IDS_COLLECTION).find(query, {"ids": 1}) for i in doc["ids"]]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # naive UTC, as FiftyOne stores its times


def _run_doc(dataset, key: str) -> dict:
    doc = _collection().find_one({"dataset_id": str(dataset._doc.id), "key": key}, sort=[("created_at", -1)])
    if doc is None:
        raise InvalidInputError(f"No sharded run {key!r} on dataset {dataset.name!r}: queue one with "
                                "`curate-loop embed shards queue`.")
    return doc


def _ops_service():
    from fiftyone.operators.delegated import DelegatedOperationService

    return DelegatedOperationService()


def _queue_shard_op(dataset, run_id, index: int, n_shards: int):
    from fiftyone.operators.executor import ExecutionContext

    context = ExecutionContext(request_params={
        "dataset_name": dataset.name, "dataset_id": str(dataset._doc.id), "delegated": True,
        "params": {"run_id": str(run_id), "shard": index},
    })
    op = _ops_service().queue_operation(operator=SHARD_OPERATOR, label=f"embeddings shard {index + 1}/{n_shards}",
                                        context=context, metadata={"inputs_schema": None, "outputs_schema": None})
    _collection().update_one({"_id": run_id, "shards.index": index}, {"$push": {"shards.$.ops": str(op.id)}})
    return op


# -- queue -----------------------------------------------------------------------------------------
def queue_sharded_embeddings(samples, key: str, models, n_shards: int, *, batch_size: int = 32,
                             flush_every: int = 1024, device: str | None = None,
                             heartbeat_s: float = DEFAULT_HEARTBEAT_S, store_url: str | None = None) -> str:
    """Queue an image embedding run of ``samples`` as ``n_shards`` delegated operations; returns the run id.

    Start workers with ``fiftyone delegated launch`` (any number, on any machine that shares the database and the
    store); :func:`shard_status` shows their progress and :func:`wait_for_sharded_run` waits, re-queuing shards
    whose worker died. Same key, models and store as :func:`~curate_loop.runs.embeddings.compute_embeddings`:
    ids already embedded are skipped, and either path can resume the other's run. ``store_url`` places a new run's
    store (default ``$CURATE_LOOP_STORE_URL``): with several machines, a place they all reach (shared mount, s3://).
    """
    from bson import ObjectId

    from curate_loop.embeddings.models import check_spec, load_model
    from curate_loop.runs import embeddings as runs

    runs._validate_key(key)
    specs = runs.parse_models(models)
    for spec in specs:
        check_spec(spec)
    if not heartbeat_s > 0:
        raise InvalidInputError(f"heartbeat_s must be > 0 seconds, not {heartbeat_s!r}.")
    dataset = samples._dataset
    _check_no_active_run(dataset, key)
    config = {"level": "image", "patches_field": None, "source": "open_clip",
              "models": [{"name": s.name, "pretrained": s.pretrained} for s in specs], "margin": None,
              "min_crop_px": None}
    runs._check_same_config(dataset, key, config)
    shards = plan_shards(samples, n_shards)
    stores = runs.run_stores(dataset, key, len(specs), store_url)
    dim = 0
    for spec, store in zip(specs, stores):
        loaded = load_model(spec, device=device)  # bad names or weights fail here, before anything is queued
        store.open({"model": spec.name, "pretrained": spec.pretrained, **config, "models": None})
        store.mark_incomplete()
        if spec.is_classical:  # one basis for every shard, fitted once here on the whole collection
            runs.classical_basis(loaded, store, "image", samples.values("filepath"), None, None, None, None)
        dim += loaded.dim
    run_id = ObjectId()
    _collection().create_index([("dataset_id", 1), ("key", 1), ("created_at", -1)])
    _collection().insert_one({
        "_id": run_id, "dataset_id": str(dataset._doc.id), "key": key, "config": config, "dim": dim,
        "n_shards": len(shards), "batch_size": int(batch_size), "flush_every": int(flush_every), "device": device,
        "heartbeat_s": float(heartbeat_s), "created_at": _now(), "done": [], "computed": 0, "skipped": 0,
        "finalised_by": None, "finished_at": None, "missing": None,
        "shards": [{"index": i, "samples": len(ids), "ops": [], "attempts": []} for i, ids in enumerate(shards)],
    })
    ids_collection = _collection(IDS_COLLECTION)
    ids_collection.create_index([("run_id", 1), ("index", 1)])
    ids_collection.insert_many([{"run_id": run_id, "index": i, "ids": ids} for i, ids in enumerate(shards)])
    runs.record_run(dataset, key, config, {"status": "running", "shard_run": str(run_id), "shards": len(shards)},
                    store_url)  # the record keeps the store's place: every worker opens the same one
    for index in range(len(shards)):
        _queue_shard_op(dataset, run_id, index, len(shards))
    logger.info("Queued embeddings %r as %d shards (run %s)", key, len(shards), run_id)
    return str(run_id)


def _check_no_active_run(dataset, key: str) -> None:
    try:
        status = shard_status(dataset, key)
    except InvalidInputError:
        return
    if not status["finished"] and (status[QUEUED] or status[RUNNING]):
        raise InvalidInputError(f"Sharded run {key!r} is still going ({status[QUEUED]} shards queued, "
                                f"{status[RUNNING]} running): wait for it (`curate-loop embed shards wait`) or "
                                "fail its operations with `fiftyone delegated fail` first.")


# -- one shard (runs inside a delegated operation) ------------------------------------------------
class _Heartbeat:
    """Bumps the operation's ``updated_at`` every ``interval`` seconds while a shard runs (as ``--monitor`` does)."""

    def __init__(self, op_id, interval: float):
        self.op_id, self.interval = op_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="curate-loop-shard-heartbeat")

    def _beat(self):
        from bson import ObjectId
        from fiftyone.factory.repo_factory import RepositoryFactory

        repo = RepositoryFactory.delegated_operation_repo()
        while not self.stop.wait(self.interval):
            try:
                repo.ping(ObjectId(str(self.op_id)))
            except Exception as exc:  # a missed beat is not worth killing a long shard for
                logger.warning("Shard heartbeat failed: %s", exc)

    def __enter__(self):
        if self.op_id is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()


def run_shard(dataset, run_id: str, index: int, *, op_id=None, progress=None) -> dict:
    """Embed shard ``index`` of run ``run_id`` into the run's store (ids already stored are skipped), then finalise
    the run if this was the last shard to land. Returns this shard's counts."""
    from bson import ObjectId

    from curate_loop.embeddings.compute import embed_images
    from curate_loop.embeddings.models import load_model
    from curate_loop.runs import embeddings as runs

    collection = _collection()
    run = collection.find_one({"_id": ObjectId(run_id)}, {"shards": {"$elemMatch": {"index": index}},
                                                           "key": 1, "config": 1, "batch_size": 1, "flush_every": 1,
                                                           "device": 1, "heartbeat_s": 1, "n_shards": 1})
    if run is None or not run.get("shards"):
        raise InvalidInputError(f"Shard {index} of sharded run {run_id} does not exist (deleted run?).")
    proc = _this_process()
    collection.update_one({"_id": run["_id"], "shards.index": index},
                          {"$push": {"shards.$.attempts": {"op": str(op_id), **proc, "started_at": _now()}}})
    shard_ids = _shard_ids(run["_id"], index)
    specs = runs.parse_models([(m["name"], m["pretrained"]) for m in run["config"]["models"]])
    stores = runs.run_stores(dataset, run["key"], len(specs))
    ids, filepaths = dataset.select(shard_ids).values(["id", "filepath"])  # deleted samples drop out
    computed = skipped = 0
    with _Heartbeat(op_id, run["heartbeat_s"]):
        for m, (spec, store) in enumerate(zip(specs, stores)):
            loaded = load_model(spec, device=run.get("device"))
            if spec.is_classical:
                if not loaded.model.load_bytes(store.get_bytes(BASIS_FILE)):
                    raise InvalidInputError(f"The classical basis of {store.url} is missing; queue the run again.")
                loaded.dim = loaded.model.dim

            def step(done, total, m=m, spec=spec):
                if progress:
                    progress((m + done / max(total, 1)) / len(specs), f"shard {index + 1}: {spec.key} {done}/{total}")

            report = embed_images(ids, filepaths, loaded, store, batch_size=run["batch_size"],
                                  flush_every=run["flush_every"], progress=step)
            computed, skipped = max(computed, report.computed), max(skipped, report.skipped)
    collection.update_one({"_id": run["_id"]}, {"$addToSet": {"done": index},
                                                "$inc": {"computed": computed, "skipped": skipped}})
    finished = finalise_if_done(dataset, run_id, claimant=str(op_id))
    try:
        requeue_dead_shards(dataset, run["key"])  # a worker that lands a shard also rescues its dead siblings
    except Exception as exc:
        logger.warning("Could not check the other shards for dead workers: %s", exc)
    return {"shard": index, "computed": computed, "skipped": skipped, "finalised": finished}


def _this_process() -> dict:
    import psutil

    return {"host": socket.gethostname(), "pid": os.getpid(), "create_time": psutil.Process().create_time()}


def finalise_if_done(dataset, run_id: str, *, claimant: str = "watcher") -> bool:
    """Record the run as finished once every shard is done; exactly one caller wins the claim. Returns True when
    this call finalised the run."""
    from bson import ObjectId

    from curate_loop.runs import embeddings as runs

    collection = _collection()
    run = collection.find_one({"_id": ObjectId(run_id)},
                              {"n_shards": 1, "finalised_by": 1, "finaliser": 1, "claimed_at": 1, "finished_at": 1})
    unclaimed = {"finalised_by": None}
    if run["finalised_by"] is not None and run["finished_at"] is None and _finaliser_gone(run):
        # its claimant died before finishing: the same claim again, won by one caller (claimed_at changes with it)
        unclaimed = {"finalised_by": run["finalised_by"], "claimed_at": run.get("claimed_at")}
        logger.warning("Sharded run %s: the process finalising it (%s) is gone; finalising again", run_id,
                       run["finalised_by"])
    claimed = collection.find_one_and_update(
        {"_id": ObjectId(run_id), "done": {"$size": run["n_shards"]}, "finished_at": None, **unclaimed},
        {"$set": {"finalised_by": claimant, "finaliser": _this_process(), "claimed_at": _now()}})
    if claimed is None:
        return False
    dataset.reload()  # other processes changed the dataset (and its run records) since this one loaded it
    config = claimed["config"]
    stores = runs.run_stores(dataset, claimed["key"], len(config["models"]))
    planned = np.unique(np.asarray(_shard_ids(claimed["_id"]), dtype=str))
    planned = planned[np.isin(planned, np.asarray(dataset.select(planned.tolist()).values("id"), dtype=str))]
    missing = 0
    for store in stores:
        covered = np.union1d(store.stored_ids(), np.asarray(list(store.failures()), dtype=str))
        missing = max(missing, int((~np.isin(planned, covered)).sum()))
    seconds = (_now() - claimed["created_at"]).total_seconds()
    summary = runs.EmbeddingRunSummary(claimed["key"], "image", computed=claimed["computed"],
                                       skipped=claimed["skipped"], dim=claimed["dim"], seconds=seconds)
    if missing:  # never record a run complete that lost samples: say how many, keep it resumable
        runs.record_run(dataset, claimed["key"], config, {"status": "running", "shard_run": run_id,
                                                          "missing": missing})
        logger.error("Sharded run %s: %d samples have neither a vector nor a failure; run the same compute again",
                     run_id, missing)
    else:
        runs.finish_run(dataset, claimed["key"], config, stores, summary)
    collection.update_one({"_id": ObjectId(run_id)}, {"$set": {"finished_at": _now(), "missing": missing}})
    if not missing:
        _collection(IDS_COLLECTION).delete_many({"run_id": claimed["_id"]})  # the store has them now
    return True


def _finaliser_gone(run: dict) -> bool:
    """Whether the process that claimed the run's finish is gone: known on its own host, or its claim is older
    than ``FINALISE_STALE_S`` (finalising reads the store's ids and writes one record: seconds, not minutes)."""
    claimed_at = run.get("claimed_at")  # naive UTC, like _now()
    return _process_gone(run.get("finaliser")) or (claimed_at is not None and
                                                   (_now() - claimed_at).total_seconds() > FINALISE_STALE_S)


# -- status, dead workers, waiting -----------------------------------------------------------------
def _state(op_doc) -> str:
    """The operation's state as one of ours (a deleted operation counts as failed)."""
    if op_doc is None:
        return FAILED
    return {"scheduled": QUEUED, "processing": RUNNING}.get(op_doc.run_state, op_doc.run_state)


def _heartbeat_at(op_doc) -> datetime | None:
    beats = [op_doc.updated_at, getattr(op_doc.status, "updated_at", None) if op_doc.status else None]
    beats = [b for b in beats if b is not None]
    return max(beats) if beats else None


def _process_gone(attempt: dict | None) -> bool:
    """Whether the process that ran ``attempt`` is known to be gone (only knowable on its own host)."""
    import psutil

    if not attempt or attempt.get("host") != socket.gethostname():
        return False
    try:
        process = psutil.Process(attempt["pid"])
        return (abs(process.create_time() - attempt["create_time"]) > 1e-3
                or process.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def shard_status(dataset, key: str, *, stale_after: float | None = None) -> dict:
    """Where the latest sharded run ``key`` stands: counts of shards queued / running / completed / failed, which
    are ``dead`` (running, but their worker is gone), and one row per shard."""
    from bson import ObjectId

    run = _run_doc(dataset, key)
    service = _ops_service()
    stale_after = stale_after if stale_after is not None else STALE_HEARTBEATS * run["heartbeat_s"]
    now = _now()
    rows = []
    for shard in run["shards"]:
        op = service.get(ObjectId(shard["ops"][-1])) if shard["ops"] else None
        state = _state(op) if shard["ops"] else QUEUED
        attempt = next((a for a in reversed(shard["attempts"]) if op and a["op"] == str(op.id)), None)
        beat = _heartbeat_at(op) if op else None
        dead = state == RUNNING and (_process_gone(attempt) or (beat is not None and
                                                                 (now - beat).total_seconds() > stale_after))
        if shard["index"] in run["done"]:
            state = COMPLETED  # the vectors landed; the queue may still be recording it
        elif state == COMPLETED:
            state = FAILED  # the operation ended without landing its vectors
        rows.append({"shard": shard["index"], "samples": shard["samples"], "state": state, "dead": dead,
                     "attempts": len(shard["ops"]), "op": str(op.id) if op else None,
                     "progress": getattr(op.status, "label", None) if op and op.status else None,
                     "error": (op.result.error or "").strip().splitlines()[-1:] if op and op.result and
                     op.result.error else None})
    counts = {state: sum(r["state"] == state for r in rows) for state in (QUEUED, RUNNING, COMPLETED, FAILED)}
    return {"run_id": str(run["_id"]), "key": key, "shards": len(rows), **counts,
            "dead": [r["shard"] for r in rows if r["dead"]], "requeued": sum(r["attempts"] > 1 for r in rows),
            "finished": run["finished_at"] is not None, "missing": run.get("missing"), "rows": rows}


def requeue_dead_shards(dataset, key: str, *, stale_after: float | None = None, failed: bool = False) -> list[int]:
    """Fail (in FiftyOne's queue) every shard operation whose worker died and queue its shard again; with
    ``failed``, also re-queue shards whose operation failed. Returns the shard indexes queued again."""
    from bson import ObjectId
    from fiftyone.operators.executor import ExecutionResult, ExecutionRunState

    status = shard_status(dataset, key, stale_after=stale_after)
    run_id = ObjectId(status["run_id"])
    service = _ops_service()
    requeued = []
    for row in status["rows"]:
        if row["dead"]:
            marked = service.set_failed(ObjectId(row["op"]), result=ExecutionResult(error=DEAD_REASON),
                                        required_state=ExecutionRunState.RUNNING)
            if marked is None:  # it finished, or another watcher re-queued it first
                continue
        elif not (failed and row["state"] == FAILED):
            continue
        _queue_shard_op(dataset, run_id, row["shard"], status["shards"])
        requeued.append(row["shard"])
        logger.warning("Shard %d of embeddings %r re-queued (%s)", row["shard"], key,
                       "worker died" if row["dead"] else "failed")
    return requeued


def wait_for_sharded_run(dataset, key: str, *, timeout: float | None = None, poll_s: float = 2.0,
                         stale_after: float | None = None, progress=None) -> dict:
    """Wait until sharded run ``key`` is finished, re-queuing shards whose worker died; returns its status.

    A shard that failed (an error, not a dead worker) stops the wait with its error: fix the cause, then
    ``requeue_dead_shards(..., failed=True)`` (CLI: ``curate-loop embed shards wait --retry-failed``).
    """
    started = time.monotonic()
    while True:
        requeue_dead_shards(dataset, key, stale_after=stale_after)
        status = shard_status(dataset, key, stale_after=stale_after)
        if progress:
            progress(status[COMPLETED] / status["shards"], f"{status[COMPLETED]}/{status['shards']} shards done")
        if not status["finished"] and status[COMPLETED] == status["shards"]:
            finalise_if_done(dataset, status["run_id"])  # a no-op unless no worker has claimed the finish
            status = shard_status(dataset, key, stale_after=stale_after)
        if status["finished"]:
            dataset.reload()  # a worker wrote the run record: make this process's dataset see it
            if status["missing"]:
                raise InvalidInputError(f"Sharded run {key!r} finished with {status['missing']} samples missing; "
                                        "run the same compute again to embed them.")
            return status
        failed = [r for r in status["rows"] if r["state"] == FAILED]
        if failed and not status[QUEUED] and not status[RUNNING]:
            first = failed[0]
            raise InvalidInputError(f"Shard {first['shard']} of {key!r} failed: {first['error']}. Fix it, then "
                                    "`curate-loop embed shards wait --retry-failed`.")
        if timeout is not None and time.monotonic() - started > timeout:
            raise InvalidInputError(f"Sharded run {key!r} not finished after {timeout:.0f} s ({status[COMPLETED]}/"
                                    f"{status['shards']} shards done, {status[QUEUED]} queued): are "
                                    "`fiftyone delegated launch` workers running?")
        time.sleep(poll_s)
