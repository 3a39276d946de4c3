"""Quiet terminals: the CLI commands, run as a user runs them (a subprocess, the real MongoDB, FiftyOne's database
validation on), print each warning at most once and none of FiftyOne's noise: the "removed App config option"
lines its own App-state round trip prints, and the "oldest supported MongoDB" line the MongoDB we install triggers.
The noise is first shown to appear without curate-loop's filters, so these tests can fail."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from curate_loop.quiet import OLDEST_MONGODB, REMOVED_APP_OPTION

NAME = "quiet-output"
ROUND_TRIP = ("import fiftyone as fo, fiftyone.core.state as fos; "
              f"state = fos.StateDescription(dataset=fo.load_dataset({NAME!r})).serialize(); "
              "[fos.StateDescription.from_dict(state) for _ in range(3)]; print('round trips done')")


def user_env() -> dict:
    """The tests' isolated database, with FiftyOne's database validation on, as a user has it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FIFTYONE_DATABASE_VALIDATION", None)
    return env


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=user_env(), capture_output=True, text=True, timeout=600)


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = run([sys.executable, "-m", "curate_loop.cli", *args])
    assert proc.returncode == 0, f"curate-loop {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if REMOVED_APP_OPTION.search(line) or OLDEST_MONGODB in line]


def repeated(text: str) -> dict[str, int]:
    """Non-blank lines printed more than once, progress bars (``NN%|███|``) aside: they redraw by design."""
    counts = Counter(line.strip() for line in text.replace("\r", "\n").splitlines()
                     if line.strip() and "%|" not in line)
    return {line: n for line, n in counts.items() if n > 1}


@pytest.fixture(scope="module")
def small(example_dataset):
    """A clone of the example with imported vectors ("thumbs") and two small tagged slices to embed."""
    import fiftyone as fo

    from curate_loop.runs.embeddings import import_embeddings

    if fo.dataset_exists(NAME):
        fo.delete_dataset(NAME)
    dataset = example_dataset.clone(NAME)
    dataset.persistent = True  # the subprocesses open it by name
    rng = np.random.default_rng(0)
    import_embeddings(dataset, "thumbs", rng.normal(size=(len(dataset), 16)).astype(np.float32))
    dataset.take(8, seed=0).tag_samples("small")
    dataset.exists("ground_truth").take(10, seed=0).tag_samples("small_boxes")  # >= 21 boxes: a mislabel scan
    yield dataset
    dataset.delete()


def test_without_the_filters_fiftyone_prints_the_noise(small):
    """The premise: FiftyOne's own App-state round trip and a connection to our MongoDB print the noise."""
    proc = run([sys.executable, "-c", "import fiftyone.core.odm.database as d; d.get_db_conn(); " + ROUND_TRIP])
    assert proc.returncode == 0, proc.stderr
    lines = noise(proc.stdout + proc.stderr)
    assert sum(bool(REMOVED_APP_OPTION.search(line)) for line in lines) == 9  # 3 options x 3 round trips
    if not any(OLDEST_MONGODB in line for line in lines):
        pytest.skip("this MongoDB is newer than FiftyOne's oldest supported one: no version warning to silence")


def test_connecting_through_curate_loop_silences_the_noise(small):
    proc = run([sys.executable, "-c", "from curate_loop.mongodb import connect; connect(); " + ROUND_TRIP])
    assert proc.returncode == 0, proc.stderr
    assert "round trips done" in proc.stdout
    assert noise(proc.stdout + proc.stderr) == []


def test_cli_commands_print_no_noise_and_no_warning_twice(small):
    runs = [
        cli("embed", "compute", NAME, "--key", "rw", "--model", "ViT-B-32", "--tag", "small", "--no-index",
            "--no-map", "--device", "cpu"),
        cli("embed", "compute", NAME, "--key", "rw_boxes", "--model", "ViT-B-32", "--objects", "ground_truth",
            "--tag", "small_boxes", "--no-index", "--no-map", "--device", "cpu"),
        cli("curate", "select", NAME, "quiet_batch", "-k", "3", "--key", "thumbs"),
        cli("curate", "list", NAME),
        cli("mislabels", "find", NAME, "--key", "rw_boxes", "--tag", "small_boxes"),
        cli("mislabels", "list", NAME),
    ]
    for proc in runs:
        assert noise(proc.stdout + proc.stderr) == [], proc.args
        assert repeated(proc.stderr) == {}, proc.args
        assert repeated(proc.stdout) == {}, proc.args
    # the results built on random-weight vectors say so, once each
    assert runs[0].stdout.count("RANDOM WEIGHTS") == 1 and runs[4].stdout.count("RANDOM WEIGHTS") == 1
    assert "RANDOM WEIGHTS" not in runs[2].stdout  # imported vectors
