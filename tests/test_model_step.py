"""The model step: the built-in linear probe (images and boxes), a callable, a command and a field written elsewhere,
against real MongoDB with classical embeddings (real signal, no download); and bad input, each a clear error naming
the step with the dataset's predictions field left as it was and no scratch field behind."""

import sys
import textwrap

import numpy as np
import pytest

from curate_loop.errors import InvalidInputError
from curate_loop.loop.manifest import Manifest
from curate_loop.model.linear_probe import MIN_CV_LABELS, cv_accuracy, fit_linear_probe
from conftest import jittered_proposals
from curate_loop.runs.model_step import LABELED_VIEW, POOL_VIEW, SCRATCH_PREFIX, out_of_fold_folds, run_model_step

CLASSES = [str(d) for d in range(10)]
N_DIGITS, N_LABELED = 300, 100


# -- array level ------------------------------------------------------------------------------------------------
def test_the_probe_maps_its_columns_onto_the_manifest_classes():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    probe = fit_linear_probe(X, ["b", "b", "d", "d"], ["a", "b", "c", "d"])
    probs = probe.predict_proba(np.array([[0.05, 0.0], [5.05, 5.0]]))
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1)
    assert probs[:, [0, 2]].max() == 0  # never labeled: probability 0
    assert probs.argmax(axis=1).tolist() == [1, 3]
    logits = probe.predict_log_proba(np.array([[0.05, 0.0]]))
    assert np.isfinite(logits).all() and np.allclose(np.exp(logits), probs[:1], atol=1e-12)
    single = fit_linear_probe(X[:2], ["c", "c"], ["a", "b", "c"]).predict_proba(X)
    assert single.tolist() == [[0, 0, 1]] * 4
    with pytest.raises(InvalidInputError, match=r"not in the manifest's classes .*\['z'\]"):
        fit_linear_probe(X, ["a", "a", "z", "z"], ["a", "b"])


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_probes_folded_prediction_is_sklearns_on_the_centred_scaled_rows(n_classes):
    rng = np.random.default_rng(n_classes)
    y = np.repeat(["a", "b", "c"][:n_classes], 20)
    X = (rng.normal(size=(len(y), 4)) + 3.0 + np.array([{"a": 0, "b": 1.5, "c": 3}[c] for c in y])[:, None]) * 0.01
    probe = fit_linear_probe(X, y, ["a", "b", "c"])
    centred = (X.astype(np.float32) - probe.mean_) / probe.scale_  # what the estimator was fitted on
    expected = probe.estimator_.predict_proba(centred)
    got = probe.predict_proba(X)[:, :n_classes]
    assert np.abs(got - expected).max() < 1e-5
    assert 0.05 < expected.max(axis=1).min() and expected.min() < 0.5  # not saturated: the test can tell them apart


def test_cv_accuracy_needs_enough_labels_and_uses_fewer_folds_for_rare_classes():
    rng = np.random.default_rng(0)
    y = np.array(["a"] * 12 + ["b"] * 12 + ["c"])  # one label of c: two folds
    X = rng.normal(size=(len(y), 3)) + np.array([{"a": 0, "b": 4, "c": 8}[c] for c in y])[:, None]
    assert cv_accuracy(X, y) >= 24 / 25  # a and b separable; c is missing from one training fold
    assert cv_accuracy(X[: MIN_CV_LABELS - 1], y[: MIN_CV_LABELS - 1]) is None
    assert cv_accuracy(X[:12], y[:12]) is None  # one class only


