"""Per-box quality metrics: the box's geometry and its crop's brightness and sharpness (never imports fiftyone).

Boxes are FiftyOne's relative ``[x, y, width, height]`` (top-left corner, fractions of the image).

=================== ==============================================================================================
metric              meaning
=================== ==============================================================================================
box_area            pixels (of the original image)
box_relative_area   fraction of the image, [0, 1]
box_aspect_ratio    min(w / h, h / w) in pixels, [0, 1]: low is elongated; 0 for a zero-area box
box_border_distance distance to the nearest image edge, fraction of the image side; <= 0 touches or crosses it
box_brightness      mean luminance of the crop, [0, 1]; NaN for a crop under one pixel
box_sharpness       as the image's ``sharpness``, on the crop; NaN for a crop under 3x3 pixels
=================== ==============================================================================================
"""

from __future__ import annotations

import numpy as np

from curate_loop.quality.image_metrics import gray_metrics, luminance, reduce_to_max_side, to_uint8

BOX_METRICS = ("box_area", "box_relative_area", "box_aspect_ratio", "box_border_distance", "box_brightness",
               "box_sharpness")


def box_geometry(boxes_xywh_relative, width: int, height: int) -> dict[str, np.ndarray]:
    """The geometric metrics of boxes (N, 4) in an image of ``width`` x ``height`` pixels."""
    b = np.asarray(boxes_xywh_relative, dtype=np.float64).reshape(-1, 4)
    x, y, w, h = b.T
    w, h = np.clip(w, 0, None), np.clip(h, 0, None)
    w_px, h_px = w * width, h * height
    long_side = np.maximum(w_px, h_px)
    with np.errstate(invalid="ignore", divide="ignore"):
        aspect = np.where(long_side > 0, np.minimum(w_px, h_px) / long_side, 0.0)
    return {
        "box_area": w_px * h_px,
        "box_relative_area": w * h,
        "box_aspect_ratio": aspect,
        "box_border_distance": np.min(np.stack([x, y, 1 - (x + w), 1 - (y + h)]), axis=0),
    }


def crop_metrics(gray: np.ndarray, boxes_xywh_relative) -> dict[str, np.ndarray]:
    """box_brightness and box_sharpness of each box's crop of a uint8 luminance image (any working size)."""
    b = np.asarray(boxes_xywh_relative, dtype=np.float64).reshape(-1, 4)
    rows, cols = gray.shape
    brightness, sharpness = np.full(len(b), np.nan), np.full(len(b), np.nan)
    for i, (x, y, w, h) in enumerate(b):
        x0, y0 = int(np.clip(np.floor(x * cols), 0, cols)), int(np.clip(np.floor(y * rows), 0, rows))
        x1, y1 = int(np.clip(np.ceil((x + w) * cols), 0, cols)), int(np.clip(np.ceil((y + h) * rows), 0, rows))
        if x1 <= x0 or y1 <= y0 or w <= 0 or h <= 0:
            continue
        stats = gray_metrics(gray[y0:y1, x0:x1])
        brightness[i], sharpness[i] = stats["brightness"], stats["sharpness"]
    return {"box_brightness": brightness, "box_sharpness": sharpness}


def box_metrics(image, boxes_xywh_relative, original_size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Every metric of :data:`BOX_METRICS` for boxes (N, 4) of one decoded image, one array (N,) each.

    ``image``: an array as :func:`curate_loop.quality.image_metrics.to_uint8` takes, possibly a reduction of the
    original (then ``original_size`` = its (width, height), for the pixel areas). Zero-area boxes get area 0,
    aspect ratio 0 and NaN crop metrics; they never raise.
    """
    arr = to_uint8(image)
    width, height = original_size or (arr.shape[1], arr.shape[0])
    return {**box_geometry(boxes_xywh_relative, width, height),
            **crop_metrics(luminance(reduce_to_max_side(arr)), boxes_xywh_relative)}
