"""Write the example's images to disk and load them into FiftyOne in one bulk insert.

Fields
------
ground_truth       Detections, on the labeled split only (the pool is what curation picks from); a share
                   of them (``ExampleSpec.label_noise``) carry a planted wrong class
true_ground_truth  Detections, on every sample: the true classes and boxes, kept aside so features can
                   measure themselves (hidden in the App: not drawn, in a collapsed sidebar group)
planted_noise      label ids of ``ground_truth`` whose class was planted wrong (kept aside too)
split              "labeled" | "pool" (also a sample tag)
example_kind       "regular" | "near_duplicate" | "outlier"
outlier_kind       which kind of edge case, for outliers
near_dup_group     group index, for near-duplicates
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from curate_loop.errors import InvalidInputError
from curate_loop.examples.digits_canvas import Canvas, ExampleSpec, generate_canvases, plant_label_noise

logger = logging.getLogger(__name__)

DEFAULT_DATASET_NAME = "curate-loop-example"
JPEG_QUALITY = 90
KEPT_ASIDE_FIELDS = ["true_ground_truth", "planted_noise", "example_kind", "outlier_kind", "near_dup_group"]


def build_example_dataset(
    media_dir: str | Path,
    *,
    name: str = DEFAULT_DATASET_NAME,
    spec: ExampleSpec | None = None,
    overwrite: bool = False,
    persistent: bool = True,
    progress: Callable[[float, str], None] | None = None,
):
    """Generate the example's images under ``media_dir`` and return the FiftyOne dataset.

    Deterministic: the same ``spec`` (seed included) gives the same pixels, boxes and classes.
    Refuses to replace an existing dataset or media folder unless ``overwrite=True``.
    """
    import fiftyone as fo
    from fiftyone.core.odm.dataset import ActiveFields

    spec = spec or ExampleSpec()
    media_dir = Path(media_dir).expanduser().resolve()
    if fo.dataset_exists(name):
        if not overwrite:
            raise InvalidInputError(
                f"A FiftyOne dataset named {name!r} already exists. Pass overwrite=True "
                "(CLI: --overwrite) to rebuild it, or choose another name."
            )
        fo.delete_dataset(name)
    images_dir = media_dir / "images"
    if images_dir.exists():
        if not overwrite and any(images_dir.iterdir()):
            raise InvalidInputError(
                f"{images_dir} already holds files. Pass overwrite=True (CLI: --overwrite) to replace "
                "them, or choose another media folder."
            )
        shutil.rmtree(images_dir)
    images_dir.mkdir(parents=True)

    _report(progress, 0.0, "generating canvases")
    canvases = generate_canvases(spec)
    noise = plant_label_noise(canvases, spec.label_noise, spec.seed)
    samples = []
    for i, canvas in enumerate(canvases):
        path = images_dir / f"{canvas.split}_{i:05d}.jpg"
        _save_jpeg(canvas, path)
        samples.append(_to_sample(canvas, path, noise.get(i, {})))
        if i % 50 == 0:
            _report(progress, 0.1 + 0.8 * i / len(canvases), f"wrote {i}/{len(canvases)} images")

    dataset = fo.Dataset(name, persistent=persistent)
    dataset.add_samples(samples, progress=False)
    dataset.info["curate_loop_example"] = {"spec": asdict(spec), "media_dir": str(media_dir)}
    dataset.app_config.sidebar_groups = _sidebar_groups(dataset)
    # not drawn in the grid or the modal by default: reviewers must not be primed by the truth
    dataset.app_config.active_fields = ActiveFields(exclude=True, paths=list(KEPT_ASIDE_FIELDS))
    dataset.save()
    _report(progress, 1.0, f"built {len(dataset)} samples")
    logger.info("Built example dataset %r: %d samples in %s", name, len(dataset), media_dir)
    return dataset


def _save_jpeg(canvas: Canvas, path: Path) -> None:
    from PIL import Image

    Image.fromarray(canvas.image).save(path, quality=JPEG_QUALITY)


def _to_sample(canvas: Canvas, path: Path, noise: dict[int, str]):
    """``noise``: object index -> the wrong class its user-facing label gets."""
    import fiftyone as fo

    height, width = canvas.image.shape[:2]
    truth = fo.Detections(
        detections=[fo.Detection(label=o.label, bounding_box=list(o.box)) for o in canvas.objects]
    )
    sample = fo.Sample(
        filepath=str(path),
        tags=[canvas.split],
        metadata=fo.ImageMetadata(width=width, height=height, num_channels=3, mime_type="image/jpeg",
                                  size_bytes=path.stat().st_size),
        split=canvas.split,
        example_kind=canvas.kind,
        outlier_kind=canvas.outlier_kind,
        near_dup_group=canvas.near_dup_group,
        true_ground_truth=truth,
    )
    if canvas.split == "labeled":
        # The same objects, fresh label ids: labels are what users edit, the truth is kept aside.
        labels = [fo.Detection(label=noise.get(k, d.label), bounding_box=d.bounding_box)
                  for k, d in enumerate(truth.detections)]
        sample["ground_truth"] = fo.Detections(detections=labels)
        sample["planted_noise"] = [labels[k].id for k in sorted(noise)]
    return sample


def _sidebar_groups(dataset):
    """Collapse the kept-aside truth into its own sidebar group so reviewers are not primed by it."""
    import fiftyone as fo

    groups = fo.DatasetAppConfig.default_sidebar_groups(dataset)
    for group in groups:
        group.paths = [p for p in group.paths if p not in KEPT_ASIDE_FIELDS]
    groups.append(fo.SidebarGroupDocument(name="example truth (kept aside)", paths=KEPT_ASIDE_FIELDS,
                                           expanded=False))
    return groups


def _report(progress, fraction: float, label: str) -> None:
    if progress is not None:
        progress(fraction, label)
