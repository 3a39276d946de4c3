"""The Milvus similarity backend on real Milvus Lite and real FiftyOne: the same neighbours as the faiss backend on the
same vectors (images and objects), a fresh process (the App server's situation) opening the index, text prompts,
rebuilds without duplicates, the collection dropped with the run, and clear errors.

FiftyOne is imported inside fixtures and tests, after conftest has pointed it at the run's own database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import fresh_clone

from curate_loop.errors import InvalidInputError
from curate_loop.vectors import normalize_rows

pytest.importorskip("pymilvus")  # the `milvus` extra (in `dev`)

K = 10
TIE = 1e-5  # cosines this close count as a tie at the k-th place


def pixel_features(images):
    """16x16 grey thumbnails, centred: near-duplicates of the example are near-identical in pixels."""
    return np.stack([np.asarray(img.convert("L").resize((16, 16)), dtype=np.float32).ravel() - 127 for img in images])


@pytest.fixture(scope="module")
def dataset(example_dataset):
    """A persistent clone (a fresh process must see it) with image- and object-level embeddings of known vectors."""
    from curate_loop.runs import embeddings as runs

    clone = fresh_clone(example_dataset, "milvus-tests")
    clone.persistent = True
    runs.import_embeddings(clone, "pixels", pixel_features)
    object_ids = runs.item_ids(clone, "ground_truth")
    object_vectors = np.random.default_rng(3).standard_normal((len(object_ids), 32)).astype(np.float32)
    runs.import_embeddings(clone, "objects", object_vectors, patches_field="ground_truth")
    yield clone
    for key in list(clone.list_brain_runs()):
        clone.delete_brain_run(key)
    clone.delete()


def exact_top_k(vectors, ids, query_id, k=K):
    """The k nearest by cosine, computed here with numpy: (set of ids certainly in the top k, the k-th cosine)."""
    x = normalize_rows(vectors)
    sims = x @ x[list(ids).index(query_id)]
    kth = np.sort(sims)[::-1][k - 1]
    return {i for i, s in zip(ids, sims) if s > kth + TIE}, kth, dict(zip(ids, sims))


def assert_true_top_k(got, vectors, ids, query_id, k=K):
    """``got`` is a correct top k: it holds every id above the k-th cosine, and nothing below it (ties allowed)."""
    certain, kth, sims = exact_top_k(vectors, ids, query_id, k)
    assert len(got) == k and len(set(got)) == k
    assert certain <= set(got)
    assert all(sims[i] >= kth - TIE for i in got)


def collections(uri):
    import pymilvus

    from curate_loop.similarity.milvus import release_lite

    pymilvus.connections.connect(alias="test_listing", uri=uri)
    try:
        return pymilvus.utility.list_collections(using="test_listing")
    finally:
        pymilvus.connections.disconnect("test_listing")
        release_lite(uri)


def test_image_level_sort_matches_faiss_on_the_same_vectors(dataset):
    from curate_loop.paths import curate_loop_home
    from curate_loop.runs.embeddings import load_embeddings
    from curate_loop.runs.similarity import build_similarity

    assert build_similarity(dataset, "pixels", "pixels_faiss") == "pixels_faiss"
    assert build_similarity(dataset, "pixels", backend="milvus") == "pixels_sim"
    info = dataset.get_brain_info("pixels_sim")
    assert info.config.method == "milvus"
    uri = curate_loop_home().resolve() / "milvus" / f"{dataset._doc.id}.db"
    assert info.config.uri == str(uri)  # stored with the run, so the App server's process finds the file
    assert uri.is_dir() and f"curate_loop_{dataset._doc.id}_pixels_sim" in collections(str(uri))

    ids, vectors = load_embeddings(dataset, "pixels")
    ids = ids.tolist()
    near_dups = dataset.exists("near_dup_group").values("id")
    queries = near_dups[:3] + ids[::17][:5]
    for query in queries:
        by_milvus = dataset.sort_by_similarity(query, k=K, brain_key="pixels_sim").values("id")
        by_faiss = dataset.sort_by_similarity(query, k=K, brain_key="pixels_faiss").values("id")
        assert by_milvus[0] == query
        assert_true_top_k(by_milvus, vectors, ids, query)
        assert_true_top_k(by_faiss, vectors, ids, query)
        certain, _, _ = exact_top_k(vectors, ids, query)
        assert set(by_milvus) == set(by_faiss) or (certain < set(by_milvus) and certain < set(by_faiss))
    group = dataset[near_dups[0]]["near_dup_group"]
    first4 = dataset.sort_by_similarity(near_dups[0], k=4, brain_key="pixels_sim").values("near_dup_group")
    assert first4 == [group] * 4  # the planted near-duplicates come first


def test_object_level_sort_matches_faiss(dataset):
    from curate_loop.runs.embeddings import load_embeddings
    from curate_loop.runs.similarity import build_similarity

    build_similarity(dataset, "objects", "objects_faiss")
    build_similarity(dataset, "objects", backend="milvus")
    ids, vectors = load_embeddings(dataset, "objects")
    ids = ids.tolist()
    patches = dataset.to_patches("ground_truth")
    for query in ids[::23][:5]:
        by_milvus = patches.sort_by_similarity(query, k=K, brain_key="objects_sim").values("ground_truth.id")
        by_faiss = patches.sort_by_similarity(query, k=K, brain_key="objects_faiss").values("ground_truth.id")
        assert by_milvus[0] == query
        assert_true_top_k(by_milvus, vectors, ids, query)
        assert set(by_milvus) == set(by_faiss)  # random 32-d vectors: no ties at the 10th place


def test_another_process_opens_the_index_like_the_app_server(dataset):
    """The builder let go of the Milvus Lite file: a second process (as the App server is) opens it at once, finds it
    from the run alone, and gets the answer this process gets."""
    from curate_loop.runs.similarity import build_similarity

    build_similarity(dataset, "pixels", "pixels_elsewhere", backend="milvus")
    query = dataset.first().id
    script = textwrap.dedent(f"""
        import json, fiftyone as fo
        dataset = fo.load_dataset({dataset.name!r})
        results = dataset.load_brain_results("pixels_elsewhere")
        ids = dataset.sort_by_similarity({query!r}, k={K}, brain_key="pixels_elsewhere").values("id")
        print(json.dumps({{"cls": type(results).__name__, "ids": ids}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env=os.environ.copy(), cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    expected = dataset.sort_by_similarity(query, k=K, brain_key="pixels_elsewhere").values("id")  # reopens it here
    assert got == {"cls": "CurateMilvusSimilarityIndex", "ids": expected}
    assert expected[0] == query


def test_rebuild_replaces_the_vectors_and_deleting_the_run_drops_the_collection(dataset):
    from curate_loop.runs.similarity import build_similarity
    from curate_loop.similarity.milvus import collection_name, count_vectors

    build_similarity(dataset, "pixels", "pixels_other", backend="milvus")
    for _ in range(2):
        build_similarity(dataset, "pixels", "pixels_twice", backend="milvus")
    results = dataset.load_brain_results("pixels_twice")
    assert count_vectors(results) == len(dataset)  # not twice
    uri = results.config.uri
    assert collections(uri).count(collection_name(dataset, "pixels_twice")) == 1

    dataset.delete_brain_run("pixels_twice")
    assert collection_name(dataset, "pixels_twice") not in collections(uri)
    assert collection_name(dataset, "pixels_other") in collections(uri)  # other runs of the dataset keep theirs


def test_text_prompts_use_the_runs_open_clip_model(dataset):
    import open_clip
    import torch

    from curate_loop.similarity.milvus import build_milvus_index

    ids = np.array(dataset.values("id"))
    vectors = np.random.default_rng(4).standard_normal((len(ids), 512)).astype(np.float32)
    build_milvus_index(dataset, vectors, ids, "clip_milvus", model_name="ViT-B-32", pretrained=None)
    assert "clip_milvus" in dataset.list_brain_runs(supports_prompts=True)  # what the App looks for
    got = dataset.sort_by_similarity("a photo of a digit", k=K, brain_key="clip_milvus").values("id")

    with torch.random.fork_rng(devices=[]):  # curate-loop's documented seed for random weights
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    with torch.inference_mode():
        text = model.encode_text(open_clip.get_tokenizer("ViT-B-32")(["a photo of a digit"]))[0].numpy()
    scores = normalize_rows(vectors) @ (text / np.linalg.norm(text))
    assert got == ids[np.argsort(-scores, kind="stable")[:K]].tolist()


def test_an_unreachable_server_is_named_and_changes_nothing(dataset):
    from curate_loop.runs.similarity import build_similarity
    from curate_loop.similarity.milvus import MilvusUnavailableError

    build_similarity(dataset, "pixels", "pixels_kept", backend="milvus")
    before = dataset.get_brain_info("pixels_kept").config.uri
    with pytest.raises(MilvusUnavailableError, match=r"cannot reach the Milvus server at http://127\.0\.0\.1:9"):
        build_similarity(dataset, "pixels", "pixels_kept", backend="milvus", uri="http://127.0.0.1:9")
    assert dataset.get_brain_info("pixels_kept").config.uri == before  # the old run is still there
    assert len(dataset.sort_by_similarity(dataset.first().id, k=3, brain_key="pixels_kept")) == 3
    with pytest.raises(InvalidInputError, match="pass k"):  # Milvus answers top-k queries only
        dataset.sort_by_similarity(dataset.first().id, brain_key="pixels_kept")


def test_a_file_open_in_another_process_is_a_clear_error(dataset, tmp_path):
    from curate_loop.runs.similarity import build_similarity
    from curate_loop.similarity.milvus import MilvusUnavailableError

    uri = str(tmp_path / "held.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, pymilvus
            pymilvus.connections.connect(alias="hold", uri={uri!r})
            print("open", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(MilvusUnavailableError, match=f"Milvus Lite file {uri} is open in another process"):
            build_similarity(dataset, "pixels", "pixels_held", backend="milvus", uri=uri)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert "pixels_held" not in dataset.list_brain_runs()
    build_similarity(dataset, "pixels", "pixels_held", backend="milvus", uri=uri)  # free again: it works
    assert dataset.get_brain_info("pixels_held").config.uri == uri


def test_bad_choices_and_a_missing_pymilvus_say_what_to_do(dataset, monkeypatch):
    from curate_loop.runs.similarity import build_similarity
    from curate_loop.similarity.milvus import MilvusNotInstalled

    with pytest.raises(InvalidInputError, match="backend must be one of"):
        build_similarity(dataset, "pixels", backend="annoy")
    with pytest.raises(InvalidInputError, match="backend is faiss"):
        build_similarity(dataset, "pixels", uri="/tmp/x.db")
    with pytest.raises(InvalidInputError, match="neither a Milvus Lite file"):
        build_similarity(dataset, "pixels", "pixels_bad", backend="milvus", uri="ftp://host")
    with pytest.raises(InvalidInputError, match="holds credentials"):
        build_similarity(dataset, "pixels", "pixels_bad", backend="milvus", uri="http://me:secret@host:19530")
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if the extra were not installed
    with pytest.raises(MilvusNotInstalled, match=r"pip install 'curate-loop\[milvus\]'"):
        build_similarity(dataset, "pixels", "pixels_bad", backend="milvus")
    assert "pixels_bad" not in dataset.list_brain_runs()


def test_cli_operator_and_manifest_choose_milvus(dataset, plugin_installed, tmp_path):
    from click.testing import CliRunner
    from fiftyone.operators import execute_operator

    from curate_loop.cli import cli
    from curate_loop.loop.manifest import Manifest
    from curate_loop.similarity.milvus import count_vectors
    from curate_loop.plugin_install import PLUGIN_NAME

    uri = str(tmp_path / "cli.db")
    result = CliRunner().invoke(cli, ["embed", "index", dataset.name, "pixels", "--no-map",
                                      "--similarity-backend", "milvus", "--milvus-uri", uri])
    assert result.exit_code == 0, result.output
    assert "Similarity index 'pixels_sim' is ready" in result.output
    config = dataset.get_brain_info("pixels_sim").config
    assert (config.method, config.uri) == ("milvus", uri)
    assert count_vectors(dataset.load_brain_results("pixels_sim")) == len(dataset)
    result = CliRunner().invoke(cli, ["embed", "index", dataset.name, "pixels", "--no-map", "--milvus-uri", uri])
    assert result.exit_code != 0 and "--milvus-uri needs --similarity-backend milvus" in result.output

    # The App's build-index operator, headless, with the form's backend choice (default uri: the dataset's file).
    out = execute_operator(f"{PLUGIN_NAME}/build_similarity_and_map", ctx={
        "dataset": dataset.name, "params": {"key": "objects", "build_index": True, "build_map": False,
                                            "similarity_backend": "milvus"}})
    assert out.error is None and out.result.get("error") is None, (out.error, out.result)
    assert out.result["similarity"] == "objects_sim"
    config = dataset.get_brain_info("objects_sim").config
    assert config.method == "milvus" and config.uri.endswith(f"{dataset._doc.id}.db")

    manifest = Manifest(dataset="d", classes=["a"], similarity={"backend": "milvus", "uri": uri})
    assert (manifest.similarity.backend, manifest.similarity.uri) == ("milvus", uri)
    assert Manifest(dataset="d", classes=["a"]).similarity.backend == "faiss"
    with pytest.raises(ValueError, match="uri is for backend milvus"):
        Manifest(dataset="d", classes=["a"], similarity={"uri": uri})
