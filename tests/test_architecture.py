"""The import graph of src/headwise, read from the source with `ast` (nothing imported to draw it).

Every `import` and `from ... import` counts: at module level, and inside functions and methods too (an import
put in a function to dodge a cycle is still a cycle). Relative imports are resolved against the module's
package; `from package import name` is an edge to the module package.name when there is one, else to the
package. Imports under `if TYPE_CHECKING:` are left out: they never run (they are there for type checkers).
Importing a module runs its packages' __init__ first, so an import of headwise.a.b.c is an edge to headwise.a
and headwise.a.b too, unless they are packages of the importing module itself (already being imported when
it runs; but a name imported from its own package's __init__, `from . import NAME`, is an edge), and never
to headwise itself (every module would then depend on headwise/__init__, which imports
the core as the entry point).

The partition (the second part of a module's dotted name, headwise.<unit>...):
    apps:  explain, inspection, train, bench, cli, pages (the page model and its renderers, which explain and
           inspection share), __main__
    core:  everything else: __init__, functional, ops, checks, masks, backends, modules, compat, cache, merge,
           trace, positions, nn, hf, files, optional, distributed (attention across processes is a feature
           of the attention itself), and the shims transformer and pretrained.
The rules: no cycle between modules; no cycle between units (a package and everything in it being one unit);
no core module imports an app; explain and inspection do not import each other (what both need is in pages).
headwise/__init__ reaches the apps only through its PEP 562 `__getattr__` (importlib, not an import
statement), so `import headwise` loads no app module (checked in a fresh process).
"""

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
APPS = frozenset({"explain", "inspection", "train", "bench", "cli", "pages", "__main__"})
DOCUMENTS = (  # the README, the site's pages (docs/, mkdocs.yml) and its notebook, the benchmarks' README
    ROOT / "README.md",
    ROOT / "benchmarks" / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted((ROOT / "docs").glob("*.ipynb")),
)


def module_name(path: Path) -> str:
    """headwise/nn/layers.py -> headwise.nn.layers; headwise/nn/__init__.py -> headwise.nn."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted((SRC / "headwise").rglob("*.py"))}


def unit(module: str) -> str:
    """headwise.nn.layers -> headwise.nn: the top-level module or package a module belongs to."""
    return ".".join(module.split(".")[:2])


def is_app(module: str) -> bool:
    return module.count(".") >= 1 and module.split(".")[1] in APPS


def _type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def import_nodes(node: ast.AST):
    """Every Import / ImportFrom under `node`, at any depth, but not inside an `if TYPE_CHECKING:` body
    (its `else:` still counts)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif _type_checking(child):
            for other in child.orelse:
                yield from import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from import_nodes(child)


def imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The headwise modules that one import statement in `module` reaches."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([node.module] if node.module else [])])
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    own = {".".join(module.split(".")[:end]) for end in range(1, module.count(".") + 2)}  # it, its packages
    reached = set(targets) - {module}  # what it names, its own package's __init__ included
    for target in targets:
        parts = target.split(".")
        reached.update({".".join(parts[:end]) for end in range(2, len(parts))} - own)  # run first
    return sorted(target for target in reached if target in MODULES)


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first import}, function-level imports included."""
    graph = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for node in import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in imported(module, node):
                edges.setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    """A cycle's edges, `a -> b (line n)`, for the failure message."""
    inside = set(component)
    return "; ".join(
        f"{a} -> {b} (line {line})" for a in component for b, line in graph.get(a, {}).items() if b in inside
    )


GRAPH = import_graph()


def test_the_walk_sees_function_level_and_skips_type_checking_imports():
    """The walker on a module written here: a function-level import is an edge, a TYPE_CHECKING one is not."""
    source = (
        "from typing import TYPE_CHECKING\nfrom . import trace\n"
        "if TYPE_CHECKING:\n    from .cache import KVCache\n"
        "def f():\n    from .masks import tensors\n    import headwise.merge\n"
    )
    nodes = list(import_nodes(ast.parse(source)))
    reached = sorted(t for node in nodes for t in imported("headwise.functional", node))
    assert reached == ["headwise.masks", "headwise.masks.tensors", "headwise.merge", "headwise.trace"]


