"""The :class:`~lumos_fx.rules.api.Connecting` handle: the channel analysis of one traced
model, which runs every node's rule and records what it says in a :class:`ChannelGraph`."""

from __future__ import annotations

import math

import torch
from torch import fx

from .channels import ChannelGraph, Consumer, NodeKey, ParamKey, PartKey, Space
from .fxutil import describe, fetch_attr, input_name, normalize_dim, owner_module, shape_of, tensor_args
from .rules import REGISTRY, Unsupported
from .sample_scale import passes_channels


class Analysis:
    """The channel analysis of one traced model: runs every node's rule, implementing the
    :class:`~lumos_fx.rules.api.Connecting` handle the rules receive."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.auto_leaves: dict[str, str] = gm.meta.get("lumos_auto_leaves", {})  # read before instrument pops it
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
        return self.cg.spaces.get(NodeKey(node.name))

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        return shape_of(node)

    def module(self, node: fx.Node) -> torch.nn.Module:
        return self.gm.get_submodule(node.target)

    def describe(self, node: fx.Node) -> str:
        return describe(node, self.gm)

    def attribute(self, node: fx.Node):
        return fetch_attr(self.gm, node.target)

    def rule_of(self, node: fx.Node):
        return REGISTRY.lookup(node, self.gm)

    def canonical_param(self, tensor: torch.Tensor) -> str:
        return self._canonical[id(tensor)]

    # ---- building ------------------------------------------------------------------
    def new_space(self, node: fx.Node, dim: int, *, producer: bool = False, title: str | None = None) -> Space:
        """Open a space for `node`'s output along `dim` (channels unrelated to its inputs)."""
        shape = shape_of(node)
        dim = normalize_dim(dim, len(shape))
        # A layer written with functions (transformers' Conv1D: torch.addmm) is named after
        # the module whose forward computes it.
        title = title or (input_name(node) if node.op == "placeholder"
                          else node.target if node.op in ("call_module", "get_attr")
                          else producer and owner_module(node) or node.name)
        space = Space(NodeKey(node.name), shape[dim], dim, node=node.name, producer=producer, title=title)
        self._touched.add(space.key)
        return self.cg.add(space)

    def new_part(self, node: fx.Node, index: int, part: fx.Node, dim: int) -> Space:
        """A producer space for the channels `part`, input `index` of `node`, gives its output along `dim`."""
        space = Space(PartKey(node.name, index), shape_of(part)[dim], dim, producer=True, title=part.name)
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
        key = ParamKey(name, dim)
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

    def claim(self, node: fx.Node) -> None:
        self.handled.add(node)

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

    def _scales_samples(self, node: fx.Node) -> bool:
        """A call with no rule that scales whole samples (drop path) passes its channels."""
        src = self.space(node.args[0]) if node.op in ("call_module", "call_function") and node.args else None
        if src is None or len(list(tensor_args(node))) != 1 or not passes_channels(self.gm, node):
            return False
        self.follow(node, src, src.dim)
        return True

    def run(self, node: fx.Node) -> None:
        self._touched = set()
        rule = REGISTRY.lookup(node, self.gm)
        if rule is None and self._scales_samples(node):
            return
        if rule is None:
            one_op = node.op == "call_module" and node.target in self.auto_leaves
            self._unknown(node, f"{self.describe(node)} is called as one op: fx could not trace into it "
                                "(summary().one_op says why)" if one_op else f"no rule for {self.describe(node)}")
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
        if shape and math.prod(shape) > 1 and self.space(node) is None and node not in self.handled:
            self.cg.block(self.new_space(node, -1), f"output of {self.describe(node)} not described by its rule")
