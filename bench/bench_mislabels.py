"""Mislabel detection on real digit images with injected label noise: ours vs cleanlab and FiftyOne Brain.

Data: scikit-learn's digits (1,797 8x8 images, 10 classes), each image standing for one object's crop; features
computed from the pixels: PCA to 32 dimensions (fitted on all images, no labels involved), as in the issue's
reference, and HOG (as in ``bench_curation_quality``), a feature set the detector's defaults were not tuned on.
Noise, per seed, on an exact number of rows:
- symmetric r: round(r * n) rows chosen at random get a different class, uniformly among the other nine;
- pair-flip r: in every class c, round(r * n_c) rows chosen at random become c + 1 (mod 10).
Rates 10/20/40%, ``CURATE_LOOP_BENCH_SEEDS`` seeds (default 5).

Methods, all on the same features and the same noisy labels:
- ``ours``: ``curate_loop.mislabels.detect_mislabels`` with its defaults (score = 1 - P(true = given));
- ``knn_vote``: the plain leave-one-out kNN vote inside ours (1 - its ``given_prob``), for reference;
- ``cleanlab_datalab``: ``Datalab(...).find_issues(features=X, issue_types={"label": {}})``, 1 - ``label_score``
  (a leave-one-out 10-NN vote);
- ``cleanlab_normalized_margin``: ``cleanlab.rank.get_label_quality_scores(method="normalized_margin")`` on
  5-fold out-of-sample probabilities of a 10-NN cosine classifier (``KNeighborsClassifier``);
- ``brain_logits`` / ``brain_confidence``: FiftyOne Brain's ``compute_mistakenness`` on those same 5-fold
  predictions (``Classification`` with logits = log(p), confidence = max p; ground truth = the noisy labels),
  with ``use_logits`` True / False, on PCA-32 only (5 s a run). It runs in a throwaway FiftyOne database
  (``curate-loop-bench-<pid>``, on a mongod in ``<curate-loop home>/bench/mongodb``), dropped at the end; a
  failure is recorded as its error text.

Metrics (mislabeled = positive, higher score = more suspect): AUROC, average precision (AP), precision@k (k = the
true number of errors) and recall in the top 5% of the ranking; means over seeds. For ours also the largest error
of the estimated noise matrix P(given | true) against the one the noise was drawn from, and the estimated noise
rate. One ``BENCH`` line per feature set and noise setting, with ours - best cleanlab AP (mean and paired
standard error), then one overall line. Target (issue 5): AP >= the best cleanlab variant in every setting, and
>= best + 0.10 at pair-flip 40%. Issue's reference (AP): symmetric ~.98 for all; pair-flip 20% kNN vote .91,
Datalab .93, normalized margin .96; pair-flip 40% .66-.70 for every method. The detector's defaults were chosen on
the PCA-32 settings; the HOG lines are the check on features they were not chosen on.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings

import numpy as np

SEEDS = tuple(range(int(os.environ.get("CURATE_LOOP_BENCH_SEEDS", "5"))))
SETTINGS = tuple((kind, rate) for kind in ("symmetric", "pairflip") for rate in (0.1, 0.2, 0.4))
N_CLASSES = 10
PCA_DIMS = 32
CV_FOLDS = 5
CV_NEIGHBORS = 10  # cleanlab's Datalab default k; the 5-fold classifier uses the same
REVIEW_BUDGET = 0.05  # recall in the top 5% of the ranking
TARGET_MARGIN = {("pairflip", 0.4): 0.10}  # AP over the best cleanlab variant; 0 elsewhere
CLEANLAB = ("cleanlab_datalab", "cleanlab_normalized_margin")
METHODS = ("ours", "knn_vote") + CLEANLAB + ("brain_logits", "brain_confidence")
METRICS = ("ap", "auroc", "precision_at_k", "recall_top5pct")


def digits_features() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """PCA-32 and HOG of the digit pixels (one row per digit image, i.e. per object crop), and the true class."""
    from sklearn.decomposition import PCA

    from bench.bench_curation_quality import digits_features as pixels_and_hog

    features, y = pixels_and_hog()
    pca = PCA(PCA_DIMS, random_state=0).fit_transform(features["pixels"])
    return {"pca32": pca.astype(np.float32), "hog": features["hog"]}, y


def inject_noise(y: np.ndarray, kind: str, rate: float, seed: int) -> np.ndarray:
    """Noisy copy of ``y``: symmetric (any other class) or pair-flip (c -> c + 1) on an exact number of rows."""
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    if kind == "symmetric":
        rows = rng.choice(len(y), round(rate * len(y)), replace=False)
        noisy[rows] = (y[rows] + rng.integers(1, N_CLASSES, len(rows))) % N_CLASSES
        return noisy
    for c in range(N_CLASSES):
        members = np.flatnonzero(y == c)
        rows = rng.choice(members, round(rate * len(members)), replace=False)
        noisy[rows] = (c + 1) % N_CLASSES
    return noisy


def true_noise_matrix(kind: str, rate: float) -> np.ndarray:
    """P(given=i | true=j) the noise was drawn from (columns sum to 1)."""
    if kind == "symmetric":
        return (1 - rate) * np.eye(N_CLASSES) + rate / (N_CLASSES - 1) * (1 - np.eye(N_CLASSES))
    return (1 - rate) * np.eye(N_CLASSES) + rate * np.roll(np.eye(N_CLASSES), 1, axis=0)


def ranking_metrics(is_error: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    order = np.argsort(-score, kind="stable")
    n_errors = int(is_error.sum())
    budget = round(REVIEW_BUDGET * len(score))
    return {"ap": float(average_precision_score(is_error, score)), "auroc": float(roc_auc_score(is_error, score)),
            "precision_at_k": float(is_error[order[:n_errors]].mean()),
            "recall_top5pct": float(is_error[order[:budget]].sum() / n_errors)}


def out_of_sample_probs(x: np.ndarray, noisy: np.ndarray, seed: int) -> np.ndarray:
    """(n, C) 5-fold out-of-sample class probabilities of a 10-NN cosine classifier trained on the noisy labels."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    folds = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=seed)
    return cross_val_predict(KNeighborsClassifier(CV_NEIGHBORS, metric="cosine"), x, noisy, cv=folds,
                             method="predict_proba")


