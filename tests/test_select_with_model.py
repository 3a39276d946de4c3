"""Batches picked with a model's predictions, in real FiftyOne: uncertainty and class balance in the batch, the
pure-diversity fallback said in the batch's run, the predicted-class histogram, a predictions field of the wrong
kind refused with nothing written, and the same through the CLI and the App's operator.

Predictions are planted by hand (logits, confidences, boxes), so which samples are uncertain is known exactly.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from curate_loop.cli import cli
from curate_loop.curation.combined import Objectives
from curate_loop.errors import InvalidInputError
from curate_loop.plugin_install import PLUGIN_NAME
from curate_loop.runs import embeddings as runs
from curate_loop.runs.curation import delete_batch, list_batches, select_batch
from curate_loop.runs.pool import BATCH_FIELD
from curate_loop.runs.predictions import compute_uncertainty, read_prediction_arrays
from conftest import fresh_clone

CLASSES = ["cat", "dog", "fox", "owl"]
N_CLUSTERS, PER_CLUSTER = 5, 24  # 120 samples, 4 labeled in each cluster
UNCERTAIN = 12  # pool samples with near-uniform logits, all in clusters 0 and 1
K = 6
PURE_DIVERSITY = Objectives(uncertainty=0.0, class_balance=0.0)
# 8 candidates (k * (n / k) ** (1 / 11)): the strength as given, whatever the labels per class (no trust ramp)
MOSTLY_UNCERTAIN = Objectives(uncertainty=10.0, class_balance=0.0, trust_labels_per_class=None)


def _logits(label: int, sure: float) -> list[float]:
    """Log-probabilities: ``sure`` on ``label``, the rest shared."""
    probs = np.full(len(CLASSES), (1 - sure) / (len(CLASSES) - 1))
    probs[label] = sure
    return np.log(probs).tolist()


@pytest.fixture(scope="module")
def animals():
    """120 classification samples in 5 tight clusters (image vectors ``vec``); 20 labeled (``ground_truth``); model
    predictions on every sample (``predictions``, with logits): sure (p = .97) except ``UNCERTAIN`` pool samples of
    clusters 0 and 1, whose top two classes nearly tie. Predicted class of pool sample j: CLASSES[j % 4]."""
    import fiftyone as fo

    name = "select-with-model"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name)
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(N_CLUSTERS, 16))
    cluster = np.repeat(np.arange(N_CLUSTERS), PER_CLUSTER)
    vectors = (centres[cluster] + rng.normal(scale=0.4, size=(len(cluster), 16))).astype(np.float32)
    labeled = np.zeros(len(cluster), dtype=bool)
    labeled[[c * PER_CLUSTER + i for c in range(N_CLUSTERS) for i in range(4)]] = True
    pool_rows = np.flatnonzero(~labeled)
    uncertain_rows = pool_rows[np.isin(cluster[pool_rows], (0, 1))][:UNCERTAIN]
    samples = []
    for i in range(len(cluster)):
        j = int(np.searchsorted(pool_rows, i)) if not labeled[i] else i
        predicted = j % len(CLASSES)
        sample = fo.Sample(filepath=f"/nonexistent/animals/{i:03d}.jpg", row=i, cluster=int(cluster[i]),
                           planted_uncertain=bool(i in uncertain_rows))
        if i in uncertain_rows:
            logits = np.roll(np.log([0.36, 0.34, 0.15, 0.15]), predicted).tolist()
        else:
            logits = _logits(predicted, 0.97)
        sample["predictions"] = fo.Classification(label=CLASSES[predicted], confidence=float(np.exp(max(logits))),
                                                   logits=logits)
        if labeled[i]:
            sample["ground_truth"] = fo.Classification(label=CLASSES[predicted])
        samples.append(sample)
    dataset.add_samples(samples)
    runs.import_embeddings(dataset, "vec", vectors)
    yield dataset
    dataset.delete()


def _batch_ids(dataset, name):
    return sorted(dataset.load_saved_view(name).values("id"))


def _run_results(dataset, name):
    return dataset.load_run_results(name, cache=False)


def test_the_uncertain_samples_fill_the_batch_when_uncertainty_is_strong(animals):
    summary = select_batch(animals, "unsure", K, "vec", predictions_field="predictions", objectives=MOSTLY_UNCERTAIN,
                           classes=CLASSES, report=False)
    picked = animals.select(summary.sample_ids)
    assert summary.mode == "combined"
    assert sorted(picked.values("planted_uncertain")) == [True] * K
    assert all(r.startswith("uncertain:") for r in picked.values("curate_reason"))
    # every pick is among the most uncertain: its percentile rank in the pool is above the 88 certain samples
    assert summary.contributions["uncertainty"] > 1 - UNCERTAIN / summary.pool_size
    assert summary.uncertainty["score"] == "margin" and summary.uncertainty["note"] is None
    assert summary.uncertainty["batch_mean"] == pytest.approx(1 - (0.36 - 0.34), abs=1e-6)
    results = _run_results(animals, "unsure")
    assert results.mode == "combined"
    config = animals.get_run_info("unsure").config
    assert config.predictions_field == "predictions" and config.objectives["uncertainty"] == 10.0
    delete_batch(animals, "unsure")


def test_strength_zero_is_the_pure_diversity_batch(animals):
    plain = select_batch(animals, "plain", K, "vec", report=False)
    assert plain.mode == "diversity only: no predictions field given"
    assert _run_results(animals, "plain").mode == plain.mode
    plain_ids = _batch_ids(animals, "plain")
    delete_batch(animals, "plain")
    zero = select_batch(animals, "zero", K, "vec", predictions_field="predictions", objectives=PURE_DIVERSITY,
                        classes=CLASSES, report=False)
    assert zero.mode == "diversity only: uncertainty strength 0"
    assert _batch_ids(animals, "zero") == plain_ids
    # the planted uncertain samples sit in two of five clusters: diversity alone takes few of them
    assert sum(animals.select(plain_ids).values("planted_uncertain")) <= 3
    delete_batch(animals, "zero")


def test_class_histogram_counts_the_predicted_classes_of_batch_and_pool(animals):
    summary = select_batch(animals, "hist", K, "vec", predictions_field="predictions", classes=CLASSES, report=False)
    histogram = summary.class_histogram
    # the pool is the 100 unlabeled samples, predicted CLASSES[j % 4]: 25 of each
    assert histogram["pool"] == {c: 25 for c in CLASSES}
    labels = animals.select(summary.sample_ids).values("predictions.label")
    assert histogram["batch"] == {c: labels.count(c) for c in CLASSES}
    assert sum(histogram["batch"].values()) == K
    assert _run_results(animals, "hist").class_histogram == histogram
    delete_batch(animals, "hist")


def test_no_predictions_field_or_nothing_labeled_is_pure_diversity_said_in_the_run(animals):
    summary = select_batch(animals, "nofield", K, "vec", predictions_field="model_preds", report=False)
    assert summary.mode == "diversity only: no predictions field 'model_preds' yet"
    assert _run_results(animals, "nofield").mode == summary.mode
    assert summary.class_histogram == {} and summary.contributions["uncertainty"] is None
    assert [b["mode"] for b in list_batches(animals) if b["name"] == "nofield"] == [summary.mode]
    delete_batch(animals, "nofield")

    import fiftyone as fo

    labeled_ids = animals.exists("ground_truth").values("id")
    animals.set_values("labeled_only", {i: fo.Classification(label="cat", confidence=0.9) for i in labeled_ids},
                       key_field="id")
    summary = select_batch(animals, "empty", K, "vec", predictions_field="labeled_only", report=False)
    assert summary.mode == "diversity only: no predictions in 'labeled_only' on the pool yet"
    assert summary.class_histogram["pool"] == {"cat": 0}
    delete_batch(animals, "empty")
    animals.delete_sample_field("labeled_only")

    unlabeled = animals.clone("select-with-model-unlabeled")
    try:
        unlabeled.set_field("ground_truth", None).save()
        runs.import_embeddings(unlabeled, "vec", _vectors_of(animals, "vec"))
        summary = select_batch(unlabeled, "first", K, "vec", label_field="ground_truth",
                               predictions_field="predictions", objectives=MOSTLY_UNCERTAIN, report=False)
        assert summary.mode == "diversity only: nothing labeled yet"
        assert _run_results(unlabeled, "first").mode == summary.mode
        # the histogram and the uncertainty figures still describe the batch
        assert sum(summary.class_histogram["pool"].values()) == len(unlabeled)
        assert 0 <= summary.contributions["uncertainty"] <= 1
    finally:
        unlabeled.delete()


def _vectors_of(dataset, key):
    ids, vectors = runs.load_embeddings(dataset, key)
    order = {i: n for n, i in enumerate(ids.tolist())}
    return vectors[[order[i] for i in dataset.values("id")]]


def test_confidences_without_logits_fall_back_to_least_confidence(animals):
    import fiftyone as fo

    ids = animals.values("id")
    confidences = {i: (0.4 if u else 0.95) for i, u in zip(ids, animals.values("planted_uncertain"))}
    animals.set_values("conf_only", {i: fo.Classification(label="cat", confidence=c) for i, c in confidences.items()},
                       key_field="id")
    arrays = read_prediction_arrays(animals, np.asarray(ids), "conf_only", CLASSES)
    assert arrays.probs is None and arrays.predicted_classes[:, 0].all()
    scores, used, note = arrays.uncertainty("margin")
    assert used == "least_confidence" and "no logits" in note
    np.testing.assert_allclose(scores, [1 - confidences[i] for i in ids])
    summary = select_batch(animals, "conf", K, "vec", predictions_field="conf_only", objectives=MOSTLY_UNCERTAIN,
                           report=False)
    assert summary.uncertainty["score"] == "least_confidence" and "no logits" in summary.uncertainty["note"]
    assert sorted(animals.select(summary.sample_ids).values("planted_uncertain")) == [True] * K
    delete_batch(animals, "conf")
    animals.delete_sample_field("conf_only")


def test_compute_uncertainty_writes_one_float_per_sample(animals):
    result = compute_uncertainty(animals, "predictions", score="entropy", out_field="unc")
    assert result == {"field": "predictions", "out_field": "unc", "score": "entropy", "scored": len(animals),
                      "note": None}
    values = np.asarray(animals.values("unc"))
    uncertain = np.asarray(animals.values("planted_uncertain"))
    sure = -(0.97 * np.log(0.97) + 3 * 0.01 * np.log(0.01)) / np.log(4)
    tie = -(0.36 * np.log(0.36) + 0.34 * np.log(0.34) + 2 * 0.15 * np.log(0.15)) / np.log(4)
    np.testing.assert_allclose(values[~uncertain], sure, atol=1e-9)
    np.testing.assert_allclose(values[uncertain], tie, atol=1e-9)
    top = animals.sort_by("unc", reverse=True).limit(UNCERTAIN).values("planted_uncertain")
    assert all(top)
    with pytest.raises(InvalidInputError, match="out_field"):
        compute_uncertainty(animals, "predictions", out_field="predictions")
    animals.delete_sample_field("unc")


@pytest.mark.parametrize("kind", ["float", "segmentation", "keypoints"])
def test_a_predictions_field_of_the_wrong_kind_is_refused_and_nothing_is_written(animals, kind):
    import fiftyone as fo

    ids = animals.values("id")
    value = {"float": 0.5, "segmentation": fo.Segmentation(mask=np.zeros((2, 2), dtype=np.uint8)),
             "keypoints": fo.Keypoints(keypoints=[fo.Keypoint(label="cat", points=[(0.1, 0.2)])])}[kind]
    field = f"wrong_{kind}"
    animals.set_values(field, {i: value for i in ids}, key_field="id")
    held = {"float": "FloatField", "segmentation": "Segmentation", "keypoints": "Keypoints"}[kind]
    with pytest.raises(InvalidInputError) as error:
        select_batch(animals, "wrong", K, "vec", predictions_field=field, report=False)
    assert str(error.value).startswith(f"predictions field {field!r} holds {held}; the batch needs Classification or "
                                       "Detections predictions")
    assert "wrong" not in animals.list_runs() and not animals.has_saved_view("wrong")
    assert not animals.has_field(BATCH_FIELD) or set(animals.values(BATCH_FIELD)) == {None}
    animals.delete_sample_field(field)


def test_detection_predictions_of_the_example(example_dataset):
    """The example (Detections): boxes of planted low confidence on a few pool samples make them the batch."""
    import fiftyone as fo

    name = "select-with-model-example"
    dataset = fresh_clone(example_dataset, name)
    try:
        rng = np.random.default_rng(0)
        ids = dataset.values("id")
        runs.import_embeddings(dataset, "vec", rng.normal(size=(len(ids), 8)).astype(np.float32))
        truth = dataset.values("true_ground_truth")
        pool = [i for i, gt in zip(ids, dataset.values("ground_truth")) if gt is None]
        unsure = set(rng.choice(pool, 8, replace=False).tolist())
        predictions = {}
        for sample_id, boxes in zip(ids, truth):
            conf = 0.3 if sample_id in unsure else 0.9
            predictions[sample_id] = fo.Detections(detections=[
                fo.Detection(label=d.label, bounding_box=d.bounding_box, confidence=conf)
                for d in (boxes.detections if boxes else [])])
        dataset.set_values("predictions", predictions, key_field="id")
        classes = [str(d) for d in range(10)]
        arrays = read_prediction_arrays(dataset, np.asarray(ids), "predictions", classes)
        assert arrays.box_probs is None and len(arrays.box_sample) == sum(len(b.detections) for b in truth if b)
        summary = select_batch(dataset, "boxes", 6, "vec", predictions_field="predictions", classes=classes,
                               objectives=MOSTLY_UNCERTAIN, report=True)
        assert summary.mode == "combined" and summary.uncertainty["score"] == "least_confidence"
        assert set(summary.sample_ids) <= unsure
        # samples holding a box of each class, among the picks and among the pool
        pool_view = dataset.select(pool)
        expected_pool = {c: sum(c in (labels or []) for labels in
                                pool_view.values("predictions.detections.label")) for c in classes}
        assert summary.class_histogram["pool"] == {c: n for c, n in expected_pool.items()}
        html = open(summary.report_path, encoding="utf-8").read()
        assert "Mode: <strong>combined</strong>" in html and "Predicted classes: batch against pool" in html
        batch_labels = dataset.select(summary.sample_ids).values("predictions.detections.label")
        bars = re.findall(r">([^<>]+)</text><rect[^>]*/><rect[^>]*/><text[^>]*>batch ([\d,]+) \([^)]*\) · pool "
                          r"([\d,]+) \(", html)  # the bars' captions: class, batch count, pool count
        assert {c: (int(b), int(p)) for c, b, p in bars} == {
            c: (sum(c in labels for labels in batch_labels), expected_pool[c]) for c in classes}
    finally:
        dataset.delete()


def test_cli_options_reach_select_batch(animals):
    from curate_loop.cli.curate import UNCERTAINTY_SCORES as CLI_SCORES
    from curate_loop.model.uncertainty import UNCERTAINTY_SCORES

    assert CLI_SCORES == UNCERTAINTY_SCORES
    out = CliRunner().invoke(cli, ["curate", "select", animals.name, "cli_unsure", "-k", str(K), "--key", "vec",
                                   "--predictions", "predictions", "--uncertainty", "10", "--class-balance", "0",
                                   "--uncertainty-score", "entropy"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "mode: combined" in out.output and "uncertainty" in out.output
    config = animals.get_run_info("cli_unsure").config
    assert config.predictions_field == "predictions"
    assert config.objectives == {"diversity": 1.0, "uncertainty": 10.0, "class_balance": 0.0,
                                 "uncertainty_score": "entropy", "class_target": "uniform",
                                 "trust_labels_per_class": 5.0}
    assert sorted(animals.load_saved_view("cli_unsure").values("planted_uncertain")) == [True] * K
    delete_batch(animals, "cli_unsure")

    out = CliRunner().invoke(cli, ["curate", "select", animals.name, "cli_plain", "-k", str(K), "--key", "vec"])
    assert out.exit_code == 0 and "mode: diversity only: no predictions field given" in out.output
    delete_batch(animals, "cli_plain")
    bad = CliRunner().invoke(cli, ["curate", "select", animals.name, "cli_bad", "-k", str(K), "--key", "vec",
                                   "--predictions", "row"])
    assert bad.exit_code == 1 and "predictions field 'row' holds IntField" in bad.output
    assert "cli_bad" not in animals.list_runs()


def _operator(name, **ctx):
    from fiftyone.operators import execute_operator

    result = execute_operator(f"{PLUGIN_NAME}/{name}", ctx=ctx)
    assert result.error is None, result.error
    return result.result


def test_the_operator_form_offers_the_predictions_and_strengths(animals, plugin_installed):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    operator = foo.get_operator(f"{PLUGIN_NAME}/select_batch")
    form = operator.resolve_input(ExecutionContext({"dataset_name": animals.name, "params": {}}))
    fields = form.type.properties
    assert [c.value for c in fields["predictions_field"].view.choices] == ["none", "predictions"]
    for strength in ("diversity", "uncertainty", "class_balance"):
        assert fields[strength].default == getattr(Objectives(), strength)

    result = _operator("select_batch", dataset=animals, params={
        "name": "op_unsure", "k": K, "key": "vec", "label_field": "ground_truth", "predictions_field": "predictions",
        "diversity": 1.0, "uncertainty": 10.0, "class_balance": 0.0})
    assert result["mode"] == "combined" and "uncertainty" in result["contributions"]
    assert sorted(animals.load_saved_view("op_unsure").values("planted_uncertain")) == [True] * K
    delete_batch(animals, "op_unsure")
    result = _operator("select_batch", dataset=animals, params={"name": "op_plain", "k": K, "key": "vec",
                                                                "label_field": "ground_truth",
                                                                "predictions_field": "none"})
    assert result["mode"] == "diversity only: no predictions field given"
    delete_batch(animals, "op_plain")
    # a bad strength is the result's one-line error, and nothing is picked
    result = _operator("select_batch", dataset=animals, params={
        "name": "op_bad", "k": K, "key": "vec", "label_field": "ground_truth", "predictions_field": "predictions",
        "diversity": 0.0, "uncertainty": 0.0})
    assert set(result) == {"error"} and "both 0" in result["error"] and "\n" not in result["error"]
    assert "op_bad" not in animals.list_runs()


def test_box_logits_give_each_sample_its_most_uncertain_box():
    """Hand-computed: margin = 1 - (p1 - p2) of the worst box; logits given as a list or as a numpy array (which
    FiftyOne stores serialised); an empty Detections scores 0, a sample without predictions NaN."""
    import fiftyone as fo

    def box(label, probs, conf=None):
        return fo.Detection(label=label, bounding_box=[0, 0, 0.1, 0.1], confidence=conf or max(probs),
                            logits=np.log(probs))

    dataset = fo.Dataset()
    try:
        dataset.add_samples([
            fo.Sample(filepath="/nonexistent/a.jpg", p=fo.Detections(detections=[
                box("x", [0.7, 0.2, 0.1]), fo.Detection(label="y", bounding_box=[0, 0, 0.1, 0.1], confidence=0.5,
                                                        logits=np.log([0.3, 0.5, 0.2]).tolist())])),
            fo.Sample(filepath="/nonexistent/b.jpg", p=fo.Detections(detections=[])),
            fo.Sample(filepath="/nonexistent/c.jpg"),
        ])
        ids = dataset.values("id")
        arrays = read_prediction_arrays(dataset, np.asarray(ids), "p", ["x", "y", "z"])
        np.testing.assert_array_equal(arrays.box_sample, [0, 0])
        np.testing.assert_array_equal(arrays.present, [True, True, False])
        np.testing.assert_array_equal(arrays.predicted_classes, [[True, True, False], [False] * 3, [False] * 3])
        margin, used, note = arrays.uncertainty("margin")
        assert used == "margin" and note is None
        np.testing.assert_allclose(margin[:2], [1 - (0.5 - 0.3), 0.0])
        assert np.isnan(margin[2])
        least, _, _ = arrays.uncertainty("least_confidence")
        np.testing.assert_allclose(least[:2], [0.5, 0.0])
        assert arrays.class_counts([0, 1]) == {"x": 1, "y": 1, "z": 0}
    finally:
        dataset.delete()
