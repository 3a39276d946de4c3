"""Embedding runs on the example dataset in real FiftyOne (MongoDB): images, objects, several models,
bring-your-own vectors, resume, incremental add, bad files and bad boxes."""

import numpy as np
import pytest
from PIL import Image

from curate_loop.errors import InvalidInputError
from curate_loop.runs import embeddings as runs


@pytest.fixture(scope="module")
def dataset(example_dataset):
    return example_dataset


def test_image_embeddings_have_one_unit_vector_per_sample(dataset):
    summary = runs.compute_embeddings(dataset, "clip", "ViT-B-32", batch_size=16)
    assert (summary.computed, summary.skipped, summary.failed) == (len(dataset), 0, {})
    ids, vectors = runs.load_embeddings(dataset, "clip")
    assert ids.tolist() == dataset.values("id")
    assert vectors.shape == (len(dataset), 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    [row] = [r for r in runs.list_embeddings(dataset) if r["key"] == "clip"]
    assert (row["status"], row["vectors"], row["dim"], row["level"]) == ("complete", len(dataset), 512, "image")
    assert row["models"] == [{"name": "ViT-B-32", "pretrained": None}]
    # a view gets its own samples, in its order
    view = dataset.match_tags("pool").sort_by("filepath", reverse=True)
    view_ids, view_vectors = runs.load_embeddings(view, "clip")
    assert view_ids.tolist() == view.values("id")
    assert np.array_equal(view_vectors, vectors[[ids.tolist().index(i) for i in view_ids]])


def test_incremental_add_embeds_only_new_samples(dataset):
    first, grown = dataset.limit(20), dataset.limit(36)
    assert runs.compute_embeddings(first, "incremental", batch_size=16).computed == 20
    _, before = runs.load_embeddings(first, "incremental")
    summary = runs.compute_embeddings(grown, "incremental", batch_size=16)
    assert (summary.computed, summary.skipped) == (16, 20)
    ids, vectors = runs.load_embeddings(dataset, "incremental")  # the samples not embedded yet are left out
    assert ids.tolist() == grown.values("id")
    assert np.array_equal(vectors[:20], before)


def test_interrupted_run_is_incomplete_then_resumes_without_recomputing(dataset):
    part = dataset.limit(40)

    def crash_after_20(fraction, label):
        if fraction * len(part) >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.compute_embeddings(part, "resumed", batch_size=8, flush_every=8, num_workers=0, progress=crash_after_20)
    with pytest.raises(InvalidInputError, match="did not finish .* resume"):
        runs.load_embeddings(part, "resumed")
    stored, _ = runs.load_embeddings(part, "resumed", allow_incomplete=True)
    assert len(stored) in (16, 24)  # whole flushed chunks only
    summary = runs.compute_embeddings(part, "resumed", batch_size=8)
    assert (summary.computed, summary.skipped) == (40 - len(stored), len(stored))
    assert len(runs.load_embeddings(part, "resumed")[0]) == 40


def test_missing_and_corrupt_files_are_reported_not_fatal(dataset, tmp_path):
    import fiftyone as fo

    bad = fo.Dataset()
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 truncated")
    good_paths = dataset.limit(6).values("filepath")
    bad.add_samples([fo.Sample(filepath=p) for p in good_paths + [str(corrupt), str(tmp_path / "gone.jpg")]])
    summary = runs.compute_embeddings(bad, "clip", batch_size=4)
    assert summary.computed == 6
    bad_ids = bad.skip(6).values("id")
    assert set(summary.failed) == set(bad_ids)
    assert "No such file" in summary.failed[bad_ids[1]]
    [row] = runs.list_embeddings(bad)
    assert (row["status"], row["vectors"], row["failures"]) == ("complete", 6, 2)
    assert len(runs.load_embeddings(bad, "clip")[0]) == 6


def test_object_embeddings_one_per_box_with_bad_boxes_reported(dataset):
    import fiftyone as fo

    objects = dataset.clone()
    sample = objects.first()
    sample["ground_truth"] = fo.Detections(detections=[
        fo.Detection(label="tiny", bounding_box=[0.5, 0.5, 0.001, 0.001]),
        fo.Detection(label="outside", bounding_box=[1.5, 0.2, 0.1, 0.1]),
        fo.Detection(label="flat", bounding_box=[0.2, 0.2, 0.0, 0.3]),
    ])
    sample.save()
    summary = runs.compute_embeddings(objects, "boxes", patches_field="ground_truth", margin=0.2, batch_size=8)
    label_ids = objects.values("ground_truth.detections.id", unwind=True)
    tiny, outside, flat = sample.ground_truth.detections
    assert set(summary.failed) == {outside.id, flat.id}
    assert "no area inside the image" in summary.failed[outside.id]
    ids, vectors = runs.load_embeddings(objects, "boxes")
    assert ids.tolist() == [i for i in label_ids if i not in summary.failed]
    assert tiny.id in ids
    assert vectors.shape == (len(label_ids) - 2, 512)
    with pytest.raises(InvalidInputError, match="not a Detections field"):
        runs.compute_embeddings(objects, "nope", patches_field="split")
    with pytest.raises(InvalidInputError, match="made with margin=0.2, not 0.1"):
        runs.compute_embeddings(objects, "boxes", patches_field="ground_truth", margin=0.1)
    objects.delete()


def test_several_models_are_concatenated_with_equal_weight(dataset):
    few = dataset.limit(6)
    runs.compute_embeddings(few, "vit", "ViT-B-32", batch_size=6)
    runs.compute_embeddings(few, "rn", "RN50", batch_size=6)
    runs.compute_embeddings(few, "both", ["ViT-B-32", "RN50"], batch_size=6)
    _, vit = runs.load_embeddings(few, "vit")
    _, rn = runs.load_embeddings(few, "rn")
    _, both = runs.load_embeddings(few, "both")
    assert both.shape == (6, 512 + 1024)
    assert np.allclose(np.linalg.norm(both, axis=1), 1, atol=1e-5)
    assert np.allclose(both[:, :512] * np.sqrt(2), vit, atol=1e-5)
    assert np.allclose(both[:, 512:] * np.sqrt(2), rn, atol=1e-4)


def test_bring_your_own_array_npy_field_and_callable(dataset, tmp_path):
    few = dataset.limit(8)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(8, 16)).astype(np.float32)
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    runs.import_embeddings(few, "mine_array", vectors)
    np.save(tmp_path / "v.npy", vectors)
    runs.import_embeddings(few, "mine_npy", str(tmp_path / "v.npy"))
    few.set_values("my_vector", list(vectors))
    runs.import_embeddings(few, "mine_field", "my_vector")
    for key in ("mine_array", "mine_npy", "mine_field"):
        ids, got = runs.load_embeddings(few, key)
        assert ids.tolist() == few.values("id")
        assert np.allclose(got, expected, atol=1e-6), key

    def mean_colour(images):
        return np.stack([np.asarray(img, dtype=np.float32).mean(axis=(0, 1)) + 1 for img in images])

    summary = runs.import_embeddings(few, "mine_callable", mean_colour, batch_size=3)
    assert summary.computed == 8
    ids, got = runs.load_embeddings(few, "mine_callable")
    first = mean_colour([Image.open(few.first().filepath).convert("RGB")])[0]
    assert np.allclose(got[0], first / np.linalg.norm(first), atol=1e-5)

    with pytest.raises(InvalidInputError, match=r"shape \(7, 16\); expected \(8, dim\)"):
        runs.import_embeddings(few, "bad", vectors[:7])
    nan = vectors.copy()
    nan[3, 0] = np.nan
    with pytest.raises(InvalidInputError, match=r"1 vector\(s\) with NaN .*rows \[3\]"):
        runs.import_embeddings(few, "bad", nan)
    with pytest.raises(InvalidInputError, match="shape \\(8, 3\\); expected \\(8, dim\\)|expected"):
        runs.import_embeddings(few, "bad_callable", lambda images: np.ones((1, 3)))


