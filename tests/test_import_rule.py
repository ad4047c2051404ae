"""The import rules of docs/architecture.md: nothing below the seam (roma.run.execute) imports the
launcher or the spec engine, and no import cycle exists inside roma/ (imports inside functions
count: a function-level import is how a cycle hides)."""
from __future__ import annotations

import ast
from pathlib import Path

ROMA = Path(__file__).resolve().parents[1] / "roma"
BELOW_SEAM = ("train", "models", "data", "ares", "eval")
FORBIDDEN = ("roma.launch", "roma.spec")
# the bottom layer (model, data, ARES) serves the stages above it and imports none of them
BOTTOM = ("models", "data", "ares")
ABOVE_BOTTOM = ("roma.train", "roma.eval", "roma.run", "roma.tracking", "roma.recipe", *FORBIDDEN)


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


def violations(root: Path = ROMA, packages: tuple[str, ...] = BELOW_SEAM,
               forbidden: tuple[str, ...] = FORBIDDEN) -> list[str]:
    """'<file>:<line> imports <module>', one per import statement in `packages` of a `forbidden` module."""
    bad: dict[str, str] = {}
    for sub in packages:
        for f in sorted((root / sub).rglob("*.py")):
            for line, mod in _imports(f, root):
                if any(mod == m or mod.startswith(m + ".") for m in forbidden):
                    where = f"{f.relative_to(root.parent)}:{line}"
                    bad[where] = min(bad.get(where, mod), mod, key=len)
    return sorted(f"{w} imports {m}" for w, m in bad.items())


def test_nothing_below_the_seam_imports_the_launcher_or_the_spec_engine():
    assert violations() == []


def test_model_data_and_ares_import_no_stage_above_them():
    assert violations(ROMA, BOTTOM, ABOVE_BOTTOM) == []


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


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROMA) -> dict[str, set[str]]:
    """{module: the roma modules it imports}, function-level imports included. `from pkg import name`
    is an edge to pkg and, where it is a module, to pkg.name; a module's own parent packages (imported
    implicitly before it) are not edges."""
    files = {_module_name(f, root): f for f in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for mod, f in files.items():
        names = {name for _, name in _imports(f, root) if name in files}
        graph[mod] = {n for n in names if n != mod and not mod.startswith(n + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (each holds a cycle), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles_inside_roma():
    assert cycles(import_graph()) == []


def test_the_cycle_check_sees_function_level_and_relative_imports(tmp_path):
    root = tmp_path / "roma"
    (root / "data").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "data" / "__init__.py").write_text("from .a import x\n")
    (root / "data" / "a.py").write_text("def f():\n    from .b import y\n")
    (root / "data" / "b.py").write_text("from roma.data import a\n")
    (root / "data" / "c.py").write_text("from roma.data.a import f\n")  # one way only: no cycle
    (root / "run.py").write_text("from roma import validation\n")
    (root / "validation.py").write_text("def g():\n    from roma.run import h\n")
    assert cycles(import_graph(root)) == [["roma.data.a", "roma.data.b"], ["roma.run", "roma.validation"]]


def test_the_library_never_imports_analysis():
    # analysis/ is installed beside roma (the roma-fit entry point) and reads what roma writes
    bad = [f"{f.relative_to(ROMA.parent)}:{line} imports {mod}" for f in sorted(ROMA.rglob("*.py"))
           for line, mod in _imports(f, ROMA) if mod == "analysis" or mod.startswith("analysis.")]
    assert bad == []
