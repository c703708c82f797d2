"""Reads of a tensor's shape: x.shape, x.size(d), x.dim(), x.dtype."""

from __future__ import annotations

import builtins
import operator

import torch
from torch import fx
from torch.fx._symbolic_trace import _assert_is_none
from torch.fx.node import map_arg

from .api import (EMPTY, LIVE, Connecting, Outcome, PruneError, Pruning, Rule, arg, describe, normalize_dim, run_on,
    set_arg, shape_of, target_name)
from .dims import PRIMES, Rearrange
from .reshape import own_count_at
from .registry import REGISTRY


class ShapeRead(Rule):
    """Reads of a tensor's shape: ``x.shape``, ``x.size()``, ``x.size(d)``, ``x.dim()``,
    ``x.dtype`` ... Reading a non-channel size is fine; reading the channel count (whose
    value pruning changes) keeps the channels, unless only a reshape of the same tensor
    takes it as its channel size (``x.view(-1, x.size(-1))``)."""

    _HARMLESS = frozenset({"dtype", "device", "ndim", "is_cuda", "requires_grad", "layout", "dim", "ndimension"})

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        what = node.target if node.op == "call_method" else node.args[1]
        if what in self._HARMLESS:
            an.accept(src)
        elif what == "size" and len(node.args) + len(node.kwargs) > 1:
            self._read_dims(an, src, node, [arg(node, 1, "dim")], len(an.shape(x)), x)
        elif what in ("size", "shape"):
            self._read_shape_value(an, src, node)
        else:
            an.block(src, f"its channel count is read by {an.describe(node)}")

    def _read_dims(self, an: Connecting, src, node: fx.Node, dims, ndim: int, x: fx.Node) -> None:
        if any(not isinstance(d, int) for d in dims):
            an.block(src, f"its channel count is read by {an.describe(node)}")
        elif src.dim in [normalize_dim(d, ndim) for d in dims] and not (
                node.users and all(own_count_at(user, node, x, src.dim) for user in node.users)):
            an.block(src, f"its channel count is read by {an.describe(node)}")
        else:
            an.accept(src)

    def _read_shape_value(self, an: Connecting, src, node: fx.Node) -> None:
        ndim = len(an.shape(node.args[0]))
        for user in node.users:
            dims = _dims_indexed(user, ndim)
            if dims is not None:
                self._read_dims(an, src, user, dims, ndim, node.args[0])
            else:
                an.block(src, f"its whole shape is used by {an.describe(user)}")
            an.claim(user)
        an.accept(src)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        """A cut tensor's sizes are read off a live one with the same sizes on the dims read,
        found through the permutes and transposes that made the cut tensor if need be."""
        x = node.args[0]
        if not (pc.is_empty(x) or pc.is_const(x)):
            return LIVE
        src = pc.space(x)
        dims = self._dims_read(node, src)
        if src is not None and src.dim in dims:
            # A channel count that is read is kept whole (see connect): it is a literal.
            self._read_channels_as_literal(node, src.dim, shape_of(x)[src.dim], pc)
            if not node.users:
                return EMPTY
            dims = self._dims_read(node, src)
        source, where = x, list(range(len(shape_of(x))))  # where[d]: dim d of x, as a dim of source
        while True:
            try:
                ref = pc.reference(source, [where[d] for d in dims])
                break
            except PruneError:
                if not self._is_permute(source) or not (pc.is_empty(source) or pc.is_const(source)):
                    return self._read_example_sizes(node, dims, pc)
                probe = run_on(source, torch.empty(PRIMES[: len(shape_of(source.args[0]))], device="meta"))
                where = [PRIMES.index(probe.shape[w]) for w in where]
                source = source.args[0]
        pc.replace_input(node, x, ref)
        if where != sorted(where):
            self._read_dims_of(node, where)
        return LIVE

    def _read_example_sizes(self, node: fx.Node, dims: list[int], pc: Pruning) -> Outcome:
        """No live tensor has the sizes read (everything upstream became constant: a UNet's
        encoder whose skip channels all closed): the example's sizes, exact at the example
        input's spatial size, which summary() then says. The batch is always live."""
        x = node.args[0]
        if 0 in dims:
            raise PruneError(f"{describe(node, node.graph.owning_module)} reads the batch size of a constant "
                             "no live tensor has; please report this model")
        for d in dims:
            self._read_channels_as_literal(node, d, shape_of(x)[d], pc)
        if node.users:
            raise PruneError(f"{describe(node, node.graph.owning_module)} reads the whole shape of a constant "
                             "no live tensor has; please report this model")
        pc.holds_at_example_size(node)
        return EMPTY

    @staticmethod
    def _read_channels_as_literal(node: fx.Node, dim: int, size: int, pc: Pruning) -> None:
        """Reads of `dim` through `node` become the literal `size`."""
        def use_literal(reader: fx.Node) -> None:
            for user in list(reader.users):
                user.args = map_arg(user.args, lambda n: size if n is reader else n)
                user.kwargs = map_arg(user.kwargs, lambda n: size if n is reader else n)

        ndim = len(shape_of(node.args[0]))
        if _reads_one_size(node):
            use_literal(node)
            return
        for user in list(node.users):
            if [normalize_dim(d, ndim) for d in _dims_indexed(user, ndim) or ()] == [dim]:
                use_literal(user)
                pc.erase(user)

    @staticmethod
    def _is_permute(node: fx.Node) -> bool:
        return target_name(node) in Rearrange._MOVES

    def _read_dims_of(self, node: fx.Node, where: list[int]) -> None:
        """Point `node`'s reads at the dims `where` of its new input."""
        if _reads_one_size(node):
            set_arg(node, 1, "dim", where[normalize_dim(arg(node, 1, "dim"), len(where))])
            return
        for user in node.users:
            index = user.args[1] if user.op == "call_function" and user.target is operator.getitem else None
            if not isinstance(index, int):
                raise PruneError(f"{describe(node, node.graph.owning_module)} reads the whole shape of a cut tensor "
                                 "made by a permute; please report this model")
            user.args = (user.args[0], where[normalize_dim(index, len(where))])

    def _dims_read(self, node: fx.Node, src) -> list[int]:
        """The dims whose sizes `node` and the indexing of its result read (the batch, for
        reads of dtype or device: any model input then serves)."""
        ndim = len(shape_of(node.args[0]))
        if _reads_one_size(node):
            return [normalize_dim(arg(node, 1, "dim"), ndim)]
        dims: set[int] = set()
        for user in node.users:
            indexed = _dims_indexed(user, ndim)
            if indexed is None:
                dims.update(d for d in range(ndim) if d != src.dim)
            else:
                dims.update(normalize_dim(d, ndim) for d in indexed)
        return sorted(dims) or [0]


