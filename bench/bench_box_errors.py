"""Box-level label errors on the example's canvases with planted errors: ours vs cleanlab ObjectLab and FiftyOne Brain.

Data, per seed: ``N_CANVASES`` regular canvases of the bundled example (``generate_canvases(ExampleSpec(seed=seed))``,
no near-duplicates or outliers), whose true boxes and classes are the truth. Errors are planted on the true labels,
each true box getting at most one, ``ERROR_RATE`` of the true boxes for each kind (seeded, ``plant_errors``):
- missing: the box is dropped from the labels;
- mislocated: the box is shifted or resized until its IoU with the truth is in ``MISLOCATED_IOU`` (0.2..0.6);
- swapped: the box's class becomes another class, uniformly;
- duplicate: a second copy of the box, jittered (IoU with it >= 0.7), right after it in the sample's labels (the
  later of a pair is the suspect the contract names: the two copies are interchangeable);
- spurious: as many boxes as ``ERROR_RATE`` of the true boxes, of digit size, over background (no overlap with any
  true box), class drawn with the example's class weights.

Predictions: out-of-fold from the example's detector (``HogDigitDetector``): the canvases split into ``FOLDS`` folds,
the detector fit on the noisy labels of the other folds and run on the held-out fold with
``threshold=DETECT_THRESHOLD`` (well below its learned threshold: ObjectLab asks for low-confidence boxes too). Every method gets these same predictions, each in its own format:
- ``ours``: ``curate_loop.box_errors.score_box_errors`` with its default settings (relative xywh boxes, the
  detection confidence, and the detector's class probabilities over the digits);
- ``objectlab``: cleanlab's ``cleanlab.object_detection.rank`` with its defaults, pixel [x1, y1, x2, y2] boxes, one
  array per class: ``compute_overlooked_box_scores`` / ``compute_badloc_box_scores`` / ``compute_swap_box_scores``
  per box and ``get_label_quality_scores`` per sample (all "lower = worse": we rank by 1 - score, NaN = not a
  suspect); it has no spurious or duplicate score (null);
- ``brain``: FiftyOne Brain's ``compute_mistakenness`` (``use_logits=False``, its default) on a temporary FiftyOne
  dataset of the same canvases and boxes (``fo.Detections``, relative boxes and confidence) in a throwaway database
  (its own mongod in a temporary folder). Its best rankings: mislocated = ``mistakenness_loc`` of the labels, swapped = their ``mistakenness``
  (unmatched labels, which carry neither, rank last), spurious = ``possible_spurious`` (a flag), overlooked =
  ``possible_missing`` (a flag) with ties broken by the prediction's confidence; no duplicate score (null).

Metrics per error kind: average precision (``sklearn.metrics.average_precision_score``) over the labels (mislocated,
spurious, duplicate, swapped: positives are the planted ones) or over the predictions (overlooked: positives are the
predictions with IoU >= 0.5 with a dropped true box); per sample, the AP of ranking samples that carry any planted
error (ours and ObjectLab). Means and standard deviations over the seeds; ours - each anchor per kind.
Target (issue 18): ours >= both anchors on every kind, and >= ObjectLab + 0.05 on the per-sample ranking.

Ours is not tuned here: its settings were chosen on tuning seeds the bench does not report (``TUNING_SEED``), run
with ``python -m bench.bench_box_errors --tuning``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

SEEDS = tuple(range(int(os.environ.get("CURATE_LOOP_BENCH_SEEDS", "3"))))
# Our settings and score design were chosen on seeds 100 (150 canvases, 10% per kind, 3 folds, threshold 0.05),
# 101 (120 canvases, 6%, 3 folds, threshold 0.1) and 102 (the settings below); ``--tuning`` reruns seed 102.
TUNING_SEED = 102
# 80 canvases (~250 true boxes) in 2 folds: making them and the detector's two fits take ~1 min a seed on two loaded
# cores (3 folds of 120 canvases took 3.7 min a seed there: with Brain's ~2 min a seed, the 10-minute budget allows
# no more). Each detector sees 40 canvases.
N_CANVASES = int(os.environ.get("CURATE_LOOP_BENCH_BOX_CANVASES", "80"))
FOLDS = 2  # the model step's default is 3; 2 halves the fitting
# Of the true boxes, for each kind (the issue asks 5-20%): with 5 kinds, ~40% of the boxes carry an error and ~77%
# of the canvases at least one (measured: 59-63 of 80), so the per-sample ranking still has clean canvases to rank.
ERROR_RATE = 0.08
MISLOCATED_IOU = (0.2, 0.6)
DUPLICATE_MIN_IOU = 0.7
# Well below the detector's learned threshold (~0.93): ~57 boxes a canvas. Lower floors were measured on the tuning
# seeds: at 0.1 (~77 boxes a canvas) ObjectLab's and our APs moved by < 0.02 except our spurious (+0.15 on seed 101),
# but FiftyOne Brain took 2.4 s a canvas and pass (it saves sample by sample, and mongoengine's change tracking grows
# with the square of the boxes in a sample): out of the time budget. ObjectLab itself ignores boxes below 0.5.
DETECT_THRESHOLD = 0.5
MATCH_IOU = 0.5  # a prediction finds a dropped box (COCO)
KINDS = ("overlooked", "mislocated", "spurious", "duplicate", "swapped")
LABEL_KINDS = KINDS[1:]
METHODS = ("ours", "objectlab", "brain")
NO_SCORE = {"objectlab": ("spurious", "duplicate"), "brain": ("duplicate",)}
SAMPLE_METHODS = ("ours", "objectlab")
SAMPLE_MARGIN = 0.05


@dataclass
class Case:
    """One seed's canvases, noisy labels (flat, relative xywh) and what was planted."""

    images: list[np.ndarray]
    sample: np.ndarray  # (n,) canvas of each noisy label
    boxes: np.ndarray  # (n, 4)
    classes: np.ndarray  # (n,)
    planted: np.ndarray  # (n,) object: None or the kind planted on that label
    dropped_sample: np.ndarray  # (k,) canvases of the dropped (missing) true boxes
    dropped_boxes: np.ndarray  # (k, 4)
    n_true: int


