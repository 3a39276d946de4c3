"""Embeddings on Ray (backend ray) on a REAL local Ray cluster (2 CPUs, started once for this module) against the
in-process path on the example dataset: the same vectors, resume, per-sample failures, the run record, the CLI,
the manifest and the errors a user meets (Ray missing, a cluster address with nothing behind it)."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from curate_loop.errors import InvalidInputError, SetupError
from curate_loop.runs import embeddings as runs

MODEL = "ViT-S-32"  # open_clip, random weights (seeded): the smallest ViT, so the module runs in minutes on 2 cores


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray cluster for the module; every backend-ray call in this process uses it."""
    from curate_loop.embeddings.ray_backend import ray_cluster

    with ray_cluster(num_cpus=2) as ray:
        yield ray.get_runtime_context().gcs_address


@pytest.fixture(scope="module")
def dataset(example_dataset):
    from conftest import fresh_clone

    return fresh_clone(example_dataset, "example-tests-ray")


def test_ray_vectors_equal_the_in_process_ones_and_the_record_says_ray(dataset, ray_address):
    local = runs.compute_embeddings(dataset, "local_ref", MODEL, batch_size=16)
    on_ray = runs.compute_embeddings(dataset, "on_ray", MODEL, batch_size=16, backend="ray", ray_actors=2)
    assert (on_ray.computed, on_ray.skipped, on_ray.failed) == (len(dataset), 0, {})
    assert (on_ray.backend, on_ray.ray_actors, on_ray.dim) == ("ray", 2, local.dim)
    ids_local, vectors_local = runs.load_embeddings(dataset, "local_ref")
    ids_ray, vectors_ray = runs.load_embeddings(dataset, "on_ray")
    assert ids_ray.tolist() == ids_local.tolist() == dataset.values("id")
    assert float(np.abs(vectors_ray - vectors_local).max()) <= 1e-5
    assert np.allclose(np.linalg.norm(vectors_ray, axis=1), 1, atol=1e-5)
    record = dataset.load_run_results("on_ray", cache=False)
    assert (record.status, record.ray_actors, record.vectors) == ("complete", 2, len(dataset))
    assert dataset.get_run_info("on_ray").config.backend == "ray"
    assert dataset.get_run_info("local_ref").config.backend == "local"
    rows = {row["key"]: row for row in runs.list_embeddings(dataset)}
    assert (rows["on_ray"]["backend"], rows["on_ray"]["status"]) == ("ray", "complete")


def test_a_resumed_ray_run_computes_only_the_missing_ids(dataset, ray_address):
    first, grown = dataset.limit(20), dataset.limit(36)
    assert runs.compute_embeddings(first, "resumed", MODEL, backend="ray").computed == 20
    ids_before, before = runs.load_embeddings(first, "resumed")
    summary = runs.compute_embeddings(grown, "resumed", MODEL, backend="ray", ray_actors=1)
    assert (summary.computed, summary.skipped, summary.ray_actors) == (16, 20, 1)
    ids, vectors = runs.load_embeddings(grown, "resumed")
    assert ids.tolist() == grown.values("id")
    assert np.array_equal(vectors[:20], before)  # the stored 20 were not recomputed
    # a local rerun finds nothing left to do: both backends share the store
    assert runs.compute_embeddings(grown, "resumed", MODEL).computed == 0


def test_a_corrupt_file_is_reported_per_sample_and_the_rest_proceeds(dataset, ray_address, tmp_path):
    import fiftyone as fo

    bad = fo.Dataset()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 truncated")
    good_paths = dataset.limit(6).values("filepath")
    bad.add_samples([fo.Sample(filepath=p) for p in good_paths[:3] + [str(corrupt)] + good_paths[3:]
                     + [str(tmp_path / "gone.jpg")]])
    summary = runs.compute_embeddings(bad, "clip", MODEL, batch_size=4, backend="ray")
    ids = bad.values("id")
    assert summary.computed == 6
    assert set(summary.failed) == {ids[3], ids[7]}
    assert "No such file" in summary.failed[ids[7]]
    [row] = runs.list_embeddings(bad)
    assert (row["status"], row["vectors"], row["failures"]) == ("complete", 6, 2)
    assert runs.load_embeddings(bad, "clip")[0].tolist() == ids[:3] + ids[4:7]


