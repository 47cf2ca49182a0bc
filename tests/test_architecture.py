"""The layering rules, checked on the source: no cycles, small modules, public seams only."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("wspipe_core", "wspipe_anyio")
#: Largest module of the core, in lines.
MAX_CORE_LINES = 500
#: What the core may import besides itself and the standard library.
CORE_DEPENDENCIES = {"wsproto", "pluggy"}


def _modules(package: str) -> dict[str, Path]:
    base = ROOT / package
    out = {}
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports, TYPE_CHECKING imports included, absolute names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _graph(package: str) -> dict[str, set[str]]:
    modules = _modules(package)
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(name, path) if m in modules and m != name}
    return graph


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package):
    graph = _graph(package)
    # A package's __init__ re-exports its modules; only cycles among modules matter.
    for name in graph:
        graph[name] = {m for m in graph[name] if m != package}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_core_modules_are_small():
    too_big = {name: n for name, path in _modules("wspipe_core").items()
               if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_CORE_LINES}
    assert too_big == {}


def test_core_imports_only_wsproto_pluggy_and_the_standard_library():
    stdlib = set(sys.stdlib_module_names)
    for name, path in _modules("wspipe_core").items():
        for module in _imports(name, path):
            top = module.split(".")[0]
            assert top in stdlib or top in CORE_DEPENDENCIES or top == "wspipe_core", \
                f"{name} imports {module}"
            assert top not in {"asyncio", "anyio", "trio", "socket", "ssl", "time",
                               "threading", "selectors"}, f"{name} imports {module} (I/O)"


def _private_accesses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not (node.attr.startswith("__") and node.attr.endswith("__"))
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    return found


def test_tests_use_public_names_only():
    """Tests reach the core and the driver through public names and wspipe_core.testing."""
    found = [hit for path in sorted((ROOT / "tests").rglob("*.py"))
             for hit in _private_accesses(path)]
    assert found == []


def test_the_behaviour_table_of_architecture_md_names_files_that_exist():
    """docs/architecture.md's "behaviour -> module -> test" table stays true."""
    lines = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| behaviour | decided in | pinned by |")
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    assert len(rows) >= 10
    for behaviour, modules, tests in rows:
        for name in re.findall(r"`([\w/]+(?:\.py|/))`", modules):
            assert (ROOT / "wspipe_core" / name).exists(), f"{behaviour}: {name}"
        for name in re.findall(r"`([\w/]+\.py)`", tests):
            assert (ROOT / name).exists(), f"{behaviour}: {name}"
        assert re.search(r"`tests/", tests) or tests.startswith("—"), behaviour


def test_the_backend_helper_stands_alone():
    """wspipe_backend runs inside backends: the standard library and the framework it
    adapts, never the proxy's core or driver."""
    allowed = set(sys.stdlib_module_names) | {"wspipe_backend", "starlette", "websockets"}
    for path in sorted((ROOT / "wspipe_backend").glob("*.py")):
        name = "wspipe_backend" if path.name == "__init__.py" else f"wspipe_backend.{path.stem}"
        for module in _imports(name, path):
            assert module.split(".")[0] in allowed, f"{name} imports {module}"


#: Driver modules that read and compare configuration only: no event loop, no sockets,
#: so ``wspipe config --show`` and a reload's validation run anywhere, and the reload
#: plan stays the core's (``wspipe_core.reconfigure``), not theirs.
CONFIG_ONLY = ("wspipe_anyio.settings", "wspipe_anyio.reload")


@pytest.mark.parametrize("name", CONFIG_ONLY)
def test_settings_and_reload_do_no_io_and_no_planning(name):
    path = _modules("wspipe_anyio")[name]
    imports = _imports(name, path)
    io = {m for m in imports if m.split(".")[0] in {"anyio", "asyncio", "trio", "socket",
                                                     "ssl", "threading"}}
    assert io == set(), f"{name} imports {io}"
    assert "wspipe_anyio.server" not in imports and "wspipe_core.proxy" not in imports


def test_only_the_redis_store_imports_the_redis_client():
    """``wspipe serve`` without ``--store`` must work without the ``redis`` extra: coredis
    is imported by ``wspipe_anyio.store.redis`` alone, and nothing imports that module at
    import time but through a function (``FleetOptions.store``) or ``TYPE_CHECKING``."""
    users = {name for package in PACKAGES for name, path in _modules(package).items()
             if any(m == "coredis" or m.startswith("coredis.") for m in _imports(name, path))}
    assert users == {"wspipe_anyio.store.redis"}
    for name, path in _modules("wspipe_anyio").items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level, outside `if TYPE_CHECKING:` blocks
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.module.endswith("store.redis") or (
                        node.module.endswith("store") and any(
                            a.name == "redis" for a in node.names))):
                pytest.fail(f"{name} imports the Redis store at import time")
