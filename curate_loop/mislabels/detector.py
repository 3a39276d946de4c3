"""Mislabel scores for labeled embeddings (object crops or whole images), with no trained model.

:func:`detect_mislabels` runs, on the rows that carry a label:

1. a cosine kNN graph (faiss, ``curate_loop.similarity.knn``) and leave-one-out, similarity-weighted label votes
   (``votes``);
2. confident learning on those votes: per-class thresholds and the confident joint, a first estimate of the
   class-pair confusion (``calibration``);
3. an EM over each row's true class that uses that confusion and each class's neighbourhood profile, then one
   round on the neighbours' denoised classes (``posterior``).

A row's score is 1 - P(true class = given class); its suggestion is the most likely other class. Rows without a
label (None, NaN, or outside ``classes``) are not scored, but get a suggestion from their labeled neighbours.

Cost: the kNN graph (exact up to 20k rows, IVF above) plus a few dense (n, C) arrays, about 40 bytes per row and
class at the peak: 100k rows x 50 classes took 27 s and 0.8 GB on two shared cores. Limits (measured on digits with
class sizes from 170 down to 8): a class much smaller than k has mixed neighbourhoods, so its clean rows score
higher than others' (mean 0.12-0.4 against 0.01-0.04), and at 40% symmetric noise the AP there (0.98) fell
behind cleanlab's normalized margin (0.99).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from curate_loop.errors import InvalidInputError
from curate_loop.mislabels.calibration import (MIN_CLASS_SIZE, calibrate_joint, class_thresholds,
                                               confident_joint, confident_true_class, noise_matrix)
from curate_loop.mislabels.labels import EncodedLabels, encode_labels
from curate_loop.mislabels.posterior import PosteriorFit, PosteriorSettings, class_posterior, fit_posteriors
from curate_loop.mislabels.votes import label_votes, neighbor_average, neighbor_weights
from curate_loop.similarity.knn import build_index, knn_graph, search
from curate_loop.vectors import normalize_rows

logger = logging.getLogger(__name__)

DEFAULT_K = 20  # digits, 5 seeds: AP within 0.01 from k = 10 to 30; 20 leaves room for classes of ~20 rows
DEFAULT_TEMPERATURE = 0.2  # neighbour weights softmax((cos - 1) / T); AP flat from 0.1 to 1.0, drops below 0.05
DEFAULT_EVIDENCE_STRENGTH = 5.0  # independent votes a neighbourhood is worth; 3-10 within 0.005 AP on digits
DEFAULT_LABEL_SMOOTHING = 0.3  # uniform mass mixed into the noise matrix for the row's own label
DEFAULT_NEIGHBOR_SMOOTHING = 0.1  # uniform mass mixed into the neighbourhood profiles
DEFAULT_N_ITER = 5  # EM rounds; the estimates stop moving after about 3 on digits
PSEUDO_COUNT = 1.0  # correct rows added per class to the joint: no class has zero prior
MIN_REPORTED_COUNT = 0.5  # class pairs in ``noise_rates`` hold an estimated count that rounds to >= 1 row


@dataclass(frozen=True, eq=False)
class MislabelResult:
    """What :func:`detect_mislabels` found. Arrays are aligned with the input rows, C is ``len(classes)``.

    score: (n,) float64 in [0, 1], higher = more likely mislabeled: 1 - P(true class = given class). NaN for rows
        without a usable label.
    suggested: (n,) object, the most likely class other than the given one (for rows without a label: the most
        likely class).
    suggested_confidence: (n,) float64, P(true class = suggested).
    given_prob: (n,) float64, the plain kNN vote for the given class (similarity-weighted share of the k
        neighbours carrying it), before any calibration; NaN for rows without a usable label.
    classes: (C,) object, the classes with at least one labeled row; the order of every (C, ...) array.
    noise_matrix: (C, C) P(given=i | true=j) (columns sum to 1; cleanlab's convention).
    joint: (C, C) P(given=i, true=j) over the scored rows (sums to 1).
    thresholds: (C,) confident-learning threshold per class (mean vote for the class over its rows); NaN for a
        class with a single row.
    noise_rates: off-diagonal class pairs holding at least ``MIN_REPORTED_COUNT`` estimated rows, most rows first:
        dicts with ``given``, ``true``, ``rate`` (P(given | true)), ``share_of_given`` (P(true | given)), ``count``.
    missing_label, unknown_label: (n,) bool, rows set aside (label None/NaN; label not in ``classes``).
    unscorable: (n,) bool, rows whose class has fewer than ``MIN_CLASS_SIZE`` rows: they are scored, but no
        neighbour can share their class, so the score says little; review them by hand.
    warnings: what was set aside or degraded, in words.
    params: the settings used.
    """

    score: np.ndarray
    suggested: np.ndarray
    suggested_confidence: np.ndarray
    given_prob: np.ndarray
    classes: np.ndarray
    noise_matrix: np.ndarray
    joint: np.ndarray
    thresholds: np.ndarray
    noise_rates: tuple[dict, ...]
    missing_label: np.ndarray
    unknown_label: np.ndarray
    unscorable: np.ndarray
    warnings: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)

    @property
    def estimated_noise_rate(self) -> float:
        """Estimated share of the scored rows whose given label is wrong: 1 - trace of the joint."""
        return float(1.0 - np.trace(self.joint))

    def to_dict(self) -> dict:
        """A JSON-serialisable summary (no per-row arrays): counts, noise estimates, thresholds, warnings."""
        scored = ~(self.missing_label | self.unknown_label)
        return {
            "n_rows": int(len(self.score)),
            "n_scored": int(scored.sum()),
            "n_missing_label": int(self.missing_label.sum()),
            "n_unknown_label": int(self.unknown_label.sum()),
            "n_unscorable": int(self.unscorable.sum()),
            "classes": [_plain(c) for c in self.classes],
            "estimated_noise_rate": round(self.estimated_noise_rate, 4),
            "estimated_mislabeled": int(round(self.estimated_noise_rate * scored.sum())),
            "noise_rates": list(self.noise_rates),
            "thresholds": {str(c): (None if np.isnan(t) else round(float(t), 4))
                           for c, t in zip(self.classes, self.thresholds)},
            "warnings": list(self.warnings),
            "params": dict(self.params),
        }


def detect_mislabels(vectors, labels, *, k: int = DEFAULT_K, classes=None, seed: int = 0,
                     temperature: float = DEFAULT_TEMPERATURE,
                     evidence_strength: float = DEFAULT_EVIDENCE_STRENGTH,
                     label_smoothing: float = DEFAULT_LABEL_SMOOTHING,
                     neighbor_smoothing: float = DEFAULT_NEIGHBOR_SMOOTHING,
                     n_iter: int = DEFAULT_N_ITER) -> MislabelResult:
    """Score every labeled row by how likely its label is wrong, given the labels of similar rows.

    Parameters
    ----------
    vectors : (n, d) array of embeddings (object crops or images), any scale: compared by cosine similarity.
    labels : (n,) class of each row, names or ints; None or NaN = no label (not scored, still gets a suggestion).
    k : neighbours per row (``DEFAULT_K``); needs at least k + 1 labeled rows.
    classes : the known classes, in order; labels outside it are set aside as unknown. Default: every label seen.
    seed : seeds the approximate index used above 20k labeled rows (exact search below: no randomness).
    temperature : neighbour weights are softmax((cos - 1) / temperature) over a row's neighbours, > 0.
    evidence_strength : how many independent votes a neighbourhood is worth, > 0.
    label_smoothing, neighbor_smoothing : uniform mass in [0, 1) mixed into the noise matrix and into the
        neighbourhood profiles, so no single count rules a class out.
    n_iter : EM rounds, >= 1.

    Returns
    -------
    MislabelResult : per-row ``score`` in [0, 1] (higher = more likely mislabeled), ``suggested`` class and its
        confidence, the estimated ``noise_matrix`` and ``noise_rates`` per class pair, per-class ``thresholds``.

    Raises
    ------
    InvalidInputError : vectors with NaN/inf or all-zero rows, labels of another length, fewer than two classes,
        fewer than k + 1 labeled rows, or a setting out of range (the message gives the values and the fix).
    """
    settings = _check_settings(k, temperature, evidence_strength, label_smoothing, neighbor_smoothing, n_iter)
    x = normalize_rows(vectors, zero_rows="raise", what="vectors")
    encoded = encode_labels(labels, classes)
    _check_rows(x, encoded, k)
    labeled = np.flatnonzero(encoded.codes >= 0)
    codes = encoded.codes[labeled]
    n_classes = len(encoded.classes)

    index = build_index(x[labeled], seed=seed)
    neighbors, similarities = knn_graph(x[labeled], k, index=index)
    weights = neighbor_weights(similarities, temperature)
    votes = label_votes(neighbors, weights, codes, n_classes)

    thresholds = class_thresholds(votes, codes, n_classes)
    confident = confident_true_class(votes, thresholds)
    sizes = np.bincount(codes, minlength=n_classes)
    initial = calibrate_joint(confident_joint(codes, confident, n_classes), sizes, PSEUDO_COUNT)
    fit = fit_posteriors(votes, codes, neighbors, weights, initial, confident, settings)

    return _assemble(x, encoded, labeled, votes, fit, thresholds, index, k, temperature, settings, seed)


def _assemble(x, encoded: EncodedLabels, labeled, votes, fit: PosteriorFit, thresholds, index, k, temperature,
              settings: PosteriorSettings, seed) -> MislabelResult:
    """Per-row arrays for all n rows (labeled ones scored, the others suggested from their neighbours)."""
    n = len(encoded.codes)
    codes = encoded.codes[labeled]
    rows = np.arange(len(labeled))
    given_posterior = fit.posterior[rows, codes]
    others = fit.posterior.copy()
    others[rows, codes] = -1.0
    best_other = others.argmax(axis=1)

    score = np.full(n, np.nan)
    score[labeled] = np.clip(1.0 - given_posterior, 0.0, 1.0)
    given_prob = np.full(n, np.nan)
    given_prob[labeled] = votes[rows, codes]
    suggestion = np.zeros(n, dtype=np.int64)
    suggestion[labeled] = best_other
    confidence = np.zeros(n)
    confidence[labeled] = fit.posterior[rows, best_other]

    unlabeled = np.flatnonzero(encoded.codes < 0)
    if len(unlabeled):
        posterior = _unlabeled_posterior(x[unlabeled], index, fit, k, temperature, settings)
        suggestion[unlabeled] = posterior.argmax(axis=1)
        confidence[unlabeled] = posterior.max(axis=1)

    sizes = np.bincount(codes, minlength=len(encoded.classes))
    unscorable = np.zeros(n, dtype=bool)
    unscorable[labeled] = sizes[codes] < MIN_CLASS_SIZE
    return MislabelResult(
        score=score,
        suggested=encoded.classes[suggestion],
        suggested_confidence=confidence,
        given_prob=given_prob,
        classes=encoded.classes,
        noise_matrix=noise_matrix(fit.joint),
        joint=fit.joint,
        thresholds=thresholds,
        noise_rates=_noise_rates(fit.joint, encoded.classes, len(labeled)),
        missing_label=encoded.missing,
        unknown_label=encoded.unknown,
        unscorable=unscorable,
        warnings=_warnings(encoded, sizes),
        params={"k": k, "temperature": temperature, "evidence_strength": settings.evidence_strength,
                "label_smoothing": settings.label_smoothing, "neighbor_smoothing": settings.neighbor_smoothing,
                "n_iter": settings.n_iter, "seed": seed},
    )


def _unlabeled_posterior(queries, index, fit: PosteriorFit, k, temperature, settings) -> np.ndarray:
    """P(true class | labeled neighbours) for rows without a label: the denoised vote against the profiles."""
    similarities, neighbors = search(index, queries, k)
    weights = neighbor_weights(similarities, temperature)
    evidence = neighbor_average(neighbors, weights, fit.posterior)
    return class_posterior(evidence, fit.profiles, fit.joint, None, settings)


def _noise_rates(joint: np.ndarray, classes: np.ndarray, n_scored: int) -> tuple[dict, ...]:
    """Off-diagonal pairs (given, true) with at least ``MIN_REPORTED_COUNT`` estimated rows, most rows first.

    The joint holds ``PSEUDO_COUNT`` extra rows per class on its diagonal: counted back, off-diagonal counts are
    the sums of the rows' posteriors.
    """
    counts = joint * (n_scored + PSEUDO_COUNT * len(classes))
    off = ~np.eye(len(classes), dtype=bool) & (counts >= MIN_REPORTED_COUNT)
    given, true = np.nonzero(off)
    order = np.argsort(-counts[given, true], kind="stable")
    rate = noise_matrix(joint)
    share = joint / np.maximum(joint.sum(axis=1, keepdims=True), np.finfo(float).tiny)
    return tuple({"given": _plain(classes[i]), "true": _plain(classes[j]), "rate": round(float(rate[i, j]), 4),
                  "share_of_given": round(float(share[i, j]), 4), "count": round(float(counts[i, j]), 1)}
                 for i, j in zip(given[order], true[order]))


def _warnings(encoded: EncodedLabels, sizes: np.ndarray) -> tuple[str, ...]:
    notes = []
    if encoded.missing.any():
        notes.append(f"{int(encoded.missing.sum())} row(s) have no label (None/NaN): not scored, suggestion only.")
    if encoded.unknown.any():
        notes.append(f"{int(encoded.unknown.sum())} row(s) carry a label outside `classes` "
                     f"(e.g. {list(encoded.unknown_values[:5])}): "
                     "not scored, suggestion only; add those classes to score them.")
    if encoded.absent_classes:
        notes.append(f"classes without any labeled row are not modelled: {[str(c) for c in encoded.absent_classes]}.")
    single = [str(c) for c, s in zip(encoded.classes, sizes) if s < MIN_CLASS_SIZE]
    if single:
        notes.append(f"class(es) {single} have a single labeled row: no neighbour can agree with it, so its score "
                     "says little (flagged in `unscorable`); label more examples or review by hand.")
    for note in notes:
        logger.warning(note)
    return tuple(notes)


def _check_settings(k, temperature, evidence_strength, label_smoothing, neighbor_smoothing,
                    n_iter) -> PosteriorSettings:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}.")
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 1:
        raise InvalidInputError(f"n_iter must be a positive integer, got {n_iter!r}.")
    for name, value in (("temperature", temperature), ("evidence_strength", evidence_strength)):
        if not np.isfinite(value) or value <= 0:
            raise InvalidInputError(f"{name} must be a positive number, got {value!r}.")
    for name, value in (("label_smoothing", label_smoothing), ("neighbor_smoothing", neighbor_smoothing)):
        if not 0 <= value < 1:
            raise InvalidInputError(f"{name} must be in [0, 1), got {value!r}.")
    return PosteriorSettings(evidence_strength=float(evidence_strength), label_smoothing=float(label_smoothing),
                             neighbor_smoothing=float(neighbor_smoothing), pseudo_count=PSEUDO_COUNT,
                             n_iter=int(n_iter))


def _check_rows(x: np.ndarray, encoded: EncodedLabels, k: int) -> None:
    n_rows, n_labels = x.shape[0], len(encoded.codes)
    if n_rows != n_labels:
        raise InvalidInputError(f"vectors has {n_rows} rows but labels has {n_labels}; pass one label per row "
                                "(None for rows without one).")
    n_labeled = int((encoded.codes >= 0).sum())
    if len(encoded.classes) < 2:
        raise InvalidInputError(f"mislabel detection needs labeled rows of at least two classes, got "
                                f"{[str(c) for c in encoded.classes]} over {n_labeled} labeled row(s).")
    if n_labeled < k + 1:
        raise InvalidInputError(f"k={k} neighbours need at least {k + 1} labeled rows, got {n_labeled}; "
                                f"pass k <= {n_labeled - 1} or label more rows.")


def _plain(value):
    """numpy scalars as Python values, for JSON."""
    return value.item() if isinstance(value, np.generic) else value
