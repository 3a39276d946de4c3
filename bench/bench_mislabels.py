"""Mislabel detection on real digit images with injected label noise: ours vs cleanlab and FiftyOne Brain.

Data: scikit-learn's digits (1,797 8x8 images, 10 classes), each image standing for one object's crop; features
computed from the pixels: PCA to 32 dimensions (fitted on all images, no labels involved), as in the issue's
reference, and HOG (as in ``bench_curation_quality``), a feature set the detector's defaults were not tuned on.
Noise (``bench.noise``), per seed, on an exact number of rows, at 10/25/40%:
- symmetric r: round(r * n) rows chosen at random get a different class, uniformly among the other nine;
- pair-flip r: in every class c, round(r * n_c) rows chosen at random become c + 1 (mod 10): the class-level
  structure the detector's EM models;
- instance r: in every class c, the round(r * n_c) rows nearest to another class's centroid (smallest
  d(nearest other centroid) - d(own), plus a small seeded jitter) flip to that class. Distances are in the pixel
  PCA-32 space for both feature sets, so PCA-32 and HOG get the same noisy labels; the noise follows the images,
  not a class-level matrix, and sits where classes overlap (at 40% up to 60% of one given label is wrong).
``CURATE_LOOP_BENCH_SEEDS`` seeds (default 5). The detector's defaults were chosen on PCA-32 pair-flip and symmetric
noise and are not retuned here: the HOG and instance lines are the checks on what they were not chosen on.

Methods, all on the same features and the same noisy labels:
- ``ours``: ``curate_loop.mislabels.detect_mislabels`` with its defaults (score = 1 - P(true = given));
- ``knn_vote``: the plain leave-one-out kNN vote inside ours (1 - its ``given_prob``), for reference;
- ``cleanlab_datalab`` / ``cleanlab_datalab_k20``: ``Datalab(...).find_issues(features=X, issue_types={"label":
  {"k": k}})`` with k = 10 (its default) / 20, 1 - ``label_score`` (a leave-one-out k-NN vote);
- ``cleanlab_knn_normalized_margin``: ``cleanlab.rank.get_label_quality_scores(method="normalized_margin")`` on
  5-fold out-of-sample probabilities of a 10-NN cosine classifier (``KNeighborsClassifier``);
- ``cleanlab_logreg_self_confidence`` / ``cleanlab_logreg_normalized_margin``: the same function with
  ``method="self_confidence"`` / ``"normalized_margin"`` on 5-fold out-of-sample probabilities of a logistic
  regression (``StandardScaler`` then ``LogisticRegression(C=LOGREG_C[feature set], max_iter=1000)``, L2, lbfgs,
  multinomial): cleanlab's documented input, a trained classifier's out-of-sample probabilities. C is strong
  regularisation picked in cleanlab's favour on this data (``LOGREG_C``); ours keeps its defaults;
- ``brain_logits`` / ``brain_confidence``: FiftyOne Brain's ``compute_mistakenness`` on the 10-NN 5-fold
  predictions (``Classification`` with logits = log(p), confidence = max p; ground truth = the noisy labels),
  with ``use_logits`` True / False, on PCA-32 only (5 s a run). It runs in a throwaway FiftyOne database
  (``curate-loop-bench-<pid>``, on a mongod in ``<curate-loop home>/bench/mongodb``), dropped at the end; a
  failure is recorded as its error text.
The 5-fold splits are stratified on the noisy labels, shuffled with the noise seed.

Metrics (mislabeled = positive, higher score = more suspect): AUROC, average precision (AP), precision@k (k = the
true number of errors) and recall in the top 5% of the ranking; means over seeds. For ours also the largest error
of the estimated noise matrix P(given | true) against the one the noise was drawn from (for instance noise, the
realised one), and the estimated noise rate. One ``BENCH`` line per feature set and noise setting, with ours - best
cleanlab AP (the best of all five cleanlab variants in that setting by mean AP; mean and paired standard error),
then one overall line with every cell and the worst and the best cell. Target (issue 5): AP >= the best cleanlab
variant in every setting, and >= best + 0.10 at pair-flip 40%. Issue 5's reference (AP, PCA-32, 10-NN baselines):
symmetric ~.98 for all; pair-flip 20% (a rate no longer run) kNN vote .91, Datalab .93, normalized margin .96;
pair-flip 40% .66-.70 for every method.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings

import numpy as np

from bench.noise import KINDS as NOISE_KINDS
from bench.noise import inject_noise, noise_matrix

SEEDS = tuple(range(int(os.environ.get("CURATE_LOOP_BENCH_SEEDS", "5"))))
SETTINGS = tuple((kind, rate) for kind in NOISE_KINDS for rate in (0.1, 0.25, 0.4))
N_CLASSES = 10
PCA_DIMS = 32
CV_FOLDS = 5
CV_NEIGHBORS = 10  # cleanlab's Datalab default k; the 5-fold classifier uses the same
DATALAB_KS = {"cleanlab_datalab": 10, "cleanlab_datalab_k20": 20}
# Set in the baseline's favour: the C from {0.0003, 0.001, 0.003, 0.01, 0.1, 1} that gave cleanlab's two logreg
# scores their best mean AP on seed 0 at 25% noise (all three kinds; an interior optimum for both feature sets).
# scikit-learn's default C = 1 fits the noisy labels: overconfident out-of-sample probabilities, AP up to .41 lower.
LOGREG_C = {"pca32": 0.01, "hog": 0.001}
LOGREG_MAX_ITER = 1000
REVIEW_BUDGET = 0.05  # recall in the top 5% of the ranking
TARGET_MARGIN = {("pairflip", 0.4): 0.10}  # AP over the best cleanlab variant; 0 elsewhere
CLEANLAB = tuple(DATALAB_KS) + ("cleanlab_knn_normalized_margin", "cleanlab_logreg_self_confidence",
                               "cleanlab_logreg_normalized_margin")
METHODS = ("ours", "knn_vote") + CLEANLAB + ("brain_logits", "brain_confidence")
METRICS = ("ap", "auroc", "precision_at_k", "recall_top5pct")


def digits_features() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """PCA-32 and HOG of the digit pixels (one row per digit image, i.e. per object crop), and the true class."""
    from sklearn.decomposition import PCA

    from bench.bench_curation_quality import digits_features as pixels_and_hog

    features, y = pixels_and_hog()
    pca = PCA(PCA_DIMS, random_state=0).fit_transform(features["pixels"])
    return {"pca32": pca.astype(np.float32), "hog": features["hog"]}, y


def ranking_metrics(is_error: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    order = np.argsort(-score, kind="stable")
    n_errors = int(is_error.sum())
    budget = round(REVIEW_BUDGET * len(score))
    return {"ap": float(average_precision_score(is_error, score)), "auroc": float(roc_auc_score(is_error, score)),
            "precision_at_k": float(is_error[order[:n_errors]].mean()),
            "recall_top5pct": float(is_error[order[:budget]].sum() / n_errors)}


def out_of_sample_probs(x: np.ndarray, noisy: np.ndarray, seed: int, classifier: str,
                        logreg_c: float = 1.0) -> np.ndarray:
    """(n, C) 5-fold out-of-sample class probabilities of ``knn`` (10-NN cosine) or ``logreg`` (standardised
    features, L2 logistic regression with inverse strength ``logreg_c``) trained on the noisy labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    models = {"knn": lambda: KNeighborsClassifier(CV_NEIGHBORS, metric="cosine"),
              "logreg": lambda: make_pipeline(StandardScaler(),
                                              LogisticRegression(C=logreg_c, max_iter=LOGREG_MAX_ITER))}
    folds = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=seed)
    return cross_val_predict(models[classifier](), x, noisy, cv=folds, method="predict_proba")


