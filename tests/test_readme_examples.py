"""README.md's Python examples run as written, in order, on the example dataset built the way the README says.

Each ```python block is executed in one shared namespace (a reader pastes them into one session). Only what
needs the internet or time is changed, and every change is visible here:

- ``~`` is a fresh folder (``HOME``), so the examples never write into the user's home;
- the example is built small (``ExampleSpec()`` gives ``README_SPEC``, the tests' size with a larger pool);
- open_clip ``pretrained`` tags load random weights (no model hub offline); the runs still record the tag;
- the repository's ``manifest.yml`` (``pretrained: laion2b_s34b_b79k``, the tag of the README's blocks) is copied;
- the local Label Studio servers start on a copy of an already migrated data folder (no ~30 s of migrations).
"""

from __future__ import annotations

import ast

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_SPEC

README = Path(__file__).resolve().parent.parent / "README.md"
REPO_ROOT = README.parent
# Two batches of the README's size (its select_batch and the manifest's iteration) fit in the pool.
README_SPEC = replace(SMALL_SPEC, n_pool=110)
README_PRETRAINED = "laion2b_s34b_b79k"  # the tag the README's examples name


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


BLOCKS = python_blocks(README.read_text())


def test_python_blocks_are_found():
    assert python_blocks("x\n```python\na = 1\n```\n```bash\nb\n```\n```python\nc = 2\n```\n") == ["a = 1\n", "c = 2\n"]
    assert len(BLOCKS) == 2, "README.md's Python examples changed: give each new block its checks below"


def test_the_array_functions_the_readme_names_import():
    """The prose names the array-level functions of ``curate_loop.curation``: each must import from there."""
    import curate_loop.curation as curation

    sentence = re.search(r"`curate_loop\.curation`: (.*?)\)", README.read_text(), flags=re.S)
    assert sentence, "README.md no longer lists the array functions of curate_loop.curation"
    names = re.findall(r"`(\w+)`", sentence.group(1))
    assert "select_cluster_balanced" in names
    missing = [n for n in names if not callable(getattr(curation, n, None))]
    assert not missing, f"README.md names {missing}, which `from curate_loop.curation import ...` does not give"


@pytest.fixture(scope="module")
def readme_env(migrated_labelstudio_data_module, tmp_path_factory):
    """A home folder, a small example spec, random weights for every tag, the manifest the README asks for, and a
    migrated Label Studio data folder; the working directory holds ``manifest.yml``."""
    import yaml

    import curate_loop.embeddings.models as models
    import curate_loop.examples.build as build

    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("readme-home")
    state = home / ".curate-loop"
    shutil.copytree(migrated_labelstudio_data_module, state / "labelstudio")
    mp.setenv("HOME", str(home))
    mp.setenv("CURATE_LOOP_HOME", str(state))
    for var in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        mp.delenv(var, raising=False)
    mp.setattr(build, "ExampleSpec", lambda: README_SPEC)
    check_spec = models.check_spec
    mp.setattr(models, "check_spec", lambda spec: check_spec(models.ModelSpec(spec.name, None)))

    manifest = yaml.safe_load((REPO_ROOT / "manifest.yml").read_text())
    assert manifest["embeddings"]["models"] == [{"name": "ViT-B-32", "pretrained": README_PRETRAINED}]
    workdir = home / "project"
    workdir.mkdir()
    (workdir / "manifest.yml").write_text(yaml.safe_dump(manifest))
    mp.chdir(workdir)
    yield home
    mp.undo()


