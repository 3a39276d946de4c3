"""``manifest.yml``: the declarative description of a curation loop, validated before anything runs.

An invalid manifest gets one error per problem, each naming the key (``curation.budget``) and what is allowed.
The Label Studio API key is never part of the file: it comes from ``LABEL_STUDIO_API_KEY``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from curate_loop.curation.objectives import Objectives
from curate_loop.errors import InvalidInputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a key is an error, not silently ignored


class ModelEntry(_Strict):
    name: str = Field(min_length=1, description="open_clip model name, e.g. ViT-B-32, or classical (offline)")
    pretrained: str | None = Field(None, description="pretrained tag or local checkpoint path; null: random weights")


class Embeddings(_Strict):
    key: str = "clip"
    models: list[ModelEntry] = Field(default_factory=lambda: [ModelEntry(name="ViT-B-32")], min_length=1)
    objects_key: str = "boxes"  # object embeddings of label_field, for the mislabel scan
    fallback: Literal["classical"] | None = Field(
        None, description="when the models' weights cannot be had (offline), embed with this model instead")
    backend: Literal["local", "ray"] = Field("local", description="where decoding and the model run: this process, "
                                             "or a Ray actor pool (pip install 'curate-loop[ray]')")
    ray_address: str | None = Field(None, description="ray only: a running cluster (HOST:PORT, ray://HOST:10001, "
                                    "auto); null: a local cluster for each run")
    ray_actors: int | None = Field(None, ge=1, description="ray only: actors in the pool; null: one per GPU, else "
                                   "one per node's cores")
    store_url: str | None = Field(None, description="where new runs' vectors go: a folder or any fsspec URL "
                                  "(s3://bucket/prefix: pip install 'curate-loop[storage]'); null: "
                                  "$CURATE_LOOP_STORE_URL, else the curate-loop home")

    @field_validator("key", "objects_key")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError("use letters, digits and underscores")
        return value

    @model_validator(mode="after")
    def _ray_settings_need_ray(self) -> "Embeddings":
        if self.backend != "ray" and (self.ray_address is not None or self.ray_actors is not None):
            raise ValueError("ray_address and ray_actors are for backend ray; set backend: ray or drop them")
        return self


class Similarity(_Strict):
    """Where the similarity index (the App's sort by similarity) lives."""

    backend: Literal["faiss", "milvus"] = Field("faiss", description="faiss: files on this machine; milvus: Milvus "
                                                "(pip install 'curate-loop[milvus]')")
    uri: str | None = Field(None, description="milvus only: a Milvus Lite file (*.db) or a server URL "
                            "(http://HOST:19530); null: a Milvus Lite file per dataset under the curate-loop home")

    @model_validator(mode="after")
    def _uri_needs_milvus(self) -> "Similarity":
        if self.uri is not None and self.backend != "milvus":
            raise ValueError("uri is for backend milvus; set backend: milvus or drop uri")
        return self


# Strengths of the combined selection: Objectives' defaults (its docstring says where they were chosen).
DEFAULT_DIVERSITY = Objectives.diversity
DEFAULT_UNCERTAINTY = Objectives.uncertainty
DEFAULT_CLASS_BALANCE = Objectives.class_balance


class Curation(_Strict):
    budget: int = Field(50, ge=1, description="samples per batch")
    strategy: Literal["cluster_balanced", "typicality", "kcenter", "random"] = "cluster_balanced"
    near_duplicate_threshold: float = Field(0.98, gt=0, le=1, description="cosine similarity from which a pool "
                                            "sample counts as a near-duplicate of a picked or labeled one and is "
                                            "skipped (strategy cluster_balanced; the others pick without it)")
    min_cluster_size: int | None = Field(None, ge=2, description="null: sqrt(pool size) / 3")
    batch_prefix: str = "batch"
    # strengths of the objectives a batch combines when the model section gives predictions (else: diversity only)
    diversity: float = Field(DEFAULT_DIVERSITY, ge=0, description="coverage of the embeddings (cluster-balanced "
                             "alone; facility location among the uncertain candidates)")
    uncertainty: float = Field(DEFAULT_UNCERTAINTY, ge=0, description="the model's uncertainty on each sample")
    class_balance: float = Field(DEFAULT_CLASS_BALANCE, ge=0, description="pull the batch's predicted classes "
                                 "towards class_target")
    uncertainty_score: Literal["margin", "least_confidence", "entropy"] = "margin"
    trust_labels_per_class: float | None = Field(
        Objectives.trust_labels_per_class, gt=0, description="labels per predicted class at which uncertainty has its "
        "stated strength; it grows with the labels (fewer: less); null: the stated strength from the first model")
    class_target: Literal["uniform"] | dict[str, float] = Field(
        "uniform", description="uniform, or {class: share} (shares > 0; normalised to sum to 1)")

    @field_validator("class_target")
    @classmethod
    def _shares(cls, value):
        if isinstance(value, dict):
            if not value:
                raise ValueError("give at least one {class: share}, or 'uniform'")
            bad = {c: s for c, s in value.items() if not s > 0}
            if bad:
                raise ValueError(f"shares must be > 0; got {bad}")
        return value

    @field_validator("batch_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError("use letters, digits and underscores (batches are named <prefix>_<iteration>)")
        return value


class Mislabels(_Strict):
    enabled: bool = True  # scan the labels for mislabels each iteration
    # where "send for re-annotation" (App, CLI) queues samples; `curate-loop run` and "Push pending batches" push it
    reannotate_batch: str = "reannotate"

    @field_validator("reannotate_batch")
    @classmethod
    def _batch(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError("use letters, digits and underscores (it names a batch and its saved view)")
        return value


class LabelStudio(_Strict):
    # auto: a sample's own labels when it has some, else the model's predictions; predictions: always the model's;
    # labels: never the model's (today's behaviour)
    pre_annotations: Literal["auto", "predictions", "labels"] = "auto"
    url: str | None = Field(None, description="null: start the local server; else e.g. http://127.0.0.1:8080")
    # local_files: served from disk when under the server's local-files root, else uploaded; upload: every local file
    # uploaded (a server on another machine); cloud: filepaths must be s3:// gs:// azure-blob:// http(s):// URLs
    media: Literal["local_files", "cloud", "upload"] = "local_files"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (or be null to start the local server)")
        return value


QualityAction = Literal["exclude", "keep", "flag"]
# What an issue does when the manifest names no action for it: images that carry no information (dark, bright,
# blurred, near-constant) and exact copies would spend labels on nothing, so they stay out of batches; the rest
# (odd sizes and shapes, grayscale, box issues) are often fine, so they go to Label Studio with the flag visible.
DEFAULT_QUALITY_ACTION = "flag"
DEFAULT_QUALITY_EXCLUDED = ("dark", "bright", "blurry", "low_information", "exact_duplicate")


class Quality(_Strict):
    """The data quality checks (:mod:`curate_loop.runs.quality`), run after the embed step, and what each flagged
    issue does in the loop: ``exclude`` (never enters a batch), ``flag`` (may enter; its Label Studio task's data
    carries the sample's ``quality_issues``) or ``keep`` (the loop ignores it; the App still shows it)."""

    enabled: bool = False  # off: no decode pass for the checks, batches as before
    issues: dict[str, QualityAction] = Field(
        default_factory=dict, description="issue -> exclude | keep | flag; unnamed issues: dark, bright, blurry, "
        "low_information and exact_duplicate exclude, the others flag")

    @field_validator("issues")
    @classmethod
    def _known_issues(cls, value: dict) -> dict:
        known = quality_issue_names()
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown issue(s) {unknown}; the issues are {list(known)}")
        return value

    def policy(self) -> dict[str, str]:
        """Every issue's action: the manifest's where it names one, else the default."""
        return {issue: self.issues.get(issue, "exclude" if issue in DEFAULT_QUALITY_EXCLUDED else
                                       DEFAULT_QUALITY_ACTION) for issue in quality_issue_names()}


def quality_issue_names() -> tuple[str, ...]:
    """The issues the quality checks flag, per image then per box."""
    from curate_loop.quality.thresholds import BOX_ISSUES, IMAGE_ISSUES

    return tuple(IMAGE_ISSUES) + tuple(BOX_ISSUES)


_CALLABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
MODEL_BUILTINS = ("linear_probe",)


class Model(_Strict):
    """The model in the loop: trained (or run) each iteration after the pull, before curation; it writes ``field``.

    Exactly one of ``builtin`` / ``callable`` / ``command``; or none of them with ``field`` given, for predictions
    written elsewhere (e.g. FiftyOne's ``apply_model``), which the loop only reads."""

    builtin: Literal["linear_probe"] | None = Field(None, description="logistic regression on the embeddings")
    callable: str | None = Field(None, description="package.module:function, called as fn(dataset, labeled_view, "
                                 "pool_view, field)")
    command: str | None = Field(None, description="a shell command; CURATE_LOOP_DATASET, CURATE_LOOP_FIELD, "
                                "CURATE_LOOP_LABEL_FIELD, CURATE_LOOP_LABELED_VIEW, CURATE_LOOP_POOL_VIEW in its env")
    field: str = "predictions"
    proposals: str | None = Field(None, description="builtin on a Detections label_field: the Detections field whose "
                                  "boxes it classifies")
    # Label-error scores read the model's predictions on the labeled samples; a model scored on the very labels it
    # was trained on agrees with them, errors included. So the step also predicts each labeled sample from a model
    # trained without its fold. 3 folds: each model still sees two thirds of the labels, at 3 more trainings.
    out_of_fold: int = Field(3, ge=0, description="folds for out-of-fold predictions on the labeled samples "
                             "(what label-error scores read); 0: predict the pool only")

    @field_validator("callable")
    @classmethod
    def _importable(cls, value: str | None) -> str | None:
        if value is not None and not _CALLABLE.match(value):
            raise ValueError("must look like package.module:function, e.g. curate_loop.examples.detector:predict")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("out_of_fold")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("one fold would train on nothing; use 0 (pool only) or 2 or more folds")
        return value

    @field_validator("field", "proposals")
    @classmethod
    def _field_name(cls, value: str | None) -> str | None:
        if value is not None and not value.isidentifier():
            raise ValueError("use letters, digits and underscores (a top-level field of the dataset)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "Model":
        given = [k for k in ("builtin", "callable", "command") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of builtin, callable, command; got {' and '.join(given)}")
        if not given and "field" not in self.model_fields_set:
            raise ValueError("give builtin (e.g. linear_probe), callable, command, or the field other tools write "
                             "predictions to (e.g. field: predictions)")
        if self.proposals is not None and self.builtin is None:
            raise ValueError("proposals is read by builtin: linear_probe only (a callable or command finds its own "
                             "boxes)")
        if self.proposals is not None and self.proposals == self.field:
            raise ValueError(f"proposals and field are both {self.field!r}: the predictions would overwrite the "
                             "boxes they classify; choose another field")
        return self

    @property
    def kind(self) -> str:
        """builtin, callable, command or field."""
        return next((k for k in ("builtin", "callable", "command") if getattr(self, k) is not None), "field")

    @property
    def name(self) -> str:
        """What the iteration records: linear_probe, package.module:function, the command, or the field."""
        return str(getattr(self, self.kind))


class Manifest(_Strict):
    dataset: str = Field(min_length=1)
    label_field: str = "ground_truth"
    # the classes the Label Studio label config offers; a batch pre-annotated with another class is refused and a
    # pulled label of another class is reported
    classes: list[str] = Field(min_length=1)
    embeddings: Embeddings = Field(default_factory=Embeddings)
    similarity: Similarity = Field(default_factory=Similarity)
    curation: Curation = Field(default_factory=Curation)
    mislabels: Mislabels = Field(default_factory=Mislabels)
    labelstudio: LabelStudio = Field(default_factory=LabelStudio)
    model: Model | None = None  # absent: no model step, batches by diversity alone
    quality: Quality = Field(default_factory=Quality)  # data quality checks and what flagged samples do in the loop
    _source: str | None = PrivateAttr(None)  # the file it was read from: the App's loop panel finds it again

    @property
    def source(self) -> str | None:
        return self._source

    @field_validator("classes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        duplicates = sorted({c for c in value if value.count(c) > 1})
        if duplicates:
            raise ValueError(f"each class once; repeated: {duplicates}")
        return value

    @model_validator(mode="after")
    def _reannotate_is_not_a_loop_batch(self) -> "Manifest":
        name, prefix = self.mislabels.reannotate_batch, self.curation.batch_prefix
        if name.startswith(f"{prefix}_") and name[len(prefix) + 1:].isdigit():
            raise ValueError(f"mislabels.reannotate_batch {name!r} looks like a batch the loop picks "
                             f"({prefix}_NN); choose another name, e.g. 'reannotate'")
        return self

    @model_validator(mode="after")
    def _model_fields(self) -> "Manifest":
        if self.model is not None and self.label_field in (self.model.field, self.model.proposals):
            raise ValueError(f"model.field / model.proposals must not be label_field {self.label_field!r}: the model "
                             "would overwrite the labels")
        target = self.curation.class_target
        unknown = sorted(set(target) - set(self.classes)) if isinstance(target, dict) else []
        if unknown:
            raise ValueError(f"curation.class_target names classes that are not in classes: {unknown}")
        return self

    def objectives(self) -> Objectives:
        """The strengths of ``curation`` as the combined selection takes them."""
        c = self.curation
        return Objectives(diversity=c.diversity, uncertainty=c.uncertainty, class_balance=c.class_balance,
                          uncertainty_score=c.uncertainty_score, class_target=c.class_target,
                          trust_labels_per_class=c.trust_labels_per_class)

    def batch_name(self, iteration: int) -> str:
        return f"{self.curation.batch_prefix}_{iteration:02d}"


def load_manifest(path: str | Path) -> Manifest:
    """The validated manifest at ``path``; :class:`InvalidInputError` listing every problem otherwise."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"No manifest at {path}. Start from the repository's manifest.yml.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{path} must be a mapping of keys (dataset, label_field, classes, ...).")
    if any(str(k).lower() in ("api_key", "key", "token") for k in (raw.get("labelstudio") or {})):
        raise InvalidInputError(f"{path}: labelstudio must not hold an API key; set LABEL_STUDIO_API_KEY instead.")
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInputError(f"{path} is not a valid manifest:\n" + _explain(exc)) from None
    manifest._source = str(path.resolve())
    return manifest


def _explain(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; allowed keys are in the repository's manifest.yml)"
        elif error["type"] == "literal_error":
            message = f"must be one of {error['ctx']['expected']}"
        lines.append(f"  {key}: {message} (got {error.get('input')!r})")
    return "\n".join(lines)
