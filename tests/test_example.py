"""The bundled example: deterministic, realistic for curation, truth kept aside."""

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from curate_loop.examples.digits_canvas import CLASS_NAMES, ExampleSpec, generate_canvases
from curate_loop.errors import InvalidInputError

from conftest import SMALL_SPEC


def test_same_seed_same_pixels_other_seed_other_pixels():
    a, b = generate_canvases(SMALL_SPEC), generate_canvases(SMALL_SPEC)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert [[o.label for o in x.objects] for x in a] == [[o.label for o in x.objects] for x in b]
    other = generate_canvases(ExampleSpec(**{**SMALL_SPEC.__dict__, "seed": SMALL_SPEC.seed + 1}))
    assert not np.array_equal(a[0].image, other[0].image)


def test_default_example_is_shaped_for_curation():
    canvases = generate_canvases(ExampleSpec())
    assert len(canvases) == 600
    counts = Counter(o.label for c in canvases for o in c.objects)
    total = sum(counts.values())
    assert set(counts) == set(CLASS_NAMES)
    assert counts["0"] / total > 0.15  # common
    assert counts["9"] / total < 0.03 and counts["8"] / total < 0.04  # rare
    kinds = Counter(c.kind for c in canvases)
    assert kinds == {"regular": 556, "near_duplicate": 36, "outlier": 8}
    groups = Counter(c.near_dup_group for c in canvases if c.kind == "near_duplicate")
    assert sorted(groups.values()) == [6] * 6
    boxes = np.array([o.box for c in canvases for o in c.objects])
    assert (boxes[:, :2] >= -0.01).all() and (boxes[:, :2] + boxes[:, 2:] <= 1.01).all()
    assert (boxes[:, 2:] > 0).all()


def test_near_duplicates_are_near_and_outliers_are_far():
    canvases = generate_canvases(SMALL_SPEC)
    group0 = [c.image.astype(float) for c in canvases if c.near_dup_group == 0]
    regular = [c.image.astype(float) for c in canvases if c.kind == "regular" and c.image.shape == group0[0].shape]
    within = np.mean(np.abs(group0[0] - group0[1]))
    across = np.mean(np.abs(group0[0] - regular[0]))
    assert within < across / 3


def test_planted_label_noise_is_a_share_of_wrong_classes_and_leaves_pixels_alone():
    from curate_loop.examples.digits_canvas import plant_label_noise

    canvases = generate_canvases(SMALL_SPEC)
    n_objects = sum(len(c.objects) for c in canvases if c.split == "labeled")
    noise = plant_label_noise(canvases, 0.2, seed=3)
    assert sum(len(v) for v in noise.values()) == round(0.2 * n_objects)
    assert all(canvases[c].split == "labeled" and canvases[c].objects[o].label != wrong
               for c, objects in noise.items() for o, wrong in objects.items())
    assert plant_label_noise(canvases, 0.2, seed=3) == noise and plant_label_noise(canvases, 0.0, seed=3) == {}
    quiet = generate_canvases(ExampleSpec(**{**SMALL_SPEC.__dict__, "label_noise": 0.0}))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(canvases, quiet))
    with pytest.raises(ValueError, match="label_noise"):
        ExampleSpec(label_noise=1.0)


def test_spec_rejects_a_pool_too_small_with_the_numbers():
    with pytest.raises(ValueError, match=r"n_pool=10.*raise n_pool to at least 44"):
        ExampleSpec(n_pool=10)


def test_dataset_in_fiftyone_keeps_truth_aside(example_dataset):
    ds = example_dataset
    assert len(ds) == SMALL_SPEC.n_labeled + SMALL_SPEC.n_pool
    assert ds.count_values("split") == {"labeled": 30, "pool": 60}
    assert ds.match_tags("labeled").count() == 30
    labeled = ds.match_tags("labeled")
    assert labeled.exists("ground_truth").count() == 30
    assert ds.match_tags("pool").exists("ground_truth").count() == 0
    assert ds.exists("true_ground_truth").count() == len(ds)
    # editable labels start equal to the truth, with their own ids, except the planted wrong classes
    ids = labeled.values("ground_truth.detections.id", unwind=True)
    given = labeled.values("ground_truth.detections.label", unwind=True)
    true = labeled.values("true_ground_truth.detections.label", unwind=True)
    planted = set(labeled.values("planted_noise", unwind=True))
    assert {i for i, g, t in zip(ids, given, true) if g != t} == planted
    assert len(planted) == round(SMALL_SPEC.label_noise * len(ids)) > 0
    assert ds.match_tags("pool").values("planted_noise") == [None] * 60
    gt_ids = set(labeled.values("ground_truth.detections.id", unwind=True))
    truth_ids = set(labeled.values("true_ground_truth.detections.id", unwind=True))
    assert not gt_ids & truth_ids
    assert ds.count_values("example_kind") == {"regular": 74, "near_duplicate": 12, "outlier": 4}
    assert "example truth (kept aside)" in [g.name for g in ds.app_config.sidebar_groups]
    # and not drawn in the App's grid or modal by default: an exclusion list of the kept-aside fields
    active = ds.app_config.active_fields
    assert active.exclude is True and {"true_ground_truth", "planted_noise"} <= set(active.paths)
    # the metadata written without reading the files back is each file's real size
    filepaths, widths, heights = ds.values(["filepath", "metadata.width", "metadata.height"])
    assert [_image_size(f) for f in filepaths] == list(zip(widths, heights))


def _image_size(path):
    with Image.open(path) as image:
        return image.size


def test_rebuilding_without_overwrite_refuses_and_keeps_data(example_dataset, media_root):
    from curate_loop.examples.build import build_example_dataset

    before = len(example_dataset)
    with pytest.raises(InvalidInputError, match="already exists. Pass overwrite=True"):
        build_example_dataset(media_root / "example", name=example_dataset.name, spec=SMALL_SPEC)
    assert len(example_dataset) == before
