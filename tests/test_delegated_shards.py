"""A sharded embedding run on FiftyOne's delegated workers, against the real parts: the example dataset in the test
run's MongoDB, two real ``fiftyone delegated launch`` worker processes, one of them SIGKILLed in the middle of a
shard, and the run still finishing with every sample embedded exactly once.

How a worker is caught mid-shard without timing: the workers start with a ``sitecustomize`` (on their
``PYTHONPATH`` only) that wraps ``EmbeddingStore.append``; the first worker to store a chunk writes its pid to a
hold file and then blocks (its heartbeat still beats, like a live worker). The test kills that pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import fresh_clone

from curate_loop.errors import InvalidInputError
from curate_loop.runs import embeddings as runs
from curate_loop.runs import shards

N_SHARDS = 4
BATCH = FLUSH = 4  # vectors per batch and per chunk: the killed worker has stored exactly one chunk of its shard
HOLD_HOOK = '''
import os
if os.environ.get("CURATE_LOOP_TEST_HOLD_FILE"):
    import time
    from curate_loop.embeddings import store as _store

    _append = _store.EmbeddingStore.append

    def _append_then_hold(self, *args, **kwargs):
        _append(self, *args, **kwargs)
        try:
            fd = os.open(os.environ["CURATE_LOOP_TEST_HOLD_FILE"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        while True:
            time.sleep(60)

    _store.EmbeddingStore.append = _append_then_hold
'''


def cli(*args) -> str:
    from click.testing import CliRunner

    from curate_loop.cli import cli as curate_loop_cli

    result = CliRunner().invoke(curate_loop_cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# -- unit level: the plan ---------------------------------------------------------------------------
def test_split_ids_covers_every_id_once_in_near_equal_parts():
    ids = [f"id{i}" for i in range(10)]
    parts = shards.split_ids(ids, 4)
    assert [len(p) for p in parts] == [3, 3, 2, 2]
    assert sum(parts, []) == ids
    assert shards.split_ids(ids[:2], 5) == [["id0"], ["id1"]]  # never an empty shard
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidInputError, match="n_shards"):
            shards.split_ids(ids, bad)
    with pytest.raises(InvalidInputError, match="nothing to embed"):
        shards.split_ids([], 3)


# -- the real thing ----------------------------------------------------------------------------------
@pytest.fixture
def workers(tmp_path):
    """Start ``fiftyone delegated launch`` workers on this test run's database; every one is killed at the end."""
    import fiftyone as fo

    fo.list_datasets()  # connected: FiftyOne has put its database port in the environment
    assert os.environ.get("FIFTYONE_PRIVATE_DATABASE_PORT"), "FiftyOne did not record its database port"
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(HOLD_HOOK)
    hold_file = tmp_path / "held-by"
    env = {**os.environ, "PYTHONPATH": str(hook_dir), "CURATE_LOOP_TEST_HOLD_FILE": str(hold_file)}
    fiftyone_cli = str(Path(sys.executable).parent / "fiftyone")
    started: list[subprocess.Popen] = []
    logs = []

    def start(n):
        for i in range(n):
            log = open(tmp_path / f"worker-{len(started)}.log", "wb")
            logs.append(log)
            started.append(subprocess.Popen([fiftyone_cli, "delegated", "launch"], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True))
        return started

    start.hold_file = hold_file
    start.logs_dir = tmp_path
    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for log in logs:
            log.close()


def _wait_for_file(path: Path, workers_started, timeout_s: float, logs_dir: Path) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        dead = [p for p in workers_started if p.poll() is not None]
        assert not dead, f"a worker exited early: {(logs_dir / 'worker-0.log').read_text()[-2000:]}"
        time.sleep(0.2)
    pytest.fail(f"no worker stored a chunk within {timeout_s} s; worker log: "
                + (logs_dir / "worker-0.log").read_text()[-3000:])


