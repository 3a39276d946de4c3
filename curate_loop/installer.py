"""Install pinned packages into a given Python environment: with uv when we have it (fast, and it
ignores pip configs that point at incompatible local wheels), else with that environment's pip."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def pip_install(python: str | Path, requirements: list[str]) -> subprocess.CompletedProcess:
    """Run the install and return the finished process (callers turn failures into their own errors)."""
    uv = Path(sys.executable).with_name("uv")
    uv_path = str(uv) if uv.exists() else shutil.which("uv")
    if uv_path:
        cmd = [uv_path, "pip", "install", "--python", str(python), *requirements]
    else:
        cmd = [str(python), "-m", "pip", "install", "--quiet", *requirements]
    return subprocess.run(cmd, capture_output=True, text=True)
