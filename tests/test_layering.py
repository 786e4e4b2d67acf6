"""The layering of docs/architecture.md holds: imports point only down the layers, and no module
imports itself back through others (no import cycles), counting imports inside functions too."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "optsim"

#: top-level modules and packages of optsim, from the top layer down (docs/architecture.md)
LAYERS = [
    {"__main__"},
    {"cli"},
    {"reproduce", "dashboard"},
    {"distributed"},
    {"experiment"},
    {"plots"},
    {"methods"},
    {"mechanisms", "estimators"},
    {"channel"},
    {"clock", "compress", "sampling", "optim", "robust", "privacy", "particles"},
    {"problems", "targets"},
    {"data"},
    {"meter", "rng", "state", "trace", "specs", "bounds", "allocator"},
    {"manifolds"},
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["optsim", *parts])


def _imports(path: Path) -> set[str]:
    """Fully qualified optsim modules imported by ``path`` (anywhere in the file)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("optsim"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("optsim"):
                mod = node.module
            else:
                continue
            out.add(mod)
            for a in node.names:  # "from . import x" imports the submodule x
                if (SRC / Path(*mod.split(".")[1:]) / f"{a.name}.py").exists() or \
                        (SRC / Path(*mod.split(".")[1:]) / a.name / "__init__.py").exists():
                    out.add(f"{mod}.{a.name}")
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files} - {m} for m, p in files.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, group in enumerate(LAYERS):
        if top in group:
            return i
    raise AssertionError(f"{module}: its top-level module '{top}' is in no layer of LAYERS (docs/architecture.md)")


def test_imports_point_down_the_layers():
    bad = []
    for mod, deps in _graph().items():
        if mod == "optsim":  # the package's public API re-exports from every layer
            continue
        for dep in deps:
            if dep == "optsim":
                continue  # the version string
            same_top = mod.split(".")[1] == dep.split(".")[1]
            if not same_top and _layer(dep) <= _layer(mod):
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    # a package's __init__ importing its own submodules (re-exports) is not a cycle of the design
    edges = {m: {d for d in deps if not (d.startswith(m + ".") or (m.startswith(d + ".") and
                                                                  (SRC / Path(*d.split(".")[1:]) / "__init__.py").exists()))}
             for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in edges[m]:
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_method_module_is_imported_by_the_registry():
    """A new method is one new file: the methods package imports every module under it."""
    import importlib
    import sys

    importlib.import_module("optsim.methods")
    files = {_module_name(p) for p in (SRC / "methods").rglob("*.py")}
    assert files <= set(sys.modules), sorted(files - set(sys.modules))