def test_two_workers_one_killed_mid_shard_every_sample_exactly_once(example_dataset, workers):
    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset = fresh_clone(example_dataset, "shards-tests")
    n = len(dataset)
    out = cli("embed", "shards", "queue", dataset.name, "--key", "sharded", "--model", "classical", "--shards",
              str(N_SHARDS), "--batch-size", str(BATCH), "--flush-every", str(FLUSH), "--heartbeat", "1")
    queued = shards.shard_status(dataset, "sharded")
    run_id = queued["run_id"]
    assert f"as {N_SHARDS} shards (run {run_id})" in out and "fiftyone delegated launch" in out
    assert (queued["run_id"], queued["shards"], queued["queued"], queued["finished"]) == (run_id, N_SHARDS,
                                                                                           N_SHARDS, False)
    assert sum(r["samples"] for r in queued["rows"]) == n
    assert runs.list_embeddings(dataset)[0]["status"] == "running"
    with pytest.raises(InvalidInputError, match="still going"):  # one sharded run per key at a time
        shards.queue_sharded_embeddings(dataset, "sharded", ["classical"], N_SHARDS)

    started = workers(2)
    held_pid = int(_wait_for_file(workers.hold_file, started, 240, workers.logs_dir))
    victim = next(p for p in started if p.pid == held_pid)  # the op runs in the worker's own process
    mid = shards.shard_status(dataset, "sharded", stale_after=3600)  # only a gone process counts as dead here
    running = [r for r in mid["rows"] if r["state"] == "running"]
    assert running and not mid["dead"]  # the held worker is alive (it still beats its heartbeat)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)

    out = cli("embed", "shards", "wait", dataset.name, "--key", "sharded", "--timeout", "300", "--no-index",
              "--no-map")
    assert f"{N_SHARDS} done, 0 failed; 1 re-queued; run finished." in out
    status = shards.shard_status(dataset, "sharded")
    assert f"Embeddings 'sharded' in {N_SHARDS} shards: 0 queued, 0 running, {N_SHARDS} done" in cli(
        "embed", "shards", "status", dataset.name, "--key", "sharded")

    # the run: finished, each shard done, the dead shard re-run once
    assert status["finished"] and status["completed"] == N_SHARDS and status["missing"] == 0
    assert status["requeued"] == 1 and not status["dead"]
    rerun = next(r for r in status["rows"] if r["attempts"] == 2)
    service = DelegatedOperationService()
    shard_doc = next(s for s in shards._collection().find_one({"_id": ObjectId(run_id)})["shards"]
                     if s["index"] == rerun["shard"])
    first, second = (service.get(ObjectId(op)) for op in shard_doc["ops"])
    assert first.run_state == "failed" and "stopped" in first.result.error  # failed in FiftyOne's queue by us
    assert shard_doc["attempts"][0]["pid"] == held_pid
    assert second.run_state == "completed"
    assert second.result.result["skipped"] == FLUSH  # the re-run resumed from the store
    assert second.result.result["computed"] == shard_doc["samples"] - FLUSH
    completed_ops = [service.get(ObjectId(r["op"])) for r in status["rows"]]
    assert sum(op.result.result["computed"] for op in completed_ops) + FLUSH == n  # each sample embedded once
    assert sum(bool(op.result.result["finalised"]) for op in completed_ops) == 1  # one shard finalised the run

    # the run record and its vectors: every sample exactly once
    record = next(r for r in runs.list_embeddings(dataset) if r["key"] == "sharded")
    assert record["status"] == "complete" and record["vectors"] == n and record["failures"] == 0
    ids, vectors = runs.load_embeddings(dataset, "sharded")
    assert len(ids) == n and len(set(ids.tolist())) == n and set(ids.tolist()) == set(dataset.values("id"))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)

    # the same vectors as the in-process path
    runs.compute_embeddings(dataset, "local", ["classical"])
    local_ids, local_vectors = runs.load_embeddings(dataset, "local")
    assert local_ids.tolist() == ids.tolist()
    assert float(np.abs(local_vectors - vectors).max()) <= 1e-5


def test_queue_operator_queues_one_delegated_op_per_shard(example_dataset):
    """The App's operator queues the shards (run later by workers); bad input is a one-line error."""
    from bson import ObjectId
    from fiftyone.operators import execute_operator
    from fiftyone.operators.delegated import DelegatedOperationService

    from curate_loop.plugin_install import PLUGIN_NAME

    dataset = fresh_clone(example_dataset, "shards-operator-tests")
    uri = f"{PLUGIN_NAME}/queue_sharded_embeddings"
    bad = execute_operator(uri, ctx={"dataset": dataset.name, "params": {"key": "op", "models": "classical",
                                                                        "n_shards": 0}}).result
    assert set(bad) == {"error"} and "n_shards" in bad["error"] and "\n" not in bad["error"]
    result = execute_operator(uri, ctx={"dataset": dataset.name, "params": {"key": "op", "models": "classical",
                                                                           "n_shards": 3}}).result
    assert (result["key"], result["shards"], result["queued"]) == ("op", 3, 3)
    service = DelegatedOperationService()
    ops = [service.get(ObjectId(row["op"])) for row in shards.shard_status(dataset, "op")["rows"]]
    try:
        assert [op.operator for op in ops] == [shards.SHARD_OPERATOR] * 3
        assert [op.run_state for op in ops] == ["queued"] * 3
        assert [op.context.params["shard"] for op in ops] == [0, 1, 2]
        assert all(str(op.dataset_id) == str(dataset._doc.id) for op in ops)
    finally:
        for op in ops:
            service.delete_operation(op.id)


