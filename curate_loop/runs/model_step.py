"""The model step of the loop: train (or run) the manifest's model and write its predictions for the pool.

Four kinds (manifest ``model:``): ``builtin: linear_probe`` (:mod:`curate_loop.model.linear_probe` on the image
embeddings, or on box-crop embeddings of ``model.proposals`` for a Detections label field), ``callable`` (a user's
``fn(dataset, labeled_view, pool_view, field)``), ``command`` (a process; dataset, field and saved views in its
environment), and ``field`` (predictions written elsewhere: only checked).

Nothing half-written: the builtin, callable and command write into a scratch field (``SCRATCH_PREFIX + field``),
which is checked (a label kind matching ``label_field``, something written, known classes, ``logits`` of one value
per class) and only then replaces ``model.field`` in one step (old field deleted, scratch renamed). On any failure
the scratch field is deleted and :class:`InvalidInputError` names the step; ``model.field`` stays as it was.

Out-of-fold predictions (``model.out_of_fold: k``, default 3): the labeled samples get predictions in the same
field too, each from the same kind of model trained on the other ``k - 1`` folds of the labels (the same callable
or command, called once per fold with the fold as its pool). Label-error scores read these: a model scored on the
labels it was trained on agrees with their errors. :func:`out_of_fold_folds` says how a field's labeled samples
were predicted (recorded in ``dataset.info``), so a scan can say whether its scores are biased.

Predictions follow the shared contract: ``fo.Classification`` or ``fo.Detections`` with ``confidence`` (probability
of the predicted class) and ``logits`` (log-probabilities in the manifest's ``classes`` order), on pool samples.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import time
from dataclasses import asdict, dataclass

import numpy as np

from curate_loop.errors import InvalidInputError

logger = logging.getLogger(__name__)

SCRATCH_PREFIX = "curate_model_tmp_"  # FiftyOne refuses field names starting with "_"
LABELED_VIEW = "_curate_loop_labeled"  # saved views a command reads; deleted when it has finished
POOL_VIEW = "_curate_loop_pool"
COMMAND_TIMEOUT_S = 24 * 3600  # a command that trains a detector may take hours, never forever
STDERR_LINES = 10  # lines of a failed command's stderr quoted in the error
CV_FOLDS = 5
PREDICTIONS_INFO = "curate_loop_predictions"  # dataset.info: field -> how its labeled samples were predicted
FOLD_SEED = 0


@dataclass
class ModelStepRecord:
    """What the model step did; stored on the iteration (``IterationSummary.model``)."""

    kind: str  # builtin, callable, command, field
    name: str  # linear_probe, package.module:function, the command, or the field
    field: str
    trained_on: int | None  # labels the model was given (None in field mode: trained elsewhere)
    predicted: int  # pool samples with a prediction in ``field``
    seconds: float
    cv_accuracy: float | None  # k-fold accuracy on the labels when the builtin trains; None otherwise
    model_version: str  # f"{name}@{iteration}": what Label Studio predictions carry
    note: str | None = None  # why nothing was trained or predicted, when so
    out_of_fold: int = 0  # folds behind the labeled samples' predictions (0: none written)
    out_of_fold_predicted: int = 0  # labeled samples with an out-of-fold prediction in ``field``

    def to_dict(self) -> dict:
        return asdict(self)


def run_model_step(dataset, manifest, iteration: int) -> ModelStepRecord:
    """Run ``manifest.model`` on ``dataset`` for loop iteration ``iteration``; see the module docstring."""
    from curate_loop.runs.pool import label_kind, labeled_view, unlabeled_view

    spec = manifest.model
    if spec is None:
        raise InvalidInputError("The manifest has no model section; add e.g. `model: {builtin: linear_probe}`.")
    started = time.perf_counter()
    dataset = dataset._dataset
    step = f"model step ({spec.kind} {spec.name})"
    kind = label_kind(dataset, manifest.label_field, needed_for=f"; the {step} predicts one of them.")
    labeled, pool = labeled_view(dataset, manifest.label_field), unlabeled_view(dataset, manifest.label_field)
    record = ModelStepRecord(kind=spec.kind, name=spec.name, field=spec.field, trained_on=None, predicted=0,
                             seconds=0.0, cv_accuracy=None, model_version=f"{spec.name}@{iteration}")
    if spec.kind == "field":
        _check_predictions(dataset, spec.field, spec.field, manifest, kind, f"model step (field {spec.field!r})")
        record.predicted = pool.exists(spec.field).count()
    else:
        scratch = SCRATCH_PREFIX + spec.field
        _drop(dataset, scratch)  # left by a crashed run

        def predict(train, target) -> tuple[int, float | None, str | None]:
            """Train on ``train``, write predictions for ``target`` into the scratch field."""
            if spec.kind == "builtin":
                return _builtin(dataset, manifest, kind, train, target, scratch, step)
            if spec.kind == "callable":
                _call(spec.callable, dataset, train, target, scratch, step)
            else:
                _command(spec.command, dataset, manifest, train, target, scratch, step)
            return _label_count(train, manifest.label_field, kind), None, None

        try:
            record.trained_on, record.cv_accuracy, record.note = predict(labeled, pool)
            if record.trained_on and spec.out_of_fold:
                record.out_of_fold, fold_note = _out_of_fold(predict, labeled, spec.out_of_fold, step)
                record.note = record.note or fold_note
            dataset.reload()
            if dataset.has_sample_field(scratch) and dataset.exists(scratch).count():
                _check_predictions(dataset, scratch, spec.field, manifest, kind, step)
                _replace(dataset, scratch, spec.field)
            elif record.note is None:
                _check_predictions(dataset, scratch, spec.field, manifest, kind, step)  # raises: nothing written
        finally:
            _drop(dataset, scratch)
        if dataset.has_sample_field(spec.field):
            record.predicted = pool.exists(spec.field).count()
            record.out_of_fold_predicted = labeled.exists(spec.field).count() if record.out_of_fold else 0
        if record.out_of_fold and not record.out_of_fold_predicted:
            record.out_of_fold = 0
            record.note = record.note or "the fold models predicted no labeled sample (e.g. no proposals on them)"
    _remember_predictions(dataset, spec.field, record)
    record.seconds = round(time.perf_counter() - started, 2)
    logger.info("%s: trained on %s labels, %d pool samples predicted in %.1f s", step, record.trained_on,
                record.predicted, record.seconds)
    return record


def out_of_fold_folds(dataset, field: str) -> int:
    """Folds behind the labeled samples' predictions in ``field`` from the last model step (0: in-sample, or
    written elsewhere, or unknown: label-error scores on them are biased towards the labels)."""
    info = (dataset._dataset.info or {}).get(PREDICTIONS_INFO) or {}
    return int((info.get(field) or {}).get("out_of_fold", 0))


def _out_of_fold(predict, labeled, folds: int, step: str) -> tuple[int, str | None]:
    """Predict each fold of the labeled samples with a model trained on the others; ``(folds used, note)``."""
    ids = np.asarray(labeled.values("id"), dtype=str)
    if len(ids) < 2 * folds:
        return 0, (f"{len(ids)} labeled samples are too few for {folds} folds (at least {2 * folds}): no out-of-fold "
                   "predictions on them yet")
    order = np.random.default_rng(FOLD_SEED).permutation(len(ids))
    for rows in np.array_split(order, folds):
        held = ids[rows].tolist()
        trained_on, _, note = predict(labeled.exclude(held), labeled.select(held))
        if not trained_on:
            return 0, f"a fold's model had nothing to train on ({note}): no out-of-fold predictions"
    logger.info("%s: out-of-fold predictions for %d labeled samples (%d folds)", step, len(ids), folds)
    return folds, None


def _remember_predictions(dataset, field: str, record: ModelStepRecord) -> None:
    info = dict(dataset.info or {})
    known = dict(info.get(PREDICTIONS_INFO) or {})
    known[field] = {"out_of_fold": record.out_of_fold, "model_version": record.model_version, "kind": record.kind}
    info[PREDICTIONS_INFO] = known
    dataset.info = info
    dataset.save()


# -- builtin: the linear probe ---------------------------------------------------------------------
def _builtin(dataset, manifest, kind, labeled, pool, scratch, step) -> tuple[int, float | None, str | None]:
    """Train the probe and write its predictions to ``scratch``; ``(labels trained on, cv accuracy, note)``."""
    if kind == "detections":
        return _builtin_boxes(dataset, manifest, labeled, pool, scratch, step)
    if manifest.model.proposals is not None:
        raise InvalidInputError(f"{step}: model.proposals is for a Detections label_field; "
                                f"{manifest.label_field!r} holds Classification labels (the probe classifies whole "
                                "images). Remove model.proposals.")
    from curate_loop.runs.embeddings import load_embeddings

    key = manifest.embeddings.key
    ids, X = _vectors(load_embeddings, labeled, key, step)
    by_id = dict(zip(*labeled.values(["id", f"{manifest.label_field}.label"])))
    y = np.asarray([by_id[i] for i in ids.tolist()], dtype=object)
    keep = y != None  # noqa: E711 (an empty Classification)
    if not keep.any():
        return 0, None, f"nothing labeled with {key!r} vectors yet: no model trained, batches by diversity alone"
    probe, accuracy = _fit(X[keep], y[keep], manifest, step)
    pool_ids, pool_X = _vectors(load_embeddings, pool, key, step)
    if not len(pool_ids):
        return int(keep.sum()), accuracy, "the pool is empty: nothing to predict"
    labels = _classifications(probe, pool_X, manifest.classes)
    dataset.set_values(scratch, dict(zip(pool_ids.tolist(), labels)), key_field="id")
    return int(keep.sum()), accuracy, None


def _builtin_boxes(dataset, manifest, labeled, pool, scratch, step) -> tuple[int, float | None, str | None]:
    """Boxes: the probe learns classes from the labeled boxes' crop embeddings and labels each proposal box."""
    import fiftyone.core.labels as fol

    from curate_loop.loop.embedding_models import choose_models
    from curate_loop.runs.embeddings import compute_embeddings, load_embeddings, model_specs

    proposals = manifest.model.proposals
    if proposals is None:
        raise InvalidInputError(f"{step}: label_field {manifest.label_field!r} holds Detections, so the probe "
                                "classifies boxes, which it needs from somewhere: set model.proposals to a Detections "
                                "field holding candidate boxes on the pool (a region proposer's or a detector's), or "
                                "use a detector through model.callable.")
    if _kind_of(dataset, proposals) != "detections":
        found = "no such field" if not dataset.has_sample_field(proposals) else f"{_kind_of(dataset, proposals)} values"
        raise InvalidInputError(f"{step}: model.proposals {proposals!r} must be a Detections field of "
                                f"{dataset.name!r} ({found}).")
    field, key = manifest.label_field, manifest.embeddings.objects_key
    n_labels = labeled.count(f"{field}.detections")
    if not n_labels:
        return 0, None, "no labeled boxes yet: no model trained, batches by diversity alone"
    compute_embeddings(labeled, key, choose_models(dataset, manifest, key)[0], patches_field=field)
    label_ids, X = _vectors(load_embeddings, labeled, key, step)
    by_id = dict(zip(labeled.values(f"{field}.detections.id", unwind=True),
                     labeled.values(f"{field}.detections.label", unwind=True)))
    y = np.asarray([by_id[i] for i in label_ids.tolist()], dtype=object)
    probe, accuracy = _fit(X, y, manifest, step)
    pool = pool.exists(proposals)
    if not len(pool):
        return len(y), accuracy, f"no pool sample has {proposals!r} boxes: nothing to predict"
    proposals_key = f"{key}_{proposals}"
    models = list(model_specs(dataset, key))  # the labeled boxes' space, so the probe applies to the proposals
    _share_classical_basis(dataset, key, proposals_key, models)
    compute_embeddings(pool, proposals_key, models, patches_field=proposals)
    box_ids, box_X = _vectors(load_embeddings, pool, proposals_key, step)
    probs, logits = probe.predict_proba(box_X), probe.predict_log_proba(box_X)
    best = probs.argmax(axis=1)
    row = {box_id: r for r, box_id in enumerate(box_ids.tolist())}
    sample_ids, ids_per_sample, boxes_per_sample = pool.values(
        ["id", f"{proposals}.detections.id", f"{proposals}.detections.bounding_box"])
    values = {}
    for sample_id, ids, boxes in zip(sample_ids, ids_per_sample, boxes_per_sample):
        rows = [(row[i], box) for i, box in zip(ids or [], boxes or []) if i in row]  # boxes too small to crop: none
        values[sample_id] = fol.Detections(detections=[
            fol.Detection(label=manifest.classes[best[r]], bounding_box=list(box), confidence=float(probs[r, best[r]]),
                          logits=logits[r].tolist()) for r, box in rows])
    dataset.set_values(scratch, values, key_field="id")
    return len(y), accuracy, None


