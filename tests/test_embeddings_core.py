"""Embedding core (no FiftyOne): model loading, robust decoding, the on-disk store, resumable compute."""

import os

import numpy as np
import pytest
from PIL import Image

from curate_loop.embeddings.compute import embed_images
from curate_loop.embeddings.images import (ImageFiles, ResizedCenterCrop, collate, open_rgb, resize_target,
                                           split_preprocess)
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


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two different ~1 MP photo JPEGs (upscaled scikit-image photos); the first one also stored rotated via
    EXIF (orientation 6: displayed 90° clockwise)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name, arr in (("astronaut", data.astronaut()), ("coffee", data.coffee())):
        img = Image.fromarray(arr).resize((1200, 800), Image.Resampling.BICUBIC)
        paths[name] = str(folder / f"{name}.jpg")
        img.save(paths[name], quality=90)
    rotated = Image.open(paths["astronaut"])
    exif = rotated.getexif()
    exif[0x0112] = 6
    paths["rotated"] = str(folder / "rotated.jpg")
    rotated.transpose(Image.Transpose.ROTATE_90).save(paths["rotated"], quality=90, exif=exif)
    return paths


def test_reduced_decode_keeps_min_size_and_orientation(photos, tmp_path):
    full = open_rgb(photos["rotated"])
    assert full.size == (1200, 800)  # upright again
    # the largest DCT scale (1/2, 1/4, 1/8) that keeps both sides >= min_size; upright like full decoding
    assert open_rgb(photos["rotated"], min_size=224).size == (600, 400)  # 1/4 would give a 200 px side
    assert open_rgb(photos["rotated"], min_size=150).size == (300, 200)
    assert open_rgb(photos["rotated"], min_size=500).size == (1200, 800)
    tiny = tmp_path / "tiny.jpg"
    Image.new("RGB", (200, 150), "blue").save(tiny)
    assert open_rgb(str(tiny), min_size=224).size == (200, 150)  # never below full size
    png = tmp_path / "big.png"
    Image.open(photos["coffee"]).save(png)
    assert open_rgb(str(png), min_size=224).size == (1200, 800)  # not a JPEG: full decoding


def test_resize_target_reads_the_preprocessing(random_clip):
    from torchvision import transforms

    assert resize_target(random_clip.preprocess) == 224
    assert resize_target(transforms.Compose([transforms.Resize((224, 300)), transforms.ToTensor()])) == 300
    assert resize_target(transforms.Compose([transforms.ToTensor()])) is None
    assert resize_target(transforms.Compose([transforms.Resize(224, max_size=256)])) is None
    assert resize_target(lambda img: img) is None
    assert ImageFiles([], random_clip.preprocess).min_size == 224
    assert ImageFiles([], random_clip.preprocess, reduced_decode=False).min_size is None


def test_reduced_decode_gives_nearly_the_same_input_and_vector(random_clip, photos):
    import torch

    full = ImageFiles(list(photos.values()), random_clip.preprocess, reduced_decode=False)
    reduced = ImageFiles(list(photos.values()), random_clip.preprocess)
    x_full = torch.stack([full[i][1] for i in range(3)])
    x_reduced = torch.stack([reduced[i][1] for i in range(3)])
    assert x_reduced.shape == x_full.shape == (3, 3, 224, 224)
    same_photo = (x_reduced - x_full).abs().mean(dim=(1, 2, 3))
    other_photo = (x_full[0] - x_full[1]).abs().mean()
    assert same_photo.max() < 0.05 < other_photo / 10  # normalised units: ~1.5 grey levels out of 255
    with torch.inference_mode():
        v_full = torch.nn.functional.normalize(random_clip.model.encode_image(x_full), dim=-1)
        v_reduced = torch.nn.functional.normalize(random_clip.model.encode_image(x_reduced), dim=-1)
    same = (v_full * v_reduced).sum(dim=1)
    assert same.min() > 0.999
    # random weights put any two images at cosine ~0.97: the reduced decode must be far closer than that
    assert 1 - same.min() < (1 - float(v_full[0] @ v_full[1])) / 10


