"""The embedding store on shared storage: real processes writing one store at once (a local folder, a file:// URL
and, when moto's server is installed, real S3 protocol), a killed writer, reading only the chunks a load needs, the
older single-writer layout, and an embedding run placed by CURATE_LOOP_STORE_URL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem

from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.errors import InvalidInputError

ROUNDS = 12  # chunks per writer in the concurrent test: each round rewrites the writer's ids and the shared ones
N_OWN, N_SHARED, DIM = 40, 15, 4

# One writer: waits for the go file, then appends ROUNDS chunks; vector = (writer, round, index, 1).
WRITER = """
import json, sys, time
from pathlib import Path
import numpy as np
from curate_loop.embeddings.store import EmbeddingStore
url, name, code, go, rounds, n_own, n_shared = sys.argv[1:8]
rounds, n_own, n_shared, code = int(rounds), int(n_own), int(n_shared), float(code)
while not Path(go).exists():
    time.sleep(0.01)
store = EmbeddingStore(url).open({"model": "m"})
own = [f"{name}-{i}" for i in range(n_own)]
shared = [f"shared-{i}" for i in range(n_shared)]
for r in range(rounds):
    ids = own + shared
    vectors = np.array([[code, r, i, 1.0] for i in range(len(ids))], dtype=np.float32)
    store.append(ids, vectors)
    store.record_failures({f"{name}-broken-{r}": f"bad file from {name}"})
print("done")
"""

# Appends chunks until killed.
ENDLESS = """
import sys
import numpy as np
from curate_loop.embeddings.store import EmbeddingStore
store = EmbeddingStore(sys.argv[1]).open({"model": "m"})
r = 0
while True:
    store.append([f"id-{r}-{i}" for i in range(2000)], np.full((2000, 64), r, dtype=np.float32))
    r += 1
"""

OPENER = """
import sys, time
from pathlib import Path
from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.errors import InvalidInputError
while not Path(sys.argv[2]).exists():
    time.sleep(0.005)
try:
    EmbeddingStore(sys.argv[1]).open({"model": sys.argv[3]})
    print("opened")
except InvalidInputError as exc:
    print("refused:", exc)
"""


def _python(code: str, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A local moto S3 server (real HTTP, real S3 protocol) and the environment s3fs needs to reach it."""
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install 'curate-loop[storage]')")
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'curate-loop[dev]')")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import boto3

        for _ in range(200):
            try:
                boto3.client("s3").create_bucket(Bucket="curate")
                break
            except Exception:  # the server is still starting
                time.sleep(0.1)
        else:
            pytest.fail(f"moto's S3 server did not start on port {port}")
        yield env
    finally:
        server.kill()
        server.wait()
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(params=["path", "file-url", "s3"])
def store_url(request, tmp_path):
    if request.param == "path":
        return str(tmp_path / "store")
    if request.param == "file-url":
        return f"file://{tmp_path}/store"
    request.getfixturevalue("s3_env")
    return f"s3://curate/{uuid.uuid4().hex}/store"


def test_two_processes_writing_one_store_at_once(store_url, tmp_path):
    go = tmp_path / "go"
    writers = [_python(WRITER, store_url, name, code, go, ROUNDS, N_OWN, N_SHARED)
               for name, code in (("a", 1), ("b", 2))]
    go.touch()  # both start together
    for proc in writers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    store = EmbeddingStore(store_url)
    names = store.chunk_names()
    assert len(names) == 2 * ROUNDS  # no chunk lost or overwritten
    own = [f"{w}-{i}" for w in "ab" for i in range(N_OWN)]
    shared = [f"shared-{i}" for i in range(N_SHARED)]
    ids = store.stored_ids()
    assert sorted(ids.tolist()) == sorted(own + shared)  # each id exactly once
    got_ids, vectors = store.load(own + shared)
    assert got_ids.tolist() == own + shared
    # every writer's own ids carry its last round: "latest wins" holds inside each writer under concurrency
    assert vectors[: 2 * N_OWN, 1].tolist() == [ROUNDS - 1] * (2 * N_OWN)
    assert vectors[:N_OWN, 0].tolist() == [1] * N_OWN and vectors[N_OWN: 2 * N_OWN, 0].tolist() == [2] * N_OWN
    # a shared id holds the last round of one writer, never an older vector
    assert vectors[2 * N_OWN:, 1].tolist() == [ROUNDS - 1] * N_SHARED
    assert set(vectors[2 * N_OWN:, 0].tolist()) <= {1.0, 2.0}
    assert vectors[2 * N_OWN:, 2].tolist() == list(range(N_OWN, N_OWN + N_SHARED))
    # the full load agrees: one row per id
    all_ids, all_vectors = store.load()
    assert len(all_ids) == len(set(all_ids.tolist())) == 2 * N_OWN + N_SHARED
    # failures from both writers, none lost to the other's writes
    assert store.failures() == {f"{w}-broken-{r}": f"bad file from {w}" for w in "ab" for r in range(ROUNDS)}


