"""Per-dataset thresholds that adapt to the data, a score in [0, 1] and a flag per issue (arrays only).

An issue is one metric in one direction (:class:`IssueRule`). Its threshold is where the metric lies far from the
dataset's typical value: a robust z-score (Iglewicz & Hoaglin's modified z) of ``k`` = :data:`DEFAULT_Z` on the
metric's median and MAD, on a log scale for metrics that are ratios or sizes. CleanVision likewise flags what is far
from the rest, but on fixed cut-offs for most issues. Two guards keep the adaptive value sane:

- ``min_spread``: the smallest spread assumed (in the metric's scale), so a dataset of near-identical images (MAD
  ~0) does not flag its own rounding noise;
- ``limit``: the threshold never moves past this value toward the typical one (e.g. a dataset of night shots
  may lower the "dark" cut-off; a very uniform one never raises it above mid-grey highlights).

A few issues are properties, not outliers, and keep a ``fixed`` threshold whatever the data: grayscale, exact
duplicate, a box touching the border.

Score: 0.5 at the threshold, 0 at (or beyond) the dataset's median, 1 at one threshold distance past it, linear in
the metric's scale in between; higher = worse. An item is flagged when its score is >= :data:`FLAG_SCORE`, i.e. when
its metric is at or past the threshold. NaN metrics (e.g. the sharpness of a 1-pixel crop) score 0 and are never
flagged.

Where each default comes from (the metrics' meaning and published cut-offs; the scales and metrics were chosen
looking only at ``bench/bench_data_quality.py``'s DEV_SEED images, never at the seed it reports):

- ``DEFAULT_Z = 3.5``: Iglewicz & Hoaglin (1993)'s recommended cut-off for the modified z-score.
- scales: exposure is multiplicative (stops), so dark is measured on log(highlights) and bright on
  log(1 - shadows) (the headroom left below white, which glare or over-exposure shrinks by a factor); ratios and
  sizes on a log scale. low_information is RMS contrast on a log scale: a near-constant image is one of tiny
  contrast, whereas entropy (also stored) counts grey levels, which sensor noise inflates (a flat image with
  noise of 2 levels has ~3 bits).
- min_spread: 0.1 in log units (x1.1) everywhere, 0.05 (13 grey levels) for the linear box brightness.
- limits: dark: highlights <= 0.5 (an image whose brightest 1% is above mid-grey is not dark); bright: shadows
  >= 0.5; low_information: contrast <= 0.02 (5 grey levels of RMS contrast); odd_aspect_ratio <= 0.5 (2:1 is an
  ordinary shape); odd_box_shape <= 0.25 (4:1); dark_box <= 0.25 mean luminance; odd_size <= 64 px.
- fixed: grayscale when colorfulness <= 0.01 (2.5 grey levels of channel spread: JPEG chroma rounding of a gray
  image stays below); exact duplicate when 2 or more images share a content hash; a box at <= 0.001 of the
  image side from an edge (pixel rounding) touches the border.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

IMAGE_ISSUES = ("dark", "bright", "blurry", "low_information", "odd_size", "odd_aspect_ratio", "grayscale",
                "exact_duplicate")
BOX_ISSUES = ("tiny_box", "border_box", "odd_box_shape", "dark_box", "blurry_box")

DEFAULT_Z = 3.5
FLAG_SCORE = 0.5
_LOG_FLOOR = 1e-6  # log scale: values at or below are treated as this (zero-area boxes, flat images)


@dataclass(frozen=True)
class IssueRule:
    """One issue: ``metric`` too low or too high (``direction``), relative to the data unless ``fixed``."""

    issue: str
    metric: str
    direction: str  # "low" | "high"
    log: bool = False  # measure distances on a log scale (ratios, sizes, exposure)
    complement: bool = False  # measure on 1 - value (before the log): the headroom left below white
    min_spread: float = 0.05  # smallest robust standard deviation assumed, in the (log) scale
    limit: float | None = None  # the threshold never goes past this toward the typical value
    fixed: float | None = None  # a property, not an outlier: this threshold whatever the data
    z: float = DEFAULT_Z

    def to_dict(self) -> dict:
        return asdict(self)


RULES: dict[str, IssueRule] = {rule.issue: rule for rule in (
    IssueRule("dark", "highlights", "low", log=True, min_spread=0.1, limit=0.5),
    IssueRule("bright", "shadows", "high", log=True, complement=True, min_spread=0.1, limit=0.5),
    IssueRule("blurry", "sharpness", "low", log=True, min_spread=0.1),
    IssueRule("low_information", "contrast", "low", log=True, min_spread=0.1, limit=0.02),
    IssueRule("odd_size", "size", "low", log=True, min_spread=0.1, limit=64.0),
    IssueRule("odd_aspect_ratio", "aspect_ratio", "low", log=True, min_spread=0.1, limit=0.5),
    IssueRule("grayscale", "colorfulness", "low", fixed=0.01),
    IssueRule("exact_duplicate", "duplicates", "high", fixed=1.5),
    IssueRule("tiny_box", "box_relative_area", "low", log=True, min_spread=0.1),
    IssueRule("border_box", "box_border_distance", "low", fixed=0.001),
    IssueRule("odd_box_shape", "box_aspect_ratio", "low", log=True, min_spread=0.1, limit=0.25),
    IssueRule("dark_box", "box_brightness", "low", min_spread=0.05, limit=0.25),
    IssueRule("blurry_box", "box_sharpness", "low", log=True, min_spread=0.1),
)}


def _scale(rule: IssueRule, x):
    """Values in the scale distances are measured in; increasing in the value unless ``complement``."""
    x = np.asarray(x, dtype=np.float64)
    if rule.complement:
        x = 1.0 - x
    return np.log(np.maximum(x, _LOG_FLOOR)) if rule.log else x


def _unscale(rule: IssueRule, y: float) -> float:
    x = float(np.exp(y)) if rule.log else float(y)
    return 1.0 - x if rule.complement else x


def _low_in_scale(rule: IssueRule) -> bool:
    """Whether the issue lies at the low end of the rule's scale (a complement turns "high" into "low")."""
    return (rule.direction == "low") != rule.complement


