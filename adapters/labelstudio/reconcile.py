"""Several annotators on one task: which regions to apply.

Policies (``POLICIES``):

- ``latest`` (default): the most recently updated finished annotation wins, as one reviewer's final word.
- ``majority``: per region. Regions are matched across annotators by id (regions that came from our
  pre-annotations share the FiftyOne label id) and, for regions each annotator drew anew, by box overlap
  (IoU >= ``match_iou``). A region is kept when more than half of the annotators have it; its class is the
  most voted one (a tie goes to the latest annotator and is reported) and its box the per-coordinate median of
  the boxes with that class. For a Classification the whole image is one region.
- ``agreement``: every annotator must have the same regions (same class, boxes with IoU >= ``agree_iou``);
  otherwise the task is a conflict: nothing is applied and it is reported.

Only finished annotations count: cancelled ones (``was_cancelled``) are dropped before this module sees them.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from curate_loop.errors import InvalidInputError

from .mapping import Region, iou

POLICIES = ("latest", "majority", "agreement")
DEFAULT_POLICY = "latest"
MATCH_IOU = 0.5  # two annotators' new boxes are the same object from here (the usual detection threshold)
AGREE_IOU = 0.9  # two boxes "agree" from here: a few pixels of drawing noise on a typical object


@dataclass
class Annotation:
    """A finished annotation of one task."""

    id: int
    annotator: str
    updated_at: str  # ISO 8601, as the server writes it (sorts as text)
    regions: list[Region]


@dataclass
class Resolution:
    """What to apply for one task, or why nothing is."""

    regions: list[Region] | None  # None: conflict, apply nothing
    annotators: list[str]
    annotated_at: str
    conflict: str | None = None
    ties: list[str] = field(default_factory=list)  # region ids whose class was a tie


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InvalidInputError(f"Unknown reconciliation policy {policy!r}; choose one of {POLICIES}.")
    return policy


def reconcile(annotations: list[Annotation], policy: str = DEFAULT_POLICY, *, kind: str = "detections",
              match_iou: float = MATCH_IOU, agree_iou: float = AGREE_IOU) -> Resolution:
    """The regions to apply for one task from its finished ``annotations`` (at least one)."""
    check_policy(policy)
    ordered = sorted(annotations, key=lambda a: (a.updated_at, a.id))
    latest = ordered[-1]
    annotators = sorted({a.annotator for a in ordered})
    if len(ordered) == 1 or policy == "latest":
        return Resolution(list(latest.regions), [latest.annotator] if policy == "latest" else annotators,
                          latest.updated_at)
    groups = _groups(ordered, kind, match_iou)
    if policy == "agreement":
        problem = _disagreement(groups, len(ordered), agree_iou, kind)
        if problem:
            return Resolution(None, annotators, latest.updated_at, conflict=problem)
        return Resolution(list(latest.regions), annotators, latest.updated_at)
    regions, ties = [], []
    for group in groups:
        if len(group) * 2 <= len(ordered):
            continue
        region, tie = _vote(group)
        regions.append(region)
        if tie:
            ties.append(region.id)
    return Resolution(regions, annotators, latest.updated_at, ties=ties)


def _groups(ordered: list[Annotation], kind: str, match_iou: float) -> list[list[tuple[int, Region]]]:
    """Regions of all annotations grouped as "the same object": ``[(annotation position, region), ...]``."""
    if kind == "classification":
        group = [(i, r) for i, a in enumerate(ordered) for r in a.regions[:1]]
        return [group] if group else []
    counts = Counter(r.id for a in ordered for r in {r.id: r for r in a.regions}.values())
    by_id: dict[str, list] = {}
    loose: list[list] = []
    for i, a in enumerate(ordered):
        for r in a.regions:
            if counts[r.id] > 1:
                by_id.setdefault(r.id, []).append((i, r))
                continue
            for group in loose:  # an object several annotators drew anew, each with its own id
                if all(j != i for j, _ in group) and r.box and group[0][1].box and iou(r.box, group[0][1].box) >= match_iou:
                    group.append((i, r))
                    break
            else:
                loose.append([(i, r)])
    return list(by_id.values()) + loose


def _vote(group: list[tuple[int, Region]]) -> tuple[Region, bool]:
    votes = Counter(r.label for _, r in group)
    best = max(votes.values())
    winners = {label for label, n in votes.items() if n == best}
    tie = len(winners) > 1
    chosen = [(i, r) for i, r in group if r.label in winners]
    label = max(chosen, key=lambda item: item[0])[1].label  # a tie goes to the latest annotator
    same = [r for _, r in group if r.label == label]
    latest_id = max(group, key=lambda item: item[0])[1].id
    region_id = Counter(r.id for _, r in group).most_common(1)[0][0] if len(set(r.id for _, r in group)) < len(group) \
        else latest_id
    box = None
    if same[0].box is not None:
        box = tuple(statistics.median(r.box[k] for r in same) for k in range(4))
        if len(same) == 1 or all(r.box == same[0].box for r in same):
            box = same[0].box
    return Region(region_id, label, box), tie


def _disagreement(groups, n_annotations: int, agree_iou: float, kind: str) -> str | None:
    for group in groups:
        region = group[0][1]
        if len({i for i, _ in group}) < n_annotations:
            return f"region {region.id} ({region.label!r}) is not in every annotation"
        labels = {r.label for _, r in group}
        if len(labels) > 1:
            return f"region {region.id}: classes differ ({', '.join(sorted(map(repr, labels)))})"
        if kind == "detections":
            boxes = [r.box for _, r in group]
            if any(iou(boxes[0], b) < agree_iou for b in boxes[1:]):
                return f"region {region.id} ({region.label!r}): boxes differ (IoU < {agree_iou})"
    return None
