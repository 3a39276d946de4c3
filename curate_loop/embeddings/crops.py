"""Object crops for object-level embeddings: one decode per image, every box of it cropped.

Boxes are FiftyOne's relative ``[x, y, w, h]``. A crop is the box grown by ``margin`` (a fraction of
the box's own size on each side, for context), clipped to the image. Boxes smaller than
``min_crop_px`` are grown around their centre to that size: a 3-pixel crop upsampled to 224 is noise,
a small window around it is still the object in its context. Boxes with no area inside the image are
reported per label and skipped.
"""

from __future__ import annotations

import numpy as np

from curate_loop.embeddings.images import open_rgb

DEFAULT_MARGIN = 0.1
DEFAULT_MIN_CROP_PX = 16


def crop_windows(boxes: np.ndarray, width: int, height: int, *, margin: float = DEFAULT_MARGIN,
                 min_crop_px: int = DEFAULT_MIN_CROP_PX) -> tuple[np.ndarray, np.ndarray]:
    """Pixel windows ``(left, top, right, bottom)`` for relative boxes ``(n, 4)``, and a validity mask.

    A box is invalid when it has no positive area inside the image (NaN, zero or negative size, or
    entirely outside); valid boxes always give a window of at least one pixel inside the image.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    size = np.array([width, height, width, height], dtype=np.float64)
    x, y, w, h = (boxes * size).T
    x0, y0 = np.clip(x, 0, width), np.clip(y, 0, height)
    x1, y1 = np.clip(x + w, 0, width), np.clip(y + h, 0, height)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(boxes).all(axis=1) & (w > 0) & (h > 0) & (x1 > x0) & (y1 > y0)
    # grow by the margin, then up to the minimum size, around the visible part of the box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w = np.maximum((x1 - x0) * (1 + 2 * margin), min(min_crop_px, width)) / 2
    half_h = np.maximum((y1 - y0) * (1 + 2 * margin), min(min_crop_px, height)) / 2
    # shift windows that stick out of the image back inside rather than shrinking them
    left = np.clip(cx - half_w, 0, None)
    left = np.minimum(left, np.maximum(width - 2 * half_w, 0))
    top = np.clip(cy - half_h, 0, None)
    top = np.minimum(top, np.maximum(height - 2 * half_h, 0))
    right = np.minimum(left + 2 * half_w, width)
    bottom = np.minimum(top + 2 * half_h, height)
    windows = np.stack([np.floor(left), np.floor(top), np.ceil(right), np.ceil(bottom)], axis=1)
    windows = np.nan_to_num(windows).astype(np.int64)
    windows[:, 2] = np.maximum(windows[:, 2], windows[:, 0] + 1)
    windows[:, 3] = np.maximum(windows[:, 3], windows[:, 1] + 1)
    return windows, valid


class ImageCrops:
    """A torch-style dataset over images: item i -> (label indices, crop tensors, failures).

    ``label_index[i]`` holds the flat indices of the labels of image i and ``boxes[i]`` their boxes;
    failures are ``(label index, reason)`` pairs, so one bad box or one missing file never stops a run.
    """

    def __init__(self, filepaths: list[str], boxes: list[np.ndarray], label_index: list[np.ndarray], preprocess,
                 *, margin: float = DEFAULT_MARGIN, min_crop_px: int = DEFAULT_MIN_CROP_PX):
        self.filepaths, self.boxes, self.label_index = list(filepaths), list(boxes), list(label_index)
        self.preprocess, self.margin, self.min_crop_px = preprocess, margin, min_crop_px

    def __len__(self) -> int:
        return len(self.filepaths)

    def __getitem__(self, i: int):
        labels = np.asarray(self.label_index[i], dtype=np.int64)
        try:
            image = open_rgb(self.filepaths[i])
        except Exception as exc:  # the image's failure is each of its labels' failure
            reason = f"{type(exc).__name__}: {exc}"
            return [], [], [(int(k), reason) for k in labels]
        windows, valid = crop_windows(self.boxes[i], image.width, image.height, margin=self.margin,
                                      min_crop_px=self.min_crop_px)
        failures = [(int(k), "box has no area inside the image") for k in labels[~valid]]
        good = labels[valid].tolist()
        tensors = [self.preprocess(image.crop(tuple(int(v) for v in window))) for window in windows[valid]]
        return good, tensors, failures


def collate_crops(items):
    """Flatten the crops of a batch of images into ``(label indices, stacked tensors, failures)``."""
    import torch

    good = [k for labels, _, _ in items for k in labels]
    tensors = [t for _, crops, _ in items for t in crops]
    failed = [f for _, _, failures in items for f in failures]
    return good, (torch.stack(tensors) if tensors else None), failed
