"""Stage 2: build the channel dependency graph of a traced model by running every node's rule."""

from __future__ import annotations

import networkx as nx
import torch
from torch import fx

from .channels import Group, NodeKey
from .connect import Analysis
from .fxutil import fetch_attr
from .head_dims import add_head_dims
from .plan import Plan
from .rules.api import parameter_readers

_METADATA = frozenset({"dtype", "device", "is_cuda", "layout", "requires_grad"})


def analyze(gm: fx.GraphModule) -> Plan:
    an = Analysis(gm)
    for node in gm.graph.nodes:
        if node not in an.handled:
            an.run(node)
    add_head_dims(an)
    stateful = gm.meta.get("lumos_stateful", frozenset())
    _block_stateful(an, stateful)
    groups = an.cg.groups()
    _block_unfoldable(an, groups)
    essential = _block_lone_bottlenecks(an, groups)
    plan = Plan(an.cg.spaces, groups, an.param_names, an.param_shapes, unruled=an.unruled, essential=essential,
                stateful=stateful)
    for space in an.cg.spaces.values():
        if space.refines is not None:
            plan.refined.setdefault(space.refines, []).append(space)
        elif space.node is not None and space.key != NodeKey(space.node):
            plan.extras.setdefault(space.node, []).append(space)
    return plan


def _block_stateful(an: Analysis, stateful: frozenset[str]) -> None:
    """A buffer forward updates on every call (a running statistic written by hand) carries
    state from call to call: its channels, and those it meets, are kept."""
    for node in an.gm.graph.nodes:
        if node.op != "get_attr" or node.target not in stateful:
            continue
        reason = f"'{node.target}' is updated by forward on every call; lumos_fx keeps its channels"
        if an.space(node) is not None:
            an.block(an.space(node), reason)
        tensor = fetch_attr(an.gm, node.target)
        for dim in range(tensor.dim()):
            an.block(an.param_space(tensor, dim), reason)


def _block_unfoldable(an: Analysis, groups: list[Group]) -> None:
    """A gate folds into a parameter only if every reader of that parameter sees the same gate.

    Readers are the modules that own the parameter and the users of get_attr nodes of it.
    Weight tying, or a weight also read elsewhere, makes the group unprunable.
    """
    readers: dict[str, set[str]] = {}
    for node in an.gm.graph.nodes:
        if node.op == "call_module":
            tensors = [t for _, t in an.module(node).named_parameters()]
            names = {node.name}
        elif node.op == "get_attr":
            tensor = fetch_attr(an.gm, node.target)
            tensors = [tensor] if isinstance(tensor, torch.Tensor) else []
            names = {u.name for u, _ in parameter_readers(node) if not _reads_metadata(u)}
        else:
            continue
        for tensor in tensors:
            readers.setdefault(an.canonical_param(tensor), set()).update(names)
    folders: dict[str, set[str]] = {}
    for group in groups:
        for consumer in group.consumers:
            for key in consumer.fold:
                folders.setdefault(an.cg.spaces[key].param, set()).add(consumer.folds_at or consumer.node)
    for group in groups:
        for consumer in group.consumers:
            for key in consumer.fold:
                param = an.cg.spaces[key].param
                others = readers.get(param, set()) - folders[param]
                if others:
                    reason = f"parameter '{param}' is also read by {sorted(others)}; its gate cannot be folded into it"
                    if reason not in group.blocked:
                        group.blocked.append(reason)


def _reads_metadata(node: fx.Node) -> bool:
    """``weight.dtype`` and the like (T5 casts to its weight's dtype): what a cut leaves as it is."""
    return (node.op == "call_function" and node.target is getattr and len(node.args) == 2
            and node.args[1] in _METADATA)


def _block_lone_bottlenecks(an: Analysis, groups: list[Group]) -> set[int]:
    """The groups whose channels every path from the inputs to the output runs through:
    closing all their units leaves a model that ignores its inputs. A one-unit such group
    (a one-channel image) would be a gate that can only ever be open; it is kept whole.
    Returns the ids of all such groups (prune()'s budget snap keeps one unit of each)."""
    flow = nx.DiGraph()
    for node in an.gm.graph.nodes:
        flow.add_node(node.name)
        flow.add_edges_from((arg.name, node.name) for arg in node.all_input_nodes)
    inputs = [n.name for n in an.gm.graph.nodes if n.op == "placeholder"]
    output = next(n.name for n in an.gm.graph.nodes if n.op == "output")
    members: dict[int, list[str]] = {}
    for node in an.gm.graph.nodes:
        space = an.cg.spaces.get(NodeKey(node.name))
        if space is not None:
            members.setdefault(space.group, []).append(node.name)
    essential = set()
    for group in groups:
        if not group.prunable or group.id not in members:
            continue
        rest = flow.subgraph(set(flow) - set(members[group.id]))
        if not any(i in rest and nx.has_path(rest, i, output) for i in inputs):
            essential.add(group.id)
            if group.n_units == 1:
                group.blocked.append("its one channel carries every path from the inputs to the output: "
                                     "closing it would leave a model that ignores its inputs")
    return essential
