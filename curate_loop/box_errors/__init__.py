"""Box-level label errors in detection datasets: overlooked, mislocated, spurious, duplicate and swapped boxes.

Array-level code only (boxes, classes and confidences in; scores and suggested fixes out; never FiftyOne); the
FiftyOne glue and the review flow live in ``curate_loop.runs.label_issues``.

- ``geometry``: the package's IoU on FiftyOne's relative [x, y, w, h] boxes, input checks, per-sample segment ops;
- ``scores``: :func:`score_box_errors` and its :class:`BoxSet` / :class:`BoxErrorSettings` / :class:`BoxErrorResult`.
"""

from curate_loop.box_errors.geometry import box_iou, check_boxes
from curate_loop.box_errors.scores import (KINDS, LABEL_KINDS, BoxErrorResult, BoxErrorSettings, BoxSet,
                                           score_box_errors)

__all__ = ["KINDS", "LABEL_KINDS", "BoxErrorResult", "BoxErrorSettings", "BoxSet", "box_iou", "check_boxes",
           "score_box_errors"]