@dataclass
class Predictions:
    sample: np.ndarray
    boxes: np.ndarray  # (m, 4) relative xywh
    pixel_boxes: np.ndarray  # (m, 4) pixel x0, y0, x1, y1
    classes: np.ndarray
    confidences: np.ndarray
    log_probs: np.ndarray  # (m, 10)


# --------------------------------------------------------------------------------------------- data
def make_case(seed: int, n_canvases: int = N_CANVASES) -> Case:
    from curate_loop.examples.digits_canvas import ExampleSpec, generate_canvases

    spec = ExampleSpec(n_labeled=n_canvases, n_pool=0, n_near_dup_groups=0, n_outliers=0, seed=seed, label_noise=0.0)
    canvases = generate_canvases(spec)
    return plant_errors(canvases, seed)


def plant_errors(canvases, seed: int) -> Case:
    """The noisy labels of ``canvases``: ``ERROR_RATE`` of the true boxes per kind, each box at most one error."""
    from curate_loop.box_errors.geometry import box_iou
    from curate_loop.examples.digits_canvas import CLASS_NAMES, CLASS_WEIGHTS

    rng = np.random.default_rng([seed, 18])
    truth = [(c, o.box, CLASS_NAMES.index(o.label)) for c, canvas in enumerate(canvases) for o in canvas.objects]
    n_true = len(truth)
    n_each = int(round(ERROR_RATE * n_true))
    order = rng.permutation(n_true)
    kind_of = {}
    for k, kind in enumerate(("missing", "mislocated", "swapped", "duplicate")):
        for i in order[k * n_each:(k + 1) * n_each]:
            kind_of[int(i)] = kind
    rows = []  # (canvas, box, class, planted)
    dropped = []
    for i, (c, box, cls) in enumerate(truth):
        kind = kind_of.get(i)
        box = np.asarray(box, dtype=np.float64)
        if kind == "missing":
            dropped.append((c, box))
        elif kind == "mislocated":
            rows.append((c, _mislocate(rng, box), cls, "mislocated"))
        elif kind == "swapped":
            rows.append((c, box, int((cls + rng.integers(1, len(CLASS_NAMES))) % len(CLASS_NAMES)), "swapped"))
        elif kind == "duplicate":
            rows.append((c, box, cls, None))
            rows.append((c, _jitter(rng, box), cls, "duplicate"))
        else:
            rows.append((c, box, cls, None))
    true_boxes_of = {}
    for c, box, _ in truth:
        true_boxes_of.setdefault(c, []).append(box)
    n_spurious = 0
    while n_spurious < n_each:
        c = int(rng.integers(len(canvases)))
        box = _background_box(rng, canvases[c].image.shape, np.array(true_boxes_of.get(c, [])).reshape(-1, 4),
                              box_iou)
        if box is not None:
            rows.append((c, box, int(rng.choice(len(CLASS_NAMES), p=CLASS_WEIGHTS)), "spurious"))
            n_spurious += 1
    rows.sort(key=lambda row: row[0])  # stable: within a canvas, the planted order (a duplicate after its original)
    return Case(images=[canvas.image for canvas in canvases],
                sample=np.array([r[0] for r in rows]), boxes=np.array([r[1] for r in rows]).reshape(-1, 4),
                classes=np.array([r[2] for r in rows]), planted=np.array([r[3] for r in rows], dtype=object),
                dropped_sample=np.array([d[0] for d in dropped], dtype=np.int64),
                dropped_boxes=np.array([d[1] for d in dropped]).reshape(-1, 4), n_true=n_true)