def score_ours(x, noisy) -> tuple[dict[str, np.ndarray], object]:
    from curate_loop.mislabels import detect_mislabels

    result = detect_mislabels(x, noisy)
    return {"ours": result.score, "knn_vote": 1.0 - result.given_prob}, result


def score_datalab(x, noisy, k: int) -> np.ndarray:
    from cleanlab import Datalab

    lab = Datalab(data={"label": noisy}, label_name="label", verbosity=0)
    lab.find_issues(features=x, issue_types={"label": {"k": k}})
    return 1.0 - lab.get_issues("label")["label_score"].to_numpy()


def score_label_quality(noisy, probs, method: str) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    return 1.0 - get_label_quality_scores(noisy, probs, method=method)


class BrainMistakenness:
    """``compute_mistakenness`` over one throwaway dataset of n samples, relabeled for each run."""

    def __init__(self, n: int):
        self.error = None
        try:
            self.fo, self.fob = _import_fiftyone_in_throwaway_db()
            self.fo.config.show_progress_bars = False
            self.dataset = self.fo.Dataset(f"bench-mislabels-{os.getpid()}")
            self.dataset.add_samples([self.fo.Sample(filepath=f"/bench/digit-{i:05d}.png") for i in range(n)],
                                     progress=False)
        except Exception as exc:  # recorded in the BENCH line: the other methods still run
            self.error = f"{type(exc).__name__}: {exc}"

    def scores(self, noisy: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray | str]:
        if self.error:
            return {"brain_logits": self.error, "brain_confidence": self.error}
        fo = self.fo
        self.dataset.set_values("ground_truth", [fo.Classification(label=str(c)) for c in noisy])
        logits = np.log(np.clip(probs, 1e-6, None))
        self.dataset.set_values("predictions", [
            fo.Classification(label=str(int(p.argmax())), confidence=float(p.max()), logits=lg.tolist())
            for p, lg in zip(probs, logits)])
        out = {}
        for name, use_logits in (("brain_logits", True), ("brain_confidence", False)):
            try:
                field = f"mistakenness_{name}"
                self.fob.compute_mistakenness(self.dataset, "predictions", label_field="ground_truth",
                                              mistakenness_field=field, use_logits=use_logits, progress=False)
                out[name] = np.asarray(self.dataset.values(field), dtype=np.float64)
                self.dataset.delete_brain_run(field)
            except Exception as exc:
                out[name] = f"{type(exc).__name__}: {exc}"
        return out

    def close(self) -> None:
        if not self.error:
            import fiftyone.core.odm.database as fodb

            self.dataset.delete()
            fodb.get_db_conn().client.drop_database(self.fo.config.database_name)


