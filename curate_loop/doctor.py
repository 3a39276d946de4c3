"""`curate-loop doctor`: check everything the tool needs and say, in plain words, how to fix it."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass
from typing import Callable

from curate_loop.errors import CurateLoopError

REQUIRED_PACKAGES = {  # import name -> distribution name
    "fiftyone": "fiftyone",
    "torch": "torch",
    "torchvision": "torchvision",
    "open_clip": "open_clip_torch",
    "faiss": "faiss-cpu",
    "umap": "umap-learn",
    "hdbscan": "hdbscan",
    "label_studio_sdk": "label-studio-sdk",
    "pydantic": "pydantic",
    "click": "click",
    "sklearn": "scikit-learn",
}
LABEL_STUDIO_URL_ENV = "LABEL_STUDIO_URL"
LABEL_STUDIO_KEY_ENV = "LABEL_STUDIO_API_KEY"


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def check_packages() -> CheckResult:
    missing, versions = [], []
    for module, dist in REQUIRED_PACKAGES.items():
        try:
            importlib.import_module(module)
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except Exception as exc:  # ImportError, or a broken binary extension
            missing.append(f"{dist} ({type(exc).__name__}: {exc})")
    if missing:
        return CheckResult("python packages", False, "cannot import " + "; ".join(missing),
                           "run `make setup`, or `pip install curate-loop` into a fresh virtualenv")
    return CheckResult("python packages", True, ", ".join(versions[:4]) + f" and {len(versions) - 4} more")


def check_torch() -> CheckResult:
    """torch + torchvision must be a matching pair: a CPU-only torch breaks PyPI's torchvision ops."""
    try:
        import open_clip
        import torch
        import torchvision

        boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
        torchvision.ops.nms(boxes, torch.tensor([1.0]), 0.5)
        n_models = len(open_clip.list_models())
    except Exception as exc:
        return CheckResult("torch / open_clip", False, f"{type(exc).__name__}: {exc}",
                           "install torch and torchvision from the same source (e.g. torch==2.15.0 and "
                           "torchvision==0.29.2 from PyPI): `make setup` does this")
    device = "CUDA" if torch.cuda.is_available() else "CPU"
    return CheckResult("torch / open_clip", True,
                       f"torch {torch.__version__}, torchvision ops work, {n_models} open_clip models, {device}")


def check_mongod() -> CheckResult:
    from curate_loop.mongodb import FIX_HINT, find_mongod, mongod_runs, uses_external_database

    if uses_external_database():
        return CheckResult("mongod binary", True, "FIFTYONE_DATABASE_URI is set: using that MongoDB")
    mongod = find_mongod()
    if mongod is None:
        return CheckResult("mongod binary", False, "FiftyOne has no mongod binary", FIX_HINT)
    ok, output = mongod_runs(mongod)
    first = output.splitlines()[0] if output else ""
    return CheckResult("mongod binary", ok, f"{mongod}: {first}", "" if ok else FIX_HINT)


def check_database() -> CheckResult:
    from curate_loop.mongodb import connect

    try:
        connect()
        import fiftyone as fo

        return CheckResult("mongodb start", True, f"MongoDB answered; {len(fo.list_datasets())} dataset(s)")
    except CurateLoopError as exc:
        message, _, fix = str(exc).partition(" Fix: ")
        return CheckResult("mongodb start", False, message, fix)


def check_plugin() -> CheckResult:
    from curate_loop.plugin_install import PLUGIN_NAME, default_plugins_dir

    import fiftyone.operators.registry as registry
    import fiftyone.plugins as fop

    names = [p.name for p in fop.list_plugins()]
    if PLUGIN_NAME not in names:
        return CheckResult("fiftyone plugin", False,
                           f"{PLUGIN_NAME} is not in FiftyOne's plugins dir {default_plugins_dir()}",
                           "run `curate-loop plugin install`")
    errors = registry.OperatorRegistry().list_errors()
    if errors:
        return CheckResult("fiftyone plugin", False, f"{len(errors)} plugin registration error(s): {errors[0][-300:]}",
                           "reinstall with `curate-loop plugin install`; report the error if it persists")
    ours = [op.uri for op in registry.list_operators() if op.plugin_name == PLUGIN_NAME]
    return CheckResult("fiftyone plugin", True, f"{len(ours)} operator(s) registered from {default_plugins_dir()}")


def check_label_studio() -> CheckResult:
    """A configured server must answer; otherwise a local one must be installable to start."""
    url = os.environ.get(LABEL_STUDIO_URL_ENV)
    if not url:
        from curate_loop.adapters.labelstudio.server import find_label_studio_executable

        try:
            exe = find_label_studio_executable()
        except CurateLoopError as exc:
            return CheckResult("label studio", False, str(exc).split(". Install")[0],
                               "run `curate-loop labelstudio install` (or set LABEL_STUDIO_URL to a server)")
        return CheckResult("label studio", True,
                           f"no {LABEL_STUDIO_URL_ENV} set; a local server can be started from {exe}")
    key = os.environ.get(LABEL_STUDIO_KEY_ENV)
    if not key:
        return CheckResult("label studio", False, f"{LABEL_STUDIO_URL_ENV}={url} is set but {LABEL_STUDIO_KEY_ENV} is not",
                           f"export {LABEL_STUDIO_KEY_ENV}=<token from Account & Settings in Label Studio>")
    from curate_loop.adapters.labelstudio.auth import key_kind, whoami

    try:
        user = whoami(url, key)
    except CurateLoopError as exc:
        message, _, fix = str(exc).partition(". ")
        return CheckResult("label studio", False, message, fix)
    return CheckResult("label studio", True, f"{url} is up; {key_kind(key)} accepted for {user.get('email')}")


ALL_CHECKS: list[Callable[[], CheckResult]] = [
    check_packages, check_torch, check_mongod, check_database, check_plugin, check_label_studio,
]


def run_checks(checks: list[Callable[[], CheckResult]] | None = None) -> list[CheckResult]:
    results = []
    for check in checks or ALL_CHECKS:
        try:
            results.append(check())
        except Exception as exc:  # a check must report, never crash the doctor
            results.append(CheckResult(check.__name__.removeprefix("check_"), False,
                                       f"the check itself failed: {type(exc).__name__}: {exc}",
                                       "run `make setup`; report this if it persists"))
    return results
