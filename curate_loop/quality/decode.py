"""Decode an image file for the quality metrics: faithful to what is stored, and fast.

Like :func:`curate_loop.embeddings.images.open_rgb` (EXIF orientation; CMYK, palette, alpha composited on white),
except in what the metrics need: a 16-bit image keeps its stored range (65535 is white, so a dark 16-bit scan stays
dark; the embedding decode stretches it to its maximum instead), and a grayscale file stays one channel. A JPEG
larger than :data:`~curate_loop.quality.image_metrics.MAX_SIDE` is decoded at a reduced DCT scale (PIL's ``draft``)
no smaller than that, as the embedding decode does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from curate_loop.quality.box_metrics import box_metrics
from curate_loop.quality.image_metrics import MAX_SIDE, content_hash, measure, reduce_to_max_side, to_uint8

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


@dataclass
class Decoded:
    pixels: np.ndarray  # uint8 HxW or HxWx3, long side <= MAX_SIDE
    size: tuple[int, int]  # (width, height) of the stored image, after EXIF orientation
    content_hash: str  # of the decoded pixels and the stored size
    high_bit_depth: bool = False  # a 16/32-bit file: its pixels keep the stored range (the embedding decode stretches)


def decode_for_quality(path: str, *, max_side: int = MAX_SIDE) -> Decoded:
    """Open ``path`` as uint8 pixels at working size. Raises whatever PIL raises for an unreadable file."""
    with Image.open(path) as img:
        width, height = img.size  # the stored size, before any reduced decode
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that turn the image by 90 degrees
            width, height = height, width
        img.draft(img.mode if img.mode in ("L", "RGB") else "RGB", (max_side, max_side))  # JPEG only, else a no-op
        ImageOps.exif_transpose(img, in_place=True)
        arr = reduce_to_max_side(_as_uint8(img), max_side)
        high = img.mode in _SIXTEEN_BIT or img.mode in ("I", "F")
    return Decoded(arr, (width, height), content_hash(arr, salt=f"{width}x{height}"), high)


def _as_uint8(img: Image.Image) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and _max_value(img) <= 65535):
        return to_uint8(np.asarray(img).astype(np.uint16))
    if img.mode in ("I", "F"):  # other 32-bit data: scaled to its own maximum, as the embedding decode does
        arr = np.asarray(img, dtype=np.float64)
        return to_uint8(arr / (arr.max() or 1.0))
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"))
    if img.mode in ("RGBA", "LA", "P", "PA", "La", "RGBa"):
        return to_uint8(np.asarray(img.convert("RGBA")))
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, ...


def _max_value(img: Image.Image) -> float:
    return float(img.getextrema()[1])


def measure_file(path: str, boxes=None, *, max_side: int = MAX_SIDE):
    """One file's image metrics, content hash and (when ``boxes`` (N, 4) are given) box metrics.

    Returns ``(metrics, hash, box_metrics or None, error)``: on failure the first three are None and ``error`` says
    why (``"OSError: ..."``), so one bad file never stops a batch.
    """
    try:
        decoded = decode_for_quality(path, max_side=max_side)
        metrics = measure(decoded.pixels, decoded.size)
        per_box = box_metrics(decoded.pixels, boxes, decoded.size) if boxes is not None and len(boxes) else None
        return metrics, decoded.content_hash, per_box, None
    except Exception as exc:  # any decode failure is the sample's, reported by the caller
        return None, None, None, f"{type(exc).__name__}: {exc}"
