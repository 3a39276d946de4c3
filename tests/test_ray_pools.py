"""The warm actor pools' bookkeeping (curate_loop.embeddings.ray_backend) with a fake Ray: which pools a new one
stops when the cluster's CPUs run short. Unit-level: the real cluster's behaviour is tests/test_embed_ray.py's."""

import pytest

from curate_loop.embeddings import ray_backend
from curate_loop.embeddings.models import ModelSpec

pytest.importorskip("ray")


class _FakeRay:
    """What ``_pool`` asks of Ray: the job id, the free CPUs, and a way to start actors."""

    def __init__(self, free_cpus: float):
        self.free_cpus = free_cpus
        self.started = 0

    def get_runtime_context(self):
        return type("Context", (), {"get_job_id": lambda _self: "job-1"})()

    def available_resources(self):
        return {"CPU": self.free_cpus}

    def remote(self, cls):
        fake = self

        class _Remote:
            def options(self, **_):
                return self

            def remote(self, *_args):
                fake.started += 1
                return f"actor-{fake.started}"

        return _Remote()


@pytest.fixture
def killed(monkeypatch):
    import ray

    stopped = []
    monkeypatch.setattr(ray, "kill", stopped.append)
    yield stopped
    ray_backend._POOLS.clear()


def _spec(name: str) -> ModelSpec:
    return ModelSpec(name=name, pretrained=None)


def test_a_new_pool_short_of_cpus_stops_the_idle_pools_but_not_one_in_use(killed):
    fake = _FakeRay(free_cpus=8)
    busy_key, busy = ray_backend._pool(fake, _spec("a"), "cpu", 1, False, 1, False)
    idle_key, idle = ray_backend._pool(fake, _spec("b"), "cpu", 1, False, 1, False)
    idle.busy = 0  # its call is done (no idle timer: the test decides when it is idle)
    fake.free_cpus = 0
    new_key, new = ray_backend._pool(fake, _spec("c"), "cpu", 1, False, 1, False)
    assert killed == idle.actors  # the idle pool's actor, and only it
    assert set(ray_backend._POOLS) == {busy_key, new_key}
    assert busy.busy == 1 and new.busy == 1


def test_close_pools_stops_every_pool_busy_or_not(killed):
    fake = _FakeRay(free_cpus=8)
    _, first = ray_backend._pool(fake, _spec("a"), "cpu", 1, False, 2, False)
    _, second = ray_backend._pool(fake, _spec("b"), "cpu", 1, False, 1, False)
    ray_backend.close_pools()
    assert sorted(killed) == sorted(first.actors + second.actors) and len(killed) == 3
    assert ray_backend._POOLS == {}