# -- datasets ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_dataset(media_root):
    """Real handwritten digits (scikit-learn's 8x8 scans) as PNGs with Classification labels on a third of them,
    the true class of each kept in ``truth``, and classical image embeddings ``img``."""
    import fiftyone as fo
    from PIL import Image
    from sklearn.datasets import load_digits

    from curate_loop.runs.embeddings import compute_embeddings

    digits = load_digits()
    folder = media_root / "model-step-digits"
    folder.mkdir(exist_ok=True)
    samples = []
    for i in range(N_DIGITS):
        path = folder / f"digit_{i:04d}.png"
        pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(path)
        label = str(digits.target[i])
        samples.append(fo.Sample(filepath=str(path), truth=fo.Classification(label=label),
                                 ground_truth=fo.Classification(label=label) if i < N_LABELED else None))
    if fo.dataset_exists("model-step-digits"):
        fo.delete_dataset("model-step-digits")
    dataset = fo.Dataset("model-step-digits")
    dataset.add_samples(samples)
    compute_embeddings(dataset, "img", "classical")
    yield dataset
    dataset.delete()


def _manifest(dataset, **model) -> Manifest:
    return Manifest.model_validate({
        "dataset": dataset.name, "label_field": "ground_truth", "classes": CLASSES,
        "embeddings": {"key": "img", "objects_key": "boxes", "models": [{"name": "classical"}]},
        "model": model})


@pytest.fixture
def sentinel(digits_dataset):
    """A ``predictions`` field already there (last iteration's): a failed step must leave it exactly so."""
    import fiftyone as fo

    ids = digits_dataset.values("id")
    digits_dataset.set_values("predictions", {i: fo.Classification(label="7", confidence=0.5) for i in ids[:5]},
                              key_field="id")
    before = digits_dataset.values("predictions")
    yield before
    _assert_untouched(digits_dataset, before)


def _assert_untouched(dataset, before):
    dataset.reload()
    assert dataset.values("predictions") == before
    assert not [f for f in dataset.get_field_schema() if f.startswith(SCRATCH_PREFIX)]
    assert not {LABELED_VIEW, POOL_VIEW} & set(dataset.list_saved_views())


# -- the kinds of model -----------------------------------------------------------------------------------------
def test_builtin_probe_on_classification_predicts_the_pool_better_than_chance(digits_dataset):
    record = run_model_step(digits_dataset, _manifest(digits_dataset, builtin="linear_probe"), 3)
    pool = digits_dataset.exists("ground_truth", False)
    assert (record.kind, record.name, record.field, record.model_version) == \
        ("builtin", "linear_probe", "predictions", "linear_probe@3")
    assert record.trained_on == N_LABELED and record.predicted == N_DIGITS - N_LABELED == len(pool)
    assert 0.85 <= record.cv_accuracy <= 1.0  # measured 0.95
    labels, confidences, logits, truth = pool.values(["predictions.label", "predictions.confidence",
                                                       "predictions.logits", "truth.label"])
    probs = np.exp(np.asarray(logits, dtype=float))
    assert probs.shape == (len(pool), 10) and np.allclose(probs.sum(axis=1), 1)
    assert np.allclose(confidences, probs.max(axis=1)) and [CLASSES[j] for j in probs.argmax(axis=1)] == labels
    accuracy = np.mean(np.asarray(labels) == np.asarray(truth))
    assert accuracy >= 0.9, accuracy  # measured 0.975; chance is 0.1
    # the labeled samples get out-of-fold predictions (3 folds by default), nearly as accurate as on the pool
    labeled = digits_dataset.exists("ground_truth")
    assert (record.out_of_fold, record.out_of_fold_predicted) == (3, N_LABELED) == \
        (out_of_fold_folds(digits_dataset, "predictions"), labeled.exists("predictions").count())
    oof, given = labeled.values(["predictions.label", "ground_truth.label"])
    assert 0.8 <= np.mean(np.asarray(oof) == np.asarray(given)) < 1.0  # measured 0.93; in-sample would be 1.0
    assert not [f for f in digits_dataset.get_field_schema() if f.startswith(SCRATCH_PREFIX)]


CALLS = []  # (train ids, target ids) of each call of _record_calls