def _inside(box: np.ndarray) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= 1 and box[1] + box[3] <= 1


def _mislocate(rng, box: np.ndarray) -> np.ndarray:
    """``box`` shifted or resized (half the time each) until its IoU with ``box`` is in MISLOCATED_IOU."""
    from curate_loop.box_errors.geometry import paired_iou

    for _ in range(200):
        if rng.random() < 0.5:
            moved = box + np.r_[rng.uniform(-0.8, 0.8, 2) * box[2:], 0, 0]
        else:
            scale = rng.uniform(0.35, 2.5, 2)
            anchor = rng.uniform(0, 1, 2)  # which point of the box stays put
            size = box[2:] * scale
            moved = np.r_[box[:2] + anchor * (box[2:] - size), size]
        iou = paired_iou(box[None], moved[None])[0]
        if MISLOCATED_IOU[0] <= iou <= MISLOCATED_IOU[1] and _inside(moved):
            return moved
    return np.r_[box[0] + 0.5 * box[2], box[1:]] if _inside(np.r_[box[0] + 0.5 * box[2], box[1:]]) else \
        np.r_[box[0] - 0.5 * box[2], box[1:]]


def _jitter(rng, box: np.ndarray) -> np.ndarray:
    """A slightly moved and resized copy of ``box`` (IoU >= DUPLICATE_MIN_IOU), inside the image."""
    from curate_loop.box_errors.geometry import paired_iou

    for _ in range(200):
        copy = np.r_[box[:2] + rng.uniform(-0.08, 0.08, 2) * box[2:], box[2:] * rng.uniform(0.9, 1.1, 2)]
        if paired_iou(box[None], copy[None])[0] >= DUPLICATE_MIN_IOU and _inside(copy):
            return copy
    return box.copy()


def _background_box(rng, shape, true_boxes: np.ndarray, box_iou) -> np.ndarray | None:
    """A digit-sized box that overlaps no true box of the canvas, or None after a few tries."""
    from curate_loop.examples.digits_canvas import DIGIT_SIZE_RANGE

    height, width = shape[:2]
    for _ in range(30):
        h = rng.uniform(*DIGIT_SIZE_RANGE) / height
        w = h * height * rng.uniform(0.45, 0.85) / width
        box = np.array([rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h])
        if len(true_boxes) == 0 or box_iou(box[None], true_boxes).max() == 0:
            return box
    return None


