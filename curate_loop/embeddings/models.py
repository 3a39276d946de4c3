"""Create embedding models: open_clip (any model name with a ``pretrained`` tag, a local checkpoint, or random
weights with ``pretrained=None``, plumbing only) or ``classical`` (HOG + colour + PCA, offline and meaningful;
see :mod:`curate_loop.embeddings.classical`)."""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

from curate_loop.embeddings import classical
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
        if self.is_classical:
            return classical.NAME
        source = "random" if self.pretrained is None else Path(self.pretrained).name
        return f"{self.name}:{source}"

    @property
    def is_classical(self) -> bool:
        return self.name == classical.NAME

    @property
    def random_weights(self) -> bool:
        """An open_clip model without weights: its vectors run every step but rank nothing meaningfully."""
        return self.pretrained is None and not self.is_classical


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
    if spec.is_classical:
        if spec.pretrained is not None:
            raise InvalidInputError("The classical model has no weights to load: leave out pretrained "
                                    f"(got {spec.pretrained!r}).")
        return None
    import open_clip

    if spec.name not in open_clip.list_models():
        close = difflib.get_close_matches(spec.name, open_clip.list_models(), n=5)
        raise InvalidInputError(
            f"Unknown open_clip model {spec.name!r}. Close matches: {close or 'none'}; "
            f"`open_clip.list_models()` lists them all, and {classical.NAME!r} is the offline classical model."
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
    import torch

    if spec.is_classical:  # numpy features on the CPU; the basis is fitted or loaded by the run
        model = classical.ClassicalModel()
        return LoadedModel(spec, model, model.preprocess, "cpu", torch.float32, 0)
    import open_clip

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


def weights_available(spec: ModelSpec, *, timeout: float = 3.0) -> bool:
    """Whether ``load_model(spec)`` can have its weights without a long wait: classical and random models, a local
    checkpoint, weights in the local model-hub cache, or a model hub that answers within ``timeout`` seconds.

    Offline, open_clip's own download retries for about a minute before failing; this answers in ``timeout``.
    """
    import socket
    from urllib.parse import urlparse

    if spec.is_classical or spec.pretrained is None or Path(spec.pretrained).expanduser().exists():
        return True
    import open_clip
    from huggingface_hub import constants, try_to_load_from_cache

    config = open_clip.get_pretrained_cfg(spec.name, spec.pretrained) or {}
    repo = config.get("hf_hub", "").rstrip("/")
    if repo:
        for filename in ("open_clip_pytorch_model.bin", "open_clip_model.safetensors"):
            if isinstance(try_to_load_from_cache(repo, filename), str):
                return True
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True
