"""True-class posteriors from a row's own label and its neighbours', with the label noise estimated on the way.

A kNN vote estimates P(*given* label | x), not P(true class | x): under 40% pair-flip noise (class c labeled c+1)
a correctly labeled c and a mislabeled c-1 both see about 60% of their neighbours agree with them, so the vote
cannot separate them (AP ~0.68 on digits). What separates them is *which* other class the neighbours carry: c+1
around a true c, c-1 around a true c-1. So each row is scored by Bayes' rule over its latent true class j:

    log P(true=j | row) = s * sum_l v_l log B(l | j)  +  log Q(given | j)  +  log pi_j  + const

- ``v`` (C,): the row's neighbour votes (``votes``); ``s``: the evidence strength, how many independent votes
  the neighbourhood is worth (neighbours are correlated: s = 5 for k = 20 measured best on digits);
- ``B(l | j)``: the class-j *neighbourhood profile*, the mean vote of rows truly in j. It absorbs the label noise
  (B(c+1 | c) = 0.4 above), classes that look alike in the embedding, and small classes whose neighbourhoods
  are necessarily mixed, which a fixed "neighbours share my class" model would flag as errors;
- ``Q(given | j)``: the noise matrix, P(given=i | true=j); ``pi``: the true-class prior.

EM (Dawid & Skene, 1979, with the neighbourhood as the crowd of annotators): start from confident learning's
joint and the profiles of its confidently assigned rows, then alternate posteriors and re-estimates of the joint
(hence Q and pi) and the profiles. One more round, label propagation style (Zhou et al., 2004; the "denoised
neighbours" of SimiFeat, Zhu et al., ICML 2022), replaces the neighbours' noisy labels by their posteriors, with
profiles A(j' | j) over the neighbours' true classes: at 40% noise a neighbour's posterior is far more often right
than its label. Q and B are mixed with a little uniform mass (``label_smoothing``, ``neighbor_smoothing``) so no
single count rules a row out.

On digits (PCA-32, 5 seeds) this took pair-flip 40% AP from 0.68 (plain vote) and 0.76 (the best of five cleanlab
variants, logistic-regression normalized margin) to 0.99+; see ``bench/bench_mislabels.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate_loop.mislabels.calibration import noise_matrix
from curate_loop.mislabels.votes import by_class_sum, neighbor_average
from curate_loop.model.uncertainty import softmax_last_axis


@dataclass(frozen=True)
class PosteriorSettings:
    """The model's knobs (``detector`` documents and validates them)."""

    evidence_strength: float
    label_smoothing: float
    neighbor_smoothing: float
    pseudo_count: float
    n_iter: int


@dataclass(frozen=True, eq=False)
class PosteriorFit:
    """posterior (n, C) P(true=j | row); joint (C, C) Q(given=i, true=j); profiles (C, C) A(j' | j) of the
    neighbours' true classes around a row of true class j, used to score rows without a label."""

    posterior: np.ndarray
    joint: np.ndarray
    profiles: np.ndarray


def fit_posteriors(votes: np.ndarray, codes: np.ndarray, neighbors: np.ndarray, weights: np.ndarray,
                   initial_joint: np.ndarray, confident_class: np.ndarray,
                   settings: PosteriorSettings) -> PosteriorFit:
    """EM on the label votes, then one round on the neighbours' posteriors (module docstring).

    votes (n, C) neighbour votes; codes (n,) given classes; neighbors/weights (n, k) the kNN graph;
    initial_joint (C, C) from confident learning; confident_class (n,) its true class per row, -1 for none.
    """
    n_classes = votes.shape[1]
    joint = initial_joint
    profiles = neighborhood_profiles(one_hot(confident_class, n_classes), votes)
    posterior = None
    for _ in range(settings.n_iter):
        posterior = class_posterior(votes, profiles, joint, codes, settings)
        joint = joint_from_posterior(codes, posterior, settings.pseudo_count)
        profiles = neighborhood_profiles(posterior, votes)
    denoised_votes = neighbor_average(neighbors, weights, posterior)
    profiles = neighborhood_profiles(posterior, denoised_votes)
    posterior = class_posterior(denoised_votes, profiles, joint, codes, settings)
    joint = joint_from_posterior(codes, posterior, settings.pseudo_count)
    return PosteriorFit(posterior=posterior, joint=joint, profiles=profiles)


def class_posterior(evidence: np.ndarray, profiles: np.ndarray, joint: np.ndarray, codes: np.ndarray | None,
                    settings: PosteriorSettings) -> np.ndarray:
    """(n, C) P(true=j | row) by the formula of the module docstring; ``codes`` None: rows without a label."""
    log_profiles = np.log(smooth(profiles, settings.neighbor_smoothing)).astype(np.float32)
    logits = settings.evidence_strength * (evidence @ log_profiles.T)
    logits = logits.astype(np.float64) + np.log(joint.sum(axis=0))[None, :]
    if codes is not None:
        logits += np.log(smooth(noise_matrix(joint), settings.label_smoothing))[codes]
    return softmax_last_axis(logits)


def joint_from_posterior(codes: np.ndarray, posterior: np.ndarray, pseudo_count: float) -> np.ndarray:
    """(C, C) Q(given=i, true=j): the posteriors summed per given class, plus ``pseudo_count`` on the diagonal."""
    counts = by_class_sum(codes, posterior, posterior.shape[1]) + pseudo_count * np.eye(posterior.shape[1])
    return counts / counts.sum()


def neighborhood_profiles(class_weights: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """(C, C) the mean ``evidence`` row of each true class, rows weighted by ``class_weights`` (n, C).

    A class with no weight at all gets a uniform profile: no evidence either way.
    """
    totals = np.asarray(class_weights.T @ evidence, dtype=np.float64)
    mass = totals.sum(axis=1, keepdims=True)
    uniform = np.full_like(totals, 1.0 / totals.shape[1])
    return np.where(mass > 0, totals / np.maximum(mass, np.finfo(float).tiny), uniform)


def smooth(matrix: np.ndarray, amount: float) -> np.ndarray:
    """Each row (or column-stochastic matrix) mixed with the uniform distribution: no probability is zero."""
    return (1.0 - amount) * matrix + amount / matrix.shape[0]


def one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) float32 indicator of ``codes``; rows with code -1 are all zero."""
    out = np.zeros((len(codes), n_classes), dtype=np.float32)
    rows = np.flatnonzero(codes >= 0)
    out[rows, codes[rows]] = 1.0
    return out