@pytest.mark.parametrize("kind", ["path", "file-url"])
def test_opening_one_store_from_two_processes(tmp_path, kind):
    for attempt, configs in enumerate([("m", "m"), ("m", "other")]):
        root = tmp_path / f"store-{attempt}"
        url = str(root) if kind == "path" else f"file://{root}"
        go = tmp_path / f"go-{attempt}"
        procs = [_python(OPENER, url, go, model) for model in configs]
        go.touch()
        outs = [p.communicate(timeout=120)[0].strip() for p in procs]
        if configs[0] == configs[1]:
            assert outs == ["opened", "opened"]
        else:  # exactly one wins the race; the other is told why, and the store keeps the winner's config
            assert sorted(o.split(":")[0] for o in outs) == ["opened", "refused"]
            winner = configs[outs.index("opened")]
            assert EmbeddingStore(url).config() == {"model": winner}
            assert "was made with" in next(o for o in outs if o.startswith("refused"))


def test_a_killed_writer_leaves_only_whole_chunks(tmp_path):
    root = tmp_path / "store"
    proc = _python(ENDLESS, root)
    store = EmbeddingStore(root)
    try:
        deadline = time.monotonic() + 120
        while len(store.chunk_names()) < 4:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the writer wrote no chunks"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    names = store.chunk_names()
    ids, vectors = store.load()
    rounds = sorted({int(i.split("-")[1]) for i in ids})
    assert rounds == list(range(len(names)))  # every visible chunk is whole and readable
    assert len(ids) == 2000 * len(names)
    assert np.array_equal(vectors[:, 0], np.array([int(i.split("-")[1]) for i in ids], dtype=np.float32))
    # a crash between the ids index and the chunk, or mid-chunk, shows nothing either
    (root / "chunk-99999999999999999999-crashed-1-000001.ids.npz").write_bytes(b"PK half")
    (root / ".tmp-chunk-99999999999999999999-crashed-1-000002.npz-crashed").write_bytes(b"truncated")
    assert EmbeddingStore(root).chunk_names() == names
    assert len(EmbeddingStore(root).stored_ids()) == len(ids)


class CountingFileSystem(LocalFileSystem):
    """The local disk, counting the bytes read from each file (to check what a load touches)."""

    protocol = "countingfile"
    bytes_read: dict[str, int] = {}

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        name = str(path).rsplit("/", 1)[-1]
        CountingFileSystem.bytes_read[name] = CountingFileSystem.bytes_read.get(name, 0) + len(data)
        return data

    def _open(self, path, mode="rb", **kwargs):
        if "r" in mode:
            CountingFileSystem.bytes_read.setdefault(str(path).rsplit("/", 1)[-1], 0)
        return super()._open(path, mode=mode, **kwargs)


def _filled_store(root, n_chunks=20, per_chunk=500, dim=128) -> EmbeddingStore:
    store = EmbeddingStore(root).open({"model": "m"})
    for c in range(n_chunks):
        ids = [f"c{c}-{i}" for i in range(per_chunk)]
        store.append(ids, np.full((per_chunk, dim), c, dtype=np.float32) + np.arange(per_chunk)[:, None] / 1000)
    return store


