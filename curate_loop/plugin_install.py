"""Make the FiftyOne plugin visible: link (or copy) ``plugin/`` into FiftyOne's plugins dir.

FiftyOne has no entry points for plugins: it only finds a ``fiftyone.yml`` under its plugins dir.
The plugin folder ships inside the package (``curate_loop.plugin``), so this works the same from a
git clone (the link points into the checkout) and from a pip install (it points into site-packages).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from curate_loop.errors import InvalidInputError

PLUGIN_FOLDER_NAME = "curate-loop"
PLUGIN_NAME = "@curate-loop/curate-loop"


def plugin_source_dir() -> Path:
    """The folder holding our ``fiftyone.yml`` (found without importing FiftyOne)."""
    spec = importlib.util.find_spec("curate_loop.plugin")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def default_plugins_dir() -> Path:
    import fiftyone as fo

    return Path(fo.config.plugins_dir or Path.home() / "fiftyone" / "__plugins__").expanduser()


def install_plugin(plugins_dir: str | Path | None = None, *, copy: bool = False, force: bool = False) -> Path:
    """Link (default) or copy the plugin into ``plugins_dir``; return the installed path. Idempotent.

    An existing link or an earlier copy of ours is replaced; anything else at the target is left
    alone unless ``force=True``, so a user's own folder is never deleted by accident.
    """
    source = plugin_source_dir()
    plugins_dir = Path(plugins_dir).expanduser() if plugins_dir else default_plugins_dir()
    plugins_dir.mkdir(parents=True, exist_ok=True)
    target = plugins_dir / PLUGIN_FOLDER_NAME
    if target.is_symlink():
        if target.resolve() == source and not copy:
            return target
        target.unlink()
    elif target.exists():
        if not (_is_our_plugin(target) or force):
            raise InvalidInputError(
                f"{target} exists and is not a curate-loop plugin folder. Move it away, or pass --force to "
                "replace it."
            )
        shutil.rmtree(target)
    if copy:
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        target.symlink_to(source, target_is_directory=True)
    return target


def _is_our_plugin(folder: Path) -> bool:
    manifest = folder / "fiftyone.yml"
    return manifest.is_file() and PLUGIN_NAME in manifest.read_text()