def test_quality_measured_on_ray_matches_the_in_process_decode(dataset, ray_address, tmp_path):
    from curate_loop.embeddings.compute import embed_images
    from curate_loop.embeddings.models import ModelSpec, load_model
    from curate_loop.embeddings.ray_backend import embed_images_ray
    from curate_loop.embeddings.store import EmbeddingStore

    ids, paths = dataset.limit(8).values(["id", "filepath"])
    local = embed_images(ids, paths, load_model(ModelSpec(MODEL)), EmbeddingStore(tmp_path / "a").open({}),
                         quality=True)
    on_ray = embed_images_ray(ids, paths, ModelSpec(MODEL), EmbeddingStore(tmp_path / "b").open({}), quality=True,
                              num_actors=2, batch_size=3)
    assert sorted(on_ray.quality) == sorted(local.quality) == sorted(ids)
    for sample_id, (metrics, content_hash) in local.quality.items():
        assert on_ray.quality[sample_id][1] == content_hash
        assert on_ray.quality[sample_id][0] == pytest.approx(metrics)


def test_a_warm_pool_serves_the_next_call_and_stops_when_idle(dataset, ray_address, tmp_path, monkeypatch):
    import ray

    from curate_loop.embeddings import ray_backend
    from curate_loop.embeddings.models import ModelSpec

    ids, paths = dataset.limit(12).values(["id", "filepath"])
    first = ray_backend.embed_images_ray(ids[:6], paths[:6], ModelSpec(MODEL), ray_backend.EmbeddingStore(
        tmp_path / "a").open({}), num_actors=1, batch_size=4)
    [(key, pool)] = [(k, p) for k, p in ray_backend._POOLS.items() if k[1:] == ((ModelSpec(MODEL),), "cpu", 2, False, 1, False)]
    pids = ray.get([actor.__ray_call__.remote(lambda self: os.getpid()) for actor in pool.actors])
    monkeypatch.setenv(ray_backend.POOL_IDLE_ENV, "1")
    second = ray_backend.embed_images_ray(ids[6:], paths[6:], ModelSpec(MODEL), ray_backend.EmbeddingStore(
        tmp_path / "b").open({}), num_actors=1, batch_size=4)
    assert (first.computed, second.computed) == (6, 6)
    assert ray_backend._POOLS[key] is pool  # the same actors: no second start
    assert ray.get([actor.__ray_call__.remote(lambda self: os.getpid()) for actor in pool.actors]) == pids
    deadline = time.monotonic() + 30
    while key in ray_backend._POOLS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert key not in ray_backend._POOLS  # idle past CURATE_LOOP_RAY_POOL_IDLE_S: stopped, its CPUs free again
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(pool.actors[0].__ray_call__.remote(lambda self: 1), timeout=60)


def test_weights_an_actor_cannot_load_are_a_clear_error_and_leave_no_pool(dataset, ray_address, tmp_path):
    from curate_loop.embeddings import ray_backend
    from curate_loop.embeddings.models import ModelSpec

    ids, paths = dataset.limit(4).values(["id", "filepath"])
    with pytest.raises(InvalidInputError, match="neither a local checkpoint file nor a tag of ViT-S-32"):
        ray_backend.embed_images_ray(ids, paths, ModelSpec(MODEL, "no-such-tag"),
                                     ray_backend.EmbeddingStore(tmp_path / "s").open({}), num_actors=1)
    assert not [k for k in ray_backend._POOLS if k[1] == (ModelSpec(MODEL, "no-such-tag"),)]


