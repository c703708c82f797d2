"""Ops that pick part of a tensor: narrow, indexing with slices, index_select, expand."""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx

from .api import (EMPTY, LIVE, Connecting, HeadRole, Outcome, Pruning, Rule, Unsupported, arg, channel_count_read,
    check_read_counts, const, kept_in_range, normalize_dim, reads_count_of, set_arg, shape_of, varargs)
from .registry import REGISTRY


class Narrow(Rule):
    """``x.narrow(dim, start, length)``: on the channel dim, output channel ``j`` is input
    channel ``start + j``; the pruned call narrows to the kept channels in that range."""

    def _where(self, node: fx.Node):
        bounds = (arg(node, 2, "start"), arg(node, 3, "length"))
        if any(isinstance(b, fx.Node) for b in bounds):
            raise Unsupported("narrows to bounds computed in forward")
        return normalize_dim(arg(node, 1, "dim"), len(shape_of(node))), *bounds

    def connect(self, node: fx.Node, an: Connecting) -> None:
        src = an.space(node.args[0])
        if src is None:
            return
        dim, start, length = self._where(node)
        if dim != src.dim:
            an.follow(node, src, src.dim)
            return
        an.tie(src, an.new_space(node, dim), start + np.arange(length), None)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        result = super().prune(node, pc)
        src = pc.space(node.args[0])
        if not result.live or src is None:
            return result
        dim, start, length = self._where(node)
        if dim == src.dim:
            kept = pc.kept(src)
            set_arg(node, 2, "start", kept_in_range(kept, 0, start))
            set_arg(node, 3, "length", kept_in_range(kept, start, start + length))
        return result


class Expand(Rule):
    """``x.expand(*sizes)`` (a class token broadcast over the batch): new dims are added on
    the left and dims of size 1 repeated; the channel dim keeps its size. A literal channel
    count in `sizes` is rewritten to the kept count, one read off a tensor to ``-1``."""

    def _sizes(self, node: fx.Node) -> list:
        return varargs(node.args[1:])

    def connect(self, node: fx.Node, an: Connecting) -> None:
        src = an.space(node.args[0])
        if src is None:
            check_read_counts(node, self._sizes(node), None, an)  # a count read here sizes no channels
            return
        k = src.dim + len(an.shape(node)) - len(an.shape(node.args[0]))
        if len(self._sizes(node)) != len(an.shape(node)):
            raise Unsupported("its whole target shape is computed in forward")
        if isinstance(self._sizes(node)[k], fx.Node) and not reads_count_of(node, k, channel_count_read(
                self._sizes(node)[k], an)):
            raise Unsupported("its channel count is computed in forward")
        check_read_counts(node, self._sizes(node), an.follow(node, src, k), an)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        result = super().prune(node, pc)
        out = pc.space(node)
        sizes = self._sizes(node)
        if result.live and out is not None and sizes[out.dim] != -1:
            # A count read in forward becomes -1: the channel dim keeps its (kept) size.
            sizes[out.dim] = -1 if isinstance(sizes[out.dim], fx.Node) else pc.n_kept(out)
            node.args = (node.args[0], *sizes)
        return result


def computed_bounds(item) -> bool:
    """Whether `item` is a slice with a bound computed in forward (``x[..., : x.shape[-1] // 2]``)."""
    return isinstance(item, slice) and any(isinstance(v, fx.Node) for v in (item.start, item.stop, item.step))


def index_items(index, ndim: int, computed_slices: bool = False):
    """For ``x[index]``: (item position, input dim, output dim, item) of every input dim.

    ``item`` is an int, a slice, or None for a dim the index leaves whole. A slice with bounds
    computed in forward is refused unless `computed_slices` (the caller checks where it is).
    """
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        if isinstance(item, (fx.Node, torch.Tensor, list)) or (computed_bounds(item) and not computed_slices):
            raise Unsupported("indexes with values computed in forward")
    consumed = sum(1 for it in items if isinstance(it, (int, slice)))
    out = []
    in_dim = out_dim = 0
    for pos, item in enumerate(items):
        if item is None:
            out_dim += 1
        elif item is Ellipsis:
            for _ in range(ndim - consumed):
                out.append((None, in_dim, out_dim, None))
                in_dim += 1
                out_dim += 1
        elif isinstance(item, int):
            out.append((pos, in_dim, None, item))
            in_dim += 1
        else:
            out.append((pos, in_dim, out_dim, item))
            in_dim += 1
            out_dim += 1
    while in_dim < ndim:
        out.append((None, in_dim, out_dim, None))
        in_dim += 1
        out_dim += 1
    return out


