"""`curate-loop doctor`: check everything the tool needs and say, in plain words, how to fix it."""

from __future__ import annotations

import importlib
import importlib.metadata
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
    """A key must be at hand (environment or key file) and the server it names must accept it: every sync command
    needs both, so a missing key fails here rather than at the first push."""
    from curate_loop.adapters.labelstudio.auth import check_key, key_kind, whoami
    from curate_loop.adapters.labelstudio.keyfile import default_env_file, resolve_credentials

    creds = resolve_credentials()
    if not creds.api_key:
        detail = f"no Label Studio key: {LABEL_STUDIO_KEY_ENV} is not set and there is no key file at {default_env_file()}"
        fix = (f"`curate-loop labelstudio serve` (or `make demo`) starts a local server and writes that file: `source "
               f"{default_env_file()}`; or export {LABEL_STUDIO_URL_ENV} and {LABEL_STUDIO_KEY_ENV} for your server")
        from curate_loop.adapters.labelstudio.server import find_label_studio_executable

        try:
            find_label_studio_executable()
        except CurateLoopError:
            fix = "run `curate-loop labelstudio install`, then " + fix
        return CheckResult("label studio", False, detail, fix)
    source = "" if not creds.from_file else f" (key from {creds.key_source})"
    if not creds.url:
        return CheckResult("label studio", False, f"{LABEL_STUDIO_KEY_ENV} is set but {LABEL_STUDIO_URL_ENV} is not",
                           f"export {LABEL_STUDIO_URL_ENV}=<the server's address, e.g. http://127.0.0.1:8080>")
    try:
        check_key(creds.api_key)
        user = whoami(creds.url, creds.api_key)
    except CurateLoopError as exc:
        message, _, fix = str(exc).partition(". ")
        return CheckResult("label studio", False, message + source, fix)
    return CheckResult("label studio", True,
                       f"{creds.url} is up; {key_kind(creds.api_key)} accepted for {user.get('email')}{source}")


def check_label_studio_installed() -> CheckResult:
    """The local server can be started: what a machine needs when nothing talks to a running server yet (CI, where
    every test starts its own; a loop whose manifest has ``labelstudio.url: null`` starts one with its own key)."""
    from curate_loop.adapters.labelstudio.server import find_label_studio_executable

    try:
        executable = find_label_studio_executable()
    except CurateLoopError as exc:
        return CheckResult("label studio", False, str(exc), "run `curate-loop labelstudio install`")
    return CheckResult("label studio", True, f"server installed at {executable} (no key checked: --without-key)")


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
