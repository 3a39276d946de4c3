"""Decode images robustly, in worker processes, so decoding overlaps with inference.

Handles EXIF orientation and every PIL mode we meet in practice (grayscale, CMYK, RGBA, palette,
16-bit); a missing or corrupt file becomes a reported failure for that sample, never a crash.

Speed: a JPEG much larger than the model input is decoded at a reduced scale (libjpeg's DCT scaling,
1/2 to 1/8; PIL's ``draft``), never below the size the preprocessing resizes to. For a ~1 MP photo
and a 224 px model this cuts decoding and resizing several-fold, leaving the CPU to the model.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def open_rgb(path: str, *, min_size: int | None = None) -> Image.Image:
    """Open an image as 8-bit RGB with its EXIF orientation applied.

    ``min_size``: both sides of the result stay at least this large (or the full size when smaller);
    a JPEG is decoded at the smallest DCT scale that allows it. None decodes at full size.
    """
    with Image.open(path) as img:
        if min_size:
            img.draft("RGB", (min_size, min_size))  # JPEG only (else a no-op); square, so orientation-free
        ImageOps.exif_transpose(img, in_place=True)  # loads the pixels; no copy when upright
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: rescale to 8 bit
            arr = np.asarray(img, dtype=np.float32)
            hi = float(arr.max()) or 1.0
            img = Image.fromarray((arr / hi * 255).astype(np.uint8))
        if img.mode in ("RGBA", "LA", "P"):
            img = img.convert("RGBA")
            background = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, img)
        return img if img.mode == "RGB" else img.convert("RGB")


def resize_target(preprocess) -> int | None:
    """The smallest side an image needs before ``preprocess`` so it only ever shrinks it, or None when
    unknown. Reads the leading ``Resize`` of a torchvision ``Compose`` (what open_clip builds)."""
    from torchvision.transforms import Resize

    first = next(iter(getattr(preprocess, "transforms", [])), None)
    if not isinstance(first, Resize):
        return None
    size = first.size if isinstance(first.size, int) else max(first.size)  # int: the shorter side
    return int(size) if first.max_size is None else None  # max_size may shrink below ``size``


class ImageFiles:
    """A torch-style dataset: item i -> (i, preprocessed tensor or None, error message or None).

    ``reduced_decode``: decode JPEGs at a reduced scale when the preprocessing's resize target is known.
    """

    def __init__(self, filepaths: list[str], preprocess, *, reduced_decode: bool = True):
        self.filepaths = list(filepaths)
        self.preprocess = preprocess
        self.min_size = resize_target(preprocess) if reduced_decode else None

    def __len__(self) -> int:
        return len(self.filepaths)

    def __getitem__(self, index: int):
        try:
            return index, self.preprocess(open_rgb(self.filepaths[index], min_size=self.min_size)), None
        except Exception as exc:  # any decode failure is the sample's, reported by the caller
            return index, None, f"{type(exc).__name__}: {exc}"


def collate(items):
    """Stack the good tensors; keep indices of good and failed items apart.

    Stacking goes through torch's ``default_collate``, which in a DataLoader worker writes the batch
    straight into shared memory: one copy less per batch on its way to the main process.
    """
    from torch.utils.data import default_collate

    good = [(i, t) for i, t, err in items if err is None]
    failed = [(i, err) for i, _, err in items if err is not None]
    tensors = default_collate([t for _, t in good]) if good else None
    return [i for i, _ in good], tensors, failed
