"""Data-quality runs on the example dataset in real FiftyOne (its MongoDB), with planted problem files.

A clone of the example gets extra samples: a darkened copy of a canvas, an exact file copy, a 16-bit grayscale PNG,
a CMYK JPEG, an unreadable file, and a zero-area box; the checks must flag or report each and proceed.
"""

import shutil

import numpy as np
import pytest
from PIL import Image

from curate_loop.errors import InvalidInputError
from curate_loop.quality import BOX_ISSUES, IMAGE_ISSUES
from curate_loop.runs.pool import QUALITY_EXCLUDE_FIELD, pool_state
from conftest import fresh_clone
from curate_loop.runs.quality import (HASH_FIELD, ISSUES_FIELD, apply_policy, compute_quality, exclude_from_curation,
                                      flagged_view, metric_values, quality_run, quality_thresholds, set_threshold)

PLANTED = {}  # role -> sample id


@pytest.fixture(scope="module")
def planted(example_dataset, tmp_path_factory):
    import fiftyone as fo

    name = "quality-tests"
    dataset = fresh_clone(example_dataset, name)
    folder = tmp_path_factory.mktemp("quality-media")
    first = dataset.first()
    source = np.asarray(Image.open(first.filepath).convert("RGB"))
    files = {"dark": folder / "dark.png", "copy": folder / "copy.png", "sixteen": folder / "sixteen.png",
             "cmyk": folder / "cmyk.jpg", "broken": folder / "broken.png"}
    Image.fromarray((source * 0.08).astype(np.uint8)).save(files["dark"])
    shutil.copy(first.filepath, files["copy"])
    gray16 = (np.asarray(Image.fromarray(source).convert("L"), dtype=np.uint32) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(files["sixteen"])
    Image.fromarray(source).convert("CMYK").save(files["cmyk"])
    files["broken"].write_bytes(b"\x89PNG truncated")
    samples = {role: fo.Sample(filepath=str(path), tags=["quality-planted"]) for role, path in files.items()}
    dataset.add_samples(list(samples.values()))
    PLANTED.update({role: s.id for role, s in samples.items()})
    PLANTED["original"] = first.id
    labeled = dataset.exists("ground_truth").first()
    detections = labeled.ground_truth.detections
    detections[0].bounding_box = [0.2, 0.2, 0.0, 0.1]  # zero width
    labeled.save()
    PLANTED["zero_box"] = detections[0].id
    yield dataset
    dataset.delete()


def test_compute_flags_planted_images_and_reports_bad_items(planted):
    summary = compute_quality(planted, label_field="ground_truth", num_workers=2)
    n = len(planted)
    assert summary.measured == n - 1 and summary.skipped == 0
    assert list(summary.failed) == [PLANTED["broken"]] and "Error" in summary.failed[PLANTED["broken"]]
    assert PLANTED["zero_box"] in summary.box_failures
    issues = dict(zip(planted.values("id"), planted.values(ISSUES_FIELD)))
    assert "dark" in issues[PLANTED["dark"]]
    assert "exact_duplicate" in issues[PLANTED["copy"]] and "exact_duplicate" in issues[PLANTED["original"]]
    assert "grayscale" in issues[PLANTED["sixteen"]]
    assert issues[PLANTED["broken"]] is None  # unmeasured, not "clean"
    ordinary = [i for i, row in issues.items() if i not in PLANTED.values()]
    assert np.mean([bool(issues[i]) for i in ordinary]) < 0.2  # the example's canvases are mostly clean
    sixteen = planted[PLANTED["sixteen"]]
    original = planted[PLANTED["original"]]
    assert sixteen.quality_brightness == pytest.approx(original.quality_brightness, abs=0.01)  # 16-bit: full range
    assert planted[PLANTED["cmyk"]].quality_brightness == pytest.approx(original.quality_brightness, abs=0.03)
    assert planted[PLANTED["copy"]][HASH_FIELD] == original[HASH_FIELD]
    for issue in IMAGE_ISSUES:
        assert 0 <= summary.flagged[issue] <= n
    for issue in BOX_ISSUES:
        assert issue in summary.thresholds

    rows = planted.values(["ground_truth.detections.id", "ground_truth.detections.quality_box_area",
                           "ground_truth.detections.quality_issues"])
    label_ids, areas, box_issues = ([v for row in column for v in (row or [])] for column in rows)
    at = label_ids.index(PLANTED["zero_box"])
    assert areas[at] == 0.0 and "tiny_box" in box_issues[at] and "odd_box_shape" in box_issues[at]
    assert sum(a is not None for a in areas) == len(label_ids)  # every box measured


def test_record_thresholds_views_and_histogram_values(planted):
    run = quality_run(planted)
    assert run["n_failures"] == 1 and run["label_field"] == "ground_truth"
    thresholds = quality_thresholds(planted)
    assert thresholds["dark"]["metric"] == "highlights" and thresholds["dark"]["direction"] == "low"
    assert thresholds["exact_duplicate"]["threshold"] == 1.5 and thresholds["exact_duplicate"]["fixed"]
    dark = flagged_view(planted, "dark")
    assert PLANTED["dark"] in dark.values("id")
    scores = dark.values("quality_dark")
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.5
    assert set(flagged_view(planted, "exact_duplicate").values("id")) >= {PLANTED["copy"], PLANTED["original"]}
    tiny = flagged_view(planted, "tiny_box")  # one patch per flagged box, worst first
    assert tiny._is_patches and PLANTED["zero_box"] in tiny.values("ground_truth.id")
    tiny_scores = tiny.values("ground_truth.quality_tiny_box")
    assert tiny_scores == sorted(tiny_scores, reverse=True) and min(tiny_scores) >= 0.5
    highlights = metric_values(planted, "highlights")
    assert len(highlights) == len(planted) and np.isnan(highlights).sum() == 1  # the broken file
    box_area = metric_values(planted, "box_area")
    assert len(box_area) == len(planted.values("ground_truth.detections.id", unwind=True))
    with pytest.raises(InvalidInputError, match="Unknown quality metric"):
        metric_values(planted, "loudness")


def test_rerun_is_resumable_and_new_samples_are_measured(planted):
    import fiftyone as fo

    again = compute_quality(planted, label_field="ground_truth")
    assert again.measured == 0 and again.skipped == len(planted) - 1  # only the broken file is tried again
    assert list(again.failed) == [PLANTED["broken"]]
    extra = fo.Sample(filepath=planted[PLANTED["original"]].filepath)
    planted.add_sample(extra)
    more = compute_quality(planted, label_field="ground_truth")
    assert more.measured == 1
    assert "exact_duplicate" in planted[extra.id][ISSUES_FIELD]
    planted.delete_samples(extra.id)


def test_user_threshold_reflags_persists_and_resets(planted):
    adaptive = quality_thresholds(planted)["dark"]["adaptive"]
    everything = set_threshold(planted, "dark", 1.01)  # every image's highlights are below: all flagged
    assert everything == len(planted) - 1
    assert quality_thresholds(planted)["dark"]["user"]
    compute_quality(planted, label_field="ground_truth")
    assert quality_thresholds(planted)["dark"]["threshold"] == 1.01  # kept by a later run
    back = set_threshold(planted, "dark", None)
    assert quality_thresholds(planted)["dark"]["threshold"] == pytest.approx(adaptive)
    assert 1 <= back < everything
    with pytest.raises(InvalidInputError, match="Unknown quality issue"):
        set_threshold(planted, "fuzzy", 0.3)


def test_policy_excludes_flagged_samples_from_the_pool_and_hand_choices_win(planted):
    excluded = apply_policy(planted, {"dark": "exclude", "exact_duplicate": "exclude", "grayscale": "keep"})
    values = dict(zip(planted.values("id"), planted.values(QUALITY_EXCLUDE_FIELD)))
    assert values[PLANTED["dark"]] and not values[PLANTED["sixteen"]]
    assert values[PLANTED["copy"]] != values[PLANTED["original"]]  # one copy of each group stays
    assert excluded == sum(bool(v) for v in values.values())
    ids = np.asarray(planted.values("id"))
    state = pool_state(planted, ids, "ground_truth")
    assert state.excluded[list(ids).index(PLANTED["dark"])]
    exclude_from_curation(planted.select(PLANTED["dark"]), exclude=False)  # the panel lets it back in
    apply_policy(planted, {"dark": "exclude"})
    assert planted[PLANTED["dark"]][QUALITY_EXCLUDE_FIELD] is False
    with pytest.raises(InvalidInputError, match="choose one of"):
        apply_policy(planted, {"dark": "delete"})


def test_non_detections_label_field_is_a_clear_error(planted):
    with pytest.raises(InvalidInputError, match="not a Detections field"):
        compute_quality(planted, label_field="filepath")


# -- the CLI ---------------------------------------------------------------------------------------------------------
def _cli(*args):
    from click.testing import CliRunner

    from curate_loop.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_compute_list_threshold_views_and_manifest_policy(planted, tmp_path):
    from curate_loop.runs.pool import QUALITY_EXCLUDE_FIELD
    from curate_loop.runs.quality import MANUAL_EXCLUDE_FIELD

    if planted.has_field(MANUAL_EXCLUDE_FIELD):  # no choices by hand: the manifest's policy decides
        planted.set_values(MANUAL_EXCLUDE_FIELD, [None] * len(planted))
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(f"dataset: {planted.name}\nlabel_field: ground_truth\nclasses: ['0', '1']\n"
                        "quality:\n  enabled: true\n  issues: {dark: exclude, exact_duplicate: keep}\n")
    result = _cli("quality", "compute", planted.name, "--manifest", str(manifest), "--recompute", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert f"{len(planted) - 1} measured" in result.output and "1 unreadable" in result.output
    assert f"unreadable {PLANTED['broken']}" in result.output and "zero-area box" in result.output
    assert "samples kept out of curation batches" in result.output
    excluded = set(planted.match({QUALITY_EXCLUDE_FIELD: True}).values("id"))
    assert PLANTED["dark"] in excluded and PLANTED["copy"] not in excluded  # keep: the manifest said so

    listing = _cli("quality", "list", planted.name)
    assert listing.exit_code == 0 and "highlights" in listing.output and "(fixed)" in listing.output
    dark_row = next(line for line in listing.output.splitlines() if line.startswith("dark "))
    assert int(dark_row.split()[5]) >= 1

    set_it = _cli("quality", "threshold", planted.name, "blurry", "1e-9")
    assert set_it.exit_code == 0 and "blurry: 0 flagged" in set_it.output
    assert "(yours)" in _cli("quality", "list", planted.name).output
    assert _cli("quality", "threshold", planted.name, "blurry", "--reset").exit_code == 0
    both = _cli("quality", "threshold", planted.name, "blurry")
    assert both.exit_code != 0 and "VALUE or --reset" in both.output

    views = _cli("quality", "views", planted.name)
    assert views.exit_code == 0 and "quality_dark" in views.output and "quality_tiny_box" in views.output


def test_cli_errors_are_one_line(planted):
    bad = _cli("quality", "threshold", planted.name, "fuzzy", "0.3")
    assert bad.exit_code == 1 and bad.output.startswith("InvalidInputError: Unknown quality issue 'fuzzy'")
    assert "Traceback" not in bad.output


def test_metrics_from_another_decode_pass_are_stored_and_not_measured_again(planted):
    """What the embedding pass would hand over: PIL images it decoded, measured with pil_image_metrics."""
    import fiftyone as fo
    from curate_loop.embeddings.images import open_rgb
    from curate_loop.quality import content_hash, pil_image_metrics
    from curate_loop.runs.quality import record_image_metrics

    original = planted[PLANTED["original"]]
    new = [fo.Sample(filepath=original.filepath), fo.Sample(filepath=planted[PLANTED["dark"]].filepath)]
    planted.add_samples(new)
    images = [open_rgb(s.filepath) for s in new]
    metrics = pil_image_metrics(images)
    hashes = [content_hash(np.asarray(img)) for img in images]
    summary = record_image_metrics(planted, [s.id for s in new], metrics, hashes)
    assert summary.measured == 2
    assert planted[new[0].id].quality_brightness == pytest.approx(original.quality_brightness, abs=1e-6)
    assert "dark" in planted[new[1].id][ISSUES_FIELD]
    after = compute_quality(planted, label_field="ground_truth")
    assert after.measured == 0  # nothing left to decode (the broken file still fails)
    planted.delete_samples([s.id for s in new])
    with pytest.raises(InvalidInputError, match="needs every metric"):
        record_image_metrics(planted, ["x"], {"brightness": np.ones(1)}, ["h"])