def _record_calls(dataset, labeled_view, pool_view, field):
    """A user's model that keeps what it was trained on and asked to predict."""
    import fiftyone as fo

    CALLS.append((set(labeled_view.values("id")), set(pool_view.values("id"))))
    pool_view.set_values(field, [fo.Classification(label="1", confidence=0.6) for _ in range(len(pool_view))])


def test_out_of_fold_predictions_never_come_from_a_model_trained_on_the_sample(digits_dataset):
    CALLS.clear()
    record = run_model_step(digits_dataset, _manifest(digits_dataset, callable="test_model_step:_record_calls",
                                                      out_of_fold=4), 1)
    labeled = set(digits_dataset.exists("ground_truth").values("id"))
    pool = set(digits_dataset.exists("ground_truth", False).values("id"))
    assert len(CALLS) == 5 and CALLS[0] == (labeled, pool)  # first the pool, from every label
    folds = [target for _, target in CALLS[1:]]
    assert set().union(*folds) == labeled and sum(map(len, folds)) == len(labeled)  # a partition of the labels
    assert all(train == labeled - target for train, target in CALLS[1:])  # trained on the other folds only
    assert sorted(map(len, folds)) == [25, 25, 25, 25]
    assert (record.out_of_fold, record.out_of_fold_predicted) == (4, N_LABELED)

    CALLS.clear()
    record = run_model_step(digits_dataset, _manifest(digits_dataset, callable="test_model_step:_record_calls",
                                                      out_of_fold=0), 2)
    assert len(CALLS) == 1 and record.out_of_fold == 0 == out_of_fold_folds(digits_dataset, "predictions")
    assert digits_dataset.exists("ground_truth").exists("predictions").count() == 0  # the pool only


def test_one_fold_is_refused_in_the_manifest(digits_dataset):
    with pytest.raises(ValueError, match="one fold would train on nothing"):
        _manifest(digits_dataset, builtin="linear_probe", out_of_fold=1)


def _classify_from_truth(dataset, labeled_view, pool_view, field):
    """A user's model (reached as ``test_model_step:_classify_from_truth``): the true class, confidence 0.9."""
    import fiftyone as fo

    logits = np.log(np.full(10, 0.1 / 9))
    values = []
    for label in pool_view.values("truth.label"):
        row = logits.copy()
        row[int(label)] = np.log(0.9)
        values.append(fo.Classification(label=label, confidence=0.9, logits=row.tolist()))
    pool_view.set_values(field, values)


def _write_boxes(dataset, labeled_view, pool_view, field):
    import fiftyone as fo

    pool_view.set_values(field, [fo.Detections(detections=[fo.Detection(label="1", bounding_box=[0, 0, .5, .5])])
                                 for _ in range(len(pool_view))])


def _write_nothing(dataset, labeled_view, pool_view, field):
    return "done"


def _raise(dataset, labeled_view, pool_view, field):
    raise ValueError("weights file missing")


def _unknown_class(dataset, labeled_view, pool_view, field):
    import fiftyone as fo

    pool_view.set_values(field, [fo.Classification(label="cat", confidence=0.5) for _ in range(len(pool_view))])


def test_a_callable_is_called_with_the_views_and_its_field_replaces_the_old_one(digits_dataset, sentinel):
    record = run_model_step(digits_dataset, _manifest(digits_dataset, callable="test_model_step:_classify_from_truth"),
                            2)
    assert (record.kind, record.model_version, record.trained_on, record.cv_accuracy) == \
        ("callable", "test_model_step:_classify_from_truth@2", N_LABELED, None)
    pool = digits_dataset.exists("ground_truth", False)
    assert record.predicted == len(pool)
    assert pool.values("predictions.label") == pool.values("truth.label")
    labeled = digits_dataset.exists("ground_truth")  # the old field is gone: out-of-fold predictions replace it
    assert labeled.values("predictions.label") == labeled.values("truth.label") and record.out_of_fold == 3
    sentinel[:] = digits_dataset.values("predictions")  # (the sentinel's after-check compares with the new field)


