"""The loop's built-in model: a linear probe (multinomial logistic regression) on embeddings. No FiftyOne here.

Why a linear probe: it is a real model trained on the labels each iteration, it needs nothing but the embeddings
the loop already has (offline too), and it trains in seconds at the sizes the loop handles (BENCH
``linear_probe_100k``: 100k x 512 float32 rows, 10 classes: fit on 80k and predict all in 2.2 s, 1.24x
scikit-learn's own fit and predict of rows centred beforehand). Its probabilities feed the
uncertainty scores and the pre-annotations.

Settings (``C`` and the solver are scikit-learn's defaults, not tuned here):

- features centred and divided by one global factor, so that the mean per-dimension variance of the training rows
  is 1: embeddings come at very different scales (a unit-norm 512-d CLIP vector has per-dimension values around
  0.04), and one ``C`` only means the same regularisation at one scale. One factor, not one per dimension: per-
  dimension standardisation lifts the faint PCA axes (mostly noise) to the weight of the main ones, which broke the
  probe on the classical embeddings (first tried: 0.56 pool accuracy on scikit-learn digits against 0.975 with one
  factor; the one-factor result barely moved for C from 0.1 to 10, so ``C`` was not tuned there);
- ``C = DEFAULT_C = 1.0``, scikit-learn's default L2 strength;
- one BLAS thread (``threadpoolctl``), as the loop's k-means: the solver's products are thin (rows x dims times
  dims x classes) and the loop shares the machine with MongoDB and Label Studio; on the 2-core development machine
  scikit-learn's fit and predict at 100k x 512 took 1.8 s in one thread against 2.0 s in the default threads
  (BENCH ``linear_probe_100k``);
- ``lbfgs`` (multinomial for more than two classes), ``max_iter = MAX_ITER = 200`` on float32: scikit-learn's
  default of 100 iterations stops short of convergence on large, standardised sets; a probe stopped at the limit is
  still a usable model, so the convergence warning is not raised to the user.

The probe knows only the classes it saw; :meth:`LinearProbe.predict_proba` maps its columns onto the manifest's
``classes`` order, and a class never labeled gets probability 0.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from curate_loop.errors import InvalidInputError
from curate_loop.threads import one_blas_thread

DEFAULT_C = 1.0
MAX_ITER = 200
DEFAULT_FOLDS = 5
MIN_CV_LABELS = 10  # below this a k-fold accuracy is noise: cv_accuracy gives None
MAX_CV_ROWS = 20_000  # cross-validation on a stratified subsample beyond this, so it stays seconds at 100k labels
PROB_FLOOR = 1e-30  # log-probabilities are log(max(p, PROB_FLOOR)): finite (MongoDB and JSON readers), exp() gives p


@dataclass
class LinearProbe:
    """A fitted probe; ``classes`` is the manifest's class order, the column order of every output."""

    classes: tuple[str, ...]
    mean_: np.ndarray  # (D,) centre of the training rows
    scale_: float  # the global factor (see the module docstring)
    estimator_: object | None  # sklearn LogisticRegression; None when one class only was labeled
    columns_: np.ndarray  # (k,) column in ``classes`` of each class the estimator knows (its classes_ order)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, len(classes))`` float64 in ``classes`` order; rows sum to 1, unseen classes 0."""
        X = _as_features(X, self.mean_.shape[0])
        probs = np.zeros((len(X), len(self.classes)), dtype=np.float64)
        if self.estimator_ is None:
            probs[:, self.columns_[0]] = 1.0
        elif len(X):
            with one_blas_thread():
                probs[:, self.columns_] = self._known_class_proba(X)
        return probs

    def _known_class_proba(self, X: np.ndarray) -> np.ndarray:
        """The estimator's ``predict_proba`` of the centred, scaled rows, with the centring and scaling folded into
        its weights (``X @ (W / s).T + b - mean @ (W / s).T``): no copy of the rows, which at 100k x 512 costs
        more than the product itself. Two classes: sklearn's one logistic column; more: its softmax."""
        from scipy.special import expit, softmax

        coef = self.estimator_.coef_.astype(np.float64) / self.scale_
        intercept = self.estimator_.intercept_.astype(np.float64) - coef @ self.mean_.astype(np.float64)
        decision = (X @ coef.T.astype(np.float32)).astype(np.float64) + intercept
        if decision.shape[1] == 1:
            positive = expit(decision[:, 0])
            return np.stack([1.0 - positive, positive], axis=1)
        return softmax(decision, axis=1)

    def predict_log_proba(self, X: np.ndarray) -> np.ndarray:
        """``log(max(p, PROB_FLOOR))``, ``(n, len(classes))``: the ``logits`` the loop stores (softmax gives p)."""
        return np.log(np.maximum(self.predict_proba(X), PROB_FLOOR))