def test_loading_a_subset_reads_only_the_chunks_that_hold_it(tmp_path):
    import fsspec

    fsspec.register_implementation("countingfile", CountingFileSystem, clobber=True)
    _filled_store(tmp_path / "store")
    CountingFileSystem.bytes_read.clear()
    store = EmbeddingStore(f"countingfile://{tmp_path}/store")
    wanted = [f"c3-{i}" for i in range(0, 500, 2)] + ["c7-5"]
    ids, vectors = store.load(wanted)
    assert ids.tolist() == wanted
    assert vectors[:-1, 0].tolist() == pytest.approx([3 + i / 1000 for i in range(0, 500, 2)])
    assert vectors[-1, 0] == pytest.approx(7.005)
    vector_files = {n for n in CountingFileSystem.bytes_read if n.endswith(".npz") and ".ids." not in n}
    names = store.chunk_names()
    assert vector_files == {names[3], names[7]}  # the other 18 chunks' vectors were never opened
    chunk_bytes = sum((tmp_path / "store" / n).stat().st_size for n in names)
    read = sum(CountingFileSystem.bytes_read.values())
    assert read < 0.2 * chunk_bytes  # 2 chunks of 20, plus the small ids indexes
    # stored_ids reads the indexes only (already cached by this store object: a new one reads them again)
    CountingFileSystem.bytes_read.clear()
    assert len(EmbeddingStore(f"countingfile://{tmp_path}/store").stored_ids()) == 20 * 500
    assert CountingFileSystem.bytes_read and all(".ids." in n for n in CountingFileSystem.bytes_read)


def test_other_chunks_vectors_are_not_needed_for_a_subset(tmp_path):
    store = _filled_store(tmp_path / "store", n_chunks=6, per_chunk=50, dim=8)
    names = store.chunk_names()
    for name in names[1:]:  # destroy every chunk's vectors but the first: the ids indexes stay
        (tmp_path / "store" / name).write_bytes(b"not a zip any more")
    fresh = EmbeddingStore(tmp_path / "store")
    ids, vectors = fresh.load(["c0-7", "c0-3"])
    assert vectors[:, 0].tolist() == pytest.approx([0.007, 0.003])
    assert len(fresh.stored_ids()) == 300
    with pytest.raises(Exception):
        fresh.load(["c1-0"])  # proof that the vectors really are gone


def test_the_older_single_writer_layout_still_loads(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model": "m"}))
    for index, (ids, value) in enumerate([(["a", "b", "c"], 1.0), (["b"], 2.0)]):
        with open(root / f"chunk-{index:06d}.npz", "wb") as fh:
            np.savez(fh, ids=np.asarray(ids), vectors=np.full((len(ids), 3), value, dtype=np.float32))
    (root / "failures.json").write_text(json.dumps({"d": "cannot decode", "e": "missing file"}))
    store = EmbeddingStore(root).open({"model": "m"})
    assert store.stored_ids().tolist() == ["a", "b", "c"]
    assert store.load(["b", "a"])[1][:, 0].tolist() == [2.0, 1.0]
    assert store.failures() == {"d": "cannot decode", "e": "missing file"}
    # a new writer adds to it: its chunk comes after the old ones, and its success clears an old failure
    store.append(["a", "d"], np.full((2, 3), 9.0))
    store.record_failures({}, succeeded=["d"])
    assert store.load(["a", "b", "d"])[1][:, 0].tolist() == [9.0, 2.0, 9.0]
    assert EmbeddingStore(root).failures() == {"e": "missing file"}


def test_failures_from_writers_merge_and_a_later_success_clears_them(tmp_path):
    first = EmbeddingStore(tmp_path).open({"model": "m"})
    second = EmbeddingStore(tmp_path).open({"model": "m"})
    first.record_failures({"x": "timeout", "y": "bad"})
    second.record_failures({"z": "bad"})
    assert EmbeddingStore(tmp_path).failures() == {"x": "timeout", "y": "bad", "z": "bad"}
    second.append(["x"], [[1.0]])
    second.record_failures({}, succeeded=["x"])  # another writer's failure, cleared by a newer success
    assert EmbeddingStore(tmp_path).failures() == {"y": "bad", "z": "bad"}
    first.record_failures({"x": "broken again"})  # newer than the success: shown again
    assert EmbeddingStore(tmp_path).failures()["x"] == "broken again"
    assert sorted(p.name for p in tmp_path.glob("failures-*.json")).__len__() == 2


def test_a_store_url_that_fsspec_cannot_open_is_one_clear_error():
    with pytest.raises(InvalidInputError, match="Cannot open the embedding store 'nosuchprotocol://x'"):
        EmbeddingStore("nosuchprotocol://x")


def test_memory_url_round_trip():
    store = EmbeddingStore(f"memory://curate/{uuid.uuid4().hex}").open({"model": "m"})
    store.append(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])
    store.append(["a"], [[3.0, 3.0]])
    store.record_failures({"c": "bad"})
    store.mark_complete({"vectors": 2})
    again = EmbeddingStore(store.url)
    assert again.is_complete and again.failures() == {"c": "bad"}
    assert again.load(["a"])[1].tolist() == [[3.0, 3.0]]
    with pytest.raises(InvalidInputError, match="not on a local disk"):
        again.root
    again.delete()
    assert EmbeddingStore(store.url).stored_ids().size == 0