def _import_fiftyone_in_throwaway_db():
    """FiftyOne on a database of the bench's own, never the user's (set before FiftyOne is imported)."""
    from bench.throwaway_db import use_throwaway_database

    use_throwaway_database("mislabels")
    import fiftyone as fo
    import fiftyone.brain as fob

    logging.getLogger("fiftyone").setLevel(logging.WARNING)  # one "Computing mistakenness..." line per run
    return fo, fob


def run_setting(feature_set: str, kind: str, rate: float, x: np.ndarray, y: np.ndarray, space: np.ndarray,
                brain: BrainMistakenness | None) -> dict:
    per_method = {m: {metric: [] for metric in METRICS} for m in METHODS}
    seconds = {m: [] for m in ("ours", *DATALAB_KS, "cleanlab_knn", "cleanlab_logreg", "brain")}
    errors, matrix_error, estimated_rate = {}, [], []
    for seed in SEEDS:
        noisy = inject_noise(y, kind, rate, seed, space=space, n_classes=N_CLASSES)
        is_error = noisy != y
        started = time.perf_counter()
        scores, result = score_ours(x, noisy)
        seconds["ours"].append(time.perf_counter() - started)
        truth = noise_matrix(y, noisy, kind, rate, N_CLASSES)
        matrix_error.append(float(np.abs(result.noise_matrix - truth).max()))
        estimated_rate.append(result.estimated_noise_rate)
        for name, k in DATALAB_KS.items():
            started = time.perf_counter()
            scores[name] = score_datalab(x, noisy, k)
            seconds[name].append(time.perf_counter() - started)
        started = time.perf_counter()
        knn_probs = out_of_sample_probs(x, noisy, seed, "knn")
        scores["cleanlab_knn_normalized_margin"] = score_label_quality(noisy, knn_probs, "normalized_margin")
        seconds["cleanlab_knn"].append(time.perf_counter() - started)
        started = time.perf_counter()
        logreg_probs = out_of_sample_probs(x, noisy, seed, "logreg", LOGREG_C[feature_set])
        for method in ("self_confidence", "normalized_margin"):
            scores[f"cleanlab_logreg_{method}"] = score_label_quality(noisy, logreg_probs, method)
        seconds["cleanlab_logreg"].append(time.perf_counter() - started)
        if brain is not None:
            started = time.perf_counter()
            scores.update(brain.scores(noisy, knn_probs))
            seconds["brain"].append(time.perf_counter() - started)
        for method, score in scores.items():
            if isinstance(score, str):
                errors[method] = score
                continue
            for metric, value in ranking_metrics(is_error, score).items():
                per_method[method][metric].append(value)
    return summarise(feature_set, kind, rate, per_method, seconds, errors, matrix_error, estimated_rate)