def _centre(rule: IssueRule, values) -> float:
    """The median of the finite values in the rule's scale; NaN when there are none."""
    x = _scale(rule, values)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else float("nan")


def adaptive_threshold(rule: IssueRule, values) -> float:
    """The threshold of one issue on one metric's values (N,), in metric units; NaN when no value is finite."""
    if rule.fixed is not None:
        return float(rule.fixed)
    x = _scale(rule, values)
    x = x[np.isfinite(x)]
    if not len(x):
        return float("nan")
    median = float(np.median(x))
    spread = max(1.4826 * float(np.median(np.abs(x - median))), rule.min_spread)
    sign = -1.0 if _low_in_scale(rule) else 1.0
    threshold = _unscale(rule, median + sign * rule.z * spread)
    if rule.limit is not None:
        threshold = min(threshold, rule.limit) if rule.direction == "low" else max(threshold, rule.limit)
    return threshold


def adaptive_thresholds(values: dict[str, np.ndarray], rules: dict[str, IssueRule] | None = None
                        ) -> dict[str, float]:
    """Per issue whose metric is in ``values`` (metric -> (N,)): its threshold, in metric units."""
    rules = RULES if rules is None else rules
    return {issue: adaptive_threshold(rule, values[rule.metric]) for issue, rule in rules.items()
            if rule.metric in values}


def issue_score(rule: IssueRule, values, threshold: float) -> np.ndarray:
    """Scores (N,) in [0, 1] of one issue (see the module docstring); 0 where the metric is NaN."""
    x = _scale(rule, values)
    t = float(_scale(rule, threshold))
    if not np.isfinite(t):
        return np.zeros(x.shape)
    centre = _centre(rule, values)
    distance = abs(centre - t) if np.isfinite(centre) and centre != t else rule.z * rule.min_spread
    past = (t - x) if _low_in_scale(rule) else (x - t)
    score = np.clip(FLAG_SCORE + (1 - FLAG_SCORE) * past / distance, 0.0, 1.0)
    return np.where(np.isfinite(x), score, 0.0)


def issue_scores(values: dict[str, np.ndarray], thresholds: dict[str, float],
                 rules: dict[str, IssueRule] | None = None) -> dict[str, np.ndarray]:
    """Per issue in ``thresholds``: scores (N,) in [0, 1], higher = worse, 0.5 exactly at the threshold."""
    rules = RULES if rules is None else rules
    return {issue: issue_score(rules[issue], values[rules[issue].metric], t) for issue, t in thresholds.items()
            if rules[issue].metric in values}


def flags(scores: dict[str, np.ndarray], thresholds: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Per issue: True where the item is flagged (score >= :data:`FLAG_SCORE`); issues with a NaN threshold in
    ``thresholds`` (no data to set one) flag nothing."""
    out = {}
    for issue, score in scores.items():
        t = (thresholds or {}).get(issue, 0.0)
        out[issue] = (np.asarray(score) >= FLAG_SCORE) & bool(np.isfinite(t))
    return out


def duplicate_counts(hashes) -> np.ndarray:
    """For each item (N,), how many items (itself included) share its content hash; 0 where the hash is None."""
    hashes = list(hashes)
    counts: dict[str, int] = {}
    for h in hashes:
        if h is not None:
            counts[h] = counts.get(h, 0) + 1
    return np.asarray([counts.get(h, 0) if h is not None else 0 for h in hashes], dtype=np.float64)
