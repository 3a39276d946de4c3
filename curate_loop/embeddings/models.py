"""Create open_clip models: any model name with a ``pretrained`` tag, a local checkpoint, or random
weights (``pretrained=None``, what the offline tests use for plumbing)."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

from curate_loop.errors import EmbeddingModelError, InvalidInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """One open_clip model: ``pretrained`` is a tag (e.g. ``laion2b_s34b_b79k``), a local file, or None."""

    name: str = "ViT-B-32"
    pretrained: str | None = None

    @property
    def key(self) -> str:
        """A short, stable label for run records (never a full local path)."""
        source = "random" if self.pretrained is None else Path(self.pretrained).name
        return f"{self.name}:{source}"


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: object  # open_clip.CLIP
    preprocess: object  # torchvision transform: PIL image -> (3, H, W) tensor
    device: str
    dtype: object  # torch.dtype
    dim: int


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else CUDA when present, else CPU."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_spec(spec: ModelSpec) -> str | None:
    """Validate the model name and ``pretrained`` before any work starts; returns the resolved ``pretrained``."""
    import open_clip

    if spec.name not in open_clip.list_models():
        close = difflib.get_close_matches(spec.name, open_clip.list_models(), n=5)
        raise InvalidInputError(
            f"Unknown open_clip model {spec.name!r}. Close matches: {close or 'none'}; "
            "`open_clip.list_models()` lists them all."
        )
    pretrained = spec.pretrained
    if pretrained is not None and Path(pretrained).expanduser().exists():
        pretrained = str(Path(pretrained).expanduser())
    elif pretrained is not None and pretrained not in open_clip.list_pretrained_tags_by_model(spec.name):
        raise InvalidInputError(
            f"pretrained={pretrained!r} is neither a local checkpoint file nor a tag of {spec.name}. Tags: "
            f"{open_clip.list_pretrained_tags_by_model(spec.name)}"
        )
    return pretrained


def load_model(spec: ModelSpec, device: str | None = None) -> LoadedModel:
    """Create the model in eval mode on ``device`` (half precision on CUDA) with its preprocessing."""
    import open_clip
    import torch

    device = pick_device(device)
    pretrained = check_spec(spec)
    try:
        # random weights are seeded: a resumed or incremental run must embed with the same model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, _, preprocess = open_clip.create_model_and_transforms(spec.name, pretrained=pretrained,
                                                                         device=device)
    except Exception as exc:  # download failures surface as RuntimeError from huggingface_hub/open_clip
        raise EmbeddingModelError(
            f"Could not load weights {spec.pretrained!r} for {spec.name}: {str(exc)[:200]}. Without internet, "
            "download the checkpoint on a connected machine (e.g. open_clip_pytorch_model.bin from the model "
            "hub) and pass its local path as pretrained=<file>; pretrained=None gives random weights "
            "(plumbing only)."
        ) from exc
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    model = model.to(dtype=dtype).eval()
    dim = int(model.visual.output_dim)
    logger.info("Loaded %s on %s (%s), %d-d", spec.key, device, dtype, dim)
    return LoadedModel(spec, model, preprocess, device, dtype, dim)
