"""Generate the bundled example images deterministically: no FiftyOne here, only numpy and PIL.

Real 8x8 digit images from scikit-learn's ``load_digits`` are upscaled, inked in a colour that
contrasts with the background and composited onto canvases whose backgrounds are crops of real
photos that ship with scikit-image (plus plain gradients). The data is shaped for curation:

- uneven class frequencies with two rare classes (see ``CLASS_WEIGHTS``);
- dense near-duplicate groups: one canvas copied with a small shift, brightness jitter and noise;
- odd outliers (edge cases): inverted giant digits, a digit on static noise, a tiny-digit crowd,
  a rotated and stretched digit on a flat colour.

Every canvas records its true boxes and classes, its kind and its near-duplicate group; ``label_noise`` of the
labeled split's objects get a wrong class in the user-facing labels (:func:`plant_label_noise`), so the
mislabel scan can be measured against the kept-aside truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

CLASS_NAMES = tuple(str(d) for d in range(10))
# Uneven on purpose: "8" and "9" are rare, "0" and "1" are common.
CLASS_WEIGHTS = np.array([0.20, 0.17, 0.14, 0.12, 0.10, 0.09, 0.08, 0.06, 0.025, 0.015])
CANVAS_SIZES = ((256, 256), (320, 240), (240, 320))  # (width, height)
DIGIT_SIZE_RANGE = (28, 72)  # pixels on the canvas
MAX_DIGITS_PER_CANVAS = 5
PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
               "camera", "moon", "grass", "gravel", "brick", "coins", "horse", "retina")
OUTLIER_KINDS = ("inverted_giant", "static_noise", "tiny_crowd", "rotated_stretched")


@dataclass
class CanvasObject:
    label: str
    box: tuple[float, float, float, float]  # x, y, w, h relative to the canvas, FiftyOne's convention


@dataclass
class Canvas:
    image: np.ndarray  # (H, W, 3) uint8
    objects: list[CanvasObject]
    kind: str = "regular"  # regular | near_duplicate | outlier
    outlier_kind: str | None = None
    near_dup_group: int | None = None
    split: str = "pool"  # labeled | pool


@dataclass(frozen=True)
class ExampleSpec:
    """How many canvases of each sort to make; ``seed`` fixes every random choice."""

    n_labeled: int = 150
    n_pool: int = 450
    n_near_dup_groups: int = 6
    near_dup_group_size: int = 6
    n_outliers: int = 8
    seed: int = 0
    kinds: tuple[str, ...] = field(default=OUTLIER_KINDS)
    label_noise: float = 0.04  # share of the labeled split's objects whose label is planted wrong

    def __post_init__(self) -> None:
        if not 0 <= self.label_noise < 1:
            raise ValueError(f"label_noise={self.label_noise} must be a share in [0, 1)")
        if self.n_labeled < 0 or self.n_pool < 0:
            raise ValueError(f"n_labeled={self.n_labeled} and n_pool={self.n_pool} must be >= 0")
        extra = self.n_near_dup_groups * self.near_dup_group_size + self.n_outliers
        if extra > self.n_pool:
            raise ValueError(
                f"The pool (n_pool={self.n_pool}) must hold the near-duplicate groups "
                f"({self.n_near_dup_groups}x{self.near_dup_group_size}) and outliers ({self.n_outliers}): "
                f"raise n_pool to at least {extra}."
            )


class _Sources:
    """The real images we composite: digits by class, and background photos."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits
        import skimage.data

        digits = load_digits()
        self.digits_by_class = {
            str(c): (digits.images[digits.target == c] / 16.0).astype(np.float32) for c in range(10)
        }
        self.photos = []
        for name in PHOTO_NAMES:
            photo = np.asarray(getattr(skimage.data, name)())
            if photo.ndim == 2:
                photo = np.stack([photo] * 3, axis=-1)
            self.photos.append(photo[..., :3].astype(np.uint8))