def _share_classical_basis(dataset, key: str, proposals_key: str, models) -> None:
    """Give the proposals' run the labeled boxes' classical PCA basis before its first vectors: a basis fitted on
    the proposals would put them in another space than the one the probe learned."""
    from curate_loop.embeddings.classical import BASIS_FILE
    from curate_loop.embeddings.store import EmbeddingStore
    from curate_loop.runs.embeddings import run_dir

    for i, spec in enumerate(models):
        if not spec.is_classical:
            continue
        source = EmbeddingStore(f"{run_dir(dataset, key)}/part-{i}")  # local folder or URL alike
        target = EmbeddingStore(f"{run_dir(dataset, proposals_key)}/part-{i}")
        basis = source.get_bytes(BASIS_FILE)
        if basis is not None and target.get_bytes(BASIS_FILE) is None:
            target.put_bytes(BASIS_FILE, basis)


def _vectors(load_embeddings, samples, key, step):
    try:
        return load_embeddings(samples, key)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{step}: {exc}") from exc


def _fit(X, y, manifest, step):
    from curate_loop.model.linear_probe import cv_accuracy, fit_linear_probe

    try:
        return fit_linear_probe(X, y, manifest.classes, seed=0), cv_accuracy(X, y, CV_FOLDS, seed=0)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{step}: {exc}") from exc