def fit_linear_probe(X: np.ndarray, y, classes, seed: int = 0) -> LinearProbe:
    """Fit the probe on embeddings ``X`` ``(n, D)`` and class names ``y`` ``(n,)``, each one of ``classes``."""
    classes = tuple(str(c) for c in classes)
    y = np.asarray(y, dtype=object).astype(str)
    X = _as_features(X, None)
    if len(X) != len(y):
        raise InvalidInputError(f"The probe needs one label per embedding: {len(X)} embeddings, {len(y)} labels.")
    if not len(y):
        raise InvalidInputError("The linear probe needs at least one labeled sample with an embedding; label some "
                                "samples (or pull a finished batch) first.")
    column = {c: j for j, c in enumerate(classes)}
    unknown = sorted(set(y.tolist()) - set(column))
    if unknown:
        raise InvalidInputError(f"Labels of classes not in the manifest's classes {list(classes)}: {unknown}; add "
                                "them to classes or fix the labels.")
    mean = X.mean(axis=0)
    centred = np.subtract(X, mean, dtype=np.float32)  # the one copy of the rows: scaled in place below
    flat = centred.reshape(-1)
    scale = float(np.sqrt(np.dot(flat, flat) / max(flat.size, 1)))  # a BLAS dot: no squared copy of the rows
    scale = scale if scale > 1e-12 else 1.0  # identical rows: nothing to scale
    seen = np.unique(y)
    columns = np.asarray([column[c] for c in seen], dtype=np.int64)
    if len(seen) == 1:
        return LinearProbe(classes, mean, scale, None, columns)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression(C=DEFAULT_C, solver="lbfgs", max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # see the module docstring
        centred /= np.float32(scale)
        with one_blas_thread():
            estimator.fit(centred, y)
    columns = np.asarray([column[c] for c in estimator.classes_], dtype=np.int64)
    return LinearProbe(classes, mean, scale, estimator, columns)


def cv_accuracy(X: np.ndarray, y, folds: int = DEFAULT_FOLDS, *, seed: int = 0) -> float | None:
    """Stratified k-fold accuracy of the probe on labeled ``(X, y)``, in [0, 1]; None below ``MIN_CV_LABELS`` labels
    or with one class only.

    Fewer folds when classes are rare: ``min(folds, max(2, smallest class count))``; a class with fewer labels than
    folds is then missing from some test folds, which scikit-learn warns about and which is fine here (accuracy is
    pooled over all test rows).
    Above ``MAX_CV_ROWS`` labels the folds are drawn from a stratified subsample of that size.
    """
    y = np.asarray(y, dtype=object).astype(str)
    X = _as_features(X, None)
    classes, counts = np.unique(y, return_counts=True)
    if len(y) < MIN_CV_LABELS or len(classes) < 2:
        return None
    from sklearn.model_selection import StratifiedKFold, train_test_split

    if len(y) > MAX_CV_ROWS:
        keep, _ = train_test_split(np.arange(len(y)), train_size=MAX_CV_ROWS, random_state=seed,
                                   stratify=y if counts.min() >= 2 else None)
        X, y = X[keep], y[keep]
        counts = np.unique(y, return_counts=True)[1]
    n_splits = int(min(folds, max(2, counts.min())))
    correct = 0
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(X, y))
    for train, test in splits:
        probe = fit_linear_probe(X[train], y[train], classes, seed)
        predicted = classes[probe.predict_proba(X[test]).argmax(axis=1)]
        correct += int((predicted == y[test]).sum())
    return correct / len(y)


def _as_features(X, dim: int | None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or (dim is not None and X.shape[1] != dim):
        raise InvalidInputError(f"Embeddings must be an (n, {dim if dim is not None else 'D'}) array; got shape "
                                f"{X.shape}.")
    if not np.isfinite(X.sum()) and not np.isfinite(X).all():  # a NaN or inf spoils the sum; a sum too large to
        # be finite is then told apart by the elementwise check (the sum alone costs no copy of the rows)
        raise InvalidInputError("Some embeddings hold NaN or infinite values; compute them again.")
    return X
