"""Per-image quality metrics on decoded pixels: numpy in, numbers out (never imports fiftyone).

Every metric is computed from one 256-bin luminance histogram plus one Laplacian, so an image costs a few
passes over its pixels. Luminance is Rec. 601 luma (what PIL's ``"L"`` mode uses), in [0, 1].

=============== ==================================================================================================
metric          meaning
=============== ==================================================================================================
brightness      mean luminance, [0, 1]
highlights      99th percentile of luminance, [0, 1]: low when even the brightest parts are dim (dark images)
shadows         5th percentile of luminance, [0, 1]: high when even the darkest parts are light (over-exposed)
contrast        RMS contrast: standard deviation of luminance, [0, 0.5]
sharpness       RMS of the 4-neighbour Laplacian / RMS of the gradient (forward differences): about one over the
                width of the image's edges in pixels, so neither darkening or fading an image nor how much of it
                is edges changes it, while blur (wider edges) lowers it; 0 for a flat image
entropy         Shannon entropy of the luminance histogram, bits in [0, 8]: near-constant images are low
width, height   pixels, after EXIF orientation
size            sqrt(width * height), pixels
aspect_ratio    min(width / height, height / width), (0, 1]: 1 is square, low is elongated (either way)
colorfulness    mean over pixels of (max - min of R, G, B), [0, 1]: 0 for a grayscale image, also one stored
                as RGB
=============== ==================================================================================================

Images whose long side exceeds :data:`MAX_SIDE` are measured on a box-filtered reduction (integer factor; sizes
come from the original), which bounds the cost of a large photo and keeps sharpness comparable across sizes.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

METRICS = ("brightness", "highlights", "shadows", "contrast", "sharpness", "entropy", "width", "height", "size",
           "aspect_ratio", "colorfulness")

MAX_SIDE = 1024
"""Long side (pixels) above which an image is measured on an integer-factor reduction: ordinary images are measured
at full resolution (where blur shows), a 12 MP photo costs about as much as a 1 MP one."""

HIGHLIGHTS_PERCENTILE, SHADOWS_PERCENTILE = 99, 5  # as CleanVision's dark / light scores


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``image`` as uint8 HxW (gray) or HxWx3 (RGB).

    Accepts HxW, HxWx1, HxWx3 and HxWx4 (RGBA: composited on white, as the embedding decode does); dtypes uint8,
    uint16 (full range: 65535 is white), bool and float in [0, 1].
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"Expected an HxW, HxWx3 or HxWx4 image, got shape {arr.shape}.")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(np.nan_to_num(arr) * 255 + 0.5, 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"Unsupported pixel type {arr.dtype}: use uint8, uint16, bool or float in [0, 1].")
    if arr.ndim == 3 and arr.shape[2] == 4:
        alpha = arr[:, :, 3:].astype(np.uint16)
        arr = ((arr[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return arr


def reduce_to_max_side(arr: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """``arr`` (uint8) box-reduced by the smallest integer factor that brings its long side to ``max_side`` or less."""
    factor = -(-max(arr.shape[:2]) // max_side)
    if factor <= 1:
        return arr
    return np.asarray(Image.fromarray(arr).reduce(factor))


def luminance(arr: np.ndarray) -> np.ndarray:
    """uint8 HxW luma of a uint8 gray or RGB image."""
    if arr.ndim == 2:
        return arr
    return np.asarray(Image.fromarray(arr).convert("L"))  # Rec. 601 in integer arithmetic, in C


def _percentile_from_cdf(cdf: np.ndarray, q: float) -> float:
    """The grey level (0..255) below which ``q`` percent of the pixels lie, from a cumulative histogram."""
    return float(np.searchsorted(cdf, q / 100 * cdf[-1], side="left"))


def _sum_of_squares(x: np.ndarray) -> float:
    flat = x.ravel()
    return float(np.dot(flat, flat))  # float32: one BLAS call, no temporary


def edge_sharpness(gray: np.ndarray) -> float:
    """RMS of the 4-neighbour Laplacian over RMS of the gradient (grey levels cancel); NaN below 3x3, 0 when flat."""
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return float("nan")
    g = gray.astype(np.float32)  # exact: every value below is a small integer
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    gx, gy = g[:, 1:] - g[:, :-1], g[1:, :] - g[:-1, :]
    grad = np.sqrt(_sum_of_squares(gx) / gx.size + _sum_of_squares(gy) / gy.size)
    return float(np.sqrt(_sum_of_squares(lap) / lap.size) / grad) if grad > 0 else 0.0


def gray_metrics(gray: np.ndarray) -> dict[str, float]:
    """brightness, highlights, shadows, contrast, sharpness and entropy of a uint8 luminance image."""
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    n = hist.sum()
    levels = np.arange(256, dtype=np.float64)
    mean = float(hist @ levels / n)
    std = float(np.sqrt(max(hist @ (levels - mean) ** 2 / n, 0.0)))
    cdf = np.cumsum(hist)
    p = hist[hist > 0] / n
    return {
        "brightness": mean / 255,
        "highlights": _percentile_from_cdf(cdf, HIGHLIGHTS_PERCENTILE) / 255,
        "shadows": _percentile_from_cdf(cdf, SHADOWS_PERCENTILE) / 255,
        "contrast": std / 255,
        "sharpness": edge_sharpness(gray),
        "entropy": float(-(p * np.log2(p)).sum()) + 0.0,
    }


def colorfulness(arr: np.ndarray) -> float:
    """Mean channel spread (max - min of R, G, B) in [0, 1]; 0 for gray images, whether stored as L or RGB."""
    if arr.ndim == 2:
        return 0.0
    sample = arr[::2, ::2] if min(arr.shape[:2]) >= 64 else arr  # every 4th pixel: a mean, at a quarter of the cost
    r, g, b = sample[..., 0], sample[..., 1], sample[..., 2]
    spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return float(spread.mean(dtype=np.float64) / 255)


def shape_metrics(width: int, height: int) -> dict[str, float]:
    return {"width": float(width), "height": float(height), "size": float(np.sqrt(width * height)),
            "aspect_ratio": float(min(width / height, height / width)) if width and height else 0.0}


def measure(arr: np.ndarray, original_size: tuple[int, int] | None = None) -> dict[str, float]:
    """The metrics of a uint8 gray or RGB image already at working size; ``original_size`` (width, height) is the
    size before any reduction (default: this array's)."""
    width, height = original_size or (arr.shape[1], arr.shape[0])
    return {**gray_metrics(luminance(arr)), **shape_metrics(width, height), "colorfulness": colorfulness(arr)}


def image_metrics(image: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one decoded image (see :func:`to_uint8` for the accepted arrays)."""
    arr = to_uint8(image)
    return measure(reduce_to_max_side(arr), (arr.shape[1], arr.shape[0]))


def batch_image_metrics(images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """:func:`image_metrics` of each image, as one float array (N,) per metric. Images of any sizes: each image's
    metrics are vectorised over its pixels (a batch of differently sized images cannot share one array)."""
    rows = [image_metrics(image) for image in images]
    return {m: np.asarray([row[m] for row in rows], dtype=np.float64) for m in METRICS}


def pil_metrics(img: Image.Image, original_size: tuple[int, int] | None = None) -> dict[str, float]:
    """The metrics of one already-decoded PIL image (e.g. in an embedding pass's decoding thread, right after
    ``open_rgb`` and before preprocessing); ``original_size`` (width, height) when it was decoded reduced."""
    arr = to_uint8(np.asarray(img if img.mode in ("L", "RGB", "RGBA") else img.convert("RGB")))
    return measure(reduce_to_max_side(arr), original_size or (arr.shape[1], arr.shape[0]))


def pil_image_metrics(images: list[Image.Image], original_sizes: list[tuple[int, int]] | None = None
                      ) -> dict[str, np.ndarray]:
    """:func:`pil_metrics` of a batch of decoded PIL images (an embedding batch's), one array (N,) per metric."""
    rows = [pil_metrics(img, original_sizes[i] if original_sizes else None) for i, img in enumerate(images)]
    return {m: np.asarray([row[m] for row in rows], dtype=np.float64) for m in METRICS}


def content_hash(image_bytes_or_array, *, salt: str = "") -> str:
    """A hex digest identifying exact copies: of the bytes given, or of an array's pixels together with its shape
    and dtype (so a 2x8 and an 8x2 image of the same bytes differ); ``salt`` is hashed first (e.g. the stored size
    of an image measured reduced)."""
    h = hashlib.blake2b(salt.encode(), digest_size=16)
    if isinstance(image_bytes_or_array, (bytes, bytearray, memoryview)):
        h.update(bytes(image_bytes_or_array))
    else:
        arr = np.ascontiguousarray(image_bytes_or_array)
        h.update(f"{arr.shape}|{arr.dtype}|".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()