def generate_canvases(spec: ExampleSpec) -> list[Canvas]:
    """Make every canvas of the example, labeled ones first; same spec, same pixels."""
    rng = np.random.default_rng(spec.seed)
    sources = _Sources()
    canvases = [_regular_canvas(rng, sources) for _ in range(spec.n_labeled)]
    for canvas in canvases:
        canvas.split = "labeled"
    n_regular_pool = spec.n_pool - spec.n_near_dup_groups * spec.near_dup_group_size - spec.n_outliers
    pool = [_regular_canvas(rng, sources) for _ in range(n_regular_pool)]
    for group in range(spec.n_near_dup_groups):
        base = _regular_canvas(rng, sources)
        pool.extend(_near_duplicates(rng, base, group, spec.near_dup_group_size))
    for i in range(spec.n_outliers):
        pool.append(_outlier_canvas(rng, sources, spec.kinds[i % len(spec.kinds)]))
    order = rng.permutation(len(pool))  # interleave so the pool's order tells nothing
    return canvases + [pool[i] for i in order]


def _regular_canvas(rng: np.random.Generator, sources: _Sources) -> Canvas:
    width, height = CANVAS_SIZES[rng.integers(len(CANVAS_SIZES))]
    background = _background(rng, sources, width, height)
    n_digits = int(rng.integers(1, MAX_DIGITS_PER_CANVAS + 1))
    labels = rng.choice(CLASS_NAMES, size=n_digits, p=CLASS_WEIGHTS)
    sizes = rng.integers(DIGIT_SIZE_RANGE[0], DIGIT_SIZE_RANGE[1] + 1, size=n_digits)
    return _compose(rng, sources, background, list(labels), list(sizes))


def _background(rng: np.random.Generator, sources: _Sources, width: int, height: int) -> np.ndarray:
    if rng.random() < 0.25:  # a plain two-colour gradient
        start, stop = rng.integers(0, 256, size=(2, 3))
        t = np.linspace(0.0, 1.0, width)[None, :, None]
        return np.broadcast_to(start + (stop - start) * t, (height, width, 3)).astype(np.uint8)
    photo = sources.photos[rng.integers(len(sources.photos))]
    scale = max(width / photo.shape[1], height / photo.shape[0]) * rng.uniform(1.0, 1.6)
    resized = np.asarray(
        Image.fromarray(photo).resize((int(np.ceil(photo.shape[1] * scale)), int(np.ceil(photo.shape[0] * scale))))
    )
    y0 = rng.integers(0, resized.shape[0] - height + 1)
    x0 = rng.integers(0, resized.shape[1] - width + 1)
    return resized[y0 : y0 + height, x0 : x0 + width].copy()