# --------------------------------------------------------------------------------------------- predictions
def out_of_fold_predictions(case: Case, seed: int) -> Predictions:
    """The detector's boxes on every canvas, each from a detector fit on the other folds' noisy labels."""
    from curate_loop.examples.detector import HogDigitDetector

    n = len(case.images)
    fold = np.random.default_rng([seed, 3]).permutation(n) % FOLDS
    sizes = np.array([image.shape[:2] for image in case.images], dtype=np.float64)  # (h, w)
    parts = []
    for k in range(FOLDS):
        train, test = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        boxes, labels = [], []
        for i in train:
            rows = case.sample == i
            h, w = sizes[i]
            rel = case.boxes[rows]
            boxes.append(np.c_[rel[:, 0] * w, rel[:, 1] * h, (rel[:, 0] + rel[:, 2]) * w, (rel[:, 1] + rel[:, 3]) * h])
            labels.append(case.classes[rows])
        detector = HogDigitDetector().fit([case.images[i] for i in train], boxes, labels)
        found = detector.detect([case.images[i] for i in test], threshold=DETECT_THRESHOLD)
        parts.append((test[found.image_index], found))
    sample = np.concatenate([p[0] for p in parts])
    pixel = np.concatenate([p[1].boxes for p in parts])
    h, w = sizes[sample, 0], sizes[sample, 1]
    x0, x1 = np.clip(pixel[:, 0], 0, w), np.clip(pixel[:, 2], 0, w)
    y0, y1 = np.clip(pixel[:, 1], 0, h), np.clip(pixel[:, 3], 0, h)
    order = np.argsort(sample, kind="stable")
    rel = np.c_[x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h]
    return Predictions(sample[order], rel[order], np.c_[x0, y0, x1, y1][order],
                       np.concatenate([p[1].labels for p in parts])[order],
                       np.clip(np.concatenate([p[1].confidences for p in parts])[order], 0, 1),
                       np.concatenate([p[1].log_probs for p in parts])[order])


def overlooked_truth(case: Case, pred: Predictions) -> np.ndarray:
    """(m,) bool: the prediction finds a dropped true box (IoU >= MATCH_IOU, any class)."""
    from curate_loop.box_errors.geometry import paired_iou, pairs_within_samples

    n = len(case.images)
    ip, idrop = pairs_within_samples(pred.sample, case.dropped_sample, n)
    hit = paired_iou(pred.boxes[ip], case.dropped_boxes[idrop]) >= MATCH_IOU
    out = np.zeros(len(pred.sample), dtype=bool)
    out[ip[hit]] = True
    return out


# --------------------------------------------------------------------------------------------- methods
def score_ours(case: Case, pred: Predictions) -> dict[str, np.ndarray]:
    from curate_loop.box_errors import BoxSet, score_box_errors

    labels = BoxSet(case.sample, case.boxes, case.classes)
    predictions = BoxSet(pred.sample, pred.boxes, pred.classes, pred.confidences, np.exp(pred.log_probs))
    result = score_box_errors(labels, predictions, len(case.images), 10)
    out = {kind: getattr(result, kind) for kind in KINDS}
    out["sample"] = result.sample_score
    return out


def score_objectlab(case: Case, pred: Predictions) -> dict[str, np.ndarray]:
    """ObjectLab's per-box and per-sample scores with its defaults, as "higher = worse" arrays in our order."""
    from cleanlab.object_detection.rank import (compute_badloc_box_scores, compute_overlooked_box_scores,
                                                compute_swap_box_scores, get_label_quality_scores)

    n = len(case.images)
    sizes = np.array([image.shape[:2] for image in case.images], dtype=np.float64)
    labels, predictions, pred_rows = [], [], []
    for i in range(n):
        rows = np.flatnonzero(case.sample == i)
        h, w = sizes[i]
        rel = case.boxes[rows]
        labels.append({"bboxes": np.c_[rel[:, 0] * w, rel[:, 1] * h, (rel[:, 0] + rel[:, 2]) * w,
                                       (rel[:, 1] + rel[:, 3]) * h].reshape(-1, 4),
                       "labels": case.classes[rows]})
        mine = np.flatnonzero(pred.sample == i)
        per_class = [mine[pred.classes[mine] == k] for k in range(10)]
        predictions.append([np.c_[pred.pixel_boxes[idx], pred.confidences[idx]].reshape(-1, 5)
                            for idx in per_class])
        pred_rows.append(np.concatenate(per_class))  # ObjectLab lists a sample's boxes class by class
    out = {}
    per_label = {"mislocated": compute_badloc_box_scores(labels=labels, predictions=predictions),
                 "swapped": compute_swap_box_scores(labels=labels, predictions=predictions)}
    for kind, scores in per_label.items():
        flat = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores])
        out[kind] = np.nan_to_num(1.0 - flat, nan=-1.0)
    overlooked = compute_overlooked_box_scores(labels=labels, predictions=predictions)
    flat = np.full(len(pred.sample), -1.0)
    for rows, scores in zip(pred_rows, overlooked):
        flat[rows] = np.nan_to_num(1.0 - np.asarray(scores, dtype=np.float64), nan=-1.0)
    out["overlooked"] = flat
    out["sample"] = 1.0 - get_label_quality_scores(labels, predictions, verbose=False)
    return out


