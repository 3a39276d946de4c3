"""`make demo` end to end, headless, with its offline default on the full bundled example: it runs the whole loop
and its results must mostly be the planted ones.

The demo runs for real in a subprocess: the embedded MongoDB, a local Label Studio server (on a copy of the
session's migrated data folder, to skip ~30 s of migrations), the repository's manifest.yml, whose pretrained
weights cannot be had here, so it falls back to the classical model. The figures are read from the dataset it
leaves and checked against the example's kept-aside truth.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_DATASET = "curate-loop-example"

pytestmark = pytest.mark.labelstudio


@pytest.fixture(scope="module")
def demo_run(labelstudio, tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    data_dir = folder / "labelstudio"
    shutil.copytree(labelstudio.data_dir, data_dir, ignore=shutil.ignore_patterns("*.log"))
    home, plugins = folder / "home", folder / "plugins"
    env = {**os.environ, "CURATE_LOOP_HOME": str(home), "FIFTYONE_PLUGINS_DIR": str(plugins), "PYTHONUNBUFFERED": "1"}
    # output to a file, not a pipe: a MongoDB service the demo may start outlives it and would hold a pipe open
    log = folder / "demo.log"
    with open(log, "w") as out:
        returncode = subprocess.run([sys.executable, "-m", "curate_loop.demo", "--simulate-annotator",
                                     "--no-keep-running", "--rebuild", "--labelstudio-data-dir", str(data_dir),
                                     "--manifest", str(REPO / "manifest.yml")],
                                    stdout=out, stderr=subprocess.STDOUT, timeout=1500, env=env).returncode
    output = log.read_text()
    assert returncode == 0, output[-6000:]
    import fiftyone as fo

    return {"out": output, "dataset": fo.load_dataset(DEMO_DATASET), "home": home, "plugins": plugins}


def test_demo_runs_the_whole_loop_and_says_what_it_did(demo_run, labelstudio):
    out = demo_run["out"]
    assert "600 samples (150 labeled, 450 in the unlabeled pool)" in out
    assert "edge cases planted: 8 outliers, 6 near-duplicate groups" in out
    assert "600 vectors (600 computed now, 0 reused)" in out
    # the loop: batch_01 pushed and answered by the simulated annotator, pulled back, batch_02 pushed for a person
    # iteration 1: the example's detector is trained on the labeled split and predicts the pool before curation, so
    # the batch is picked with its uncertainty (combined) and pushed with its boxes as pre-annotations
    assert re.search(r"model curate_loop\.examples\.detector:predict \(callable\): trained on \d+ labels, cv accuracy -, "
                     r"450 pool samples predicted into 'predictions'", out)
    assert re.search(r"iteration 1: picked 50 samples for batch_01 \(combined\), 50 new tasks in Label Studio", out)
    assert "SIMULATED annotator answered 50 tasks" in out
    assert re.search(r"pulled batch_01: 50 tasks, 0 labels corrected, \d+ added, 0 removed", out)
    # the simulated annotator corrected the detector's pre-annotations: the pull measured how
    assert re.search(r"model assist on batch_01: \d+ of [1-9]\d* pre-annotated regions accepted as they were", out)
    assert re.search(r"iteration 2: picked 50 samples for batch_02 \(combined\), 50 new tasks in Label Studio", out)
    assert re.search(r"Your turn: +annotate batch_02 at http://127\.0\.0\.1:\d+/projects/\d+/data\?tab=\d+", out)
    for report in (out.split("report: ")[1].split()[0], out.split("label changes): ")[1].split()[0]):
        assert os.path.isfile(report)
    assert f"login {labelstudio.credentials.username}" in out
    assert (demo_run["plugins"] / "curate-loop" / "fiftyone.yml").is_file()
    assert "Could not connect session" not in out  # headless: no App nobody can open
    assert "Demo finished" in out


def test_demo_says_which_model_and_uses_no_random_weights(demo_run):
    out, dataset = demo_run["out"], demo_run["dataset"]
    assert "cannot be had here" in out and "with the classical model instead" in out, out[:3000]
    assert "RANDOM WEIGHTS" not in out
    for key in ("clip", "boxes"):
        assert dataset.get_run_info(key).config.models == [{"name": "classical", "pretrained": None}]
    assert out.count("Embedded with the classical fallback model") == 2  # once per loop iteration, not per key


def test_demo_writes_the_label_studio_key_file_and_says_how_to_use_it(demo_run):
    from curate_loop.adapters.labelstudio.keyfile import read_env_file

    path = demo_run["home"] / "labelstudio.env"
    assert f"source {path}" in demo_run["out"]
    assert path.stat().st_mode & 0o777 == 0o600
    saved = read_env_file(path)
    assert saved.url.startswith("http://127.0.0.1:") and saved.api_key and saved.api_key not in demo_run["out"]


def test_top_20_suspects_hold_at_least_half_of_the_planted_noise(demo_run):
    from curate_loop.runs.mislabels import top_suspects

    dataset = demo_run["dataset"]
    planted = {i for ids in dataset.exists("planted_noise").values("planted_noise") for i in ids}
    assert len(planted) >= 10  # 4% of the ~480 labeled boxes
    top = {row["label_id"] for row in top_suspects(dataset, "ground_truth", limit=20)}
    hits = len(planted & top)
    print(f"top-20 suspects: {hits} of {len(planted)} planted wrong labels")
    assert hits >= len(planted) / 2
    assert f"{hits} of the top 20 suspects are among the {len(planted)} labels the example planted wrong" in \
        demo_run["out"]


def test_planted_near_duplicate_groups_found_with_few_extra(demo_run):
    from curate_loop.runs.duplicates import DUP_GROUP_FIELD

    planted, found = demo_run["dataset"].values(["near_dup_group", DUP_GROUP_FIELD])
    members: dict = {}
    for p, f in zip(planted, found):
        if f is not None:
            members.setdefault(f, []).append(p)
    pure = [m[0] for m in members.values() if m[0] is not None and len(set(m)) == 1]
    extra = len(members) - len(pure)
    print(f"near-duplicates: {len(set(pure))} of 6 planted groups found, {extra} other groups")
    assert len(set(pure)) >= 5 and extra <= 6
    assert f"{len(set(pure))} of the 6 planted near-duplicate groups found, {extra} other groups" in demo_run["out"]
