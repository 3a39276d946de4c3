"""`make demo`'s offline default on the full bundled example: its results must mostly be the planted ones.

The demo runs for real in a subprocess (embedded MongoDB, a local Label Studio server, the repository's
manifest.yml whose pretrained weights cannot be had here, so it falls back to the classical model); the figures
are then read from the dataset it leaves and checked against the example's kept-aside truth.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_DATASET = "curate-loop-example"

pytestmark = pytest.mark.labelstudio


@pytest.fixture(scope="module")
def demo_run(plugin_installed, tmp_path_factory):
    # output to a file, not a pipe: the MongoDB service the demo starts outlives it and would hold a pipe open
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with open(log, "w") as out:
        returncode = subprocess.run([sys.executable, "-m", "curate_loop.demo", "--simulate-annotator",
                                     "--no-keep-running", "--rebuild"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    timeout=1500, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    output = log.read_text()
    assert returncode == 0, output[-6000:]
    import fiftyone as fo

    return output, fo.load_dataset(DEMO_DATASET)


def test_demo_says_which_model_and_uses_no_random_weights(demo_run):
    stdout, dataset = demo_run
    assert "cannot be had here" in stdout and "classical" in stdout, stdout[:2000]
    assert "RANDOM WEIGHTS" not in stdout
    models = dataset.get_run_info("clip").config.models
    assert models == [{"name": "classical", "pretrained": None}]


def test_top_20_suspects_hold_at_least_half_of_the_planted_noise(demo_run):
    from curate_loop.runs.mislabels import top_suspects

    _, dataset = demo_run
    planted = {i for ids in dataset.exists("planted_noise").values("planted_noise") for i in ids}
    assert len(planted) >= 10  # 4% of the ~480 labeled boxes
    top = {row["label_id"] for row in top_suspects(dataset, "ground_truth", limit=20)}
    hits = len(planted & top)
    print(f"top-20 suspects: {hits} of {len(planted)} planted wrong labels")
    assert hits >= len(planted) / 2


def test_planted_near_duplicate_groups_found_with_few_extra(demo_run):
    from curate_loop.runs.duplicates import DUP_GROUP_FIELD

    _, dataset = demo_run
    planted, found = dataset.values(["near_dup_group", DUP_GROUP_FIELD])
    members: dict = {}
    for p, f in zip(planted, found):
        if f is not None:
            members.setdefault(f, []).append(p)
    pure = {m[0] for m in members.values() if m[0] is not None and len(set(m)) == 1}
    extra = len(members) - sum(1 for m in members.values() if m[0] is not None and len(set(m)) == 1)
    print(f"near-duplicates: {len(pure)} of 6 planted groups found, {extra} other groups")
    assert len(pure) >= 5 and extra <= 6
