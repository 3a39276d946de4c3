"""Model assist: how annotators changed the model's pre-annotations, as plain values (no FiftyOne import).

A predicted region and an annotated one are "the same object" when they share a region id (Label Studio keeps a
prediction's region id when the annotator accepts or edits it) or, among the rest, when their boxes overlap
(IoU >= ``MATCH_IOU``, greedily by highest IoU; a Classification is one region per image). Each predicted region
then counts once, under its *predicted* class:

    accepted   same class, same box (within ``mapping.BOX_TOLERANCE``)
    relabeled  another class (whether or not the box moved too: the class is what the model got wrong)
    moved      same class, changed geometry
    deleted    no annotated region matches it

and each annotated region nothing predicted counts as ``added``, under its annotated class. So per class
``predicted = accepted + relabeled + moved + deleted``, and the model-assist rate is ``accepted / predicted``: the
share of the model's regions the annotators took as they were.
"""

from __future__ import annotations

from collections.abc import Iterable

from .mapping import BOX_TOLERANCE, Region, iou, same_box

MATCH_IOU = 0.5  # the usual detection threshold: from here a box is "the same object"
OUTCOMES = ("accepted", "relabeled", "moved", "deleted", "added")
PREDICTED_OUTCOMES = OUTCOMES[:4]  # the outcomes of a predicted region (added ones were not predicted)


def match_regions(predicted: list[Region], annotated: list[Region], *, kind: str = "detections",
                  match_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """Pairs ``(index in predicted, index in annotated)`` of the same object, each region in one pair at most: by
    region id first, then (detections) by IoU >= ``match_iou``, highest first; a Classification's one predicted
    region pairs with the first annotated one whatever its id."""
    pairs, used_p, used_a = [], set(), set()
    position = {}
    for j, region in enumerate(annotated):
        position.setdefault(region.id, j)
    for i, region in enumerate(predicted):
        j = position.get(region.id)
        if j is not None and j not in used_a:
            pairs.append((i, j))
            used_p.add(i)
            used_a.add(j)
    rest_p = [i for i in range(len(predicted)) if i not in used_p]
    rest_a = [j for j in range(len(annotated)) if j not in used_a]
    if kind == "classification":
        if rest_p and rest_a and not pairs:
            pairs.append((rest_p[0], rest_a[0]))
        return sorted(pairs)
    candidates = sorted(((iou(predicted[i].box, annotated[j].box), i, j) for i in rest_p for j in rest_a
                         if predicted[i].box is not None and annotated[j].box is not None),
                        key=lambda c: (-c[0], c[1], c[2]))
    for overlap, i, j in candidates:
        if overlap < match_iou:
            break
        if i not in used_p and j not in used_a:
            pairs.append((i, j))
            used_p.add(i)
            used_a.add(j)
    return sorted(pairs)


def region_outcomes(predicted: list[Region], annotated: list[Region], *, kind: str = "detections",
                    match_iou: float = MATCH_IOU, tolerance: float = BOX_TOLERANCE) -> list[tuple[str, str]]:
    """``(class, outcome)`` for every predicted region (under its predicted class) and every added one (under its
    annotated class); outcomes are ``OUTCOMES``."""
    pairs = match_regions(predicted, annotated, kind=kind, match_iou=match_iou)
    matched_p = {i: j for i, j in pairs}
    matched_a = set(matched_p.values())
    outcomes = []
    for i, region in enumerate(predicted):
        j = matched_p.get(i)
        if j is None:
            outcomes.append((region.label, "deleted"))
            continue
        other = annotated[j]
        if other.label != region.label:
            outcomes.append((region.label, "relabeled"))
        elif kind == "detections" and not same_box(region.box, other.box, tolerance):
            outcomes.append((region.label, "moved"))
        else:
            outcomes.append((region.label, "accepted"))
    outcomes += [(r.label, "added") for j, r in enumerate(annotated) if j not in matched_a]
    return outcomes


def count_outcomes(outcomes: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """class -> ``{outcome: n}`` (every outcome present, zeros included), classes sorted."""
    per_class: dict[str, dict[str, int]] = {}
    for cls, outcome in outcomes:
        row = per_class.setdefault(str(cls), dict.fromkeys(OUTCOMES, 0))
        row[outcome] += 1
    return dict(sorted(per_class.items()))


def summarize(per_class: dict[str, dict[str, int]], *, model_version: str | None, tasks: int) -> dict:
    """The stored form: ``{"model_version", "per_class": {cls: {accepted, ..., added, predicted}},
    "totals": {accepted, ..., added, predicted, tasks, rate}}``; ``rate`` = accepted / predicted (None when the
    model predicted nothing)."""
    rows = {cls: {**{k: int(row.get(k, 0)) for k in OUTCOMES},
                  "predicted": sum(int(row.get(k, 0)) for k in PREDICTED_OUTCOMES)}
            for cls, row in sorted(per_class.items())}
    totals = {k: sum(row[k] for row in rows.values()) for k in (*OUTCOMES, "predicted")}
    totals["tasks"] = int(tasks)
    totals["rate"] = assist_rate(totals)
    return {"model_version": model_version, "per_class": rows, "totals": totals}


def assist_rate(counts: dict) -> float | None:
    """accepted / predicted regions, or None when nothing was predicted."""
    predicted = sum(int(counts.get(k, 0)) for k in PREDICTED_OUTCOMES)
    return round(counts.get("accepted", 0) / predicted, 6) if predicted else None


def merge(assists: Iterable[dict | None]) -> dict | None:
    """Several stored model-assist dicts (e.g. the pulls of one loop iteration) as one; None when none holds a
    compared task. ``model_version`` lists the versions, comma-separated."""
    assists = [a for a in assists if a and (a.get("totals") or {}).get("tasks")]
    if not assists:
        return None
    per_class: dict[str, dict[str, int]] = {}
    for a in assists:
        for cls, row in (a.get("per_class") or {}).items():
            target = per_class.setdefault(cls, dict.fromkeys(OUTCOMES, 0))
            for k in OUTCOMES:
                target[k] += int(row.get(k, 0))
    versions = sorted({v for a in assists for v in str(a.get("model_version") or "").split(", ") if v})
    return summarize(per_class, model_version=", ".join(versions) or None,
                     tasks=sum(int(a["totals"]["tasks"]) for a in assists))