def test_a_shard_whose_heartbeat_stopped_on_another_host_is_requeued(example_dataset):
    """Dead workers on other machines are known only by their silent heartbeat: past ``stale_after`` the operation
    is failed in FiftyOne's queue and its shard queued again (once, however many watchers look)."""
    from datetime import timedelta

    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset = fresh_clone(example_dataset, "shards-heartbeat-tests")
    run_id = shards.queue_sharded_embeddings(dataset, "beat", ["classical"], 2, heartbeat_s=5)
    service = DelegatedOperationService()
    row = shards.shard_status(dataset, "beat")["rows"][0]
    op_id = ObjectId(row["op"])
    try:
        assert service.set_running(op_id) is not None  # as a worker on another machine would
        shards._collection().update_one({"_id": ObjectId(run_id), "shards.index": 0}, {"$push": {
            "shards.$.attempts": {"op": str(op_id), "host": "another-machine", "pid": 1, "create_time": 0.0}}})
        assert shards.shard_status(dataset, "beat")["dead"] == []  # beating recently: alive
        service._repo._collection.update_one({"_id": op_id}, {"$set": {"updated_at": shards._now() - timedelta(
            seconds=4 * 5 + 1)}})
        assert shards.shard_status(dataset, "beat")["dead"] == [0]
        assert shards.requeue_dead_shards(dataset, "beat") == [0]
        assert shards.requeue_dead_shards(dataset, "beat") == []  # already re-queued: not twice
        status = shards.shard_status(dataset, "beat")
        assert (status["queued"], status["running"], status["requeued"], status["dead"]) == (2, 0, 1, [])
        assert service.get(op_id).run_state == "failed"
    finally:
        for row in shards.shard_status(dataset, "beat")["rows"]:
            service.delete_operation(ObjectId(row["op"]))
        service.delete_operation(op_id)


def test_a_finaliser_that_died_after_its_claim_is_taken_over(example_dataset, monkeypatch):
    """Every shard landed, and the process that claimed the finish died before finishing (simulated: the claim is
    written, nothing else). The next caller finalises the run once; a claim by a process still alive elsewhere is
    left alone until it is older than FINALISE_STALE_S."""
    from datetime import timedelta

    from bson import ObjectId
    from fiftyone.operators.delegated import DelegatedOperationService

    dataset = fresh_clone(example_dataset, "shards-finaliser-tests")
    run_id = shards.queue_sharded_embeddings(dataset, "fin", ["classical"], 2)
    service = DelegatedOperationService()
    ops = [ObjectId(row["op"]) for row in shards.shard_status(dataset, "fin")["rows"]]
    try:
        with monkeypatch.context() as patched:
            patched.setattr(shards, "finalise_if_done", lambda *args, **kwargs: False)  # the claimant dies first
            for index in range(2):
                shards.run_shard(dataset, run_id, index)
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        import psutil

        claim = {"finalised_by": "op-dead", "claimed_at": shards._now(),
                 "finaliser": {"host": shards.socket.gethostname(), "pid": gone.pid, "create_time": 0.0}}
        shards._collection().update_one({"_id": ObjectId(run_id)}, {"$set": claim})
        assert not shards.shard_status(dataset, "fin")["finished"]
        assert shards.finalise_if_done(dataset, run_id) is True  # its process is gone: taken over
        assert shards.finalise_if_done(dataset, run_id) is False  # finished: once only
        dataset.reload()
        assert dataset.load_run_results("fin", cache=False).status == "complete"
        assert len(runs.load_embeddings(dataset, "fin")[0]) == len(dataset)

        # a claimant on another machine is known only by its claim's age
        alive = {"finalised_by": "op-elsewhere", "finished_at": None, "claimed_at": shards._now(),
                 "finaliser": {"host": "another-machine", "pid": 1, "create_time": psutil.boot_time()}}
        shards._collection().update_one({"_id": ObjectId(run_id)}, {"$set": alive})
        assert shards.finalise_if_done(dataset, run_id) is False
        old = shards._now() - timedelta(seconds=shards.FINALISE_STALE_S + 1)
        shards._collection().update_one({"_id": ObjectId(run_id)}, {"$set": {"claimed_at": old}})
        assert shards.finalise_if_done(dataset, run_id) is True
    finally:
        for op_id in ops:
            service.delete_operation(op_id)
        runs.delete_embeddings(dataset, "fin")
        dataset.delete()
