"""The one-way import rule of docs/architecture.md: nothing below the seam (roma.run.execute)
imports the launcher or the spec engine, at module level or inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

ROMA = Path(__file__).resolve().parents[1] / "roma"
BELOW_SEAM = ("train", "models", "data", "ares", "eval")
FORBIDDEN = ("roma.launch", "roma.spec")


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative imports resolved."""
    pkg = ".".join(path.relative_to(root.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
            out.append((node.lineno, base))
    return out


def violations(root: Path = ROMA) -> list[str]:
    """'<file>:<line> imports <module>', one per offending import statement."""
    bad: dict[str, str] = {}
    for sub in BELOW_SEAM:
        for f in sorted((root / sub).rglob("*.py")):
            for line, mod in _imports(f, root):
                if any(mod == m or mod.startswith(m + ".") for m in FORBIDDEN):
                    where = f"{f.relative_to(root.parent)}:{line}"
                    bad[where] = min(bad.get(where, mod), mod, key=len)
    return sorted(f"{w} imports {m}" for w, m in bad.items())


def test_nothing_below_the_seam_imports_the_launcher_or_the_spec_engine():
    assert violations() == []


def test_the_check_sees_function_level_and_from_imports(tmp_path):
    root = tmp_path / "roma"
    (root / "train").mkdir(parents=True)
    (root / "train" / "loop.py").write_text("def f():\n    from roma.launch.job import x\n")
    (root / "eval").mkdir()
    (root / "eval" / "probe.py").write_text("from roma import spec\n")
    (root / "models").mkdir()
    (root / "models" / "ok.py").write_text("from roma.config import RunConfig\nimport roma.validation\n")
    found = violations(root)
    assert found == ["roma/eval/probe.py:1 imports roma.spec", "roma/train/loop.py:2 imports roma.launch.job"]
