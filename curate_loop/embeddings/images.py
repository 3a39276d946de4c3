"""Decode images robustly, in worker processes, so decoding overlaps with inference.

Handles EXIF orientation and every PIL mode we meet in practice (grayscale, CMYK, RGBA, palette,
16-bit); a missing or corrupt file becomes a reported failure for that sample, never a crash.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def open_rgb(path: str) -> Image.Image:
    """Open an image as 8-bit RGB with its EXIF orientation applied."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: rescale to 8 bit
            arr = np.asarray(img, dtype=np.float32)
            hi = float(arr.max()) or 1.0
            img = Image.fromarray((arr / hi * 255).astype(np.uint8))
        if img.mode in ("RGBA", "LA", "P"):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        return img.convert("RGB")


class ImageFiles:
    """A torch-style dataset: item i -> (i, preprocessed tensor or None, error message or None)."""

    def __init__(self, filepaths: list[str], preprocess):
        self.filepaths = list(filepaths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.filepaths)

    def __getitem__(self, index: int):
        try:
            return index, self.preprocess(open_rgb(self.filepaths[index])), None
        except Exception as exc:  # any decode failure is the sample's, reported by the caller
            return index, None, f"{type(exc).__name__}: {exc}"


def collate(items):
    """Stack the good tensors; keep indices of good and failed items apart."""
    import torch

    good = [(i, t) for i, t, err in items if err is None]
    failed = [(i, err) for i, _, err in items if err is not None]
    tensors = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], tensors, failed
