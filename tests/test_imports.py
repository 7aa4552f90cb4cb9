"""The shape of the code that tools can see: the first-party import graph has no cycle (the
registries' targets counted as edges), modules load on demand in the registries only, the
application's modules stay small, and every Numba module has its own test file."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mobilenet_arch", "numpy_impl", "kernels", "torch_impl", "mobilenet")
# the places that import modules by name, each documented as a registry: the command line's
# commands, the application's runtimes (runners, bench sides), the library's ops backends
REGISTRIES = {"mobilenet/cli/__init__.py", "mobilenet/registry.py", "numpy_impl/backend.py"}
MAX_LINES = 500  # a module of the application past this wants splitting


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def first_party_modules() -> dict:
    return {module_name(f): f for p in PACKAGES for f in sorted((ROOT / p).rglob("*.py"))}


def _resolve(node: ast.ImportFrom, here: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module
    base = here.split(".") if is_package else here.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, modules: dict) -> set:
    """The first-party modules ``path`` imports (at the top or in a function), and for a registry
    every first-party module it names in a string."""
    here, tree = module_name(path), ast.parse(path.read_text(), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node, here, path.name == "__init__.py")
            subs = [f"{mod}.{a.name}" for a in node.names]
            named = [s for s in subs if s in modules]  # `from package import module`
            out.update(named)
            if len(named) < len(subs):
                out.add(mod)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and str(path.relative_to(ROOT)) in REGISTRIES
        ):
            out.add(node.value)
    return {m for m in out if m in modules and m != here}


def import_graph() -> dict:
    modules = first_party_modules()
    return {name: imports_of(f, modules) for name, f in modules.items()}


def find_cycle(graph: dict) -> list:
    """One cycle of ``graph`` as a list of nodes, or []."""
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = "done"
        return []

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_no_import_cycle_among_first_party_modules():
    graph = import_graph()
    assert graph["mobilenet.cli"] >= {"mobilenet.cli.train", "mobilenet.cli.detect"}  # registry edges
    assert "mobilenet.detection.torch_runner" in graph["mobilenet.registry"]
    assert "kernels" in graph["numpy_impl.backend"]
    cycle = find_cycle(graph)
    assert not cycle, " -> ".join(cycle)


def test_the_cycle_finder_sees_a_cycle_through_a_registry():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
    graph = import_graph()
    runner = "mobilenet.training.numpy_runner"
    assert runner in graph["mobilenet.registry"]  # a name in a string: an edge
    graph[runner] = graph[runner] | {"mobilenet.registry"}  # the runner importing the registry back
    assert find_cycle(graph)


def test_the_registries_cover_what_they_load():
    from mobilenet import backends as B
    from mobilenet import registry

    assert set(registry.SIDES) == set(B.BENCH_SIDES)
    assert set(registry.RUNNERS) == {(b.model, t) for b in B.BACKENDS.values() for t in B.TASKS}
    modules = first_party_modules()
    from mobilenet import cli

    named = [*registry.RUNNERS.values(), *registry.SIDES.values(), registry.ONNX_EXPORTER]
    named += [c.module for c in cli.COMMANDS.values()]
    assert all(m in modules for m in named), [m for m in named if m not in modules]


def test_modules_load_by_name_in_the_registries_only():
    found = set()
    for f in first_party_modules().values():
        text = f.read_text()
        if re.search(r"\bimport_module\(|__import__\(", text):
            found.add(str(f.relative_to(ROOT)))
    assert found <= REGISTRIES, sorted(found - REGISTRIES)
    assert len({f for f in found if f.startswith("mobilenet/")}) <= 2


def test_the_application_modules_stay_small():
    big = {
        str(f.relative_to(ROOT)): n
        for f in sorted((ROOT / "mobilenet").rglob("*.py"))
        if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"split these modules (over {MAX_LINES} lines): {big}"


def test_every_subpackage_says_what_lives_there():
    for init in sorted((ROOT / "mobilenet").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"{init.relative_to(ROOT)} needs a docstring saying what it holds"


NUMBA = re.compile(r"^\s*@(numba\.)?(njit|jit|vectorize|guvectorize)\b", re.M)
NUMBA_MODULES = sorted(p.stem for p in (ROOT / "kernels").glob("*.py") if NUMBA.search(p.read_text()))


def test_the_numba_module_scan_finds_the_kernels():
    assert {"batchnorm", "fused_block", "se", "_gemm"} <= set(NUMBA_MODULES)
    assert not NUMBA.search('"""a private ``@njit`` kernel"""')


@pytest.mark.parametrize("module", NUMBA_MODULES)
def test_every_numba_module_has_its_own_test_file(module):
    name = module.lstrip("_")
    assert (ROOT / "tests" / f"test_kernels_{name}.py").is_file(), f"tests/test_kernels_{name}.py is missing"
