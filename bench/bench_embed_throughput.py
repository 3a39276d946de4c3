"""Image-embedding throughput on CPU (or GPU): ours end to end vs the model's forward-pass limit and vs
FiftyOne's ``compute_embeddings``, all on the same photo-sized JPEGs, the same model, the same batch size.

- forward limit: ``encode_image`` alone on tensors decoded and preprocessed beforehand (no I/O at all),
  with the same torch threads as ours;
- ours: :func:`curate_loop.embeddings.compute.embed_images` from the files into a fresh store;
- FiftyOne: ``dataset.compute_embeddings(model)`` with FiftyOne's own open_clip wrapper
  (``TorchOpenClipModel``, the zoo's ``open-clip-torch`` config) holding the very same weights.

Single runs on a shared machine vary by +-20%, so the three are interleaved over ``ROUNDS`` rounds (each
round: limit, ours, FiftyOne, on all the images) and compared by their medians; every run is printed.

Decode check: on ``DECODE_CHECK_IMAGES`` of the photos, the model's input from our reduced-scale decode
vs a full decode followed by the model's own preprocessing (pixel units, normalisation undone).

The JPEGs (~1 megapixel, varied crops, resizes, flips and colour jitters of the photos that ship
with scikit-image) are generated once, deterministically, and cached. ``CURATE_LOOP_BENCH_IMAGES``
runs on fewer of them for a quick check (default 1,000 per round).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NAME = "embed_throughput_{n}_jpegs"
MODEL = "ViT-B-32"
N_IMAGES = int(os.environ.get("CURATE_LOOP_BENCH_IMAGES", "1000"))
ROUNDS = 3
DECODE_CHECK_IMAGES = 100
BATCH_SIZE = 32
SEED = 0
MEGAPIXELS = 1.0
TARGET_VS_FORWARD = 0.95
GPU_ANCHOR_IMAGES_PER_S = 2500.0  # ViT-B/32 on one A100
GPU_BATCH_SIZE = 256
THROWAWAY_DB = f"curate-loop-bench-{os.getpid()}"
JPEG_SET_VERSION = "v2"  # bump when the generator changes, so a stale cache is not reused
SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
           "camera", "moon", "coins", "grass", "gravel", "brick", "clock", "cell", "motorcycle_left",
           "motorcycle_right")
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)


# -- the JPEGs --------------------------------------------------------------------------------
def jpeg_dir() -> Path:
    from curate_loop.paths import curate_loop_home

    return curate_loop_home() / "bench" / f"jpegs-{JPEG_SET_VERSION}-seed{SEED}"


def source_photos() -> list[np.ndarray]:
    """The photos shipped inside the scikit-image wheel (no download), as HxWx3 uint8."""
    import skimage.data

    photos = []
    for name in SOURCES:
        if name.startswith("motorcycle_"):
            left, right, _ = skimage.data.stereo_motorcycle()
            arr = left if name.endswith("left") else right
        else:
            arr = getattr(skimage.data, name)()
        arr = np.asarray(arr, dtype=np.uint8)
        photos.append(np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr[..., :3])
    return photos


def make_jpeg(index: int, photos: list[np.ndarray], path: Path) -> None:
    """One ~1 MP JPEG: a random crop of a photo at a random aspect, resized, maybe flipped, colour-jittered,
    with a little sensor-like noise (so the file holds photo-like detail, not an upscaled blur)."""
    from PIL import Image

    rng = np.random.default_rng([SEED, index])
    src = photos[index % len(photos)]
    aspect = ASPECTS[rng.integers(len(ASPECTS))]
    area = MEGAPIXELS * 1e6 * rng.uniform(0.8, 1.2)
    width, height = int(round((area * aspect) ** 0.5)), int(round((area / aspect) ** 0.5))
    sh, sw = src.shape[:2]
    crop_w = min(sw, sh * aspect) * rng.uniform(0.5, 1.0)
    crop_h = crop_w / aspect
    x0, y0 = rng.uniform(0, sw - crop_w), rng.uniform(0, sh - crop_h)
    img = Image.fromarray(src).resize((width, height), Image.Resampling.BICUBIC,
                                      box=(x0, y0, x0 + crop_w, y0 + crop_h))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    saturation, contrast, brightness = rng.uniform([0.6, 0.7, 0.7], [1.4, 1.3, 1.3]).astype(np.float32)
    arr = np.asarray(img, dtype=np.float32)
    gray = arr.mean(axis=2, keepdims=True)
    arr = gray + (arr - gray) * saturation
    mean = arr.mean()
    arr = (arr - mean) * contrast + mean * brightness
    arr *= rng.uniform(0.9, 1.1, size=3).astype(np.float32)  # white balance
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(3.0)
    tmp = path.with_name(f".tmp-{path.name}")
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(tmp, quality=int(rng.integers(80, 96)))
    os.replace(tmp, path)


def _make_jpegs(indices: list[int], folder: str) -> None:
    photos = source_photos()
    for i in indices:
        make_jpeg(i, photos, Path(folder) / f"{i:05d}.jpg")


def ensure_jpegs(n: int) -> list[str]:
    """The first ``n`` JPEGs of the cached set, generating the missing ones (in parallel, atomically)."""
    from concurrent.futures import ProcessPoolExecutor

    folder = jpeg_dir()
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.jpg" for i in range(n)]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if missing:
        started = time.perf_counter()
        workers = os.cpu_count() or 1
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_make_jpegs, [missing[k::workers] for k in range(workers)], [str(folder)] * workers))
        print(f"generated {len(missing)} JPEGs in {folder} in {time.perf_counter() - started:.0f} s", flush=True)
    return [str(p) for p in paths]


# -- the three measurements -------------------------------------------------------------------
def predecode(paths: list[str], preprocess, workers: int):
    """Every image decoded and preprocessed up front (not timed): the forward limit's input."""
    import torch
    from torch.utils.data import DataLoader

    from curate_loop.embeddings.images import ImageFiles, collate

    loader = DataLoader(ImageFiles(paths, preprocess), batch_size=BATCH_SIZE, num_workers=workers, collate_fn=collate)
    return torch.cat([tensors for _, tensors, _ in loader])


