"""Which models embed for the loop: the manifest's, or its ``embeddings.fallback`` when their weights cannot be had.

Why a fallback: offline, pretrained open_clip weights cannot be downloaded and random weights rank nothing, so
a loop declared with a pretrained model falls back to the offline ``classical`` model instead of failing or
producing noise. The choice is sticky per embeddings key: once a run under a key exists, later iterations embed
new items with the models that run recorded (mixing two models under one key would mix two vector spaces), and
say how to switch when the manifest's own models have become available.
"""

from __future__ import annotations

from curate_loop.embeddings.models import ModelSpec, weights_available
from curate_loop.errors import EmbeddingModelError


def manifest_specs(manifest) -> list[ModelSpec]:
    return [ModelSpec(m.name, m.pretrained) for m in manifest.embeddings.models]


def choose_models(dataset, manifest, key: str) -> tuple[list[ModelSpec], str | None]:
    """The models to embed ``key`` with, and a one-line note when they are not the manifest's own (else None)."""
    from curate_loop.runs.embeddings import METHOD, model_specs

    wanted = manifest_specs(manifest)
    fallback = manifest.embeddings.fallback
    if key in dataset.list_runs(method=METHOD):
        recorded = list(model_specs(dataset, key))
        if fallback and recorded == [ModelSpec(fallback)] and recorded != wanted:
            return recorded, fallback_note(fallback, wanted)
        return wanted, None  # the same models, or a change compute_embeddings refuses with its own message
    missing = [s for s in wanted if not weights_available(s)]
    if not missing:
        return wanted, None
    if fallback:
        return [ModelSpec(fallback)], (f"the weights of {_names(missing)} cannot be had here (offline?): embedding "
                                       f"{key!r} with the {fallback} model instead (manifest embeddings.fallback).")
    raise EmbeddingModelError(
        f"The weights of {_names(missing)} cannot be had here (no model hub, nothing cached). Set "
        "`embeddings.fallback: classical` in the manifest, give a local checkpoint as `pretrained`, or run online.")


def fallback_note(fallback: str, wanted: list[ModelSpec]) -> str:
    """The one line every iteration embedded with the fallback shows (the same for every key, so shown once)."""
    return (f"Embedded with the {fallback} fallback model, not the manifest's {_names(wanted)} (its weights could not "
            "be had when the embeddings were first computed); `curate-loop embed delete` them to switch.")


def _names(specs: list[ModelSpec]) -> str:
    return ", ".join(f"{s.name}@{s.pretrained}" if s.pretrained else s.name for s in specs)