def test_the_cli_embeds_on_a_running_cluster_by_its_address(dataset, ray_address, tmp_path):
    from curate_loop.embeddings.ray_backend import close_pools

    close_pools()  # this process's warm pools hold the cluster's 2 CPUs that the CLI's actors need
    log = tmp_path / "cli.log"
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", "curate_loop.cli", "embed", "compute", dataset.name, "--key",
                                "cli_ray", "--model", MODEL, "--backend", "ray", "--ray-address", ray_address,
                                "--ray-actors", "1", "--no-index", "--no-map"], stdout=out, stderr=subprocess.STDOUT,
                               env=os.environ.copy(), timeout=600)
    text = log.read_text()
    assert code == 0, text
    assert f"Embeddings 'cli_ray': {len(dataset)} computed" in text and "(on Ray, 1 actor(s))" in text, text
    dataset.reload()  # the run was recorded by the CLI's process
    assert dataset.get_run_info("cli_ray").config.backend == "ray"
    runs.compute_embeddings(dataset, "local_ref", MODEL, batch_size=16)  # the reference (a no-op after the 1st test)
    _, local = runs.load_embeddings(dataset, "local_ref")
    assert float(np.abs(runs.load_embeddings(dataset, "cli_ray")[1] - local).max()) <= 1e-5


def test_an_address_with_no_cluster_behind_it_is_a_clear_error(dataset, tmp_path):
    log = tmp_path / "cli.log"
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", "curate_loop.cli", "embed", "compute", dataset.name, "--key",
                                "nowhere", "--model", MODEL, "--backend", "ray", "--ray-address", "127.0.0.1:9",
                                "--no-index", "--no-map"], stdout=out, stderr=subprocess.STDOUT,
                               env=os.environ.copy(), timeout=600)
    text = log.read_text()
    assert code == 1, text
    assert "Cannot connect to the Ray cluster at '127.0.0.1:9'" in text and "Traceback" not in text, text


def test_ray_options_need_backend_ray_on_the_cli(dataset):
    from click.testing import CliRunner

    from curate_loop.cli import cli

    result = CliRunner().invoke(cli, ["embed", "compute", dataset.name, "--ray-actors", "2"])
    assert result.exit_code == 2 and "--ray-address and --ray-actors need --backend ray" in result.output


def test_manifest_accepts_backend_ray_and_refuses_a_typo(tmp_path):
    import yaml

    from curate_loop.loop.manifest import load_manifest

    base = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "manifest.yml")))

    def load(embeddings: dict):
        path = tmp_path / "manifest.yml"
        path.write_text(yaml.safe_dump({**base, "embeddings": {**base["embeddings"], **embeddings}}))
        return load_manifest(path)

    settings = load({"backend": "ray", "ray_address": "10.0.0.1:6379", "ray_actors": 4}).embeddings
    assert (settings.backend, settings.ray_address, settings.ray_actors) == ("ray", "10.0.0.1:6379", 4)
    assert load({}).embeddings.backend == "local"
    with pytest.raises(InvalidInputError, match="backend"):
        load({"backend": "rya"})
    with pytest.raises(InvalidInputError, match="ray_address and ray_actors are for backend ray"):
        load({"ray_actors": 2})


def test_unsupported_requests_are_refused_before_any_work(dataset):
    with pytest.raises(InvalidInputError, match="not supported yet with backend ray: use backend local"):
        runs.compute_embeddings(dataset, "objects_ray", MODEL, patches_field="ground_truth", backend="ray")
    with pytest.raises(InvalidInputError, match="Unknown embeddings backend 'spark'"):
        runs.compute_embeddings(dataset, "spark", MODEL, backend="spark")
    assert "objects_ray" not in dataset.list_runs() and "spark" not in dataset.list_runs()


def test_ray_not_installed_says_which_extra_to_install(monkeypatch):
    from curate_loop.embeddings import ray_backend

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as without the extra
    with pytest.raises(SetupError, match=r"pip install 'curate-loop\[ray\]'"):
        with ray_backend.ray_cluster():
            pass
