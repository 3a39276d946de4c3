"""Data-quality metrics measured inside the embedding pass (one decode per image), in real FiftyOne.

The same images measured by the embedding pass and by the quality check on its own must give the same metrics and
hashes; the vectors must not change because quality was measured; unreadable and 16-bit files behave as in either
pass alone.
"""

import numpy as np
import pytest
from PIL import Image

from conftest import fresh_clone
from curate_loop.errors import InvalidInputError
from curate_loop.quality.image_metrics import METRICS
from curate_loop.runs.embeddings import compute_embeddings, load_embeddings
from curate_loop.runs.quality import HASH_FIELD, compute_quality, field_name, quality_run

MODEL = "classical"  # offline and fast; the decode path is the same one open_clip models use


@pytest.fixture(scope="module")
def planted(example_dataset, tmp_path_factory):
    """Two clones of 24 example samples plus a 16-bit PNG and an unreadable file: one for each pass."""
    import fiftyone as fo

    folder = tmp_path_factory.mktemp("embed-quality-media")
    source = np.asarray(Image.open(example_dataset.first().filepath).convert("L"), dtype=np.uint32)
    sixteen, broken = folder / "sixteen.png", folder / "broken.png"
    Image.fromarray((source * 40).astype(np.uint16)).save(sixteen)  # dark in 16-bit terms: max ~10200 of 65535
    broken.write_bytes(b"\x89PNG truncated")
    clones = []
    for name in ("embed-quality-a", "embed-quality-b"):
        dataset = fresh_clone(example_dataset.limit(24), name)
        dataset.add_samples([fo.Sample(filepath=str(sixteen), tags=["sixteen"]),
                             fo.Sample(filepath=str(broken), tags=["broken"])])
        clones.append(dataset)
    yield clones
    for dataset in clones:
        dataset.delete()


def test_embedding_pass_measures_what_the_quality_check_measures(planted):
    in_pass, alone = planted
    summary = compute_embeddings(in_pass, "hog", MODEL, quality=True)
    compute_embeddings(alone, "hog", MODEL)
    checked = compute_quality(alone, label_field=None)

    assert summary.computed == 25 and list(summary.failed) == [in_pass.match_tags("broken").first().id]
    assert checked.measured == 25 and len(checked.failed) == 1
    for metric in METRICS:
        a = np.asarray(in_pass.values(field_name(metric)), dtype=float)
        b = np.asarray(alone.values(field_name(metric)), dtype=float)
        assert np.allclose(a, b, equal_nan=True), metric
        assert np.isnan(a[-1]) and np.isfinite(a[:-1]).all(), metric  # the unreadable file has none
    assert in_pass.values(HASH_FIELD) == alone.values(HASH_FIELD)
    # the quality run exists: thresholds were set and flags written, as the standalone check does
    assert set(quality_run(in_pass)["thresholds"]) == set(quality_run(alone)["thresholds"])
    # the 16-bit file keeps its stored range for the metrics (dark), while the model saw it stretched
    dark = in_pass.match_tags("sixteen").first()[field_name("brightness")]
    assert dark < 0.2


@pytest.mark.parametrize("model", [MODEL, "ViT-B-32"])  # open_clip's preprocessing decodes to uint8 (random weights)
def test_vectors_do_not_depend_on_measuring_quality(planted, model):
    in_pass, alone = planted
    key = "clip_q" if model != MODEL else "hog"  # the first test embedded "hog" on both clones
    if model != MODEL:
        compute_embeddings(in_pass.limit(8), key, model, quality=True, batch_size=8)
        compute_embeddings(alone.limit(8), key, model, batch_size=8)
    ids, measured = load_embeddings(in_pass, key)
    _, plain = load_embeddings(alone, key)
    assert len(ids) == (25 if model == MODEL else 8)
    assert np.abs(measured - plain).max() < 1e-5


def test_a_later_quality_check_does_not_decode_again(planted):
    in_pass, _ = planted
    again = compute_quality(in_pass, label_field=None)
    assert again.measured == 0 and again.skipped == 25


def test_quality_with_objects_is_refused_before_anything_is_written(planted):
    in_pass, _ = planted
    with pytest.raises(InvalidInputError, match="measures images"):
        compute_embeddings(in_pass, "boxes_q", MODEL, patches_field="ground_truth", quality=True)
    assert "boxes_q" not in in_pass.list_runs()