class BrainMistakenness:
    """``compute_mistakenness`` on a temporary FiftyOne dataset of the canvases (a throwaway database)."""

    def __init__(self):
        self.error = None
        try:
            self.fo, self.fob = _throwaway_fiftyone()
            self.fo.config.show_progress_bars = False
        except Exception as exc:  # recorded in the BENCH line: the other methods still run
            self.error = f"{type(exc).__name__}: {exc}"

    def scores(self, case: Case, pred: Predictions, seed: int) -> dict[str, np.ndarray] | str:
        if self.error:
            return self.error
        fo = self.fo
        dataset = fo.Dataset(f"bench-box-errors-{os.getpid()}-{seed}")  # not persistent: gone with the process
        try:
            n = len(case.images)
            dataset.add_samples([fo.Sample(filepath=f"/bench/canvas-{seed}-{i:04d}.png") for i in range(n)],
                                progress=False)
            gt, preds = [], []
            for i in range(n):
                rows = np.flatnonzero(case.sample == i)
                gt.append(fo.Detections(detections=[
                    fo.Detection(label=str(case.classes[r]), bounding_box=case.boxes[r].tolist(), row=int(r))
                    for r in rows]))
                rows = np.flatnonzero(pred.sample == i)
                preds.append(fo.Detections(detections=[
                    fo.Detection(label=str(pred.classes[r]), bounding_box=pred.boxes[r].tolist(),
                                 confidence=float(pred.confidences[r]), row=int(r))  # use_logits=False: no logits
                    for r in rows]))
            dataset.set_values("ground_truth", gt)
            dataset.set_values("predictions", preds)
            self.fob.compute_mistakenness(dataset, "predictions", label_field="ground_truth", progress=False)
            out = {}
            label_rows = _flat(dataset.values("ground_truth.detections.row"))
            for kind, field, missing in (("mislocated", "mistakenness_loc", -1.0), ("swapped", "mistakenness", -1.0),
                                         ("spurious", "possible_spurious", 0.0)):
                values = _flat(dataset.values(f"ground_truth.detections.{field}"))
                scores = np.full(len(case.sample), missing)
                scores[np.asarray(label_rows, dtype=np.int64)] = [missing if v is None else float(v) for v in values]
                out[kind] = scores
            pred_rows = np.asarray(_flat(dataset.values("predictions.detections.row")), dtype=np.int64)
            flags = _flat(dataset.values("predictions.detections.possible_missing"))
            overlooked = np.zeros(len(pred.sample))
            overlooked[pred_rows] = [float(bool(v)) for v in flags]
            out["overlooked"] = overlooked + 1e-3 * pred.confidences  # flags first, then by confidence
            return out
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        finally:
            dataset.delete()

    def close(self) -> None:
        if not self.error:
            import fiftyone.core.odm.database as fodb

            fodb.get_db_conn().client.drop_database(self.fo.config.database_name)


def _throwaway_fiftyone():
    """FiftyOne on a database of the bench's own (dropped at the end), on a mongod of its own (bench/throwaway_db.py)."""
    from bench.throwaway_db import use_throwaway_database

    use_throwaway_database("box-errors")
    import fiftyone as fo
    import fiftyone.brain as fob

    logging.getLogger("fiftyone").setLevel(logging.WARNING)
    return fo, fob


def _flat(nested) -> list:
    return [v for sample in nested for v in (sample or [])]


# --------------------------------------------------------------------------------------------- metrics
def kind_truth(case: Case, pred: Predictions) -> dict[str, np.ndarray]:
    truth = {kind: case.planted == kind for kind in LABEL_KINDS}
    truth["overlooked"] = overlooked_truth(case, pred)
    n = len(case.images)
    bad = np.zeros(n, dtype=bool)
    bad[case.sample[case.planted != None]] = True  # noqa: E711 (an object array)
    bad[case.dropped_sample] = True
    truth["sample"] = bad
    return truth


def average_precision(truth: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(truth, score)) if truth.any() else float("nan")