def test_delete_removes_the_run_and_its_vectors(dataset):
    runs.import_embeddings(dataset.limit(3), "doomed", np.eye(3, dtype=np.float32))
    folder = runs.run_dir(dataset, "doomed")
    assert folder.exists()
    runs.delete_embeddings(dataset, "doomed")
    assert not folder.exists()
    assert "doomed" not in dataset.list_runs()
    with pytest.raises(InvalidInputError, match="No embeddings 'doomed'.*Existing: \\["):
        runs.load_embeddings(dataset, "doomed")
    with pytest.raises(InvalidInputError, match="Invalid embeddings key"):
        runs.compute_embeddings(dataset, "has space")


def test_a_clone_never_writes_to_or_deletes_its_sources_vectors(dataset):
    """A clone copies the run record, with the source's store in it: the clone gets a place of its own."""
    source = dataset.limit(6).clone()
    try:
        runs.import_embeddings(source, "mine", np.eye(6, dtype=np.float32))
        copy = source.clone()
        assert str(runs.run_dir(copy, "mine")) != str(runs.run_dir(source, "mine"))
        runs.delete_embeddings(copy, "mine")
        ids, vectors = runs.load_embeddings(source, "mine")  # the source's vectors are all still there
        assert len(ids) == 6 and np.allclose(np.abs(vectors).sum(axis=1), 1)
        copy.delete()
    finally:
        source.delete()
