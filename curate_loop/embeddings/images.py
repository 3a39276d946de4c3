"""Decode images for embedding: robustly, and fast enough to keep up with the model.

Handles EXIF orientation and every PIL mode we meet in practice (grayscale, CMYK, RGBA, palette,
16-bit); a missing or corrupt file becomes a reported failure for that sample, never a crash.

Speed: a JPEG much larger than the model input is decoded at a reduced scale (libjpeg's DCT scaling,
1/2 to 1/8; PIL's ``draft``), never below ``DRAFT_HEADROOM`` times the size the preprocessing resizes
to, so the model's own resize still filters the result (:func:`reduced_decode_error` measures what is
left). For a 12 MP photo and a 224 px model this cuts decoding and resizing several-fold, leaving the
CPU to the model. A batch can be decoded by several threads at once: PIL's decoding and resizing
release the GIL.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
from PIL import Image, ImageOps

from curate_loop.errors import InvalidInputError

DRAFT_HEADROOM = 2
"""A reduced-scale decode keeps both sides at least this many times the preprocessing's resize target.

Reducing first and then resizing by less than 2x is a different filter from the model's one bicubic
resize: on photo-like JPEGs with fine texture (grass, gravel) at 1x, 3-4% of the model's input values
moved by more than 8/255. At 2x (PIL's own ``reducing_gap`` default for ``thumbnail``) the final resize
averages over at least two decoded pixels per output pixel and the difference is a rounding-level one
(``tests/test_embed_decode.py`` bounds it).
"""
OFF_BY = 8 / 255  # a difference in a model input value (pixel units) that counts as visible


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


def _leading_resize(preprocess):
    """The ``Resize`` a torchvision ``Compose`` (what open_clip builds) starts with, or None."""
    from torchvision.transforms import Resize

    first = next(iter(getattr(preprocess, "transforms", [])), None)
    return first if isinstance(first, Resize) else None


def resize_target(preprocess) -> int | None:
    """The smallest side an image needs before ``preprocess`` so it only ever shrinks it, or None when
    unknown (no leading ``Resize``)."""
    resize = _leading_resize(preprocess)
    if resize is None or resize.max_size is not None:  # max_size may shrink below ``size``
        return None
    return int(resize.size if isinstance(resize.size, int) else max(resize.size))  # int: the shorter side


class ResizedCenterCrop:
    """torchvision's ``Resize(size)`` then ``CenterCrop`` on a PIL image, as one resize of only the crop
    window: the same filter taps (pixels agree up to rounding, +-1 grey level), without resizing what the
    crop throws away (a quarter to a half of a photo; ~30% less time). A crop larger than the resized
    image (padding) takes the two torchvision steps."""

    def __init__(self, resize, crop):
        from torchvision.transforms.functional import pil_modes_mapping

        self.resize, self.crop = resize, crop
        self.size = resize.size if isinstance(resize.size, int) else resize.size[0]
        self.crop_h, self.crop_w = crop.size
        self.resample = pil_modes_mapping[resize.interpolation]

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        new_long = int(self.size * max(w, h) / min(w, h))  # as torchvision rounds
        new_w, new_h = (self.size, new_long) if w <= h else (new_long, self.size)
        if self.crop_w > new_w or self.crop_h > new_h:
            return self.crop(self.resize(img))
        top, left = int(round((new_h - self.crop_h) / 2.0)), int(round((new_w - self.crop_w) / 2.0))
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + self.crop_w) * sx, (top + self.crop_h) * sy)
        return img.resize((self.crop_w, self.crop_h), self.resample, box=box)


def fuse_resize_crop(preprocess):
    """``preprocess`` with a leading ``Resize(size)`` + ``CenterCrop`` made one :class:`ResizedCenterCrop`;
    any other preprocessing is returned as it is."""
    from torchvision.transforms import CenterCrop, Compose

    resize = _leading_resize(preprocess)
    steps = list(getattr(preprocess, "transforms", []))
    one_side = resize is not None and (isinstance(resize.size, int) or len(resize.size) == 1)
    if not (one_side and resize.max_size is None and len(steps) > 1 and isinstance(steps[1], CenterCrop)):
        return preprocess
    return Compose([ResizedCenterCrop(resize, steps[1]), *steps[2:]])


def split_preprocess(preprocess):
    """``(PIL steps, Normalize)`` when ``preprocess`` ends with ``ToTensor`` then ``Normalize`` (open_clip's
    does), else None: the PIL steps give a uint8 image and a whole batch is normalised in one step."""
    from torchvision.transforms import Compose, Normalize, ToTensor

    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) < 2 or not (isinstance(steps[-2], ToTensor) and isinstance(steps[-1], Normalize)):
        return None
    return Compose(steps[:-2]), steps[-1]


class ImageFiles:
    """A torch-style dataset: item i -> (i, preprocessed tensor or None, error message or None).

    ``reduced_decode``: decode JPEGs at a reduced scale (to ``draft_size``: ``DRAFT_HEADROOM`` x the
    preprocessing's resize target ``min_size``) when that target is known.
    The preprocessing's leading resize and centre crop run as one step (:class:`ResizedCenterCrop`).
    ``executor``: decodes the items of a batch in parallel (:meth:`__getitems__`, what a DataLoader
    calls); a thread pool works, as PIL releases the GIL. Only for decoding in this process.
    ``uint8``: items are the preprocessing's uint8 HxWx3 image before its ``ToTensor`` + ``Normalize``
    (when it ends so), and :meth:`model_input` finishes a collated batch: a quarter of the bytes to move,
    and no torch work in decoding threads, whose own OpenMP threads would compete with the model's.
    ``quality``: also measure the data-quality metrics and content hash of each image from the same decode
    (:func:`decode_with_quality`); items then carry a 4th element ``(metrics, hash)``.
    """

    def __init__(self, filepaths: list[str], preprocess, *, reduced_decode: bool = True,
                 executor: Executor | None = None, uint8: bool = False, quality: bool = False):
        self.filepaths = list(filepaths)
        self.preprocess = preprocess
        self.transform = fuse_resize_crop(preprocess)
        self.min_size = resize_target(preprocess) if reduced_decode else None
        self.draft_size = self.min_size * DRAFT_HEADROOM if self.min_size else None
        self.executor = executor
        split = split_preprocess(self.transform) if uint8 else None
        self.pil_steps, self.normalize = split or (None, None)
        self.quality = quality

    def __len__(self) -> int:
        return len(self.filepaths)

    def __getitem__(self, index: int):
        measured = None
        try:
            if self.quality:
                img, measured = decode_with_quality(self.filepaths[index])
            else:
                img = open_rgb(self.filepaths[index], min_size=self.draft_size)
            if self.pil_steps is not None:
                item = np.array(self.pil_steps(img))  # writable, as torch wants
            else:
                item = self.transform(img)
        except Exception as exc:  # any decode failure is the sample's, reported by the caller
            item, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = None
        return (index, item, error, measured) if self.quality else (index, item, error)

    def __getitems__(self, indices: list[int]) -> list:
        """The items of a batch, in order; decoded by ``executor`` when there is one."""
        if self.executor is None:
            return [self[i] for i in indices]
        return list(self.executor.map(self.__getitem__, indices))

    def model_input(self, batch, device, dtype):
        """A collated batch as the model's input on ``device``: uint8 items are moved first, then scaled
        and normalised there in one vectorised step (exactly as ``ToTensor`` + ``Normalize`` would)."""
        if self.normalize is None:
            return batch.to(device, dtype=dtype, non_blocking=True)
        from torchvision.transforms.functional import normalize

        x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        return normalize(x, self.normalize.mean, self.normalize.std, inplace=True).to(dtype)  # no 2nd copy


def decode_with_quality(path: str):
    """``(RGB image for the model, (quality metrics, content hash))`` from ONE decode of ``path``.

    The quality decode (:func:`curate_loop.quality.decode.decode_for_quality`, long side up to its working size)
    is at least as large as the embedding's reduced decode, so the model's own resize still filters it; only a
    16/32-bit image, which the two decodes scale differently, is opened a second time for the model.
    """
    from curate_loop.quality.decode import decode_for_quality
    from curate_loop.quality.image_metrics import measure

    decoded = decode_for_quality(path)
    measured = (measure(decoded.pixels, decoded.size), decoded.content_hash)
    if decoded.high_bit_depth:
        return open_rgb(path), measured
    img = Image.fromarray(decoded.pixels)
    return (img if img.mode == "RGB" else img.convert("RGB")), measured


def collate(items):
    """Stack the good tensors (or uint8 arrays); keep indices of good and failed items apart.

    Stacking goes through torch's ``default_collate``, which in a DataLoader worker writes the batch
    straight into shared memory: one copy less per batch on its way to the main process.
    Items of an :class:`ImageFiles` with ``quality`` add a 4th element: the good items' ``(metrics, hash)``.
    """
    from torch.utils.data import default_collate

    good = [(i, t) for i, t, err, *_ in items if err is None]
    failed = [(i, err) for i, _, err, *_ in items if err is not None]
    tensors = default_collate([t for _, t in good]) if good else None
    if items and len(items[0]) == 4:
        return [i for i, _ in good], tensors, failed, [m for _, _, err, m in items if err is None]
    return [i for i, _ in good], tensors, failed


def reduced_decode_error(filepaths: list[str], preprocess, *, off_by: float = OFF_BY) -> dict:
    """How far the reduced decode moves the model's input from a full decode + ``preprocess`` itself.

    Both inputs are compared in pixel units (normalisation undone: [0, 1] per channel) over every value
    of every image. Returns ``mean_abs_diff`` and ``share_off`` (the share of values off by more than
    ``off_by``), each overall and for the worst image, plus ``n_images`` and ``n_reduced`` (how many were
    decoded at a reduced scale at all; the others are identical by construction). Unreadable files raise.
    """
    import torch

    split = split_preprocess(preprocess)
    std = torch.tensor(split[1].std if split else (1.0, 1.0, 1.0)).view(3, 1, 1)
    reduced = ImageFiles(filepaths, preprocess)
    diffs, n_reduced = [], 0
    for i, path in enumerate(filepaths):
        _, x_reduced, err = reduced[i]
        if err is not None:
            raise InvalidInputError(f"Cannot compare decodes of {path!r}: {err}. Check with readable images.")
        with Image.open(path) as img:  # reads the header only: is this one decoded at a reduced scale?
            size = img.size
            if reduced.draft_size:
                img.draft("RGB", (reduced.draft_size, reduced.draft_size))
            n_reduced += img.size != size
        diffs.append(((x_reduced - preprocess(open_rgb(path))) * std).abs())
    diff = torch.stack(diffs)
    per_image = diff.mean(dim=(1, 2, 3)), (diff > off_by).float().mean(dim=(1, 2, 3))
    return {"mean_abs_diff": float(diff.mean()), "share_off": float((diff > off_by).float().mean()),
            "worst_image_mean_abs_diff": float(per_image[0].max()), "worst_image_share_off": float(per_image[1].max()),
            "off_by": off_by, "n_images": len(filepaths), "n_reduced": int(n_reduced)}
