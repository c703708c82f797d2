"""Build the channel dependency graph of a traced model by running every node's rule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
import torch
from torch import fx

from .channels import ChannelGraph, Consumer, Group, Space, space_key_of_node, space_key_of_param
from .fxutil import describe, fetch_attr, input_name, normalize_dim, shape_of, tensor_args
from .head_dims import add_head_dims
from .rules import REGISTRY, Unsupported


@dataclass
class Plan:
    """What instrument() learned about a model, kept in ``wrapped.meta["lumos"]``."""

    spaces: dict[str, Space]
    groups: list[Group]
    param_names: dict[str, list[str]]  # canonical parameter name -> every name it is reachable by
    param_shapes: dict[str, tuple[int, ...]]
    gate_keys: dict[int, str] = field(default_factory=dict)  # group id -> key in wrapped.lumos_gates
    feature_names: dict[str, list[str]] = field(default_factory=dict)  # input name -> column names
    example_inputs: tuple = ()
    config: object = None
    cost: object = None  # costs.CostModel of the prunable parameters, set by instrument()
    flop_cost: object = None  # costs.CostModel of the gated layers' FLOPs, set by instrument()
    unruled: set[str] = field(default_factory=set)  # nodes with no rule, or whose rule refused them
    example_flops: int = 0  # forward FLOPs of the model on example_inputs
    refined: dict[str, list[Space]] = field(default_factory=dict)  # space key -> spaces refining it
    extras: dict[str, list[Space]] = field(default_factory=dict)  # node name -> its spaces off the channel dim
    essential: set[int] = field(default_factory=set)  # groups every input-to-output path runs through
    stateful: frozenset[str] = frozenset()  # buffers and parameters forward updates on every call

    def space_of(self, node_name: str) -> Space | None:
        return self.spaces.get(space_key_of_node(node_name))

    def refinements(self, key: str) -> list[Space]:
        """The spaces that gate channels of space `key` a second time (see :mod:`head_dims`)."""
        return self.refined.get(key, [])

    def extra_spaces(self, node_name: str) -> list[Space]:
        """Spaces of `node_name`'s output on dims other than its channel dim (a head dim)."""
        return self.extras.get(node_name, [])

    def group_of(self, space: Space) -> Group:
        return self.groups[space.group]

    def param_spaces(self) -> dict[str, list[Space]]:
        """Canonical parameter name -> its spaces (one per tied dim; refinements apart)."""
        out: dict[str, list[Space]] = {}
        for space in self.spaces.values():
            if space.param is not None and space.refines is None:
                out.setdefault(space.param, []).append(space)
        return out

    def input_groups(self) -> dict[str, Group]:
        """Model input name -> its prunable feature group."""
        out = {}
        for name in self.feature_names:
            group = self.group_of(self.spaces[space_key_of_node(name)])
            if group.prunable:
                out[name] = group
        return out


