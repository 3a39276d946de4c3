"""The ``classical`` embedding model: HOG and colour features reduced with PCA. No download, no GPU, real signal.

Why it exists: offline, open_clip only has random weights, whose vectors rank nothing (a mislabel scan on them
flags every label). Classical features see shape and colour, which is what near-duplicates, odd images and
mislabeled box crops differ in, so the loop's results mean something on a machine with no model hub.

Features of one image (or box crop), resized to ``SIZE`` x ``SIZE`` RGB:

- HOG (Dalal & Triggs, 2005, with their settings: 9 orientations, 8-px cells, 2x2-cell blocks, L2-Hys), over
  the channel with the strongest gradient at each pixel, so coloured ink on a photo still has edges;
- colour: the mean RGB of a ``COLOUR_GRID`` x ``COLOUR_GRID`` grid (where colours sit);

each family L2-normalised so both count equally. These defaults are the published HOG settings, chosen before
looking at any data here; none was tuned on the bundled example or the benchmarks.

PCA: the features are centred and projected on ``DIM`` principal axes fitted on (up to ``FIT_ROWS`` of) the items
of the run's first call. The basis is saved with the vectors (``BASIS_FILE`` in the store), so a resumed or
incremental run embeds new items in the same space. Centring matters: raw HOG values are all positive, so the
cosine of any two raw vectors is high and thresholds such as the near-duplicate one would mean nothing.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from curate_loop.errors import InvalidInputError

NAME = "classical"
SIZE = 64
HOG = dict(orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys")
COLOUR_GRID = 4
DIM = 128
FIT_ROWS = 10_000
BASIS_FILE = "classical_basis.npz"


def raw_features(image: Image.Image) -> np.ndarray:
    """HOG + colour-grid features of one PIL image, float32 ``(RAW_DIM,)``."""
    from skimage.feature import hog

    pixels = np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32) / 255.0
    shape = hog(pixels, channel_axis=-1, feature_vector=True, **HOG)
    cell = SIZE // COLOUR_GRID
    colour = pixels.reshape(COLOUR_GRID, cell, COLOUR_GRID, cell, 3).mean(axis=(1, 3)).ravel()
    return np.concatenate([_unit(shape), _unit(colour)]).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


_BLOCKS = SIZE // HOG["pixels_per_cell"][0] - HOG["cells_per_block"][0] + 1  # per side, blocks slide by one cell
RAW_DIM = _BLOCKS**2 * HOG["cells_per_block"][0] * HOG["cells_per_block"][1] * HOG["orientations"] + COLOUR_GRID**2 * 3


class ClassicalModel:
    """What the embedding loop needs of a model: ``preprocess`` (PIL -> tensor) and ``encode_image`` (tensor ->
    tensor), here raw features and their PCA projection. ``fit`` or ``load`` the basis before encoding."""

    def __init__(self, dim: int = DIM):
        self.max_dim = dim
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None  # (dim, RAW_DIM), orthonormal rows

    # -- the model interface -------------------------------------------------------------------------
    def preprocess(self, image: Image.Image):
        import torch

        return torch.from_numpy(raw_features(image))

    def encode_image(self, raw):
        import torch

        if self.components is None:
            raise InvalidInputError("The classical model has no PCA basis yet: fit or load it before encoding.")
        x = raw.detach().cpu().numpy().astype(np.float32) - self.mean
        return torch.from_numpy(x @ self.components.T)

    @property
    def dim(self) -> int:
        return int(self.components.shape[0]) if self.components is not None else 0

    # -- the basis -----------------------------------------------------------------------------------
    def fit(self, raw: np.ndarray) -> "ClassicalModel":
        """Fit the PCA basis on raw feature rows ``(n, RAW_DIM)``: at most ``min(DIM, n - 1)`` axes.

        Fewer than two rows cannot be centred: the basis is then the identity (features kept as they are).
        """
        raw = np.asarray(raw, dtype=np.float64).reshape(-1, RAW_DIM)
        if len(raw) < 2:
            self.mean = np.zeros(RAW_DIM, dtype=np.float32)
            self.components = np.eye(RAW_DIM, dtype=np.float32)
            return self
        mean = raw.mean(axis=0)
        _, singular, vt = np.linalg.svd(raw - mean, full_matrices=False)
        keep = int(min(self.max_dim, len(raw) - 1, int((singular > singular[0] * 1e-6).sum())))
        self.mean, self.components = mean.astype(np.float32), vt[:max(keep, 1)].astype(np.float32)
        return self

    def to_bytes(self) -> bytes:
        """The basis as one ``.npz`` file's bytes, for the store (``BASIS_FILE``) on any filesystem."""
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean, components=self.components)
        return buffer.getvalue()

    def load_bytes(self, data: bytes | None) -> bool:
        """Load a basis saved by :meth:`to_bytes`; False when ``data`` is None (no basis saved yet)."""
        if data is None:
            return False
        with np.load(io.BytesIO(data)) as saved:
            self.mean, self.components = saved["mean"], saved["components"]
        return True


def fit_rows(n_items: int, seed: int = 0) -> np.ndarray:
    """Which items (sorted positions) the basis is fitted on: all, or ``FIT_ROWS`` of them drawn evenly at random."""
    if n_items <= FIT_ROWS:
        return np.arange(n_items)
    return np.sort(np.random.default_rng(seed).choice(n_items, FIT_ROWS, replace=False))


def raw_from_batches(batches) -> np.ndarray:
    """Stack the raw features of an embedding loader's ``(good, tensors, failures)`` batches (failures skipped)."""
    blocks = [tensors.numpy() for good, tensors, _ in batches if len(good)]
    return np.concatenate(blocks) if blocks else np.zeros((0, RAW_DIM), dtype=np.float32)


FIT_BATCH = 64  # images decoded per step while fitting


def fit_on_images(model: ClassicalModel, filepaths: list[str]) -> ClassicalModel:
    """Fit ``model``'s basis on the images at ``filepaths`` (a sample of them when there are many)."""
    from curate_loop.embeddings.images import ImageFiles, collate

    files = ImageFiles([filepaths[i] for i in fit_rows(len(filepaths))], model.preprocess)
    batches = (collate([files[i] for i in range(start, min(start + FIT_BATCH, len(files)))])
               for start in range(0, len(files), FIT_BATCH))
    return model.fit(raw_from_batches(batches))


def fit_on_crops(model: ClassicalModel, filepaths: list[str], boxes: list, *, margin: float,
                 min_crop_px: int) -> ClassicalModel:
    """Fit ``model``'s basis on the box crops of the images at ``filepaths`` (``boxes[i]``: relative boxes)."""
    from curate_loop.embeddings.crops import ImageCrops, collate_crops

    rows = [i for i in fit_rows(len(filepaths)) if len(boxes[i] or [])]
    crop_boxes = [np.asarray([b if b is not None else [np.nan] * 4 for b in boxes[i]], dtype=np.float64) for i in rows]
    crops = ImageCrops([filepaths[i] for i in rows], crop_boxes, [np.arange(len(b)) for b in crop_boxes],
                       model.preprocess, margin=margin, min_crop_px=min_crop_px)
    batches = (collate_crops([crops[i] for i in range(start, min(start + FIT_BATCH, len(crops)))])
               for start in range(0, len(crops), FIT_BATCH))
    return model.fit(raw_from_batches(batches))