def summarise(feature_set, kind, rate, per_method, seconds, errors, matrix_error, estimated_rate) -> dict:
    means = {m: {metric: round(float(np.mean(v)), 4) for metric, v in per_method[m].items()}
             for m in METHODS if m not in errors and per_method[m]["ap"]}
    best = max(CLEANLAB, key=lambda m: means[m]["ap"])
    diff = np.subtract(per_method["ours"]["ap"], per_method[best]["ap"])
    margin = TARGET_MARGIN.get((kind, rate), 0.0)
    return {
        "name": f"mislabels_digits_{feature_set}_{kind}_{int(round(rate * 100))}",
        "seeds": len(SEEDS),
        "noise": {"kind": kind, "rate": rate},
        "methods": means,
        "errors": errors,
        "best_cleanlab": best,
        "ours_minus_best_cleanlab_ap": round(float(diff.mean()), 4),
        "ours_minus_best_cleanlab_ap_se": round(float(diff.std() / np.sqrt(len(diff))), 4),
        "ours_noise_matrix_max_abs_error": round(float(np.mean(matrix_error)), 4),
        "ours_estimated_noise_rate": round(float(np.mean(estimated_rate)), 4),
        "seconds_per_run": {m: round(float(np.mean(v)), 3) for m, v in seconds.items() if v},
        "target": f"ours AP >= best cleanlab AP + {margin:.2f}",
        "pass": bool(means["ours"]["ap"] >= means[best]["ap"] + margin),
    }


def overall(lines: list[dict]) -> dict:
    """Every cell's ours - best cleanlab AP, and the worst and the best cell with their settings."""
    by_diff = sorted(lines, key=lambda line: line["ours_minus_best_cleanlab_ap"])

    def cell(line: dict) -> dict:
        return {"setting": line["name"], "ours_ap": line["methods"]["ours"]["ap"],
                "best_cleanlab": line["best_cleanlab"],
                "best_cleanlab_ap": line["methods"][line["best_cleanlab"]]["ap"],
                "ours_minus_best_cleanlab_ap": line["ours_minus_best_cleanlab_ap"],
                "ours_minus_best_cleanlab_ap_se": line["ours_minus_best_cleanlab_ap_se"]}

    return {
        "name": "mislabels_digits_overall",
        "seeds": len(SEEDS),
        "worst_cell": cell(by_diff[0]),
        "best_cell": cell(by_diff[-1]),
        "ours_ap": {line["name"]: line["methods"]["ours"]["ap"] for line in lines},
        "best_cleanlab_ap": {line["name"]: line["methods"][line["best_cleanlab"]]["ap"] for line in lines},
        "ours_minus_best_cleanlab_ap": {line["name"]: line["ours_minus_best_cleanlab_ap"] for line in lines},
        "failed": [line["name"] for line in lines if not line["pass"]],
        "target": "ours AP >= best cleanlab AP in every setting, and >= best + 0.10 at pair-flip 40%",
        "pass": all(line["pass"] for line in lines),
    }


def main() -> None:
    from threadpoolctl import threadpool_limits

    features, y = digits_features()
    space = features["pca32"]  # where instance noise measures closeness: the same labels for both feature sets
    brain = BrainMistakenness(len(y))
    lines = []
    try:
        with threadpool_limits(1), warnings.catch_warnings():  # many small fits; cleanlab warns per fold
            warnings.simplefilter("ignore")
            for feature_set, x in features.items():
                for kind, rate in SETTINGS:
                    line = run_setting(feature_set, kind, rate, x, y, space,
                                       brain if feature_set == "pca32" else None)
                    lines.append(line)
                    print("BENCH " + json.dumps(line), flush=True)
    finally:
        brain.close()
    print("BENCH " + json.dumps(overall(lines)), flush=True)


if __name__ == "__main__":
    main()
