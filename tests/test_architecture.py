"""Layers import one way: features is the kernel, model sits on it, training and serving sit on both and
never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "features": {"model", "training", "serving", "ews"},
    "model": {"training", "serving", "ews"},
    "training": {"serving", "ews"},
    "serving": {"training", "ews"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports_go_one_way(package: str) -> None:
    files = list((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    bad = {
        f"{f.relative_to(ROOT)} imports {m}"
        for f in files
        for m in imported_top_levels(f) & FORBIDDEN[package]
    }
    assert not bad, sorted(bad)


def test_checker_detects_a_forbidden_import(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import os\nfrom serving.scorer import RiskScorer\n")
    assert "serving" in imported_top_levels(f)


def test_the_feature_kernel_loads_no_model_library() -> None:
    """Importing every module of features/ (what the service's and the batch's feature path need) loads
    none of LightGBM, scikit-learn, SciPy or MLflow: a fresh interpreter says which it found."""
    import subprocess
    import sys

    mods = sorted(
        ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for f in (ROOT / "features").rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "print(sorted({'lightgbm', 'sklearn', 'scipy', 'mlflow'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