@pytest.fixture(scope="module")
def migrated_labelstudio_data_module(labelstudio, tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("readme-ls") / "labelstudio"
    shutil.copytree(labelstudio.data_dir, data_dir, ignore=shutil.ignore_patterns("*.log"))
    return data_dir


@pytest.fixture(scope="module")
def example_for_readme(readme_env):
    """The example as `make demo` / `curate-loop example build` leaves it: the dataset ``curate-loop-example``."""
    import fiftyone as fo

    from curate_loop.examples.build import DEFAULT_DATASET_NAME, build_example_dataset

    dataset = build_example_dataset(readme_env / "curate-loop-example-demo", overwrite=True)
    assert dataset.name == DEFAULT_DATASET_NAME and len(dataset) == README_SPEC.n_labeled + README_SPEC.n_pool
    yield dataset
    for name in (DEFAULT_DATASET_NAME, "my-example"):
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


@pytest.fixture(scope="module")
def namespace(example_for_readme):
    return {"__name__": "readme"}


@pytest.mark.labelstudio
def test_block_1_python_api(namespace, example_for_readme):
    from curate_loop.runs.embeddings import list_embeddings
    from curate_loop.runs.pool import BATCH_FIELD

    exec(compile(BLOCKS[0], "README.md:python-1", "exec"), namespace)
    dataset = namespace["dataset"]
    assert dataset.name == example_for_readme.name
    pool = dataset.match_tags("pool")
    n_pool = len(pool)
    assert n_pool == README_SPEC.n_pool

    ids, vectors = namespace["ids"], namespace["vectors"]
    assert vectors.shape == (n_pool, 512) and sorted(ids) == sorted(pool.values("id"))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    counts = {run["key"]: run for run in list_embeddings(dataset)}
    assert set(counts) == {"clip", "boxes", "mine"}  # the loop added to the README's runs, made none of its own
    assert counts["clip"]["models"] == [{"name": "ViT-B-32", "pretrained": README_PRETRAINED}]
    n_boxes = dataset.count("ground_truth.detections")
    assert [counts[k]["vectors"] for k in ("clip", "boxes", "mine")] == [len(dataset), n_boxes, len(dataset)]
    assert {"clip_sim", "clip_map"} <= set(dataset.list_brain_runs())

    # the saved text search scored exactly the pool, with the cosine of each pool vector to the saved query
    query = np.asarray(dataset.load_run_results("night_scenes").query)
    by_id = dict(zip(pool.values("id"), pool.values("search_night_scenes")))
    np.testing.assert_allclose([by_id[i] for i in ids], vectors @ query, atol=1e-5)
    assert dataset.exists("search_night_scenes").count() == n_pool

    # duplicates, edge scores, then two batches of up to 50: the README's by hand, and the loop's first iteration
    assert dataset.exists("dup_group").count() >= README_SPEC.n_near_dup_groups * README_SPEC.near_dup_group_size
    assert pool.exists("edge_score").count() == n_pool
    loop_summary = namespace["summary"]
    assert loop_summary.iteration == 1 and loop_summary.batch == "batch_01" and not loop_summary.reused_batch
    # Offline the "pretrained" weights are random, so many pool images are near-duplicates (cosine >= 0.98) of
    # each other and the loop's batch can stop short of its budget of 50: what it picked is what it pushed.
    by_hand, picked = len(dataset.load_saved_view("by_hand")), len(dataset.load_saved_view("batch_01"))
    assert 1 <= by_hand <= 50 and 1 <= picked <= 50
    assert loop_summary.selected == loop_summary.pushed == picked
    assert Path(loop_summary.loop_report_path).is_file()
    assert dataset.count_values(BATCH_FIELD) == {"by_hand": by_hand, "batch_01": picked,
                                                 None: len(dataset) - by_hand - picked}


@pytest.mark.labelstudio
def test_block_2_example_and_label_studio(namespace, readme_env, capsys):
    exec(compile(BLOCKS[1], "README.md:python-2", "exec"), namespace)
    dataset, server = namespace["dataset"], namespace["server"]
    assert dataset.name == "my-example" and len(dataset) == README_SPEC.n_labeled + README_SPEC.n_pool
    images = sorted((readme_env / "curate-loop-example" / "images").iterdir())
    assert [Path(p).name for p in sorted(dataset.values("filepath"))] == [p.name for p in images]

    printed = capsys.readouterr().out.splitlines()
    summary = namespace["summarize"](dataset)
    assert summary in [ast.literal_eval(line) for line in printed if line.startswith("{")]  # dict order may differ
    assert summary["samples"] == len(dataset) and summary["labeled_samples"] == README_SPEC.n_labeled
    assert f"{server.url} {server.token}" in printed and server.url.startswith("http://127.0.0.1:")
    assert not server.is_running()  # the with block stopped it
