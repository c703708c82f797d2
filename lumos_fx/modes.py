"""A forward whose paths differ by mode, kept as one joined graph of both traces.

When the train-mode and the eval-mode trace of a model take different paths (``if
self.training:`` choosing other ops, not only other numbers), both are kept in one
``fx.Graph``: the nodes both traces computed (the same op on the same inputs) once, and each
trace's own nodes beside them, in an order that keeps each trace's own order. The graph's
output is the eval-mode output; the train-mode output is the argument of a
:func:`~lumos_fx.rules.graph_io.train_output` node. Every stage works on the joined graph as
on any other: the channel analysis sees both paths' constraints at once (one set of
groups), the gates sit in both paths, and prune cuts both the same way. Interpreters
(ShapeProp) run every node; the module's code runs one mode's nodes (:class:`ModalCodeGen`)::

    def forward(self, x):
        if self.training:
            ...  # the train-mode nodes
            return train_output
        ...      # the eval-mode nodes
        return output

A node runs in a mode when that mode's output depends on it, or, for a node nothing reads
(an in-place update), when it came from that mode's trace (``node.meta["lumos_mode"]``;
nodes a stage adds later run in both); every input is an input of both.
"""

from __future__ import annotations

import textwrap
from typing import Any

import torch
from torch import fx, nn
from torch.fx.graph import CodeGen, PythonCode
from torch.fx.node import map_arg

from .fxutil import fetch_attr, free_attr_name
from .rules.graph_io import train_output

TRAIN, EVAL = "train", "eval"
_TAG = "lumos_mode"


class ModalCodeGen(CodeGen):
    """Code for a joined graph: ``if self.training:`` the train-mode nodes, else the
    eval-mode ones. `train` and `evaluation` are the two traces' own code generators (a
    forward taking containers keeps its signature); `where` the source line where the paths
    part, for the pruned model's assumptions."""

    def __init__(self, train: CodeGen, evaluation: CodeGen, where: str) -> None:
        super().__init__()
        self.train, self.evaluation, self.where = train, evaluation, where

    def process_inputs(self, *args: Any) -> Any:
        return self.evaluation.process_inputs(*args)

    def process_outputs(self, outputs: Any) -> Any:
        return self.evaluation.process_outputs(outputs)

    def _gen_python_code(self, nodes, root_module: str, namespace, **kwargs) -> PythonCode:
        graph, globals_, srcs = nodes.graph, {}, []
        for mode, codegen in ((TRAIN, self.train), (EVAL, self.evaluation)):
            code = split(graph, mode).python_code(root_module, **kwargs)
            src, specs = code.src, getattr(codegen, "pytree_info", None)
            # fx's code for a forward taking containers reads their structure off the module
            # (self._in_spec, self._out_spec), which holds one of each: each mode reads its own.
            for attr in ("_in_spec", "_out_spec") if specs is not None else ():
                name = f"_lumos_{mode}{attr}"
                src, code.globals[name] = src.replace(f"self.{attr}", name), getattr(specs, attr[1:])
            for name, value in code.globals.items():
                if globals_.setdefault(name, value) is not value:
                    raise RuntimeError(f"internal: the train- and eval-mode code both name a global '{name}'")
            srcs.append(src)
        (top, header, train_body), (top_eval, _, eval_body) = (_parts(src) for src in srcs)
        top += [line for line in top_eval if line not in top]
        src = "\n".join(top + [header, "    if self.training:", textwrap.indent(train_body.rstrip(), "    "), "",
                               eval_body.rstrip()]) + "\n"
        return PythonCode(src, globals_, None)


def _parts(src: str) -> tuple[list[str], str, str]:
    """A function's source as the lines above its ``def``, the ``def`` line, and its body."""
    lines = src.strip("\n").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def "))
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith(":"))
    return lines[:start], "\n".join(lines[start:end + 1]), "\n".join(lines[end + 1:])


def is_joined(gm: fx.GraphModule) -> bool:
    return _joined(gm.graph)


def _joined(graph: fx.Graph) -> bool:
    return isinstance(graph._codegen, ModalCodeGen)


def where_paths_part(gm: fx.GraphModule) -> str | None:
    """The source line where a joined graph's paths part (None for one graph)."""
    return gm.graph._codegen.where if is_joined(gm) else None


def _mode_output(graph: fx.Graph, mode: str) -> fx.Node:
    if mode == EVAL:
        return next(n for n in graph.nodes if n.op == "output")
    return next(n for n in graph.nodes if n.op == "call_function" and n.target is train_output)


def runs_in(graph: fx.Graph, mode: str) -> set[fx.Node]:
    """The nodes of a joined graph that `mode` runs (every node of a graph that is not joined)."""
    if not _joined(graph):
        return set(graph.nodes)
    out = _mode_output(graph, mode)
    roots = [out] + [n for n in graph.nodes if n.op == "placeholder" or not n.users and n.op != "output"
                     and n.target is not train_output and n.meta.get(_TAG, mode) == mode]
    seen: set[fx.Node] = set()
    while roots:
        node = roots.pop()
        if node not in seen:
            seen.add(node)
            roots.extend(node.all_input_nodes)
    return seen


