"""The offline ``classical`` model (HOG + colour + PCA): arrays first, then real FiftyOne runs, the CLI, the
manifest's fallback, and the random-weights notice."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from curate_loop.embeddings import classical
from curate_loop.embeddings.models import ModelSpec, check_spec, load_model
from curate_loop.errors import EmbeddingModelError, InvalidInputError


def _photo_crops(n: int, seed: int = 0) -> list[Image.Image]:
    import skimage.data

    photo = skimage.data.astronaut()
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, photo.shape[0] - 96, size=(n, 2))
    return [Image.fromarray(photo[y:y + 96, x:x + 96]) for y, x in corners]


# -- arrays ----------------------------------------------------------------------------------------
def test_raw_features_are_deterministic_and_see_shape_and_colour():
    image = _photo_crops(1)[0]
    a, b = classical.raw_features(image), classical.raw_features(image.copy())
    assert a.shape == (classical.RAW_DIM,) and a.dtype == np.float32 and np.array_equal(a, b)
    flipped = classical.raw_features(image.transpose(Image.FLIP_LEFT_RIGHT))
    recoloured = classical.raw_features(Image.fromarray(np.asarray(image)[..., ::-1].copy()))
    assert not np.allclose(a, flipped) and not np.allclose(a, recoloured)


def test_basis_centres_and_reduces_and_survives_save_and_load():
    import torch

    raw = np.stack([classical.raw_features(im) for im in _photo_crops(40)])
    model = classical.ClassicalModel().fit(raw)
    assert model.dim == 39  # at most n - 1 axes for 40 rows
    z = model.encode_image(torch.from_numpy(raw)).numpy()
    assert z.shape == (40, 39) and np.allclose(z.mean(axis=0), 0, atol=1e-4)  # centred: cosines are meaningful
    again = classical.ClassicalModel()
    assert again.load_bytes(model.to_bytes()) and np.array_equal(again.encode_image(torch.from_numpy(raw)).numpy(), z)
    assert not classical.ClassicalModel().load_bytes(None)
    with pytest.raises(InvalidInputError, match="no PCA basis"):
        classical.ClassicalModel().encode_image(torch.from_numpy(raw))


def test_near_copies_are_far_closer_than_other_crops():
    import torch

    crops = _photo_crops(60, seed=1)
    base = np.asarray(crops[0], dtype=np.float32)
    copy = Image.fromarray(np.clip(np.roll(base, 1, axis=1) * 1.05 + 2, 0, 255).astype(np.uint8))
    raw = np.stack([classical.raw_features(im) for im in crops + [copy]])
    z = classical.ClassicalModel().fit(raw).encode_image(torch.from_numpy(raw)).numpy()
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sims = z[1:] @ z[0]
    assert sims[-1] > 0.9 and sims[-1] > np.sort(sims[:-1])[-1]


def test_spec_checks():
    assert check_spec(ModelSpec("classical")) is None
    assert ModelSpec("classical").key == "classical" and not ModelSpec("classical").random_weights
    assert ModelSpec("ViT-B-32").random_weights
    with pytest.raises(InvalidInputError, match="no weights"):
        check_spec(ModelSpec("classical", "laion2b_s34b_b79k"))
    with pytest.raises(InvalidInputError, match="'classical' is the offline"):
        check_spec(ModelSpec("classicl"))
    assert load_model(ModelSpec("classical")).device == "cpu"


# -- real FiftyOne runs ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(example_dataset):
    return example_dataset.clone("classical-tests")


def test_image_run_is_incremental_in_one_fixed_space(dataset):
    from curate_loop.runs import embeddings as runs

    first, grown = dataset.limit(30), dataset.limit(50)
    assert runs.compute_embeddings(first, "hog", "classical").computed == 30
    _, before = runs.load_embeddings(first, "hog")
    basis = (runs.run_dir(dataset, "hog") / "part-0" / classical.BASIS_FILE).read_bytes()
    summary = runs.compute_embeddings(grown, "hog", ["classical"])
    assert (summary.computed, summary.skipped) == (20, 30)
    assert (runs.run_dir(dataset, "hog") / "part-0" / classical.BASIS_FILE).read_bytes() == basis  # not refitted
    ids, vectors = runs.load_embeddings(grown, "hog")
    assert np.array_equal(vectors[:30], before) and vectors.shape == (50, 29)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert runs.random_weights_notice(dataset, "hog") is None


def test_object_run_embeds_every_box(dataset):
    from curate_loop.runs import embeddings as runs

    labeled = dataset.match_tags("labeled")
    summary = runs.compute_embeddings(labeled, "hog_boxes", "classical", patches_field="ground_truth")
    n_boxes = labeled.count("ground_truth.detections")
    assert summary.computed == n_boxes and not summary.failed
    ids, vectors = runs.load_embeddings(labeled, "hog_boxes")
    assert len(ids) == n_boxes and vectors.shape[1] == min(classical.DIM, n_boxes - 1)


def test_random_weights_are_flagged_and_named(dataset):
    from curate_loop.runs import embeddings as runs

    runs.compute_embeddings(dataset.limit(8), "random_clip", "ViT-B-32", batch_size=8)
    notice = runs.random_weights_notice(dataset, "random_clip")
    assert notice.startswith("RANDOM WEIGHTS") and "ViT-B-32" in notice and "classical" in notice
    assert runs.random_weights_notice(dataset, "no_such_key") is None


def test_cli_model_classical(dataset):
    from curate_loop.cli import cli

    result = CliRunner().invoke(cli, ["embed", "compute", dataset.name, "--key", "cli_hog", "--model", "classical"])
    assert result.exit_code == 0, result.output
    from curate_loop.runs.embeddings import embedding_config

    assert embedding_config(dataset, "cli_hog")["models"] == [{"name": "classical", "pretrained": None}]


# -- the manifest's fallback -----------------------------------------------------------------------
def _manifest(tmp_path, name, fallback):
    import yaml

    from curate_loop.loop.manifest import load_manifest

    embeddings = {"models": [{"name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}]}
    if fallback:
        embeddings["fallback"] = fallback
    path = tmp_path / "manifest.yml"
    path.write_text(yaml.safe_dump({"dataset": name, "classes": ["0", "1"], "embeddings": embeddings}))
    return load_manifest(path)


def test_fallback_is_chosen_when_weights_cannot_be_had_and_stays(dataset, tmp_path, monkeypatch):
    from curate_loop.loop import embedding_models
    from curate_loop.runs import embeddings as runs

    monkeypatch.setattr(embedding_models, "weights_available", lambda spec: False)  # offline, whatever the machine
    manifest = _manifest(tmp_path, dataset.name, "classical")
    specs, note = embedding_models.choose_models(dataset, manifest, "fallback_key")
    assert specs == [ModelSpec("classical")] and "cannot be had" in note
    runs.compute_embeddings(dataset.limit(10), "fallback_key", specs)
    monkeypatch.setattr(embedding_models, "weights_available", lambda spec: True)  # online later: no silent switch
    specs, note = embedding_models.choose_models(dataset, manifest, "fallback_key")
    assert specs == [ModelSpec("classical")] and "embed delete" in note
    with pytest.raises(EmbeddingModelError, match="embeddings.fallback: classical"):
        monkeypatch.setattr(embedding_models, "weights_available", lambda spec: False)
        embedding_models.choose_models(dataset, _manifest(tmp_path, dataset.name, None), "other_key")


def test_unknown_fallback_is_a_manifest_error(tmp_path):
    with pytest.raises(InvalidInputError, match="embeddings.fallback"):
        _manifest(tmp_path, "x", "resnet")