def _reads_one_size(node: fx.Node) -> bool:
    """``x.size(d)``, as opposed to ``x.size()``."""
    return node.op == "call_method" and node.target == "size" and len(node.args) + len(node.kwargs) > 1


def _dims_indexed(user: fx.Node, ndim: int) -> list[int] | None:
    """The dims of a shape that ``shape[i]`` or ``shape[a:b]`` reads (``len(shape)``, the rank,
    reads none); None for other uses."""
    if user.op == "call_function" and user.target is builtins.len:
        return []
    index = user.args[1] if user.op == "call_function" and user.target is operator.getitem else None
    if isinstance(index, int):
        return [index]
    if isinstance(index, slice):
        return list(range(ndim))[index]
    return None


class Assertion(Rule):
    """``torch._assert(condition, message)``: a guard on sizes or dtypes the trace took from
    the example inputs (:mod:`lumos_fx.concrete`), or fx's check of a constant argument. It
    reads values, never channels; the shape reads it checks have their own rule."""

    def connect(self, node: fx.Node, an: Connecting) -> None:
        for value in node.all_input_nodes:
            if an.space(value) is not None:
                an.accept(an.space(value))


REGISTRY.register(ShapeRead(), getattr, "size", "dim", "ndimension", "numel")
REGISTRY.register(Assertion(), torch._assert, _assert_is_none)