def forward_limit(loaded, tensors, batch_size: int) -> float:
    """Images/s of ``encode_image`` alone over batches of pre-decoded tensors (after one warm-up batch)."""
    import torch

    def run(batch):
        return loaded.model.encode_image(batch.to(loaded.device, dtype=loaded.dtype, non_blocking=True))

    with torch.inference_mode():
        run(tensors[:batch_size])
        _sync(loaded.device)
        started = time.perf_counter()
        for k in range(0, len(tensors), batch_size):
            run(tensors[k:k + batch_size])
        _sync(loaded.device)
    return len(tensors) / (time.perf_counter() - started)


def ours(paths: list[str], loaded, batch_size: int) -> float:
    """Images/s of ``embed_images`` from the files into a fresh store, end to end."""
    from curate_loop.embeddings.compute import embed_images
    from curate_loop.embeddings.store import EmbeddingStore

    with tempfile.TemporaryDirectory(prefix="curate-loop-bench-") as tmp:
        store = EmbeddingStore(tmp).open({"model": loaded.spec.key})
        started = time.perf_counter()
        report = embed_images([str(i) for i in range(len(paths))], paths, loaded, store, batch_size=batch_size)
        _sync(loaded.device)
        elapsed = time.perf_counter() - started
    assert report.computed == len(paths), report.failed
    return len(paths) / elapsed


def fiftyone_compute_embeddings(paths: list[str], loaded, batch_size: int) -> float:
    """Images/s of ``dataset.compute_embeddings`` with FiftyOne's open_clip zoo model holding our weights,
    with its default data loading (workers, decoding), in a throwaway database."""
    import fiftyone as fo
    import fiftyone.zoo as foz

    # pretrained="" is open_clip's "no weights" (None means FiftyOne's default tag, a download)
    model = foz.load_zoo_model("open-clip-torch", clip_model=MODEL, pretrained="", device=loaded.device)
    model._model.load_state_dict(loaded.model.state_dict())
    dataset = fo.Dataset(f"curate-loop-bench-{os.getpid()}")
    try:
        dataset.add_samples([fo.Sample(filepath=p) for p in paths])
        started = time.perf_counter()
        vectors = dataset.compute_embeddings(model, batch_size=batch_size)
        elapsed = time.perf_counter() - started
    finally:
        dataset.delete()
    assert len(vectors) == len(paths) and all(v is not None for v in vectors)
    return len(paths) / elapsed


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _drop_throwaway_database() -> None:
    """Remove the bench's own FiftyOne database (never anyone else's: the name is ours, with our pid)."""
    import fiftyone.core.odm as foo

    name = foo.get_db_conn().name
    if name == THROWAWAY_DB:
        foo.get_db_client().drop_database(name)


def _rate(value: float) -> dict:
    return {"images_per_s": round(value, 2)}