class Analysis:
    """What a rule sees while it describes one node to the channel graph."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.cg = ChannelGraph()
        self.handled: set[fx.Node] = set()
        self.unruled: set[str] = set()
        self._touched: set[str] = set()
        self._canonical: dict[int, str] = {}
        self.param_names: dict[str, list[str]] = {}
        self.param_shapes: dict[str, tuple[int, ...]] = {}
        named = list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False))
        for name, tensor in named:
            canonical = self._canonical.setdefault(id(tensor), name)
            self.param_names.setdefault(canonical, []).append(name)
            self.param_shapes[canonical] = tuple(tensor.shape)

    # ---- queries -------------------------------------------------------------------
    def space(self, node) -> Space | None:
        """The channel space of an input node, or None if it is not a tensor with channels."""
        if not isinstance(node, fx.Node):
            return None
        return self.cg.spaces.get(space_key_of_node(node.name))

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        return shape_of(node)

    def module(self, node: fx.Node) -> torch.nn.Module:
        return self.gm.get_submodule(node.target)

    def describe(self, node: fx.Node) -> str:
        return describe(node, self.gm)

    def canonical_param(self, tensor: torch.Tensor) -> str:
        return self._canonical[id(tensor)]

    # ---- building ------------------------------------------------------------------
    def new_space(self, node: fx.Node, dim: int, *, producer: bool = False) -> Space:
        """Open a space for `node`'s output along `dim` (channels unrelated to its inputs)."""
        shape = shape_of(node)
        dim = normalize_dim(dim, len(shape))
        title = (input_name(node) if node.op == "placeholder"
                 else node.target if node.op in ("call_module", "get_attr") else node.name)
        space = Space(space_key_of_node(node.name), shape[dim], dim, node=node.name, producer=producer, title=title)
        self._touched.add(space.key)
        return self.cg.add(space)

    def follow(self, node: fx.Node, src: Space, dim: int) -> Space:
        """A space for `node` along `dim` whose channels are `src`'s, one to one."""
        out = self.new_space(node, dim)
        if out.size != src.size:
            raise Unsupported(f"channel count changes from {src.size} to {out.size}")
        self.tie(src, out)
        return out

    def param_space(self, tensor: torch.Tensor, dim: int) -> Space:
        """The space of parameter (or buffer) `tensor` along `dim`, shared by all its users."""
        name = self.canonical_param(tensor)
        dim = normalize_dim(dim, tensor.dim())
        key = space_key_of_param(name, dim)
        space = self.cg.spaces.get(key)
        if space is None:
            space = self.cg.add(Space(key, tensor.shape[dim], dim, param=name))
        self._touched.add(key)
        return space

    def tie(self, a: Space, b: Space, a_idx=None, b_idx=None) -> None:
        self._touched.update((a.key, b.key))
        self.cg.tie(a, b, a_idx, b_idx)

    def block(self, space: Space, reason: str) -> None:
        self._touched.add(space.key)
        self.cg.block(space, reason)

    def accept(self, space: Space) -> None:
        """Mark an input as read in a way that does not depend on its channels."""
        self._touched.add(space.key)

    def consume(self, node: fx.Node, input_node: fx.Node, fold: list[Space]) -> None:
        """`node` reads `input_node`'s channels linearly through the parameter spaces `fold`."""
        space = self.space(input_node)
        self._touched.add(space.key)
        self.cg.consume(Consumer(node.name, input_node.name, space.key, [s.key for s in fold]))

    # ---- engine --------------------------------------------------------------------
    def _unknown(self, node: fx.Node, reason: str) -> None:
        self.unruled.add(node.name)
        for arg in tensor_args(node):
            space = self.space(arg)
            if space is not None:
                self.cg.block(space, reason)
        shape = shape_of(node)
        if shape:
            out = self.space(node) or self.new_space(node, -1)
            self.cg.block(out, reason)

    def run(self, node: fx.Node) -> None:
        self._touched = set()
        rule = REGISTRY.lookup(node, self.gm)
        if rule is None:
            self._unknown(node, f"no rule for {self.describe(node)}")
            return
        try:
            rule.connect(node, self)
        except Unsupported as e:
            self._unknown(node, f"{self.describe(node)}: {e}")
            return
        # Never guess: an input the rule did not account for, or an output it did not
        # describe, keeps its channels.
        for arg in tensor_args(node):
            space = self.space(arg)
            if space is not None and space.key not in self._touched:
                self.cg.block(space, f"read by {self.describe(node)} in a way lumos_fx has no rule for")
        shape = shape_of(node)
        # A one-element output (GIN's eps) has no channels to keep or cut.
        if shape and math.prod(shape) > 1 and self.space(node) is None:
            self.cg.block(self.new_space(node, -1), f"output of {self.describe(node)} not described by its rule")


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
        elif space.node is not None and space.key != space_key_of_node(space.node):
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
            names = {u.name for u in node.users}
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
        space = an.cg.spaces.get(space_key_of_node(node.name))
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
