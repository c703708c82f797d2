"""The package's import graph, read from the sources: acyclic, no lazy import dodging a
cycle, and rules that see only their contract."""

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "lumos_fx"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(imported module, line, inside a function) for every import of `path`, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, id(node) in in_function
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if (PACKAGE.parent / full.replace(".", "/")).with_suffix(".py").exists()
                       or (PACKAGE.parent / full.replace(".", "/")).is_dir() else base), node.lineno, \
                    id(node) in in_function


def _graph() -> tuple[nx.DiGraph, dict[str, Path]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        for target, _, _ in _imports(path):
            if target in files and target != name:
                graph.add_edge(name, target)
    return graph, files


# The model libraries lumos_fx has rules for and loads only once the user's code has.
OPTIONAL = {"torch_geometric", "neuralop", "physicsnemo", "onnxruntime", "onnxscript"}


def _imports_an_optional_library(path: Path) -> bool:
    return any(t.split(".")[0] in OPTIONAL and not lazy for t, _, lazy in _imports(path))


def test_the_package_imports_without_cycles():
    graph, _ = _graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_only_lazy_imports_are_of_optional_libraries():
    """A function-level import may only load an optional model library (torch_geometric,
    neuraloperator, PhysicsNeMo) or lumos_fx's rules for it, which import it at module level."""
    _, files = _graph()
    lazy = [(name, line, target) for name, path in files.items() for target, line, inside in _imports(path) if inside]
    for name, line, target in lazy:
        allowed = target.split(".")[0] in OPTIONAL or (
            target in files and _imports_an_optional_library(files[target]))
        assert allowed, f"{name}:{line} imports {target} inside a function"
    assert lazy, "the torch_geometric import is expected to be lazy"


def test_rules_import_only_their_contract():
    """A rule file imports torch, numpy, torch_geometric, the contract (rules.api), the registry
    and other rules: never a stage of the engine."""
    _, files = _graph()
    for name, path in files.items():
        if not name.startswith("lumos_fx.rules.") or name == "lumos_fx.rules.api":
            continue
        for target, line, _ in _imports(path):
            if target.startswith("lumos_fx."):
                assert target.startswith("lumos_fx.rules."), f"{name}:{line} imports the engine module {target}"


def test_the_graph_sees_every_module():
    """The reader above resolves relative imports: the contract is imported by every rule."""
    graph, _ = _graph()
    assert graph.has_edge("lumos_fx.rules.linear", "lumos_fx.rules.api")
    assert graph.has_edge("lumos_fx.prune", "lumos_fx.rules")
    assert graph.has_edge("lumos_fx.pyg_trace", "lumos_fx.rules.graph_conv")


def _protocol_members(name: str) -> set[str]:
    from lumos_fx.rules import api

    protocol = getattr(api, name)
    return {m for m in vars(protocol) if not m.startswith("_")}


def test_rules_call_only_what_their_handles_declare():
    """Inside a rule, the `an` (Connecting) and `pc` (Pruning) handles are used only through
    the calls the contract lists."""
    allowed = {"Connecting": _protocol_members("Connecting"), "Pruning": _protocol_members("Pruning")}
    _, files = _graph()
    checked = 0
    for name, path in files.items():
        if not name.startswith("lumos_fx.rules.") or name in ("lumos_fx.rules.api", "lumos_fx.rules.registry"):
            continue
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef):
                continue
            for a in function.args.args:
                assert a.arg not in ("an", "pc") or a.annotation is not None, \
                    f"{name}:{function.lineno} {function.name}() takes `{a.arg}` without its handle type"
            handles = {a.arg: ast.unparse(a.annotation) for a in function.args.args if a.annotation is not None}
            handles = {arg: kinds for arg, kinds in handles.items() if any(k in kinds for k in allowed)}
            for node in ast.walk(function):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in handles:
                    kinds = [k for k in allowed if k in handles[node.value.id]]
                    assert any(node.attr in allowed[k] for k in kinds), \
                        f"{name}:{node.lineno} calls {node.value.id}.{node.attr}, which {kinds} does not declare"
                    checked += 1
    assert checked > 200