def run_seed(seed: int, brain: BrainMistakenness | None) -> dict:
    started = time.perf_counter()
    case = make_case(seed)
    pred = out_of_fold_predictions(case, seed)
    seconds = {"data_and_predictions": time.perf_counter() - started}
    truth = kind_truth(case, pred)
    scores, errors = {}, {}
    for method, fn in (("ours", lambda: score_ours(case, pred)), ("objectlab", lambda: score_objectlab(case, pred)),
                       ("brain", lambda: brain.scores(case, pred, seed) if brain else "not run")):
        started = time.perf_counter()
        result = fn()
        seconds[method] = time.perf_counter() - started
        if isinstance(result, str):
            errors[method] = result
        else:
            scores[method] = result
    ap = {method: {kind: (average_precision(truth[kind], s[kind]) if kind in s else None)
                   for kind in (*KINDS, "sample")} for method, s in scores.items()}
    counts = {kind: int(truth[kind].sum()) for kind in (*KINDS, "sample")}
    counts.update(labels=len(case.sample), predictions=len(pred.sample), true_boxes=case.n_true,
                  dropped=len(case.dropped_sample), canvases=len(case.images))
    return {"seed": seed, "ap": ap, "counts": counts, "errors": errors, "seconds": seconds}


def summarise(runs: list[dict]) -> dict:
    def stats(method, kind):
        values = [r["ap"].get(method, {}).get(kind) for r in runs]
        values = [v for v in values if v is not None and not np.isnan(v)]
        if not values:
            return None
        return {"mean": round(float(np.mean(values)), 4), "std": round(float(np.std(values)), 4)}

    methods = {m: {k: (None if k in NO_SCORE.get(m, ()) else stats(m, k)) for k in KINDS} for m in METHODS}
    sample_ap = {m: stats(m, "sample") for m in SAMPLE_METHODS}
    margins, checks = {}, []
    for kind in KINDS:
        ours = methods["ours"][kind]
        for anchor in ("objectlab", "brain"):
            theirs = methods[anchor][kind]
            if ours is None or theirs is None:
                continue
            margins[f"{kind}_vs_{anchor}"] = round(ours["mean"] - theirs["mean"], 4)
            checks.append(ours["mean"] >= theirs["mean"])
    if sample_ap["ours"] and sample_ap["objectlab"]:
        margins["sample_vs_objectlab"] = round(sample_ap["ours"]["mean"] - sample_ap["objectlab"]["mean"], 4)
        checks.append(margins["sample_vs_objectlab"] >= SAMPLE_MARGIN)
    else:
        checks.append(False)
    errors = {m: e for r in runs for m, e in r["errors"].items()}
    return {
        "name": "box_errors",
        "seeds": [r["seed"] for r in runs],
        "data": {"canvases_per_seed": N_CANVASES, "error_rate_per_kind": ERROR_RATE, "folds": FOLDS,
                 "detect_threshold": DETECT_THRESHOLD, "counts_per_seed": [r["counts"] for r in runs]},
        "ap": methods,
        "sample_ap": sample_ap,
        "ours_minus_anchor": margins,
        "null": {"objectlab": "no spurious or duplicate score", "brain": "no duplicate score"},
        "brain_rankings": {"mislocated": "mistakenness_loc", "swapped": "mistakenness", "spurious": "possible_spurious",
                           "overlooked": "possible_missing, ties by confidence"},
        "errors": errors,
        "seconds_per_seed": {k: round(float(np.mean([r["seconds"].get(k, 0) for r in runs])), 2)
                             for k in ("data_and_predictions", *METHODS)},
        "target": "ours AP >= ObjectLab and Brain on every kind; per-sample AP >= ObjectLab + 0.05",
        "pass": bool(errors == {} and all(checks)),
    }


def main(seeds: tuple[int, ...] = SEEDS) -> dict:
    from threadpoolctl import threadpool_limits

    logging.getLogger("curate_loop").setLevel(logging.WARNING)
    brain = BrainMistakenness()
    runs = []
    try:
        with threadpool_limits(1), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for seed in seeds:
                runs.append(run_seed(seed, brain))
                print(f"seed {seed}: " + json.dumps({k: runs[-1][k] for k in ("ap", "seconds")}), flush=True)
    finally:
        brain.close()
    line = summarise(runs)
    print("BENCH " + json.dumps(line), flush=True)
    return line


if __name__ == "__main__":
    main((TUNING_SEED,) if "--tuning" in sys.argv[1:] else SEEDS)