def test_fused_resize_and_crop_gives_torchvision_pixels(random_clip, photos):
    from torchvision import transforms

    resize, crop = random_clip.preprocess.transforms[:2]
    fused = ResizedCenterCrop(resize, crop)
    photo = open_rgb(photos["coffee"])
    for size in [(1200, 800), (800, 1200), (601, 223 * 2 + 1), (224, 224), (230, 1000)]:
        img = photo.resize(size)
        expected = np.asarray(crop(resize(img)), dtype=int)
        got = np.asarray(fused(img), dtype=int)
        assert got.shape == expected.shape == (224, 224, 3)
        assert np.abs(got - expected).mean() < 0.1 and (np.abs(got - expected) > 1).mean() < 1e-3  # rounding only
    small, big = transforms.Resize(100), transforms.CenterCrop(150)  # a crop larger than the image: torchvision's way
    assert np.array_equal(np.asarray(ResizedCenterCrop(small, big)(photo)), np.asarray(big(small(photo))))


def test_uint8_batches_and_threads_give_exactly_the_same_input(random_clip, photos, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from torchvision import transforms

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not really a jpeg")
    paths = [photos["astronaut"], str(corrupt), photos["rotated"], photos["coffee"]]
    good, expected, failed = collate([ImageFiles(paths, random_clip.preprocess)[i] for i in range(4)])
    with ThreadPoolExecutor(2) as pool:
        images = ImageFiles(paths, random_clip.preprocess, executor=pool, uint8=True)
        good8, batch, failed8 = collate(images.__getitems__([0, 1, 2, 3]))
    assert (good8, failed8) == (good, failed) == ([0, 2, 3], failed) and failed[0][0] == 1
    assert batch.dtype == torch.uint8 and batch.shape == (3, 224, 224, 3)
    assert torch.equal(images.model_input(batch, "cpu", torch.float32), expected)
    assert split_preprocess(transforms.Compose([transforms.Resize(224), transforms.ToTensor()])) is None
    assert ImageFiles(paths, transforms.Compose([transforms.ToTensor()]), uint8=True).normalize is None


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


def test_decoding_in_workers_or_threads_gives_the_same_vectors(random_clip, example_images, tmp_path):
    ids = [f"s{i}" for i in range(6)]
    vectors = []
    for num_workers in (0, 1):
        store = EmbeddingStore(tmp_path / f"w{num_workers}").open({"model": random_clip.spec.key})
        report = embed_images(ids, example_images[:6], random_clip, store, batch_size=4, num_workers=num_workers)
        assert report.computed == 6
        vectors.append(store.load(ids)[1])
    assert np.allclose(vectors[0], vectors[1], atol=1e-6)


def test_brought_in_vectors_are_stored_in_chunks_and_a_zero_row_writes_nothing(tmp_path):
    from curate_loop.embeddings.sources import store_vectors

    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(25)]
    vectors = rng.normal(size=(25, 4)).astype(np.float32)
    store = EmbeddingStore(tmp_path / "given").open({"model": "mine"})
    report = store_vectors(ids[:20], vectors[:20], store, flush_every=8)
    assert report.computed == 20 and len(list((tmp_path / "given").glob("chunk-*[0-9].npz"))) == 3  # 8 + 8 + 4
    again = store_vectors(ids, vectors, store, flush_every=8)  # only the 5 new ones
    assert (again.computed, again.skipped) == (5, 20)
    got_ids, got = store.load(ids)
    assert np.allclose(got, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), atol=1e-6)

    zero = np.vstack([rng.normal(size=(9, 4)), np.zeros((1, 4))]).astype(np.float32)
    fresh = EmbeddingStore(tmp_path / "refused").open({"model": "mine"})
    with pytest.raises(InvalidInputError, match="1 row\\(s\\) of all zeros \\(first at row 9\\)"):
        store_vectors([f"z{i}" for i in range(10)], zero, fresh, flush_every=4)
    assert fresh.stored_ids().size == 0  # the first chunks were not written before the refusal
