"""Data-quality checks at the array level: per-image and per-box metrics, adaptive thresholds, scores and flags.

Never imports fiftyone; :mod:`curate_loop.runs.quality` is the FiftyOne glue. ``pil_image_metrics`` measures images
another pass (e.g. the embedding pass) has already decoded.
"""

from curate_loop.quality.box_metrics import BOX_METRICS, box_metrics
from curate_loop.quality.image_metrics import (METRICS, batch_image_metrics, content_hash, image_metrics,
                                               pil_image_metrics, pil_metrics)
from curate_loop.quality.thresholds import (BOX_ISSUES, IMAGE_ISSUES, RULES, IssueRule, adaptive_thresholds, flags,
                                            issue_scores)

__all__ = ["BOX_ISSUES", "BOX_METRICS", "IMAGE_ISSUES", "METRICS", "RULES", "IssueRule", "adaptive_thresholds",
           "batch_image_metrics", "box_metrics", "content_hash", "flags", "image_metrics", "issue_scores",
           "pil_image_metrics", "pil_metrics"]
