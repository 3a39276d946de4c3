"""Embedding core (no FiftyOne): model loading, robust decoding, the on-disk store, resumable compute."""

import os

import numpy as np
import pytest
from PIL import Image

from curate_loop.embeddings.compute import embed_images
from curate_loop.embeddings.images import open_rgb
from curate_loop.embeddings.models import ModelSpec, load_model
from curate_loop.embeddings.store import EmbeddingStore
from curate_loop.errors import EmbeddingModelError, InvalidInputError


@pytest.fixture(scope="module")
def random_clip():
    return load_model(ModelSpec("ViT-B-32", None), device="cpu")


# -- store ------------------------------------------------------------------------------------
def test_store_keeps_latest_vector_and_orders_by_request(tmp_path):
    store = EmbeddingStore(tmp_path).open({"model": "m"})
    store.append(["a", "b"], [[1, 0], [0, 1]])
    store.append(["a"], [[5, 5]])
    ids, vectors = store.load(["b", "a"])
    assert ids.tolist() == ["b", "a"]
    assert vectors.tolist() == [[0, 1], [5, 5]]
    assert sorted(store.load()[0].tolist()) == ["a", "b"]


def test_store_reports_missing_ids_and_config_mismatch(tmp_path):
    store = EmbeddingStore(tmp_path).open({"model": "m"})
    store.append(["a"], [[1.0, 2.0]])
    with pytest.raises(InvalidInputError, match=r"1 of 2 ids have no vector .*\['zz'\]"):
        store.load(["a", "zz"])
    with pytest.raises(InvalidInputError, match="was made with"):
        EmbeddingStore(tmp_path).open({"model": "other"})
    with pytest.raises(InvalidInputError, match=r"Expected vectors of shape \(2, dim\)"):
        store.append(["x", "y"], np.ones(3))


def test_half_written_chunk_is_invisible(tmp_path):
    store = EmbeddingStore(tmp_path).open({"model": "m"})
    store.append(["a"], [[1.0]])
    (tmp_path / ".tmp-chunk-000001.npz").write_bytes(b"truncated by a crash")
    assert store.stored_ids().tolist() == ["a"]
    assert not store.is_complete


# -- decoding ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_every_common_mode_decodes_to_rgb(tmp_path, mode):
    arr = (np.arange(32 * 48) % 251).reshape(32, 48).astype(np.uint8)
    img = Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(arr.astype(np.uint16) * 200)
    assert img.mode == mode
    path = tmp_path / f"img.{'tiff' if mode in ('CMYK', 'I;16') else 'png'}"
    img.save(path)
    out = open_rgb(str(path))
    assert out.mode == "RGB" and out.size == (48, 32)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "red")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert open_rgb(str(tmp_path / "rot.jpg")).size == (20, 40)


# -- models -----------------------------------------------------------------------------------
def test_unknown_model_lists_close_matches():
    with pytest.raises(InvalidInputError, match=r"Unknown open_clip model 'ViT-B-23'.*ViT-B-32"):
        load_model(ModelSpec("ViT-B-23"))


def test_unknown_pretrained_tag_lists_valid_tags():
    with pytest.raises(InvalidInputError, match=r"neither a local checkpoint file nor a tag.*laion2b_s34b_b79k"):
        load_model(ModelSpec("ViT-B-32", "no-such-tag"))


def test_pretrained_tag_offline_says_how_to_supply_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmbeddingModelError, match=r"pass its local path as pretrained=<file>"):
        load_model(ModelSpec("ViT-B-32", "laion2b_s34b_b79k"), device="cpu")


def test_local_checkpoint_path_loads(random_clip, tmp_path):
    import torch

    ckpt = tmp_path / "clip.pt"
    torch.save(random_clip.model.state_dict(), ckpt)
    loaded = load_model(ModelSpec("ViT-B-32", str(ckpt)), device="cpu")
    first = next(iter(random_clip.model.state_dict().values()))
    assert torch.equal(next(iter(loaded.model.state_dict().values())), first)
    assert loaded.spec.key == "ViT-B-32:clip.pt"


# -- compute ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def example_images(tmp_path_factory):
    from curate_loop.examples.digits_canvas import ExampleSpec, generate_canvases

    folder = tmp_path_factory.mktemp("images")
    canvases = generate_canvases(ExampleSpec(n_labeled=10, n_pool=14, n_near_dup_groups=1, near_dup_group_size=4,
                                             n_outliers=2, seed=3))
    paths = []
    for i, canvas in enumerate(canvases):
        paths.append(str(folder / f"{i:03d}.jpg"))
        Image.fromarray(canvas.image).save(paths[-1])
    return paths


def test_embed_resume_incremental_and_failures(random_clip, example_images, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    paths = example_images[:16] + [str(corrupt), str(tmp_path / "missing.jpg")]
    ids = [f"s{i}" for i in range(len(paths))]
    store = EmbeddingStore(tmp_path / "run").open({"model": random_clip.spec.key})

    report = embed_images(ids, paths, random_clip, store, batch_size=8, num_workers=1)
    assert (report.computed, report.skipped) == (16, 0)
    assert set(report.failed) == {"s16", "s17"}
    assert "No such file" in report.failed["s17"]
    assert set(store.failures()) == {"s16", "s17"}
    stored, vectors = store.load(ids[:16])
    assert vectors.shape == (16, 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    n_chunks = len(os.listdir(tmp_path / "run"))

    again = embed_images(ids[:16], paths[:16], random_clip, store, num_workers=0)  # resumed: nothing to do
    assert (again.computed, again.skipped) == (0, 16)
    assert len(os.listdir(tmp_path / "run")) == n_chunks

    more_ids = ids[:16] + ["s100", "s101"]
    more = embed_images(more_ids, paths[:16] + example_images[16:18], random_clip, store, num_workers=0)
    assert (more.computed, more.skipped) == (2, 16)
    _, before = store.load(ids[:16])
    assert np.array_equal(before, vectors)  # the old vectors were not recomputed

    Image.open(paths[0]).save(corrupt)  # the corrupt file gets fixed: its failure is forgotten
    fixed = embed_images(ids[:17], paths[:17], random_clip, store, num_workers=0)
    assert (fixed.computed, fixed.skipped, fixed.failed) == (1, 16, {})
    assert set(store.failures()) == {"s17"}
