"""The import graph of offrl/ and scripts/, and its cycles (docs/architecture.md).

    python benchmarks/import_graph.py [REPO_ROOT]

Reads the source with `ast` (nothing is imported). An edge marked `*` is an import made inside
a function (at call time), `+` one under `if TYPE_CHECKING:` (annotations only, never run).
Cycles are the strongly connected groups of the runtime edges (top-level and `*`), once per
module and once with every subpackage's modules (offrl.agents.*, offrl.data.*, ...) collapsed into it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


RANK = {"": 0, "*": 1, "+": 2}  # an edge keeps its strongest kind: top level, then `*`, then `+`


def module_paths(root: Path) -> dict[str, Path]:
    paths = [*root.glob("offrl/**/*.py"), *root.glob("scripts/*.py")]
    return {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p for p in paths}


def import_edges(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """module -> {imported module: "" (top level) | "*" (in a function) | "+" (TYPE_CHECKING)}."""

    def known(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, dict[str, str]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        out = edges.setdefault(module, {})

        def visit(node: ast.AST, kind: str) -> None:
            for child in ast.iter_child_nodes(node):
                inner = "*" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else kind
                if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                    inner = "+"
                if isinstance(child, ast.Import):
                    targets = [alias.name for alias in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:  # relative import
                        parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                        base = ".".join(parts + ([base] if base else []))
                    # `from pkg import module` imports the module; `from pkg import name` the package
                    targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in child.names]
                else:
                    visit(child, inner)
                    continue
                for target in filter(None, map(known, targets)):
                    if target != module and (target not in out or RANK[kind] < RANK[out[target]]):
                        out[target] = kind

        visit(ast.parse(path.read_text()), "")
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def main(root: Path) -> None:
    edges = import_edges(module_paths(root))
    for module in sorted(edges):
        print(f"{module} -> " + ", ".join(target + kind for target, kind in sorted(edges[module].items())))
    runtime = {m: {t for t, kind in targets.items() if kind != "+"} for m, targets in edges.items()}
    print("module cycles:")
    for group in cycles(runtime):
        print("  " + " <-> ".join(group) + "  (" + "; ".join(
            f"{a} -> {b}{edges[a][b]}" for a in group for b in sorted(runtime[a]) if b in group) + ")")

    print("package cycles (each subpackage's modules collapsed into it):")
    for group in cycles(collapse_packages(runtime, subpackages(root))):
        print("  " + " <-> ".join(group))


def subpackages(root: Path) -> list[str]:
    """offrl's subpackages (offrl.agents, offrl.data, ...): the folders with an __init__.py below offrl/."""
    return sorted(".".join(p.parent.relative_to(root).parts) for p in root.glob("offrl/*/__init__.py"))


def collapse_packages(graph: dict[str, set[str]], packages: list[str]) -> dict[str, set[str]]:
    """The graph with every module of each package in `packages` merged into that package."""

    def package(module: str) -> str:
        return next((p for p in packages if module == p or module.startswith(p + ".")), module)

    collapsed: dict[str, set[str]] = {}
    for module, targets in graph.items():
        collapsed.setdefault(package(module), set()).update(package(t) for t in targets if package(t) != package(module))
    return collapsed


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent))
