"""FiftyOne labels <-> Label Studio regions, as plain values (no FiftyOne import).

A region's ``id`` is the FiftyOne label id, so identity survives the round trip: a region that comes back with a
known id updates that label, an unknown id is a new label, a missing id a deleted one.

Boxes: FiftyOne ``[x, y, w, h]`` relative to the image (0-1, top-left corner); Label Studio ``x, y, width, height``
in percent of the image as the annotator saw it. Browsers show images with their EXIF orientation applied and so
does the FiftyOne App, so both refer to the same displayed image. A rotated rectangle (rotation is disabled in our
configs, but imported or older projects may have it) comes back as its axis-aligned bounding box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .labelconfig import CONTROL_NAME, IMAGE_NAME

RECT, CHOICES = "rectanglelabels", "choices"
BOX_TOLERANCE = 1e-6  # relative units: a box within this of the pushed one was not touched


@dataclass(frozen=True)
class Region:
    """One label as Label Studio holds it: its id, class and (for detections) relative box."""

    id: str
    label: str | None
    box: tuple[float, float, float, float] | None = None


def detection_region(label_id: str, label: str, box, width: int, height: int, score: float | None = None) -> dict:
    """A rectangle region; ``score`` (a model's confidence in it) is shown by Label Studio next to the region."""
    x, y, w, h = (float(v) for v in box)
    region = {"id": str(label_id), "type": RECT, "from_name": CONTROL_NAME, "to_name": IMAGE_NAME,
              "original_width": int(width), "original_height": int(height), "image_rotation": 0,
              "value": {"x": x * 100.0, "y": y * 100.0, "width": w * 100.0, "height": h * 100.0, "rotation": 0,
                        "rectanglelabels": [label]}}
    return _scored(region, score)


def classification_region(label_id: str, label: str, score: float | None = None) -> dict:
    region = {"id": str(label_id), "type": CHOICES, "from_name": CONTROL_NAME, "to_name": IMAGE_NAME,
              "value": {"choices": [label]}}
    return _scored(region, score)


def _scored(region: dict, score: float | None) -> dict:
    if score is not None:
        region["score"] = round(float(score), 6)
    return region


@dataclass
class ModelPrediction:
    """A sample's model predictions as a Label Studio prediction: its ``result``, the same regions in the compact
    form the push record keeps (``[id, class, x, y, w, h]``, or ``[id, class]`` for a Classification), the regions
    left out because the project does not offer their class (class -> n), and the mean region confidence."""

    result: list[dict]
    regions: list[list]
    dropped: dict[str, int]
    score: float | None


def model_prediction(doc: dict | None, kind: str, width: int, height: int, allowed: set[str]) -> ModelPrediction:
    """The stored predictions document ``doc`` of one sample (a Detections or Classification document, as
    ``values(..., _raw=True)`` gives it) as a :class:`ModelPrediction`; each region's ``score`` is its confidence.
    Regions of classes outside ``allowed`` are dropped and counted: Label Studio could not show them."""
    items = [] if doc is None else ([doc] if kind == "classification" else (doc.get("detections") or []))
    result, regions, dropped, scores = [], [], {}, []
    for item in items:
        label, confidence = item.get("label"), item.get("confidence")
        if label is None or (kind == "detections" and item.get("bounding_box") is None):
            continue
        if str(label) not in allowed:
            dropped[str(label)] = dropped.get(str(label), 0) + 1
            continue
        region_id = str(item["_id"])
        if kind == "detections":
            box = [float(v) for v in item["bounding_box"]]
            result.append(detection_region(region_id, label, box, width, height, confidence))
            regions.append([region_id, str(label), *box])
        else:
            result.append(classification_region(region_id, label, confidence))
            regions.append([region_id, str(label)])
        if confidence is not None:
            scores.append(float(confidence))
    score = round(sum(scores) / len(scores), 6) if scores else None
    return ModelPrediction(result, regions, dict(sorted(dropped.items())), score)


def stored_region(row: list) -> Region:
    """A region of the push record's compact form (see :class:`ModelPrediction`) as a :class:`Region`."""
    return Region(str(row[0]), row[1], tuple(float(v) for v in row[2:6]) if len(row) >= 6 else None)


def parse_result(result: list[dict], kind: str) -> list[Region]:
    """The regions of an annotation's ``result`` that belong to our control, as :class:`Region`."""
    regions = []
    for item in result or []:
        if item.get("from_name") != CONTROL_NAME:
            continue
        value = item.get("value") or {}
        if kind == "detections" and item.get("type") == RECT:
            names = value.get("rectanglelabels") or []
            regions.append(Region(str(item.get("id")), names[0] if names else None, _box(item)))
        elif kind == "classification" and item.get("type") == CHOICES:
            choices = value.get("choices") or []
            if choices:
                regions.append(Region(str(item.get("id")), choices[0]))
    return regions


def _box(item: dict) -> tuple[float, float, float, float]:
    value = item["value"]
    x, y, w, h = (float(value.get(k, 0.0)) / 100.0 for k in ("x", "y", "width", "height"))
    angle = float(value.get("rotation") or 0.0) % 360.0
    if angle == 0.0:
        return _clip((x, y, w, h))
    # Label Studio rotates around the top-left corner; rotate in pixels so non-square images stay right.
    sx, sy = float(item.get("original_width") or 1.0), float(item.get("original_height") or 1.0)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    corners = [(dx * w * sx, dy * h * sy) for dx, dy in ((0, 0), (1, 0), (1, 1), (0, 1))]
    xs = [x * sx + px * cos - py * sin for px, py in corners]
    ys = [y * sy + px * sin + py * cos for px, py in corners]
    return _clip((min(xs) / sx, min(ys) / sy, (max(xs) - min(xs)) / sx, (max(ys) - min(ys)) / sy))


def _clip(box):
    x, y, w, h = box
    x0, y0 = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
    x1, y1 = min(max(x + w, 0.0), 1.0), min(max(y + h, 0.0), 1.0)
    return (x0, y0, x1 - x0, y1 - y0)


def same_box(a, b, tolerance: float = BOX_TOLERANCE) -> bool:
    if a is None or b is None:
        return a is b
    return all(abs(float(u) - float(v)) <= tolerance for u, v in zip(a, b))


def iou(a, b) -> float:
    """Intersection over union of two relative ``[x, y, w, h]`` boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax1, bx1) - max(a[0], b[0])), max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