def train_only(graph: fx.Graph) -> set[fx.Node]:
    """The nodes of a joined graph that only train mode runs (none for another graph)."""
    return set(graph.nodes) - runs_in(graph, EVAL)


def split(graph: fx.Graph, mode: str) -> fx.Graph:
    """The graph of one mode of a joined graph: its nodes in order, returning its output."""
    codegen: ModalCodeGen = graph._codegen
    members, out = runs_in(graph, mode), _mode_output(graph, mode)
    result, env = fx.Graph(), {}
    for node in graph.nodes:
        if node in members and node is not out:
            env[node] = result.node_copy(node, env.__getitem__)
    result.output(map_arg(out.args[0], env.__getitem__))
    result._codegen = codegen.train if mode == TRAIN else codegen.evaluation  # read only
    return result


def mode_graphs(gm: fx.GraphModule) -> list[fx.GraphModule]:
    """`gm` itself, or for a joined graph its train- and eval-mode graphs (modules on `gm`)."""
    if not is_joined(gm):
        return [gm]
    return [fx.GraphModule(gm, split(gm.graph, mode), class_name=type(gm).__name__) for mode in (TRAIN, EVAL)]


def _key(node: fx.Node, env: dict) -> tuple:
    args = map_arg((node.args, node.kwargs), lambda a: id(env.get(a, a)))
    return node.op, node.target if node.op != "call_function" else id(node.target), repr(args)


def join(root: nn.Module, train: fx.Graph, twin: nn.Module, evaluation: fx.Graph,
         where: str) -> dict[fx.Node, fx.Node]:
    """Put the eval-mode trace (of `twin`, a copy of `root`) into the train-mode trace
    `train` (of `root`), in place: an eval-mode node that is the same op on the same inputs
    as a train-mode node not yet passed becomes that node; any other is inserted after the
    last one placed, and each trace's own nodes are tagged with its mode. The attributes
    only the eval-mode trace reads (constants fx stored while tracing) move to `root`.
    The output of `train` is then the eval-mode output. Returns the map from eval-mode
    nodes to joined ones."""
    order = [n for n in train.nodes if n.op != "output"]
    index = {n: i for i, n in enumerate(order)}
    waiting: dict[tuple, list[fx.Node]] = {}
    for node in order:
        waiting.setdefault(_key(node, {}), []).append(node)
    env: dict[fx.Node, fx.Node] = {}
    shared: set[fx.Node] = set()
    cursor, passed = order[0] if order else None, -1
    for node in evaluation.nodes:
        if node.op == "output":
            continue
        match = next((t for t in waiting.get(_key(node, env), ()) if index[t] > passed and
                      same_attribute(t, root, node, twin)), None)
        if match is not None:
            env[node], cursor, passed = match, match, index[match]
            shared.add(match)
            continue
        with train.inserting_after(cursor):
            new = train.node_copy(node, env.__getitem__)
        if node.op in ("get_attr", "call_module"):
            new.target = _move_attribute(root, twin, node)
        new.meta[_TAG] = EVAL
        env[node], cursor = new, new
    for node in order:
        if node not in shared:
            node.meta[_TAG] = TRAIN
    out_train = next(n for n in train.nodes if n.op == "output")
    out_eval = next(n for n in evaluation.nodes if n.op == "output")
    with train.inserting_before(out_train):
        train.call_function(train_output, (out_train.args[0],))
    out_train.args = (map_arg(out_eval.args[0], env.__getitem__),)
    train._codegen = ModalCodeGen(train._codegen, evaluation._codegen, where)
    return env


def same_attribute(t: fx.Node, root: nn.Module, e: fx.Node, twin: nn.Module) -> bool:
    """A tensor fx stored while tracing (``_tensor_constant0``) is the same attribute in both
    copies only when the tensors are equal; any other target names the same attribute."""
    if t.op != "get_attr" or not t.target.startswith("_tensor_constant"):
        return True
    x, y = fetch_attr(root, t.target), fetch_attr(twin, e.target)
    return isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape \
        and x.dtype == y.dtype and torch.equal(x, y)


def _move_attribute(root: nn.Module, twin: nn.Module, node: fx.Node) -> str:
    """The name on `root` of what `node` reads on `twin`: the same name for the model's own
    attributes, a free one for what the eval-mode trace stored or made."""
    try:
        fetch_attr(root, node.target)
        if not node.target.startswith("_tensor_constant"):
            return node.target
    except AttributeError:
        pass
    value = fetch_attr(twin, node.target)
    name = free_attr_name(root, node.target.replace(".", "_"))
    if isinstance(value, nn.Module):
        root.add_module(name, value)
    elif isinstance(value, nn.Parameter):
        root.register_parameter(name, value)
    elif isinstance(value, torch.Tensor):
        root.register_buffer(name, value, persistent=False)
    else:
        setattr(root, name, value)
    return name
