"""Dependencies run one way (docs/architecture.md): every import of every project module,
module-level or inside a function, is read from the source and checked against the layers."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("elephant", "meetings", "fleet", "mirror", "signalling", "notifications", "devtools")

# app -> the project apps it must never import (directly, at any level).
FORBIDDEN = {
    "meetings": {"fleet", "mirror", "signalling", "notifications", "devtools"},
    "fleet": {"mirror", "signalling", "devtools"},
    "mirror": {"signalling", "devtools"},
    "signalling": {"fleet", "mirror", "notifications", "devtools"},
    # Mail to the participants builds on meetings only.
    "notifications": {"fleet", "mirror", "signalling", "devtools"},
}
# elephant/ is plumbing: the few modules that wire the apps together are named here.
ELEPHANT_WIRING = {"elephant/asgi.py": {"signalling"}, "elephant/urls.py": {"meetings", "fleet"}}


def _modules():
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_the_walk_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from fleet.models import Host\n    import mirror.dynamo\n")
    assert _imports(source) == {"fleet.models", "mirror.dynamo"}


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_upwards(path):
    app = path.relative_to(ROOT).parts[0]
    rel = str(path.relative_to(ROOT))
    targets = {name.split(".")[0] for name in _imports(path)} & set(APPS)
    if app == "elephant":
        forbidden = set(APPS) - {"elephant"} - ELEPHANT_WIRING.get(rel, set())
    else:
        forbidden = FORBIDDEN.get(app, set())
    assert not targets & forbidden, f"{rel} imports {sorted(targets & forbidden)}"


def test_no_import_cycle_between_project_modules():
    modules = {_module_name(path): path for path in _modules()}
    graph = {}
    for name, path in modules.items():
        edges = set()
        for imported in _imports(path):
            # "from fleet import services" names the package; a submodule import names the module.
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                edges.add(imported)
        graph[name] = edges
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            # A package's __init__ re-exporting its own submodules is not a cycle between concerns.
            if not (nxt.startswith(node + ".") or node.startswith(nxt + ".")):
                visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)