class GetItem(Rule):
    """``x[...]`` with ints, slices, None and Ellipsis. A slice ``a:b`` of the channel dim
    maps output channel ``j`` to input channel ``a + j`` and is rewritten to the kept
    bounds; an int that picks one channel, a strided slice or advanced indexing is refused."""

    def head_role(self, node: fx.Node) -> HeadRole:
        return HeadRole.MOVE

    def _channel_item(self, node: fx.Node, src, ndim: int):
        for pos, in_dim, out_dim, item in index_items(node.args[1], ndim, computed_slices=True):
            if in_dim == src.dim:
                if computed_bounds(item):
                    raise Unsupported("slices the channels with bounds computed in forward")
                return pos, out_dim, item
        raise AssertionError("channel dim not visited")

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            raise Unsupported("indexes a value lumos_fx does not follow")
        _, out_dim, item = self._channel_item(node, src, len(an.shape(x)))
        if item is None:
            an.follow(node, src, out_dim)
            return
        if isinstance(item, int):
            raise Unsupported("picks a single channel by its index")
        start, _, step = item.indices(src.size)
        if step != 1:
            raise Unsupported("takes a strided slice of the channels")
        out = an.new_space(node, out_dim)
        an.tie(src, out, start + np.arange(out.size), None)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        x = node.args[0]
        if pc.space(x) is None and pc.is_const(x):
            return const(pc.evaluate(node))  # a piece of a split constant
        if pc.space(x) is None and pc.is_empty(x):
            return EMPTY  # an item of a tuple whose producer left (a recurrent layer without units)
        if pc.is_const(x):
            if any(computed_bounds(item) for item in (node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],))):
                return const(pc.evaluate_at_example(node))
            return const(_index_const(node, pc))
        result = super().prune(node, pc)
        src = pc.space(x)
        if src is None or not result.live:
            return result
        pos, _, item = self._channel_item(node, src, len(shape_of(x)))
        # An uncut space leaves the slice as written: its bounds may count from the end of a
        # dim whose size the example only happens to give (a blocked space on a spatial dim).
        if isinstance(item, slice) and pc.n_kept(src) < src.size:
            start, stop, _ = item.indices(src.size)
            kept = pc.kept(src)
            items = list(node.args[1]) if isinstance(node.args[1], tuple) else [node.args[1]]
            items[pos] = slice(kept_in_range(kept, 0, start), kept_in_range(kept, 0, stop))
            node.args = (node.args[0], tuple(items) if isinstance(node.args[1], tuple) else items[0])
        return LIVE


def _index_const(node: fx.Node, pc: Pruning) -> torch.Tensor:
    """``x[index]`` of a constant: on a dim where it is uniform (size 1) every index picks
    the same value, so an int there becomes 0 and a slice keeps the size-1 dim."""
    x, index = node.args
    value, full = pc.const(x), shape_of(x)
    items = list(index) if isinstance(index, tuple) else [index]
    for pos, in_dim, _, item in index_items(index, len(full)):
        if pos is not None and value.shape[in_dim] == 1 != full[in_dim]:
            items[pos] = 0 if isinstance(item, int) else slice(None)
    return value[tuple(items)]


class IndexSelect(Rule):
    """``x.index_select(dim, index)`` along a dim other than the channels (a graph layer
    gathering the features of each edge's source node): channels pass through; the index
    is read whole."""

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        if normalize_dim(arg(node, 1, "dim"), len(an.shape(x))) == src.dim:
            raise Unsupported("selects channels by an index computed in forward")
        an.follow(node, src, src.dim)


REGISTRY.register(GetItem(), operator.getitem)
REGISTRY.register(IndexSelect(), torch.index_select, "index_select")
REGISTRY.register(Narrow(), torch.narrow, "narrow")
REGISTRY.register(Expand(), "expand")
