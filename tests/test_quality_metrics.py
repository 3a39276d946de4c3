"""The data-quality metrics, thresholds and decode on hand-made arrays and files (no FiftyOne)."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from curate_loop.quality import (BOX_ISSUES, IMAGE_ISSUES, METRICS, RULES, adaptive_thresholds, batch_image_metrics,
                                 box_metrics, content_hash, flags, image_metrics, issue_scores, pil_image_metrics)
from curate_loop.quality.decode import decode_for_quality, measure_file
from curate_loop.quality.thresholds import adaptive_threshold, duplicate_counts, issue_score


def checkerboard(n=8, cell=1):
    return ((np.indices((n, n)) // cell).sum(0) % 2 * 255).astype(np.uint8)


def edge(blur=0.0):
    """A vertical black/white edge across a 64x64 image, Gaussian-blurred by ``blur`` pixels."""
    arr = np.zeros((64, 64), np.uint8)
    arr[:, 32:] = 255
    img = Image.fromarray(arr)
    return np.asarray(img.filter(ImageFilter.GaussianBlur(blur)) if blur else img)


def test_black_and_white_images():
    black, white = image_metrics(np.zeros((32, 32, 3), np.uint8)), image_metrics(np.full((32, 32, 3), 255, np.uint8))
    assert black["brightness"] == black["highlights"] == black["shadows"] == 0.0
    assert white["brightness"] == white["highlights"] == white["shadows"] == 1.0
    for m in (black, white):
        assert m["contrast"] == 0.0 and m["entropy"] == 0.0 and m["sharpness"] == 0.0 and m["colorfulness"] == 0.0
        assert (m["width"], m["height"], m["size"], m["aspect_ratio"]) == (32.0, 32.0, 32.0, 1.0)


def test_checkerboard_is_sharp_with_one_bit_of_entropy():
    m = image_metrics(checkerboard())
    assert m["brightness"] == 0.5 and m["contrast"] == 0.5 and m["entropy"] == 1.0
    # every interior Laplacian is +-4*255, every forward difference +-255 in x and in y: 1020 / (255 * sqrt 2)
    assert m["sharpness"] == pytest.approx(2 * np.sqrt(2))
    assert m["highlights"] == 1.0 and m["shadows"] == 0.0


def test_blurred_edge_is_less_sharp_than_a_sharp_one_and_sharpness_ignores_darkening():
    sharp, soft, softer = (image_metrics(edge(b))["sharpness"] for b in (0, 2, 4))
    assert sharp > 2 * soft > 0 and soft > softer
    dark = image_metrics((edge(2) * 0.25).astype(np.uint8))["sharpness"]
    assert dark == pytest.approx(soft, rel=0.15)  # relative to the image's own contrast


def test_one_by_hundred_strip():
    strip = np.tile(np.arange(100, dtype=np.uint8)[None, :], (1, 1))
    m = image_metrics(strip)
    assert (m["width"], m["height"]) == (100.0, 1.0)
    assert m["aspect_ratio"] == pytest.approx(0.01) and m["size"] == pytest.approx(10.0)
    assert np.isnan(m["sharpness"])  # no 3x3 neighbourhood
    assert m["entropy"] == pytest.approx(np.log2(100))


def test_grayscale_stored_as_rgb_has_no_colour_and_a_colour_image_has_some():
    gray = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    as_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    assert image_metrics(as_rgb)["colorfulness"] == 0.0
    assert image_metrics(as_rgb)["entropy"] == pytest.approx(image_metrics(gray)["entropy"])
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert image_metrics(red)["colorfulness"] == 1.0


def test_sixteen_bit_keeps_its_range_and_rgba_is_composited_on_white():
    dark16 = np.full((8, 8), 65535 // 10, np.uint16)
    assert image_metrics(dark16)["brightness"] == pytest.approx(0.1, abs=0.005)
    transparent = np.zeros((8, 8, 4), np.uint8)
    assert image_metrics(transparent)["brightness"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        image_metrics(np.zeros((2, 2, 5), np.uint8))


def test_large_images_are_measured_reduced_with_their_true_size():
    big = np.tile(checkerboard(8, 4), (300, 400))  # 2400 x 3200
    m = image_metrics(big)
    assert (m["width"], m["height"]) == (3200.0, 2400.0) and m["aspect_ratio"] == pytest.approx(0.75)
    assert m["brightness"] == pytest.approx(0.5, abs=0.01)


def test_batch_and_pil_entry_points_agree_with_single_images():
    images = [checkerboard(), edge(2), np.zeros((3, 7, 3), np.uint8)]
    batch = batch_image_metrics(images)
    assert set(batch) == set(METRICS) and all(len(v) == 3 for v in batch.values())
    for i, image in enumerate(images):
        single = image_metrics(image)
        assert all(np.isclose(batch[m][i], single[m], equal_nan=True) for m in METRICS)
    pil = pil_image_metrics([Image.fromarray(a) for a in images], original_sizes=[(80, 80), (64, 64), (7, 3)])
    assert pil["width"][0] == 80.0 and np.isclose(pil["sharpness"][1], batch["sharpness"][1])


def test_content_hash_finds_exact_copies_only():
    a = checkerboard()
    assert content_hash(a) == content_hash(a.copy())
    b = a.copy()
    b[0, 0] ^= 1
    assert content_hash(b) != content_hash(a)
    assert content_hash(a.reshape(4, 16)) != content_hash(a)  # same bytes, other shape
    assert content_hash(b"abc") == content_hash(bytearray(b"abc"))
    assert duplicate_counts(["x", "y", "x", None]).tolist() == [2, 1, 2, 0]


# -- boxes -----------------------------------------------------------------------------------------------------------
def test_box_metrics_geometry_crops_and_zero_area():
    image = np.zeros((100, 200), np.uint8)
    image[:, 100:] = 255  # right half white
    boxes = [[0.0, 0.0, 0.25, 0.5], [0.5, 0.25, 0.25, 0.25], [0.25, 0.4, 0.5, 0.1], [0.3, 0.3, 0.0, 0.2]]
    m = box_metrics(image, boxes)
    assert m["box_area"].tolist() == pytest.approx([50 * 50, 50 * 25, 100 * 10, 0])
    assert m["box_relative_area"].tolist() == pytest.approx([0.125, 0.0625, 0.05, 0.0])
    assert m["box_aspect_ratio"].tolist() == pytest.approx([1.0, 0.5, 0.1, 0.0])
    assert m["box_border_distance"].tolist() == pytest.approx([0.0, 0.25, 0.25, 0.3])
    assert m["box_brightness"][:3].tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert m["box_sharpness"][0] == 0.0 and m["box_sharpness"][2] > 0
    assert np.isnan(m["box_brightness"][3]) and np.isnan(m["box_sharpness"][3])  # zero area: reported, no crash
    assert box_metrics(image, np.zeros((0, 4)))["box_area"].shape == (0,)


def test_boxes_of_a_reduced_image_keep_original_pixel_areas():
    m = box_metrics(np.zeros((50, 100), np.uint8), [[0, 0, 0.5, 0.5]], original_size=(1000, 500))
    assert m["box_area"][0] == pytest.approx(500 * 250)


# -- thresholds ------------------------------------------------------------------------------------------------------
def test_adaptive_threshold_follows_the_data_and_flags_the_far_tail():
    rng = np.random.default_rng(0)
    typical = rng.normal(0.9, 0.03, 200).clip(0, 1)  # "highlights" of ordinary photos
    values = np.concatenate([typical, [0.2, 0.25, 0.3]])
    t = adaptive_threshold(RULES["dark"], values)
    assert 0.3 < t < 0.85
    score = issue_score(RULES["dark"], values, t)
    assert (score[-3:] >= 0.5).all() and (score[:200] >= 0.5).mean() < 0.02
    assert score.min() >= 0 and score.max() <= 1
    assert issue_score(RULES["dark"], [t], t)[0] == 0.5
    shifted = adaptive_threshold(RULES["dark"], values * 0.5)  # a dim dataset: the cut-off moves down
    assert shifted < t


def test_min_spread_and_limit_guard_uniform_data():
    same = np.full(50, 1.0)  # every image's highlights at white: MAD 0
    t = adaptive_threshold(RULES["dark"], same)
    assert t == pytest.approx(0.5)  # 1 - 3.5 * 0.05 = 0.825, then the limit: never above mid-grey
    assert not (issue_score(RULES["dark"], same, t) >= 0.5).any()
    aspect = adaptive_threshold(RULES["odd_aspect_ratio"], np.full(40, 1.0))
    assert aspect == pytest.approx(0.5)  # exp(-0.35) = 0.70 -> limit 0.5: 2:1 is never odd


def test_fixed_rules_ignore_the_data():
    assert adaptive_threshold(RULES["grayscale"], np.zeros(10)) == 0.01
    assert adaptive_threshold(RULES["exact_duplicate"], np.ones(10)) == 1.5
    counts = np.array([1, 1, 2, 2, 1, 3, 3, 3])
    s = issue_score(RULES["exact_duplicate"], counts, 1.5)
    assert ((s >= 0.5) == (counts >= 2)).all()


def test_scores_flags_and_every_issue_covered():
    values = {m: np.linspace(0.1, 1.0, 20) for m in {r.metric for r in RULES.values()}}
    thresholds = adaptive_thresholds(values)
    assert set(thresholds) == set(IMAGE_ISSUES) | set(BOX_ISSUES)
    scores = issue_scores(values, thresholds)
    flagged = flags(scores, thresholds)
    for issue, f in flagged.items():
        assert f.dtype == bool and ((scores[issue] >= 0.5) == f).all()
    nan = adaptive_threshold(RULES["blurry"], np.full(3, np.nan))
    assert np.isnan(nan) and not flags({"blurry": np.ones(3)}, {"blurry": nan})["blurry"].any()
    assert (issue_score(RULES["blurry"], [np.nan, 0.0], 0.1) == [0.0, 1.0]).all()  # NaN never flagged


# -- decoding files --------------------------------------------------------------------------------------------------
def test_decode_sixteen_bit_cmyk_exif_and_unreadable_files(tmp_path):
    dark16 = (np.full((10, 20), 6553, np.uint16))
    Image.fromarray(dark16).save(tmp_path / "dark16.png")
    d = decode_for_quality(str(tmp_path / "dark16.png"))
    assert d.size == (20, 10) and image_metrics(d.pixels)["brightness"] == pytest.approx(0.1, abs=0.01)

    Image.new("CMYK", (12, 8), (0, 0, 0, 255)).save(tmp_path / "black.jpg")  # full black ink
    metrics, digest, _, error = measure_file(str(tmp_path / "black.jpg"))
    assert error is None and metrics["brightness"] < 0.1 and digest

    rgb = np.zeros((10, 30, 3), np.uint8)
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: shown as 10 wide, 30 high
    img.save(tmp_path / "rotated.jpg", exif=exif)
    metrics, _, _, _ = measure_file(str(tmp_path / "rotated.jpg"))
    assert (metrics["width"], metrics["height"]) == (10.0, 30.0)

    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    metrics, digest, boxes, error = measure_file(str(tmp_path / "broken.jpg"), [[0, 0, 1, 1]])
    assert metrics is None and digest is None and boxes is None and error.startswith("UnidentifiedImageError")
    assert measure_file(str(tmp_path / "missing.png"))[3].startswith("FileNotFoundError")


def test_exact_file_copies_share_a_hash_and_a_resave_with_other_pixels_does_not(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr).save(tmp_path / "a_copy.bmp")  # same pixels, other format
    arr[0, 0, 0] ^= 1
    Image.fromarray(arr).save(tmp_path / "b.png")
    hashes = [measure_file(str(tmp_path / n))[1] for n in ("a.png", "a_copy.bmp", "b.png")]
    assert hashes[0] == hashes[1] != hashes[2]
