"""Embeddings from the CLI (`curate-loop embed`, `curate-loop search`) and from the App's operators
(run headless through FiftyOne's operator executor, as the App does), on the example dataset."""

import numpy as np
import pytest
from click.testing import CliRunner

from curate_loop.cli import cli
from curate_loop.plugin_install import PLUGIN_NAME
from curate_loop.runs import embeddings as runs


def invoke(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_cli_embeds_lists_searches_and_deletes(example_dataset, tmp_path):
    name = example_dataset.name
    code, out = invoke("embed", "compute", name, "--key", "cli_clip", "--tag", "labeled", "--batch-size", "16")
    assert code == 0, out
    assert "Embeddings 'cli_clip': 30 computed, 0 already stored, 0 failed; 30 vectors of 512 dims." in out
    assert "Similarity index 'cli_clip_sim' is ready" in out
    assert "2-D map 'cli_clip_map' is ready" in out
    assert "cli_clip_sim" in example_dataset.list_brain_runs()

    code, out = invoke("embed", "compute", name, "--key", "cli_clip", "--tag", "labeled", "--no-index", "--no-map")
    assert "0 computed, 30 already stored" in out

    vectors = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    np.save(tmp_path / "mine.npy", vectors)
    code, out = invoke("embed", "import", name, "cli_mine", str(tmp_path / "mine.npy"), "--tag", "labeled")
    assert code == 0 and "30 imported" in out, out

    code, out = invoke("embed", "list", name)
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "complete" in lines["cli_clip"] and "ViT-B-32@random" in lines["cli_clip"]
    assert " 30 x 8 " in lines["cli_mine"] and "npy" in lines["cli_mine"]

    example = example_dataset.match_tags("labeled").first().id
    code, out = invoke("search", "save", name, "cli_like", "--key", "cli_mine", "--example", example)
    assert code == 0, out
    code, out = invoke("search", "apply", name, "cli_like", "--tag", "labeled")
    assert "Scores written to 'search_cli_like'" in out
    assert example_dataset[example]["search_cli_like"] == pytest.approx(1.0, abs=1e-5)

    code, out = invoke("embed", "delete", name, "cli_mine")
    assert code == 0 and "cli_mine" not in [r["key"] for r in runs.list_embeddings(example_dataset)]


def test_cli_errors_say_what_to_do(example_dataset):
    code, out = invoke("embed", "compute", "no-such-dataset")
    assert code == 1
    assert "InvalidInputError: No FiftyOne dataset named 'no-such-dataset'" in out
    assert example_dataset.name in out
    code, out = invoke("embed", "compute", example_dataset.name, "--tag", "nope")
    assert code == 1 and "are tagged ['nope']; tags in use: ['labeled', 'pool']" in out
    code, out = invoke("embed", "compute", example_dataset.name, "--model", "ViT-B-23", "--tag", "labeled")
    assert code == 1 and "Unknown open_clip model 'ViT-B-23'" in out
    code, out = invoke("search", "apply", example_dataset.name, "never_saved")
    assert code == 1 and "No saved search 'never_saved'" in out


def test_operators_compute_embeddings_index_map_and_searches(example_dataset):
    from fiftyone.operators import execute_operator

    view = example_dataset.match_tags("labeled")
    result = execute_operator(f"{PLUGIN_NAME}/compute_embeddings", ctx={
        "dataset": example_dataset.name, "view": view,
        "params": {"key": "op_objects", "level": "object", "patches_field": "ground_truth", "margin": 0.1,
                   "models": "ViT-B-32", "batch_size": 16, "build_index": True, "build_map": True},
    })
    n_boxes = view.count("ground_truth.detections")
    assert result.result["computed"] == n_boxes and result.result["failed"] == 0
    assert result.result["similarity"] == "op_objects_sim" and result.result["map"] == "op_objects_map"
    assert example_dataset.get_brain_info("op_objects_map").config.patches_field == "ground_truth"

    runs.import_embeddings(example_dataset, "op_pixels", np.eye(len(example_dataset), dtype=np.float32))
    first = example_dataset.first().id
    execute_operator(f"{PLUGIN_NAME}/save_search", ctx={
        "dataset": example_dataset.name, "selected": [first], "params": {"name": "op_like", "key": "op_pixels"}})
    result = execute_operator(f"{PLUGIN_NAME}/apply_search", ctx={
        "dataset": example_dataset.name, "params": {"name": "op_like"}})
    assert result.result == {"field": "search_op_like", "scored": len(example_dataset)}
    scores = example_dataset.values("search_op_like")
    assert scores[0] == pytest.approx(1.0) and max(scores[1:]) == pytest.approx(0.0)


def test_bad_model_leaves_no_run_behind(example_dataset):
    from curate_loop.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="Unknown open_clip model"):
        runs.compute_embeddings(example_dataset, "typo_run", "ViT-B-23")
    assert "typo_run" not in example_dataset.list_runs()
    assert not runs.run_dir(example_dataset, "typo_run").exists()
