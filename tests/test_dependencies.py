"""pyproject.toml's dependencies are what roma/ and analysis/ import, and the package installs like one:
its console entry points resolve, py.typed and the data files are package data, LICENSE is Apache-2.0."""
from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
OURS = ("roma", "analysis")
# import name -> distribution name, where they differ
DIST_OF = {"PIL": "pillow", "yaml": "pyyaml", "skimage": "scikit-image", "causal_conv1d": "causal-conv1d",
           "mamba_ssm": "mamba-ssm"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def top_level_imports(folders=OURS) -> dict[str, list[str]]:
    """{distribution: [files]} of every absolute import (functions' included) outside the stdlib and ours."""
    found: dict[str, list[str]] = {}
    for folder in folders:
        for f in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for n in names:
                    top = n.split(".")[0]
                    if top in sys.stdlib_module_names or top in OURS:
                        continue
                    found.setdefault(DIST_OF.get(top, top).lower().replace("_", "-"), []).append(
                        str(f.relative_to(REPO)))
    return found


def test_dependencies_match_the_imports_of_roma_and_analysis():
    runtime = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = {k: {_name(r) for r in v} for k, v in PYPROJECT["project"]["optional-dependencies"].items()}
    imported = top_level_imports()
    undeclared = {d: fs[:3] for d, fs in imported.items() if d not in runtime | extras["cuda"] | extras["vit"]}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    unused = sorted(runtime - set(imported))
    assert not unused, f"runtime dependencies that roma/ and analysis/ never import: {unused}"
    assert "scikit-image" in extras["test"] and "scikit-image" not in runtime  # the LBP reference of the tests


def test_the_check_sees_a_missing_and_an_unused_dependency(tmp_path, monkeypatch):
    pkg = tmp_path / "roma"
    pkg.mkdir()
    (pkg / "m.py").write_text("import os\nfrom PIL import Image\n\ndef f():\n    import skimage.feature\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert top_level_imports(("roma",)) == {"pillow": ["roma/m.py"], "scikit-image": ["roma/m.py"]}


def test_console_entry_points_resolve_and_package_data_exists():
    scripts = PYPROJECT["project"]["scripts"]
    assert {"roma-launch", "roma-fit", "roma-models"} <= set(scripts)
    for target in scripts.values():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), target
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for pkg, files in data.items():
        for name in files:
            assert (REPO / pkg.replace(".", "/") / name).is_file(), f"package data {pkg}/{name} is missing"
    assert "py.typed" in data["roma"]
    included = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "analysis" in included  # roma-fit's module is installed


def test_license_is_the_apache_2_text_and_a_changelog_exists():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) > 150  # the full text, not a pointer to it
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[?0\.1\.0\]?", changelog, re.M), "CHANGELOG.md has no entry for 0.1.0"
    assert PYPROJECT["project"]["version"] == "0.1.0"


def test_roma_fit_and_roma_launch_return_exit_codes(tmp_path, capsys):
    from analysis import fit_scaling

    csv = tmp_path / "t.csv"
    csv.write_text("x,y\n" + "".join(f"{x},{2.0 * x ** -0.3}\n" for x in (10, 20, 40, 80, 160)))
    assert fit_scaling.cli(["--csv", str(csv), "--form", "power", "--x", "x", "--y", "y", "--bootstrap", "0",
                            "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "fit.json").is_file()
