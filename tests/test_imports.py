"""No import cycles among Interlace's modules, lazy imports inside functions included: a late
import that dodges a cycle means a function lives in the wrong module.  Parsed from source,
so nothing is imported to check it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tracer", "recipes")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The modules of ``modules`` that ``name`` imports anywhere in its source (packages'
    ``__init__`` re-exports are not followed: they are hubs, not cycles)."""
    out = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            stem = ".".join(p for p in (base, node.module or "") if p)
            targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name and modules[t].name != "__init__.py")
    return out


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    cycles = []

    def visit(start: str, node: str, path: list) -> None:
        for nxt in graph.get(node, ()):
            if nxt == start:
                cycles.append(" -> ".join(path + [start]))
            elif nxt not in path and len(path) < 6:
                visit(start, nxt, path + [nxt])

    for name in graph:
        visit(name, name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))