COMMAND_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import fiftyone as fo
    dataset = fo.load_dataset(os.environ["CURATE_LOOP_DATASET"])
    pool = dataset.load_saved_view(os.environ["CURATE_LOOP_POOL_VIEW"])
    labeled = dataset.load_saved_view(os.environ["CURATE_LOOP_LABELED_VIEW"])
    classes = json.loads(os.environ["CURATE_LOOP_CLASSES"])
    assert os.environ["CURATE_LOOP_LABEL_FIELD"] == "ground_truth" and len(labeled) in ({n_labeled}, {n_labeled} * 2 // 3, {n_labeled} * 2 // 3 + 1)
    assert len(labeled) + len(pool) in ({n_digits}, {n_labeled})  # the pool, or a fold of the labels
    if "{mode}" == "fail":
        print("training crashed: out of memory", file=sys.stderr)
        sys.exit(3)
    pool.set_values(os.environ["CURATE_LOOP_FIELD"],
                    [fo.Classification(label=classes[0], confidence=1.0) for _ in range(len(pool))])
""")


def _command(tmp_path, mode: str) -> str:
    script = tmp_path / f"model_{mode}.py"
    script.write_text(COMMAND_SCRIPT.format(n_labeled=N_LABELED, n_digits=N_DIGITS, mode=mode))
    return f"{sys.executable} {script}"


def test_a_command_gets_the_dataset_views_and_field_in_its_environment(digits_dataset, sentinel, tmp_path):
    record = run_model_step(digits_dataset, _manifest(digits_dataset, command=_command(tmp_path, "ok")), 1)
    pool = digits_dataset.exists("ground_truth", False)
    assert record.kind == "command" and record.predicted == len(pool) and record.trained_on == N_LABELED
    assert set(pool.values("predictions.label")) == {"0"}
    sentinel[:] = digits_dataset.values("predictions")


def test_field_mode_only_reads_predictions_written_elsewhere(digits_dataset):
    import fiftyone as fo

    pool = digits_dataset.exists("ground_truth", False)
    pool.set_values("elsewhere", [fo.Classification(label="3", confidence=0.8) for _ in range(len(pool))])
    before = digits_dataset.values("elsewhere")
    record = run_model_step(digits_dataset, _manifest(digits_dataset, field="elsewhere"), 4)
    assert (record.kind, record.name, record.trained_on, record.predicted, record.cv_accuracy) == \
        ("field", "elsewhere", None, len(pool), None)
    assert record.model_version == "elsewhere@4" and digits_dataset.values("elsewhere") == before
    digits_dataset.delete_sample_field("elsewhere")


# -- bad input: a clear error naming the step; nothing half-written -----------------------------------------------
@pytest.mark.parametrize("model, message", [
    ({"callable": "test_model_step:_raise"},
     r"model step \(callable test_model_step:_raise\) raised ValueError: weights file missing"),
    ({"callable": "test_model_step:_write_nothing"},
     r"model step \(callable test_model_step:_write_nothing\) wrote nothing to field 'predictions'"),
    ({"callable": "test_model_step:_write_boxes"},
     r"field 'predictions' holds Detections labels but label_field 'ground_truth' is Classification"),
    ({"callable": "test_model_step:_unknown_class"}, r"classes that are not in the manifest's classes .*\['cat'\]"),
    ({"callable": "test_model_step:_no_such_function"}, r"cannot import 'test_model_step:_no_such_function'"),
    ({"builtin": "linear_probe", "proposals": "truth"}, r"model.proposals is for a Detections label_field"),
])
def test_a_failing_callable_leaves_the_predictions_as_they_were(digits_dataset, sentinel, model, message):
    with pytest.raises(InvalidInputError, match=message):
        run_model_step(digits_dataset, _manifest(digits_dataset, **model), 5)


def test_a_command_exiting_non_zero_quotes_its_stderr(digits_dataset, sentinel, tmp_path):
    with pytest.raises(InvalidInputError, match=r"model step \(command .*\): command exited 3:\n"
                                                r"training crashed: out of memory"):
        run_model_step(digits_dataset, _manifest(digits_dataset, command=_command(tmp_path, "fail")), 5)


def test_field_mode_refuses_a_field_of_the_wrong_kind(digits_dataset, sentinel):
    import fiftyone as fo

    digits_dataset.set_values("boxes_elsewhere", [fo.Detections(detections=[]) for _ in range(len(digits_dataset))])
    try:
        with pytest.raises(InvalidInputError, match=r"model step \(field 'boxes_elsewhere'\): field 'boxes_elsewhere' "
                                                    "holds Detections labels but label_field 'ground_truth' is "
                                                    "Classification"):
            run_model_step(digits_dataset, _manifest(digits_dataset, field="boxes_elsewhere"), 5)
        with pytest.raises(InvalidInputError, match=r"found nothing in field 'nowhere'"):
            run_model_step(digits_dataset, _manifest(digits_dataset, field="nowhere"), 5)
    finally:
        digits_dataset.delete_sample_field("boxes_elsewhere")


# -- boxes: the probe on crop embeddings of the labeled boxes, applied to proposals ------------------------------
@pytest.fixture(scope="module")
def boxes_dataset(example_dataset):
    import fiftyone as fo

    if fo.dataset_exists("model-step-boxes"):
        fo.delete_dataset("model-step-boxes")
    dataset = example_dataset.clone("model-step-boxes")
    jittered_proposals(dataset, "true_ground_truth", "proposals", n_random=0)
    yield dataset
    dataset.delete()


def test_builtin_probe_on_detections_labels_each_proposal_box(boxes_dataset):
    record = run_model_step(boxes_dataset, _manifest(boxes_dataset, builtin="linear_probe", proposals="proposals"), 1)
    pool = boxes_dataset.exists("ground_truth", False)
    n_boxes = boxes_dataset.count("ground_truth.detections")
    assert record.trained_on == n_boxes and record.cv_accuracy is not None and record.predicted == len(pool)
    predicted = pool.values("predictions.detections")
    truth = pool.values("true_ground_truth.detections")
    n_pred = sum(len(p) for p in predicted)
    assert n_pred == pool.count("proposals.detections")  # every proposal labeled (none too small to crop)
    hits = [p.label == t.label for ps, ts in zip(predicted, truth) for p, t in zip(ps, ts)]  # same order: jittered
    accuracy = np.mean(hits)
    assert accuracy >= 0.7, accuracy  # measured 0.84; chance 0.1; the labeled boxes carry planted noise
    first = predicted[0][0]
    probs = np.exp(first.logits)
    assert len(first.logits) == 10 and np.isclose(probs.sum(), 1) and np.isclose(first.confidence, probs.max())
    assert np.allclose(first.bounding_box, pool.first().proposals.detections[0].bounding_box)


def test_boxes_without_proposals_are_refused(boxes_dataset):
    before = boxes_dataset.values("predictions") if boxes_dataset.has_sample_field("predictions") else None
    with pytest.raises(InvalidInputError, match=r"model step \(builtin linear_probe\): label_field 'ground_truth' "
                                                r"holds Detections, .* set model.proposals"):
        run_model_step(boxes_dataset, _manifest(boxes_dataset, builtin="linear_probe"), 2)
    with pytest.raises(InvalidInputError, match=r"model.proposals 'nothing_here' must be a Detections field"):
        run_model_step(boxes_dataset, _manifest(boxes_dataset, builtin="linear_probe", proposals="nothing_here"), 2)
    boxes_dataset.reload()
    assert (boxes_dataset.values("predictions") if boxes_dataset.has_sample_field("predictions") else None) == before
    assert not [f for f in boxes_dataset.get_field_schema() if f.startswith(SCRATCH_PREFIX)]
