"""The import graph of Forge's own modules: layers that point one way, and no cycle.

Every `import` in appliance/, daemon/ and tui/ is read with `ast` (top-level and inside
functions alike; imports under `if TYPE_CHECKING:` are left out, they never run) and
resolved to the Forge module it names. Each module has a layer (LAYERS, the longest
matching prefix); docs/architecture.md says what each layer is.

- An import from a lower layer to a higher one is allowed only when UPWARD lists it (at
  most MAX_UPWARD) and the import statement carries a comment saying why.
- The graph, in-function imports included, has no cycle.
- An import inside a function (of Forge or of a library) has a comment saying why it is
  not at the module's top (on its line, or above its block of imports), e.g. torch kept
  out of processes that never train.
- The store imports nothing of Forge but config, errors and itself.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("appliance", "daemon", "tui")

# module prefix → layer; the longest matching prefix decides.
LAYERS: dict[str, int] = {
    # 5 entry points
    "appliance.cli": 5,
    "appliance.__main__": 5,
    "daemon": 5,
    "tui": 5,
    # 4 operations
    "appliance.cycle": 4,
    "appliance.ops": 4,
    "appliance.status": 4,
    "appliance.doctor": 4,
    "appliance.serve": 4,
    "appliance.teacher": 4,
    # 3 domain
    "appliance.campaign": 3,
    "appliance.datasets": 3,
    "appliance.datapackages": 3,
    "appliance.training": 3,
    "appliance.evaluation": 3,
    "appliance.registry": 3,
    "appliance.stages": 3,
    "appliance.solve": 3,
    # 2 services
    "appliance.serving": 2,
    "appliance.harness": 2,
    "appliance.index": 2,
    "appliance.packages": 2,
    "appliance.models": 2,
    "appliance.resources": 2,
    # 1 base
    "appliance": 1,
    "appliance.store": 1,
    "appliance.sandbox": 1,
    "appliance.config": 1,
    "appliance.errors": 1,
    "appliance.clock": 1,
    "appliance.childproc": 1,
    "appliance.records": 1,
    "appliance.digest": 1,
    "appliance.cores": 1,
    "appliance.diskspace": 1,
}

# (importing module, imported module): why a lower layer reaches up. Never more than
# MAX_UPWARD; the import statement itself carries a comment too.
UPWARD: dict[tuple[str, str], str] = {}
MAX_UPWARD = 5


@dataclass(frozen=True)
class Edge:
    source: str  # importing module
    target: str  # imported Forge module
    path: str
    line: int
    in_function: bool
    commented: bool


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise AssertionError(f"{module} has no layer: add it to LAYERS (and docs/architecture.md)")


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str) -> str | None:
    """The Forge module `name` is, or lies in (a name inside a module resolves to it)."""
    known = modules()
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits inside a function."""
    found = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    walk(other, in_function)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, in_function))
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            walk(child, inner)

    walk(tree, False)
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names = [f"{base}.{alias.name}" for alias in node.names]
    return {target for name in names if (target := _resolve(name)) and target != module}


def _commented(lines: list[str], node: ast.stmt) -> bool:
    """A comment on the statement's lines, or just above the block of imports it is in."""
    if any("#" in line for line in lines[node.lineno - 1 : node.end_lineno]):
        return True
    above = node.lineno - 2
    while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


@functools.cache
def edges() -> tuple[Edge, ...]:
    found = []
    for module, path in modules().items():
        source = path.read_text()
        lines = source.splitlines()
        is_package = path.name == "__init__.py"
        where = path.relative_to(ROOT).as_posix()
        for node, in_function in _imports(ast.parse(source, filename=str(path))):
            for target in sorted(_targets(node, module, is_package)):
                found.append(
                    Edge(module, target, where, node.lineno, in_function, _commented(lines, node))
                )
    return tuple(found)


def upward() -> list[Edge]:
    return [e for e in edges() if layer_of(e.source) < layer_of(e.target)]


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for e in edges():
        graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_imports_point_down_the_layers():
    listed = set(UPWARD)
    unlisted = [
        f"{e.path}:{e.line} {e.source} (layer {layer_of(e.source)}) imports {e.target} "
        f"(layer {layer_of(e.target)})"
        for e in upward()
        if (e.source, e.target) not in listed
    ]
    assert not unlisted, "imports from a lower layer up:\n" + "\n".join(unlisted)
    assert len(UPWARD) <= MAX_UPWARD


def test_upward_imports_say_why():
    silent = [f"{e.path}:{e.line} imports {e.target}" for e in upward() if not e.commented]
    assert not silent, "an upward import needs a comment saying why:\n" + "\n".join(silent)


def test_listed_upward_imports_still_exist():
    present = {(e.source, e.target) for e in upward()}
    assert not set(UPWARD) - present, f"no longer imported: {set(UPWARD) - present}"


def test_the_import_graph_has_no_cycle():
    found = cycles()
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def inner_imports() -> list[tuple[str, int, str]]:
    """(path, line, statement) of every import inside a function that says nothing of why."""
    found = []
    for path in modules().values():
        source = path.read_text()
        lines = source.splitlines()
        where = path.relative_to(ROOT).as_posix()
        for node, in_function in _imports(ast.parse(source, filename=str(path))):
            if in_function and not _commented(lines, node):
                found.append((where, node.lineno, ast.unparse(node)))
    return found


def test_imports_inside_functions_say_why():
    silent = [f"{path}:{line} {statement}" for path, line, statement in inner_imports()]
    assert not silent, (
        "an import inside a function needs a comment saying why it is not at the top (on "
        "its line, or above its block of imports):\n" + "\n".join(silent)
    )


def test_a_comment_above_a_block_of_imports_covers_the_block():
    source = "def f():\n    # torch: only the trainer\n    import torch\n    import peft\n"
    source += "\n\ndef g():\n    x = 1\n    import json\n"
    lines = source.splitlines()
    judged = [_commented(lines, node) for node, _ in _imports(ast.parse(source))]
    assert judged == [True, True, False]


def test_the_store_imports_only_config_and_errors():
    allowed = {"appliance.config", "appliance.errors"}
    stray = [
        f"{e.path}:{e.line} imports {e.target}"
        for e in edges()
        if e.source.startswith("appliance.store")
        and not e.target.startswith("appliance.store")
        and e.target not in allowed
    ]
    assert not stray, "the store depends on a feature:\n" + "\n".join(stray)


def test_the_base_layer_imports_nothing_above_it_and_is_in_no_cycle():
    """store, sandbox, config, errors, clock, childproc: everything else may rely on them
    because they rely on nothing above them, not even through an import inside a function."""
    up = [f"{e.path}:{e.line} imports {e.target}" for e in upward() if layer_of(e.source) == 1]
    assert not up, "the base layer reaches up:\n" + "\n".join(up)
    base_cycles = [c for c in cycles() if any(layer_of(m) == 1 for m in c)]
    assert not base_cycles, "cycles through the base layer: " + str(base_cycles)
