"""The reduced-scale JPEG decode gives the model the input a full decode + its own preprocessing gives."""

import numpy as np
import pytest
from PIL import Image

from curate_loop.embeddings import images
from curate_loop.embeddings.images import ImageFiles, reduced_decode_error
from curate_loop.errors import InvalidInputError

MAX_MEAN_ABS_DIFF = 1 / 255  # pixel units: under one grey level on average
MAX_SHARE_OFF = 0.01  # at most 1% of the values off by more than 8/255


@pytest.fixture(scope="module")
def preprocess():
    import open_clip

    return open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)[2]  # the transform only


@pytest.fixture(scope="module")
def textured_jpegs(tmp_path_factory):
    """Large photo JPEGs with fine detail (scikit-image's texture and colour photos, upscaled, with a little
    sensor-like noise): all are big enough to be decoded at half scale for a 224 px model."""
    from skimage import data

    folder = tmp_path_factory.mktemp("textured")
    rng = np.random.default_rng(0)
    paths = []
    for name, size in (("grass", (1000, 1000)), ("gravel", (1344, 1008)), ("coffee", (1500, 1000)),
                       ("astronaut", (1008, 1344))):
        arr = getattr(data, name)()
        arr = np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr
        img = np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
        img += rng.standard_normal(img.shape, dtype=np.float32) * 3
        paths.append(str(folder / f"{name}.jpg"))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(paths[-1], quality=90)
    return paths


def test_reduced_decode_keeps_the_model_input(preprocess, textured_jpegs):
    error = reduced_decode_error(textured_jpegs, preprocess)
    assert error["n_reduced"] == error["n_images"] == 4  # every one took the reduced path: the check bites
    assert error["mean_abs_diff"] < MAX_MEAN_ABS_DIFF
    assert error["share_off"] < MAX_SHARE_OFF
    assert error["worst_image_mean_abs_diff"] < 2 * MAX_MEAN_ABS_DIFF


def test_reducing_to_the_resize_target_itself_would_fail_the_bound(preprocess, textured_jpegs, monkeypatch):
    # the decode this replaced (headroom 1: down to the 224 px target) moved fine texture visibly
    monkeypatch.setattr(images, "DRAFT_HEADROOM", 1)
    error = reduced_decode_error(textured_jpegs, preprocess)
    assert error["n_reduced"] == 4
    assert error["share_off"] > MAX_SHARE_OFF


def test_draft_size_is_headroom_times_the_resize_target(preprocess, textured_jpegs):
    files = ImageFiles(textured_jpegs, preprocess)
    assert (files.min_size, files.draft_size) == (224, 224 * images.DRAFT_HEADROOM)
    assert ImageFiles(textured_jpegs, preprocess, reduced_decode=False).draft_size is None
    with Image.open(textured_jpegs[1]) as img:  # 1344 x 1008: half scale keeps 504 >= 448 px
        img.draft("RGB", (files.draft_size, files.draft_size))
        assert img.size == (672, 504)


def test_unreadable_file_is_named(preprocess, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(InvalidInputError, match=r"Cannot compare decodes of .*bad\.jpg"):
        reduced_decode_error([str(bad)], preprocess)