def score_ours(x, noisy) -> tuple[dict[str, np.ndarray], object]:
    from curate_loop.mislabels import detect_mislabels

    result = detect_mislabels(x, noisy)
    return {"ours": result.score, "knn_vote": 1.0 - result.given_prob}, result


def score_datalab(x, noisy) -> np.ndarray:
    from cleanlab import Datalab

    lab = Datalab(data={"label": noisy}, label_name="label", verbosity=0)
    lab.find_issues(features=x, issue_types={"label": {}})
    return 1.0 - lab.get_issues("label")["label_score"].to_numpy()


def score_normalized_margin(noisy, probs) -> np.ndarray:
    from cleanlab.rank import get_label_quality_scores

    return 1.0 - get_label_quality_scores(noisy, probs, method="normalized_margin")


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
    from curate_loop.paths import curate_loop_home

    db_name = f"curate-loop-bench-{os.getpid()}"
    os.environ["FIFTYONE_DATABASE_NAME"] = db_name
    os.environ["FIFTYONE_DATABASE_DIR"] = str(curate_loop_home() / "bench" / "mongodb")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    import fiftyone as fo
    import fiftyone.brain as fob

    if fo.config.database_name != db_name:
        raise RuntimeError(f"FiftyOne was imported before the bench set its database ({fo.config.database_name})")
    logging.getLogger("fiftyone").setLevel(logging.WARNING)  # one "Computing mistakenness..." line per run
    return fo, fob


def run_setting(feature_set: str, kind: str, rate: float, x: np.ndarray, y: np.ndarray,
                brain: BrainMistakenness | None) -> dict:
    per_method = {m: {metric: [] for metric in METRICS} for m in METHODS}
    seconds = {m: [] for m in ("ours", "cleanlab_datalab", "cleanlab_normalized_margin", "brain")}
    errors, matrix_error, estimated_rate = {}, [], []
    for seed in SEEDS:
        noisy = inject_noise(y, kind, rate, seed)
        is_error = noisy != y
        started = time.perf_counter()
        scores, result = score_ours(x, noisy)
        seconds["ours"].append(time.perf_counter() - started)
        matrix_error.append(float(np.abs(result.noise_matrix - true_noise_matrix(kind, rate)).max()))
        estimated_rate.append(result.estimated_noise_rate)
        started = time.perf_counter()
        scores["cleanlab_datalab"] = score_datalab(x, noisy)
        seconds["cleanlab_datalab"].append(time.perf_counter() - started)
        started = time.perf_counter()
        probs = out_of_sample_probs(x, noisy, seed)
        scores["cleanlab_normalized_margin"] = score_normalized_margin(noisy, probs)
        seconds["cleanlab_normalized_margin"].append(time.perf_counter() - started)
        if brain is not None:
            started = time.perf_counter()
            scores.update(brain.scores(noisy, probs))
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


def main() -> None:
    from threadpoolctl import threadpool_limits

    features, y = digits_features()
    brain = BrainMistakenness(len(y))
    lines = []
    try:
        with threadpool_limits(1), warnings.catch_warnings():  # many small fits; cleanlab warns per fold
            warnings.simplefilter("ignore")
            for feature_set, x in features.items():
                for kind, rate in SETTINGS:
                    line = run_setting(feature_set, kind, rate, x, y, brain if feature_set == "pca32" else None)
                    lines.append(line)
                    print("BENCH " + json.dumps(line), flush=True)
    finally:
        brain.close()
    print("BENCH " + json.dumps({
        "name": "mislabels_digits_overall",
        "seeds": len(SEEDS),
        "ours_ap": {line["name"]: line["methods"]["ours"]["ap"] for line in lines},
        "best_cleanlab_ap": {line["name"]: line["methods"][line["best_cleanlab"]]["ap"] for line in lines},
        "ours_minus_best_cleanlab_ap": {line["name"]: line["ours_minus_best_cleanlab_ap"] for line in lines},
        "target": "ours AP >= best cleanlab AP in every setting, and >= best + 0.10 at pair-flip 40%",
        "pass": all(line["pass"] for line in lines),
    }), flush=True)


if __name__ == "__main__":
    main()