# -- an embedding run placed by the environment -------------------------------------------------------------------
def test_compute_embeddings_writes_to_the_store_url_and_loads_back(example_dataset, tmp_path, monkeypatch):
    from curate_loop.runs import embeddings as runs

    monkeypatch.setenv(runs.STORE_URL_ENV, f"file://{tmp_path}/shared")
    view = example_dataset.limit(12)
    key = "shared_store"
    if key in example_dataset.list_runs():
        runs.delete_embeddings(example_dataset, key)
    summary = runs.compute_embeddings(view, key, "ViT-B-32", batch_size=4, flush_every=4, num_workers=0)
    assert summary.computed == 12
    part = tmp_path / "shared" / str(example_dataset._doc.id) / key / "part-0"
    assert (part / "complete.json").exists() and len(list(part.glob("chunk-*.ids.npz"))) == 3
    results = example_dataset.load_run_results(key, cache=False)
    assert results.store_url == str(tmp_path / "shared" / str(example_dataset._doc.id) / key)
    # the record, not the environment, says where the run is: another process with another setting finds it
    monkeypatch.setenv(runs.STORE_URL_ENV, f"file://{tmp_path}/elsewhere")
    ids, vectors = runs.load_embeddings(view, key)
    assert ids.tolist() == view.values("id") and vectors.shape == (12, 512)
    assert runs.compute_embeddings(view, key, "ViT-B-32", batch_size=8).skipped == 12  # resumes in place
    runs.delete_embeddings(example_dataset, key)
    assert not part.exists() and not (tmp_path / "elsewhere").exists()


def test_the_manifest_places_new_runs(tmp_path):
    import yaml

    from curate_loop.loop.manifest import load_manifest

    base = yaml.safe_load(open(Path(__file__).parent.parent / "manifest.yml"))
    path = tmp_path / "manifest.yml"
    path.write_text(yaml.safe_dump({**base, "embeddings": {**base["embeddings"], "store_url": "s3://bucket/runs"}}))
    assert load_manifest(path).embeddings.store_url == "s3://bucket/runs"
    path.write_text(yaml.safe_dump(base))
    assert load_manifest(path).embeddings.store_url is None


def test_classical_embeddings_keep_their_basis_in_a_store_that_is_not_a_disk(example_dataset, monkeypatch):
    """The classical model's PCA basis goes through the store like the vectors: on a ``memory://`` store (no local
    folder) a grown view resumes with the saved basis, and a store that lost it is refused, not refitted."""
    from curate_loop.embeddings.classical import BASIS_FILE
    from curate_loop.runs import embeddings as runs

    monkeypatch.setenv(runs.STORE_URL_ENV, f"memory://curate/{uuid.uuid4().hex}")
    key = "classical_memory"
    if key in example_dataset.list_runs():
        runs.delete_embeddings(example_dataset, key)
    try:
        assert runs.compute_embeddings(example_dataset.limit(6), key, "classical").computed == 6
        (store,) = runs.run_stores(example_dataset, key, 1)
        assert store.url.startswith("memory://") and store.get_bytes(BASIS_FILE) is not None
        grown = runs.compute_embeddings(example_dataset.limit(8), key, "classical")
        assert (grown.computed, grown.skipped) == (2, 6)  # a refit would have said the basis was lost
        ids, vectors = runs.load_embeddings(example_dataset.limit(8), key)
        assert len(ids) == 8 and np.isfinite(vectors).all()
        store.fs.rm_file(store._join(BASIS_FILE))
        with pytest.raises(InvalidInputError, match="lost their PCA basis"):
            runs.compute_embeddings(example_dataset.limit(10), key, "classical")
    finally:
        runs.delete_embeddings(example_dataset, key)
