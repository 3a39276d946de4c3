"""The array packages are arrays only: importing them in a fresh interpreter loads no FiftyOne and registers
nothing with FiftyOne Brain, and every import the README shows for them works.

Each check runs in its own interpreter (``sys.executable -c``): this test process may have loaded FiftyOne already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ARRAY_MODULES = [
    "curate_loop.embeddings",
    "curate_loop.embeddings.combine",
    "curate_loop.box_errors",
    "curate_loop.curation",
    "curate_loop.curation.combined",
    "curate_loop.mislabels",
    "curate_loop.model",
    "curate_loop.model.uncertainty",
    "curate_loop.quality",
    "curate_loop.similarity",
    "curate_loop.similarity.knn",
    "curate_loop.vectors",
]

# What README.md shows importing from the array packages ("for use without FiftyOne").
README_NAMES = {
    "curate_loop.curation": ["cluster_embeddings", "select_cluster_balanced", "edge_scores", "find_near_duplicates",
                             "selection_metrics"],
    "curate_loop.mislabels": ["detect_mislabels"],
}


def _fresh(script: str) -> dict:
    """Run ``script`` in a new interpreter; it prints one JSON line last."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ARRAY_MODULES)
def test_importing_an_array_package_loads_no_fiftyone(module):
    got = _fresh(f"""
import json, sys
import {module}
print(json.dumps({{
    "fiftyone": sorted(m for m in sys.modules if m == "fiftyone" or m.startswith(("fiftyone.", "eta."))),
    "backend_loaded": "curate_loop.similarity.faiss_backend" in sys.modules,
}}))
""")
    assert got["fiftyone"] == [], f"{module} imported {len(got['fiftyone'])} FiftyOne modules: {got['fiftyone'][:5]}"
    assert got["backend_loaded"] is False, f"{module} loaded the FiftyOne Brain backend (and registered it)"


def test_all_array_packages_together_load_no_fiftyone():
    imports = "; ".join(f"import {m}" for m in ARRAY_MODULES)
    got = _fresh(f"""
import json, sys
{imports}
print(json.dumps(sorted(m for m in sys.modules if m == "fiftyone" or m.startswith("fiftyone."))))
""")
    assert got == []


def test_readme_imports_of_array_packages_work():
    lines = [f"from {module} import {', '.join(names)}" for module, names in README_NAMES.items()]
    got = _fresh("\n".join(["import json, sys", *lines,
                            "print(json.dumps([m for m in sys.modules if m.startswith('fiftyone')]))"]))
    assert got == []


def test_the_brain_backend_loads_from_its_recorded_class_path_and_registers_only_when_asked():
    """Saved runs name ``curate_loop.similarity.faiss_backend.FaissSimilarityConfig``; that module still defines it,
    importing it changes no Brain config, and ``register_faiss_backend`` adds ``backend="faiss"``."""
    got = _fresh("""
import json
import fiftyone.brain as fob
from curate_loop.similarity.faiss_backend import CONFIG_CLS, FaissSimilarityConfig, register_faiss_backend
after_import = "faiss" in fob.brain_config.similarity_backends
register_faiss_backend()
entry = fob.brain_config.similarity_backends.get("faiss", {})
print(json.dumps({"after_import": after_import, "config_cls": entry.get("config_cls"), "const": CONFIG_CLS,
                  "cls": FaissSimilarityConfig.__module__ + "." + FaissSimilarityConfig.__name__}))
""")
    assert got["after_import"] is False
    recorded = "curate_loop.similarity.faiss_backend.FaissSimilarityConfig"
    assert got["config_cls"] == got["const"] == got["cls"] == recorded