def gpu_figures(paths: list[str], tensors) -> dict | None:
    """On CUDA: ours and the forward limit in half precision, against the A100 anchor; None without CUDA."""
    import torch

    from curate_loop.embeddings.models import ModelSpec, load_model

    if not torch.cuda.is_available():
        return None
    loaded = load_model(ModelSpec(MODEL, None), device="cuda")
    batch_size = GPU_BATCH_SIZE
    ours_gpu = ours(paths, loaded, batch_size)
    limit_gpu = forward_limit(loaded, tensors.pin_memory(), batch_size)
    return {
        "device": torch.cuda.get_device_name(0),
        "batch_size": batch_size,
        "ours": _rate(ours_gpu),
        "forward_limit": _rate(limit_gpu),
        "anchor_a100": _rate(GPU_ANCHOR_IMAGES_PER_S),
        "ratios": {"ours_vs_a100_anchor": round(ours_gpu / GPU_ANCHOR_IMAGES_PER_S, 3),
                   "ours_vs_forward_limit": round(ours_gpu / limit_gpu, 3)},
    }


def spread(runs: list[float]) -> dict:
    """Median, min and max of one method's rounds, plus every run (images/s)."""
    return {"median": round(float(np.median(runs)), 2), "min": round(min(runs), 2), "max": round(max(runs), 2),
            "runs": [round(r, 2) for r in runs]}


def decode_check(paths: list[str], preprocess) -> dict:
    """Our reduced decode vs full decode + the model's own preprocessing, in 1/255 pixel units."""
    from curate_loop.embeddings.images import reduced_decode_error

    error = reduced_decode_error(paths[:DECODE_CHECK_IMAGES], preprocess)
    return {"n_images": error["n_images"], "n_reduced": error["n_reduced"],
            "mean_abs_diff_255": round(error["mean_abs_diff"] * 255, 3),
            "share_off_by_more_than_8_255": round(error["share_off"], 5),
            "worst_image_mean_abs_diff_255": round(error["worst_image_mean_abs_diff"] * 255, 3),
            "worst_image_share_off": round(error["worst_image_share_off"], 5)}


def main() -> dict:
    import torch

    from curate_loop.embeddings.models import ModelSpec, load_model

    if "fiftyone" not in sys.modules:  # FiftyOne reads these once, on import: keep the user's datasets apart
        os.environ["FIFTYONE_DATABASE_NAME"] = THROWAWAY_DB
        os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
        os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
    load_before = os.getloadavg()[0]
    paths = ensure_jpegs(N_IMAGES)
    loaded = load_model(ModelSpec(MODEL, None), device="cpu")
    decode = decode_check(paths, loaded.preprocess)
    print(f"decode check: {decode}", flush=True)
    tensors = predecode(paths, loaded.preprocess, workers=os.cpu_count() or 1)
    runs: dict[str, list[float]] = {"forward_limit": [], "ours": [], "fiftyone": []}
    try:
        for r in range(ROUNDS):  # interleaved, so a change in the machine's load biases no method
            runs["forward_limit"].append(forward_limit(loaded, tensors, BATCH_SIZE))
            runs["ours"].append(ours(paths, loaded, BATCH_SIZE))
            runs["fiftyone"].append(fiftyone_compute_embeddings(paths, loaded, BATCH_SIZE))
            print(f"round {r + 1}/{ROUNDS}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items())
                  + " images/s", flush=True)
    finally:
        _drop_throwaway_database()
    limit, ours_cpu, fiftyone = (float(np.median(runs[k])) for k in ("forward_limit", "ours", "fiftyone"))
    gpu = gpu_figures(paths, tensors)
    result = {
        "name": NAME.format(n=len(paths)),
        "model": f"{MODEL} (open_clip, random weights)",
        "device": "cpu",
        "n_images": len(paths),
        "rounds": ROUNDS,
        "image_megapixels": MEGAPIXELS,
        "batch_size": BATCH_SIZE,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # other jobs skew timings
        "ours": spread(runs["ours"]),
        "anchors": {
            "forward_limit": spread(runs["forward_limit"]),
            "fiftyone_compute_embeddings": spread(runs["fiftyone"]),
            "gpu_anchor_a100": _rate(GPU_ANCHOR_IMAGES_PER_S),
        },
        "ratios": {  # of the medians; per round, ours / limit too
            "ours_vs_forward_limit": round(ours_cpu / limit, 3),
            "ours_vs_fiftyone": round(ours_cpu / fiftyone, 3),
            "fiftyone_vs_forward_limit": round(fiftyone / limit, 3),
            "ours_vs_forward_limit_per_round": [round(o / f, 3) for o, f in zip(runs["ours"], runs["forward_limit"])],
        },
        "decode_check": decode,
        "target": {"ours_vs_forward_limit": TARGET_VS_FORWARD},
        "pass": ours_cpu / limit >= TARGET_VS_FORWARD,
        "gpu": gpu,
    }
    print("BENCH " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