def _classifications(probe, X, classes) -> list:
    import fiftyone.core.labels as fol

    probs, logits = probe.predict_proba(X), probe.predict_log_proba(X)
    best = probs.argmax(axis=1)
    return [fol.Classification(label=classes[b], confidence=float(p[b]), logits=lg.tolist())
            for b, p, lg in zip(best, probs, logits)]


# -- callable and command --------------------------------------------------------------------------
def _call(target: str, dataset, labeled, pool, field: str, step: str) -> None:
    module_name, _, function_name = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"{step}: cannot import {target!r} ({type(exc).__name__}: {exc}); check "
                                "model.callable and that its package is installed in this environment.") from exc
    try:
        fn(dataset, labeled, pool, field)
    except Exception as exc:  # a user's model: any failure is reported as the step's
        raise InvalidInputError(f"{step} raised {type(exc).__name__}: {exc}") from exc


def _command(command: str, dataset, manifest, labeled, pool, field: str, step: str) -> None:
    env = {**os.environ, "CURATE_LOOP_DATASET": dataset.name, "CURATE_LOOP_FIELD": field,
           "CURATE_LOOP_LABEL_FIELD": manifest.label_field, "CURATE_LOOP_LABELED_VIEW": LABELED_VIEW,
           "CURATE_LOOP_POOL_VIEW": POOL_VIEW, "CURATE_LOOP_CLASSES": json.dumps(manifest.classes)}
    dataset.save_view(LABELED_VIEW, labeled, overwrite=True)
    dataset.save_view(POOL_VIEW, pool, overwrite=True)
    try:
        done = subprocess.run(command, shell=True, env=env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise InvalidInputError(f"{step} did not finish within {COMMAND_TIMEOUT_S} s and was stopped.") from exc
    finally:
        for name in (LABELED_VIEW, POOL_VIEW):
            if dataset.has_saved_view(name):
                dataset.delete_saved_view(name)
    if done.stdout:
        logger.info("%s printed:\n%s", step, done.stdout.rstrip())
    if done.returncode != 0:
        tail = "\n".join((done.stderr or "").strip().splitlines()[-STDERR_LINES:]) or "(no stderr)"
        raise InvalidInputError(f"{step}: command exited {done.returncode}:\n{tail}")


# -- checks and the swap ---------------------------------------------------------------------------
def _check_predictions(dataset, field: str, shown: str, manifest, kind: str, step: str) -> None:
    """``field`` (named ``shown`` to the user) holds predictions of ``kind`` over the manifest's classes."""
    if not dataset.has_sample_field(field) or not dataset.exists(field).count():
        what = "wrote nothing to" if field != shown else "found nothing in"
        raise InvalidInputError(f"{step} {what} field {shown!r}: no sample holds a prediction. It must write "
                                f"{_kind_name(kind)} labels for the pool samples (e.g. pool_view.set_values(field, "
                                "...)).")
    found = _kind_of(dataset, field)
    if found != kind:
        raise InvalidInputError(f"{step}: field {shown!r} holds {_kind_name(found)} labels but label_field "
                                f"{manifest.label_field!r} is {_kind_name(kind)}; predictions must be of the label "
                                "field's kind.")
    path = f"{field}.detections" if kind == "detections" else field
    unknown = sorted(set(dataset.distinct(f"{path}.label")) - set(manifest.classes))
    if unknown:
        raise InvalidInputError(f"{step}: field {shown!r} holds classes that are not in the manifest's classes "
                                f"{manifest.classes}: {unknown}.")
    logits = dataset.values(f"{path}.logits", unwind=kind == "detections")
    sizes = {len(v) for v in logits if v is not None}
    if sizes - {len(manifest.classes)}:
        raise InvalidInputError(f"{step}: field {shown!r} holds logits of {sorted(sizes)} values; they must be "
                                f"{len(manifest.classes)}, one log-probability per manifest class, in its order.")
    low, high = dataset.bounds(f"{path}.confidence")
    if low is not None and not (0 <= low and high <= 1):
        raise InvalidInputError(f"{step}: field {shown!r} holds confidences in [{low}, {high}]; they must be "
                                "probabilities in [0, 1].")


def _replace(dataset, scratch: str, field: str) -> None:
    """``scratch`` becomes ``field``: the old predictions go (with in-sample ones on samples labeled since)."""
    if dataset.has_sample_field(field):
        dataset.delete_sample_field(field)
    dataset.rename_sample_field(scratch, field)


def _drop(dataset, field: str) -> None:
    dataset.reload()
    if dataset.has_sample_field(field):
        dataset.delete_sample_field(field)


def _kind_of(dataset, field: str) -> str:
    """detections, classification, or the field's type name (for messages)."""
    import fiftyone.core.labels as fol

    if not dataset.has_sample_field(field):
        return "no"
    schema_field = dataset.get_field(field)
    doc_type = getattr(schema_field, "document_type", None)
    if doc_type is not None and issubclass(doc_type, fol.Detections):
        return "detections"
    if doc_type is not None and issubclass(doc_type, fol.Classification):
        return "classification"
    return doc_type.__name__ if doc_type is not None else type(schema_field).__name__


def _kind_name(kind: str) -> str:
    return {"detections": "Detections", "classification": "Classification"}.get(kind, kind)


def _label_count(labeled, label_field: str, kind: str) -> int:
    return labeled.count(f"{label_field}.detections") if kind == "detections" else len(labeled)