def test_no_import_cycle_between_modules():
    found = cycles(GRAPH)
    assert not found, "import cycles: " + " | ".join(describe(c, GRAPH) for c in found)


def test_no_import_cycle_between_packages():
    """headwise.modules -> headwise.nn.positions with headwise.nn.layers -> headwise.modules is no cycle of
    modules but is one of packages: nn would need the core and the core nn."""
    units: dict[str, dict[str, int]] = {}
    for module, edges in GRAPH.items():
        for target, line in edges.items():
            if unit(module) != unit(target):
                units.setdefault(unit(module), {}).setdefault(unit(target), line)
    found = cycles(units)
    assert not found, "package cycles: " + " | ".join(describe(c, units) for c in found)


def test_the_core_imports_no_app():
    wrong = [
        f"{module} -> {target} (line {line})"
        for module, edges in GRAPH.items()
        if not is_app(module)
        for target, line in edges.items()
        if is_app(target)
    ]
    assert not wrong, "core modules importing an app: " + "; ".join(wrong)


def test_explain_and_inspection_do_not_import_each_other():
    wrong = [
        f"{module} -> {target} (line {line})"
        for module, edges in GRAPH.items()
        for target, line in edges.items()
        if {unit(module), unit(target)} == {"headwise.explain", "headwise.inspection"}
    ]
    assert not wrong, "; ".join(wrong)


def test_import_headwise_loads_no_app():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, headwise; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    own = [name for name in loaded if name.startswith("headwise")]
    assert "headwise.functional" in own and "headwise.modules" in own
    assert [name for name in own if is_app(name)] == []


def test_lazy_names_resolve_and_are_listed():
    import headwise

    for name in headwise.LAZY:
        assert name in headwise.__all__ and name in dir(headwise)
        module = importlib.import_module(headwise.LAZY[name])
        assert getattr(headwise, name) is getattr(module, name)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        headwise.not_a_name  # noqa: B018


PUBLIC = sorted(
    module
    for module, path in MODULES.items()
    if "__all__" in path.read_text(encoding="utf-8") and not module.startswith("headwise.backends.triton")
)


@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_name_imports(module):
    """Each name in each module's __all__ (Triton's need triton and a GPU: tests/backends/test_triton.py)."""
    imported_module = importlib.import_module(module)
    missing = [name for name in imported_module.__all__ if not hasattr(imported_module, name)]
    assert missing == []


def documented_paths() -> tuple[set[tuple[str, str]], set[str]]:
    """(module, name) from each `from headwise... import a, b` and the dotted `headwise.x.y` names in the
    README, the site's pages, benchmarks/README.md and the notebooks."""
    names, dotted = set(), set()
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8").replace("\\n", "\n")
        for module, imports in re.findall(r"from (headwise[\w.]*) import ([\w, ()]+)", text):
            for name in re.findall(r"\w+", imports.split(" as ")[0] if " as " in imports else imports):
                names.add((module, name))
        dotted.update(re.findall(r"(?<![\w./])headwise(?:\.(?!md\b)\w+)+", text))  # not a link to headwise.md
    return names, dotted


NAMES, DOTTED = documented_paths()


@pytest.mark.parametrize(("module", "name"), sorted(NAMES))
def test_documented_from_imports_work(module, name):
    assert hasattr(importlib.import_module(module), name) or importlib.import_module(f"{module}.{name}")


@pytest.mark.parametrize("path", sorted(DOTTED))
def test_documented_dotted_paths_resolve(path):
    """The longest importable prefix of `path` is imported and the rest read as attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)
        break
    assert value is not None