def _compose(rng, sources, background, labels, sizes, *, rotate: float = 0.0, stretch: float = 1.0,
             ink=None) -> Canvas:
    """Paste one digit per label at a free spot; boxes are the tight extent of the ink."""
    canvas = background.astype(np.float32)
    height, width = canvas.shape[:2]
    occupied = np.zeros((height, width), dtype=bool)
    objects = []
    for label, size in zip(labels, sizes):
        digit = sources.digits_by_class[label][rng.integers(len(sources.digits_by_class[label]))]
        w = int(min(width - 2, max(6, round(size * stretch))))
        h = int(min(height - 2, max(6, size)))
        alpha_img = Image.fromarray((digit * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
        if rotate:
            alpha_img = alpha_img.rotate(rotate, resample=Image.BILINEAR, expand=True)
        alpha = np.asarray(alpha_img, dtype=np.float32) / 255.0
        h, w = alpha.shape
        if h >= height or w >= width:
            continue
        spot = _free_spot(rng, occupied, w, h)
        if spot is None:
            continue
        x0, y0 = spot
        region = canvas[y0 : y0 + h, x0 : x0 + w]
        colour = np.asarray(ink if ink is not None else _contrasting_ink(rng, region), dtype=np.float32)
        region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]
        occupied[y0 : y0 + h, x0 : x0 + w] = True
        ys, xs = np.nonzero(alpha > 0.2)
        bx0, by0, bx1, by1 = x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1
        objects.append(CanvasObject(str(label), (bx0 / width, by0 / height, (bx1 - bx0) / width, (by1 - by0) / height)))
    return Canvas(np.clip(canvas, 0, 255).astype(np.uint8), objects)


def _free_spot(rng, occupied: np.ndarray, w: int, h: int, tries: int = 30):
    height, width = occupied.shape
    for _ in range(tries):
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        if not occupied[y0 : y0 + h, x0 : x0 + w].any():
            return x0, y0
    return None


def _contrasting_ink(rng, region: np.ndarray) -> np.ndarray:
    """A saturated colour far from the region's mean, so digits stay legible on photos."""
    mean = region.reshape(-1, 3).mean(axis=0)
    candidates = rng.integers(0, 256, size=(16, 3))
    return candidates[np.argmax(np.abs(candidates - mean).sum(axis=1))]


def _near_duplicates(rng, base: Canvas, group: int, size: int) -> list[Canvas]:
    """Copies of ``base`` shifted by a pixel or two, with brightness jitter and sensor noise."""
    copies = []
    height, width = base.image.shape[:2]
    for _ in range(size):
        dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
        shifted = np.roll(base.image, shift=(dy, dx), axis=(0, 1)).astype(np.float32)
        shifted = shifted * rng.uniform(0.92, 1.08) + rng.normal(0, 3, size=shifted.shape)
        objects = [
            CanvasObject(o.label, (o.box[0] + dx / width, o.box[1] + dy / height, o.box[2], o.box[3]))
            for o in base.objects
        ]
        copies.append(Canvas(np.clip(shifted, 0, 255).astype(np.uint8), objects, kind="near_duplicate",
                             near_dup_group=group))
    return copies


def _outlier_canvas(rng, sources: _Sources, outlier_kind: str) -> Canvas:
    width, height = CANVAS_SIZES[0]
    if outlier_kind == "inverted_giant":
        label = rng.choice(CLASS_NAMES)
        canvas = _compose(rng, sources, np.zeros((height, width, 3), np.uint8), [label], [230], ink=(255, 255, 255))
        canvas.image = 255 - canvas.image
    elif outlier_kind == "static_noise":
        noise = rng.integers(0, 256, size=(height, width, 3)).astype(np.uint8)
        canvas = _compose(rng, sources, noise, [rng.choice(CLASS_NAMES)], [64])
    elif outlier_kind == "tiny_crowd":
        labels = list(rng.choice(CLASS_NAMES, size=14, p=CLASS_WEIGHTS))
        canvas = _compose(rng, sources, _background(rng, sources, width, height), labels, [14] * len(labels))
    elif outlier_kind == "rotated_stretched":
        flat = np.full((height, width, 3), rng.integers(0, 256, size=3), dtype=np.uint8)
        canvas = _compose(rng, sources, flat, [rng.choice(CLASS_NAMES)], [60], rotate=90.0, stretch=2.5)
    else:
        raise ValueError(f"Unknown outlier kind {outlier_kind!r}; choose from {OUTLIER_KINDS}")
    canvas.kind, canvas.outlier_kind = "outlier", outlier_kind
    return canvas


def plant_label_noise(canvases: list[Canvas], share: float, seed: int) -> dict[int, dict[int, str]]:
    """Wrong classes for ``share`` of the labeled canvases' objects: ``{canvas index: {object index: wrong class}}``.

    Symmetric noise: the objects are drawn uniformly and each gets a class drawn uniformly among the other nine,
    from its own seeded generator (so the pixels do not change when ``share`` does).
    """
    rng = np.random.default_rng([seed, 1])
    objects = [(c, o) for c, canvas in enumerate(canvases) if canvas.split == "labeled"
               for o in range(len(canvas.objects))]
    n_noisy = int(round(share * len(objects)))
    noisy: dict[int, dict[int, str]] = {}
    for k in np.sort(rng.choice(len(objects), n_noisy, replace=False)) if n_noisy else []:
        c, o = objects[k]
        true = canvases[c].objects[o].label
        noisy.setdefault(c, {})[o] = str(rng.choice([name for name in CLASS_NAMES if name != true]))
    return noisy
