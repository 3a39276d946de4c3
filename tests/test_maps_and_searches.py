"""The 2-D map (FiftyOne's Embeddings panel) and saved searches, on the example dataset in real FiftyOne.

Quality is measured with pixel features (random-weight CLIP maps every image to nearly the same
direction): near-duplicate groups of the example are near-identical in pixels.
"""

import numpy as np
import pytest

from curate_loop.embeddings.tiles import tile_sample
from curate_loop.errors import InvalidInputError
from curate_loop.runs import embeddings as runs
from curate_loop.runs.maps import compute_map, load_map
from curate_loop.runs.searches import apply_search, delete_search, list_searches, save_search


def pixel_features(images):
    """A small, honest image descriptor: 16x16 grey thumbnails."""
    return np.stack([np.asarray(img.convert("L").resize((16, 16)), dtype=np.float32).ravel() - 127 for img in images])


@pytest.fixture(scope="module")
def pixels(example_dataset):
    runs.import_embeddings(example_dataset, "pixels", pixel_features, batch_size=32)
    return example_dataset


def test_tile_sampling_keeps_a_rare_island_that_random_thinning_drops():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 1, (200_000, 2)), rng.normal(9, 0.05, (40, 2))])
    keep = tile_sample(points, 10_000)
    assert len(keep) == 10_000
    assert len(np.unique(keep)) == 10_000
    island = (keep >= 200_000).sum()
    assert island >= 30  # random thinning keeps 40 * 10k / 200k = 2 in expectation
    assert tile_sample(points[:50], 100).tolist() == list(range(50))
    with pytest.raises(InvalidInputError, match=r"shape \(n, 2\)"):
        tile_sample(np.zeros((5, 3)), 2)


def test_map_registers_a_visualization_run_the_app_can_load(pixels):
    key = compute_map(pixels, "pixels", max_points=60)
    assert key == "pixels_map"
    info = pixels.get_brain_info(key)
    assert info.config.type == "visualization"
    results = pixels.load_brain_results(key)
    assert results.points.shape == (60, 2)
    ids, points = load_map(pixels, "pixels")
    assert len(ids) == len(pixels) and points.shape == (len(pixels), 2)
    # near-duplicates sit together on the map: closer than two random samples
    groups = np.asarray(pixels.values("near_dup_group"), dtype=object)
    members = np.flatnonzero(groups == groups[groups != None][0])  # noqa: E711
    spread = np.linalg.norm(points[members] - points[members].mean(axis=0), axis=1).mean()
    typical = np.linalg.norm(points - points.mean(axis=0), axis=1).mean()
    assert spread < 0.25 * typical


def test_saved_search_scores_samples_added_later(pixels):
    import fiftyone as fo

    group = pixels.match(fo.ViewField("near_dup_group") == pixels.distinct("near_dup_group")[0])
    example, *others = group.values("id")
    save_search(pixels, "like_group", "pixels", example_ids=[example])
    assert "like_group" in list_searches(pixels)
    field = apply_search(pixels, "like_group")
    ranked = pixels.sort_by(field, reverse=True).values("id")
    assert set(ranked[: len(others) + 1]) == {example, *others}

    # a later sample: a copy of the example, embedded incrementally, then scored by the same search
    copy = fo.Sample(filepath=pixels[example].filepath, split="pool")
    pixels.add_sample(copy)
    runs.import_embeddings(pixels, "pixels", pixel_features)
    apply_search(pixels.select(copy.id), "like_group")
    assert pixels[copy.id][field] == pytest.approx(1.0, abs=1e-5)
    pixels.delete_samples(copy.id)

    with pytest.raises(InvalidInputError, match="text search needs open_clip embeddings"):
        save_search(pixels, "texty", "pixels", text="a seven")
    with pytest.raises(InvalidInputError, match="No saved search 'nope'"):
        apply_search(pixels, "nope")
    delete_search(pixels, "like_group")
    assert "like_group" not in list_searches(pixels)


def test_text_search_with_a_clip_model_scores_every_sample(example_dataset):
    """The query is open_clip's own text embedding (tokenizer + encode_text, computed here with the same seeded random
    weights), and each score is the cosine of the sample's stored vector to it."""
    import open_clip
    import torch

    few = example_dataset.limit(8)
    runs.compute_embeddings(few, "clip_text", "ViT-B-32", batch_size=8)
    prompt = "a photo of the digit seven"
    query = save_search(example_dataset, "sevens", "clip_text", text=prompt)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # curate-loop's documented seed for random weights
        model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    with torch.inference_mode():
        expected = model.encode_text(open_clip.get_tokenizer("ViT-B-32")([prompt]))[0].numpy()
    np.testing.assert_allclose(query, expected / np.linalg.norm(expected), atol=1e-5)

    field = apply_search(few, "sevens")
    ids, vectors = runs.load_embeddings(few, "clip_text")
    by_id = dict(zip(*few.values(["id", field])))
    np.testing.assert_allclose([by_id[i] for i in ids], vectors @ expected / np.linalg.norm(expected), atol=1e-5)
    assert example_dataset.exists(field).count() == 8
