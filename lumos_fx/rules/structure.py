"""Ops that move channels around without mixing them: cat, split, indexing, reshape,
permute, reductions over other dims, and reads of a tensor's shape."""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.node import map_arg

from ..errors import PruneError
from ..fxutil import describe, normalize_dim, shape_of
from .registry import REGISTRY, ModuleRule, Rule, Unsupported


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Argument `name` of `node`, given positionally at `index` or as a keyword."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def set_arg(node: fx.Node, index: int, name: str, value: Any) -> None:
    if len(node.args) > index:
        args = list(node.args)
        args[index] = value
        node.args = tuple(args)
    else:
        node.kwargs = {**node.kwargs, name: value}


def varargs(rest) -> list:
    """Sizes or dims given as ``f(a, b, c)`` or as ``f((a, b, c))``, as a list."""
    return list(rest[0]) if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else list(rest)


def target_name(node: fx.Node) -> str:
    """The name of the method or function a call node runs ('' for other nodes)."""
    if node.op == "call_method":
        return node.target
    return getattr(node.target, "__name__", "") if node.op == "call_function" else ""


def kept_in_range(kept: np.ndarray, start: int, stop: int) -> int:
    return int(((kept >= start) & (kept < stop)).sum())


def joined_spaces(node: fx.Node, an):
    """The spaces of the tensors a cat or stack joins (channels on one dim), and its dim."""
    spaces = [an.space(t) for t in arg(node, 0, "tensors")]
    if any(s is None for s in spaces) or len({s.dim for s in spaces}) != 1:
        raise Unsupported("inputs carry channels on different dims")
    return spaces, normalize_dim(arg(node, 1, "dim", 0), len(an.shape(node)))


class Cat(Rule):
    r"""``torch.cat(xs, dim)``. On the channel dim, input ``i``'s channel ``j`` is output
    channel ``o_i + j`` with ``o_i = \sum_{k<i} C_k`` (the paper's Fig. 7: 50 + 47 kept
    channels become 97 at the consumer). On another dim, every input shares the output's
    channels."""

    def connect(self, node: fx.Node, an) -> None:
        spaces, dim = joined_spaces(node, an)
        out = an.new_space(node, spaces[0].dim)
        offset = 0
        for s in spaces:
            if out.dim == dim:
                an.tie(s, out, None, offset + np.arange(s.size))
                offset += s.size
            else:
                an.tie(s, out)

    def prune(self, node: fx.Node, pc):
        tensors = arg(node, 0, "tensors")
        out = pc.space(node)
        on_channels = normalize_dim(arg(node, 1, "dim", 0), len(shape_of(node))) == out.dim
        nonempty = [t for t in tensors if not pc.is_empty(t)]
        if on_channels and all(pc.is_const(t) for t in nonempty):
            # Constants in broadcast form concatenate along the channel dim exactly; an empty
            # input's channels are all cut, so zeros stand in for them.
            like = pc.const(nonempty[0])
            parts = [pc.const(t) if pc.is_const(t) else pc.broadcast_form(t, like.new_zeros(pc.space(t).size))
                     for t in tensors]
            shape = list(torch.broadcast_shapes(*(p.shape[:out.dim] + (1,) + p.shape[out.dim + 1:] for p in parts)))
            return torch.cat([p.expand(shape[:out.dim] + [p.shape[out.dim]] + shape[out.dim + 1:]) for p in parts],
                             dim=out.dim)
        if on_channels:
            set_arg(node, 0, "tensors", nonempty)
        return super().prune(node, pc)


class Stack(Rule):
    """``torch.stack(xs, dim)``: inputs share the output's channels, shifted by the new dim."""

    def connect(self, node: fx.Node, an) -> None:
        spaces, dim = joined_spaces(node, an)
        out = an.new_space(node, spaces[0].dim + (1 if dim <= spaces[0].dim else 0))
        for s in spaces:
            an.tie(s, out)


class Split(Rule):
    """``torch.split`` / ``torch.chunk`` and their Tensor methods, read through ``[i]``.

    On the channel dim, piece ``i`` holds channels ``o_i .. o_i + n_i`` of the input; the
    pruned model splits at the kept counts (always as ``split`` with explicit sizes, since
    kept pieces need not be equal).
    """

    def connect(self, node: fx.Node, an) -> None:
        x = node.args[0]
        src = an.space(x)
        pieces = node.meta.get("tensor_meta")
        if src is None or not isinstance(pieces, (tuple, list)):
            raise Unsupported("splits a value lumos_fx does not follow")
        users = list(node.users)
        if not all(u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int)
                   for u in users):
            raise Unsupported("its pieces are used other than by indexing with a number")
        dim = normalize_dim(arg(node, 2, "dim", 0), len(an.shape(x)))
        sizes = [p.shape[dim] for p in pieces]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for user in users:
            i = user.args[1] % len(sizes)
            if dim == src.dim:
                out = an.new_space(user, dim)
                an.tie(src, out, offsets[i] + np.arange(sizes[i]), None)
            else:
                an.follow(user, src, src.dim)
            an.handled.add(user)

    def prune(self, node: fx.Node, pc):
        x = node.args[0]
        if pc.is_empty(x):
            return pc.EMPTY
        src = pc.space(x)
        dim = normalize_dim(arg(node, 2, "dim", 0), len(shape_of(x)))
        if dim == src.dim and pc.is_const(x):
            return pc.evaluate(node)  # a tuple of constant pieces, read by the getitem rule
        result = super().prune(node, pc)
        if dim != src.dim or result is not None:
            return result
        kept = pc.kept(src)
        sizes = [p.shape[dim] for p in node.meta["tensor_meta"]]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        new_sizes = [kept_in_range(kept, offsets[i], offsets[i + 1]) for i in range(len(sizes))]
        node.target = "split" if node.op == "call_method" else torch.split
        node.args = (node.args[0], new_sizes)
        node.kwargs = {"dim": dim}
        return None


class Unbind(Rule):
    """``x.unbind(dim)`` read through ``[i]``: on a dim other than the channels, every piece
    keeps the channels (one dim to the left if ``dim`` was before them)."""

    def connect(self, node: fx.Node, an) -> None:
        src = an.space(node.args[0])
        if src is None:
            return
        dim = normalize_dim(arg(node, 1, "dim", 0), len(an.shape(node.args[0])))
        if dim == src.dim:
            raise Unsupported("splits the channels into single channels")
        users = list(node.users)
        if not all(u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int)
                   for u in users):
            raise Unsupported("its pieces are used other than by indexing with a number")
        for user in users:
            an.follow(user, src, src.dim - (1 if dim < src.dim else 0))
            an.handled.add(user)

    def prune(self, node: fx.Node, pc):
        x = node.args[0]
        if pc.is_empty(x):
            return pc.EMPTY
        if pc.is_const(x):
            return pc.evaluate(node)  # a tuple of constant pieces, read by the getitem rule
        return super().prune(node, pc)


class Narrow(Rule):
    """``x.narrow(dim, start, length)``: on the channel dim, output channel ``j`` is input
    channel ``start + j``; the pruned call narrows to the kept channels in that range."""

    def _where(self, node: fx.Node):
        bounds = (arg(node, 2, "start"), arg(node, 3, "length"))
        if any(isinstance(b, fx.Node) for b in bounds):
            raise Unsupported("narrows to bounds computed in forward")
        return normalize_dim(arg(node, 1, "dim"), len(shape_of(node))), *bounds

    def connect(self, node: fx.Node, an) -> None:
        src = an.space(node.args[0])
        if src is None:
            return
        dim, start, length = self._where(node)
        if dim != src.dim:
            an.follow(node, src, src.dim)
            return
        an.tie(src, an.new_space(node, dim), start + np.arange(length), None)

    def prune(self, node: fx.Node, pc):
        result = super().prune(node, pc)
        src = pc.space(node.args[0])
        if result is not None or src is None:
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
    count in `sizes` is rewritten to the kept count."""

    def _sizes(self, node: fx.Node) -> list:
        return varargs(node.args[1:])

    def connect(self, node: fx.Node, an) -> None:
        src = an.space(node.args[0])
        if src is None:
            return
        k = src.dim + len(an.shape(node)) - len(an.shape(node.args[0]))
        if isinstance(self._sizes(node)[k], fx.Node):
            raise Unsupported("its channel count is computed in forward")
        an.follow(node, src, k)

    def prune(self, node: fx.Node, pc):
        result = super().prune(node, pc)
        out = pc.space(node)
        sizes = self._sizes(node)
        if result is None and out is not None and sizes[out.dim] != -1:
            sizes[out.dim] = pc.n_kept(out)
            node.args = (node.args[0], *sizes)
        return result


def _index_items(index, ndim: int):
    """For ``x[index]``: (item position, input dim, output dim, item) of every input dim.

    ``item`` is an int, a slice, or None for a dim the index leaves whole.
    """
    items = index if isinstance(index, tuple) else (index,)
    for item in items:
        if isinstance(item, (fx.Node, torch.Tensor, list)) or (
            isinstance(item, slice) and any(isinstance(v, fx.Node) for v in (item.start, item.stop, item.step))
        ):
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

    def _channel_item(self, node: fx.Node, src, ndim: int):
        for pos, in_dim, out_dim, item in _index_items(node.args[1], ndim):
            if in_dim == src.dim:
                return pos, out_dim, item
        raise AssertionError("channel dim not visited")

    def connect(self, node: fx.Node, an) -> None:
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

    def prune(self, node: fx.Node, pc):
        x = node.args[0]
        if pc.space(x) is None and pc.is_const(x):
            return pc.evaluate(node)  # a piece of a split constant
        if pc.is_const(x):
            return _index_const(node, pc)
        result = super().prune(node, pc)
        src = pc.space(x)
        if src is None or result is not None:
            return result
        pos, _, item = self._channel_item(node, src, len(shape_of(x)))
        if isinstance(item, slice):
            start, stop, _ = item.indices(src.size)
            kept = pc.kept(src)
            items = list(node.args[1]) if isinstance(node.args[1], tuple) else [node.args[1]]
            items[pos] = slice(kept_in_range(kept, 0, start), kept_in_range(kept, 0, stop))
            node.args = (node.args[0], tuple(items) if isinstance(node.args[1], tuple) else items[0])
        return None


def _index_const(node: fx.Node, pc) -> torch.Tensor:
    """``x[index]`` of a constant: on a dim where it is uniform (size 1) every index picks
    the same value, so an int there becomes 0 and a slice keeps the size-1 dim."""
    x, index = node.args
    value, full = pc.const(x), shape_of(x)
    items = list(index) if isinstance(index, tuple) else [index]
    for pos, in_dim, _, item in _index_items(index, len(full)):
        if pos is not None and value.shape[in_dim] == 1 != full[in_dim]:
            items[pos] = 0 if isinstance(item, int) else slice(None)
    return value[tuple(items)]


def _preserved_dim(in_shape, d: int, out_shape) -> int | None:
    """Where a reshape puts input dim `d` when it keeps it whole, else None."""
    before, size = math.prod(in_shape[:d]), in_shape[d]
    acc = 1
    for k, s in enumerate(out_shape):
        if acc == before and s == size:
            return k
        acc *= s
    return None


def _blocks(in_shape, out_shape):
    """Pairs of (input dims, output dims) a view maps onto each other: the shortest runs
    of dims on both sides with equal products, left to right."""
    blocks, i, j = [], 0, 0
    while i < len(in_shape) or j < len(out_shape):
        a, b = i, j
        pin = in_shape[i] if i < len(in_shape) else 1
        pout = out_shape[j] if j < len(out_shape) else 1
        i, j = i + 1, j + 1
        while pin != pout:
            if pin < pout:
                pin *= in_shape[i]
                i += 1
            else:
                pout *= out_shape[j]
                j += 1
        blocks.append((range(a, min(i, len(in_shape))), range(b, min(j, len(out_shape)))))
    return blocks


def _reshape_const(node: fx.Node, x: fx.Node, pc) -> torch.Tensor:
    """A view of a constant: where the constant is uniform (size 1) on every input dim of
    a block of the view, the block's output dims stay size 1, so the result holds at any
    batch and sequence length (``view(B, N, H, D)`` of a per-channel constant is
    ``(1, 1, H, D)``). A block the constant varies on is taken at the example's sizes,
    which summary() reports."""
    value, space = pc.const(x), pc.space(x)
    in_shape, out_shape = list(shape_of(x)), list(shape_of(node))
    sizes, out = list(value.shape), []
    for ins, outs in _blocks(in_shape, out_shape):
        if (space is None or space.dim not in ins) and all(value.shape[d] == 1 for d in ins):
            out += [1] * len(outs)
            continue
        widened = [d for d in ins if sizes[d] != in_shape[d]]
        if widened:
            pc.fixed_size.append(describe(node, pc.gm))
        for d in widened:
            sizes[d] = in_shape[d]
        out += [out_shape[j] for j in outs]
    return value.expand(sizes).reshape(out)


def channel_map(in_shape, c: int, out_shape, skip=frozenset()):
    r"""How a reshape moves channel dim `c`: ``(k, in_idx, out_idx)`` tying input channel
    ``in_idx[t]`` to index ``out_idx[t]`` of output dim ``k``, or None if it mixes channels.

    Kept whole, the channels move to one output dim. Merged with the dims after or before
    it (flatten of C x H x W, or of H x W x C after a permute to channels-last), channel
    ``c`` owns every output index whose digit for ``c`` in the mixed radix of the merged
    sizes is ``c`` (the paper's CONV2FC map ``i = c\,HW + k``). Split into several dims
    (features unflattened to C x H x W, a fused projection into 3 x heads x head_dim),
    input channel ``i`` goes to its digit on the first of them not in `skip` (the dims the
    model later indexes away, as ``qkv[0]``): ``i // (H W)`` for C x H x W, the head for
    3 x heads x head_dim.
    """
    k = _preserved_dim(in_shape, c, out_shape)
    if k is not None:
        return k, np.arange(in_shape[c]), np.arange(in_shape[c])
    for ins, outs in _blocks(list(in_shape), list(out_shape)):
        if c not in ins:
            continue
        if len(outs) == 1 and ins[0] > 0:
            (k,) = outs
            idx = np.arange(out_shape[k])
            return k, (idx // math.prod(in_shape[c + 1: ins[-1] + 1])) % in_shape[c], idx
        if len(ins) == 1 and len(outs) > 1:
            k = next((d for d in outs if d not in skip), None)
            if k is None:
                return None
            idx = np.arange(in_shape[c])
            return k, idx, (idx // math.prod(out_shape[k + 1: outs[-1] + 1])) % out_shape[k]
        return None
    return None


def _int_arg(node: fx.Node, index: int, name: str):
    value = arg(node, index, name)
    return value if isinstance(value, int) else None


def indexed_away(node: fx.Node) -> set[int]:
    """Dims of `node`'s output that the ops reading it pick single entries of (``t[0]``,
    ``t.unbind(0)``), followed through permute and transpose."""
    found: set[int] = set()
    stack = [(node, list(range(len(shape_of(node) or ()))))]  # origin[i]: the dim now at i
    while stack:
        current, origin = stack.pop()
        for user in current.users:
            name = target_name(user)
            if name == "permute":
                perm = varargs(user.args[1:] if user.op == "call_method" else (arg(user, 1, "dims"),))
                stack.append((user, [origin[p] for p in perm]))
            elif name in ("transpose", "swapaxes", "swapdims"):
                i, j = (normalize_dim(d, len(origin)) for d in user.args[1:3])
                swapped = list(origin)
                swapped[i], swapped[j] = origin[j], origin[i]
                stack.append((user, swapped))
            elif name == "getitem" and user.op == "call_function":
                try:
                    items = _index_items(user.args[1], len(origin))
                except Unsupported:
                    continue
                found.update(origin[in_dim] for _, in_dim, _, item in items if isinstance(item, int))
            elif name == "unbind" and _int_arg(user, 1, "dim") is not None:
                found.add(origin[normalize_dim(_int_arg(user, 1, "dim"), len(origin))])
    return found


class Reshape(Rule):
    """view / reshape / flatten / unflatten / squeeze / unsqueeze (see :func:`channel_map`).

    A literal channel count in the target shape is rewritten to the kept count; one computed
    in forward (``reshape(B, N, C)`` with ``C`` read off another tensor) becomes ``-1``.
    Merging the batch dim into the channels, or a reshape that regroups the channel dim with
    others in any other way, is refused.
    """

    def _shape_args(self, node: fx.Node):
        """The target shape of view/reshape as a list, or None for the other ops."""
        if node.op == "call_method" and node.target in ("view", "reshape"):
            return varargs(node.args[1:])
        if node.op == "call_function" and node.target is torch.reshape:
            return list(arg(node, 1, "shape"))
        return None

    def connect(self, node: fx.Node, an) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        mapping = channel_map(an.shape(x), src.dim, an.shape(node), indexed_away(node))
        if mapping is None:
            raise Unsupported("regroups the channel dim with other dims")
        k, in_idx, out_idx = mapping
        shape = self._shape_args(node)
        if shape is not None and isinstance(shape[k], fx.Node) and -1 in shape:
            raise Unsupported("its channel count is computed in forward, next to a -1")
        out = an.new_space(node, k)
        an.tie(src, out, in_idx, out_idx)

    def prune(self, node: fx.Node, pc):
        x = node.args[0]
        if pc.is_const(x):
            return _reshape_const(node, x, pc)
        result = super().prune(node, pc)
        shape = self._shape_args(node)
        out = pc.space(node)
        if result is not None or shape is None or out is None:
            return result
        if shape[out.dim] != -1:
            # A size computed in forward may vary with the input (merged with a sequence
            # dim): -1 lets the other sizes decide it.
            shape[out.dim] = -1 if isinstance(shape[out.dim], fx.Node) else pc.n_kept(out)
        for extra in pc.plan.extra_spaces(node.name):
            shape[extra.dim] = pc.n_kept(extra)  # a head's width is fixed, whatever computed it
        node.args = (node.args[0], tuple(shape)) if node.op == "call_function" else (node.args[0], *shape)
        return None


class ReshapeModule(Reshape, ModuleRule):
    """``nn.Flatten`` / ``nn.Unflatten`` (no literal shape to rewrite)."""


_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def run_on(node: fx.Node, x: torch.Tensor):
    """Run `node`'s function or method with `x` in place of its first argument (the other
    arguments must be constants)."""
    rest = list(node.args[1:])
    if any(isinstance(a, fx.Node) for a in rest + list(node.kwargs.values())):
        raise Unsupported("takes arguments computed in forward")
    if node.op == "call_method":
        return getattr(x, node.target)(*rest, **node.kwargs)
    return node.target(x, *rest, **node.kwargs)


class Rearrange(Rule):
    """Ops that move dims or reduce some of them: permute, transpose, ``.T``, movedim, and
    sum / mean / amax / amin / prod / std / var / norm / logsumexp.

    Where the channel dim goes is found by running the op on a meta tensor whose dims all
    have different sizes. If it does not come out whole (it was reduced), the op mixes
    channels and is refused.
    """

    _MOVES = frozenset({"permute", "transpose", "swapaxes", "swapdims", "t", "movedim"})
    _SIZE_FREE = _MOVES | {"mean", "amax", "amin", "nanmean"}

    def connect(self, node: fx.Node, an) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        ndim = len(an.shape(x))
        probe = run_on(node, torch.empty(_PRIMES[:ndim], device="meta"))
        tag = _PRIMES[src.dim]
        where = [i for i, s in enumerate(probe.shape) if s == tag] if isinstance(probe, torch.Tensor) else []
        if len(where) != 1:
            raise Unsupported("reduces or mixes the channel dim")
        an.follow(node, src, where[0])

    def prune(self, node: fx.Node, pc):
        x = node.args[0]
        if not pc.is_const(x):
            return super().prune(node, pc)
        if target_name(node) in self._SIZE_FREE:
            return pc.evaluate(node)  # a mean or max of a constant is that constant at any size
        probe = run_on(node, torch.empty(_PRIMES[: len(shape_of(x))], device="meta"))
        if _PRIMES[0] in probe.shape:
            return pc.evaluate_at_example(node)  # exact at the example's sizes, the batch apart
        return super().prune(node, pc)  # a reduction over the batch: computed at run time


class IndexSelect(Rule):
    """``x.index_select(dim, index)`` along a dim other than the channels (a graph layer
    gathering the features of each edge's source node): channels pass through; the index
    is read whole."""

    def connect(self, node: fx.Node, an) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        if normalize_dim(arg(node, 1, "dim"), len(an.shape(x))) == src.dim:
            raise Unsupported("selects channels by an index computed in forward")
        an.follow(node, src, src.dim)


class AlongDim(Rule):
    """softmax / log_softmax / cumsum / cumprod along one dim: independent per channel when
    that dim is not the channel dim; across channels it couples them and is refused."""

    def _dim(self, node: fx.Node, an) -> int:
        if node.op == "call_module":
            return an.module(node).dim
        return arg(node, 1, "dim")

    def connect(self, node: fx.Node, an) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        dim = self._dim(node, an)
        if dim is None or normalize_dim(dim, len(an.shape(x))) == src.dim:
            raise Unsupported("normalises or accumulates across the channels")
        an.follow(node, src, src.dim)

    def prune(self, node: fx.Node, pc):
        if pc.is_const(node.args[0]) and normalize_dim(self._dim(node, pc), len(shape_of(node))) != 0:
            return pc.evaluate_at_example(node)
        return super().prune(node, pc)


class AlongDimModule(AlongDim, ModuleRule):
    """``nn.Softmax(dim)``, ``nn.LogSoftmax(dim)``."""


class ShapeRead(Rule):
    """Reads of a tensor's shape: ``x.shape``, ``x.size()``, ``x.size(d)``, ``x.dim()``,
    ``x.dtype`` ... Reading a non-channel size is fine; reading the channel count (whose
    value pruning changes) keeps the channels."""

    _HARMLESS = frozenset({"dtype", "device", "ndim", "is_cuda", "requires_grad", "layout", "dim", "ndimension"})

    def connect(self, node: fx.Node, an) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            return
        what = node.target if node.op == "call_method" else node.args[1]
        if what in self._HARMLESS:
            an.accept(src)
        elif what == "size" and len(node.args) + len(node.kwargs) > 1:
            self._read_dims(an, src, node, [arg(node, 1, "dim")], len(an.shape(x)))
        elif what in ("size", "shape"):
            self._read_shape_value(an, src, node)
        else:
            an.block(src, f"its channel count is read by {an.describe(node)}")

    def _read_dims(self, an, src, node: fx.Node, dims, ndim: int) -> None:
        if any(not isinstance(d, int) or normalize_dim(d, ndim) == src.dim for d in dims):
            an.block(src, f"its channel count is read by {an.describe(node)}")
        else:
            an.accept(src)

    def _read_shape_value(self, an, src, node: fx.Node) -> None:
        ndim = len(an.shape(node.args[0]))
        for user in node.users:
            dims = _dims_indexed(user, ndim)
            if dims is not None:
                self._read_dims(an, src, user, dims, ndim)
            else:
                an.block(src, f"its whole shape is used by {an.describe(user)}")
            an.handled.add(user)
        an.accept(src)

    def prune(self, node: fx.Node, pc):
        """A cut tensor's sizes are read off a live one with the same sizes on the dims read,
        found through the permutes and transposes that made the cut tensor if need be."""
        x = node.args[0]
        if not (pc.is_empty(x) or pc.is_const(x)):
            return
        src = pc.space(x)
        dims = self._dims_read(node, src)
        if src is not None and src.dim in dims:
            # A channel count that is read is kept whole (see connect): it is a literal.
            self._read_channels_as_literal(node, src.dim, shape_of(x)[src.dim], pc)
            if not node.users:
                return pc.EMPTY
            dims = self._dims_read(node, src)
        source, where = x, list(range(len(shape_of(x))))  # where[d]: dim d of x, as a dim of source
        while True:
            try:
                ref = pc.reference(source, [where[d] for d in dims])
                break
            except PruneError:
                if not self._is_permute(source) or not (pc.is_empty(source) or pc.is_const(source)):
                    raise
                probe = run_on(source, torch.empty(_PRIMES[: len(shape_of(source.args[0]))], device="meta"))
                where = [_PRIMES.index(probe.shape[w]) for w in where]
                source = source.args[0]
        pc.replace_input(node, x, ref)
        if where != sorted(where):
            self._read_dims_of(node, where)

    @staticmethod
    def _read_channels_as_literal(node: fx.Node, dim: int, size: int, pc) -> None:
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
                pc.gm.graph.erase_node(user)

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
    """The dims of a shape that ``shape[i]`` or ``shape[a:b]`` reads; None for other uses."""
    index = user.args[1] if user.op == "call_function" and user.target is operator.getitem else None
    if isinstance(index, int):
        return [index]
    if isinstance(index, slice):
        return list(range(ndim))[index]
    return None


class Couples(Rule):
    """An op that mixes all channels in a way no rule here describes yet (LayerNorm's
    statistics over the channels, a normalisation). Its channels are kept, with `reason`."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connect(self, node: fx.Node, an) -> None:
        raise Unsupported(self.reason)


class CouplesModule(Couples, ModuleRule):
    pass


REGISTRY.register(Cat(), torch.cat, torch.concat, torch.concatenate)
REGISTRY.register(Stack(), torch.stack)
REGISTRY.register(Split(), torch.split, torch.functional.split, torch.chunk, "split", "chunk")
REGISTRY.register(GetItem(), operator.getitem)
REGISTRY.register(IndexSelect(), torch.index_select, "index_select")
REGISTRY.register(Narrow(), torch.narrow, "narrow")
REGISTRY.register(Unbind(), torch.unbind, "unbind")
REGISTRY.register(Expand(), "expand")
REGISTRY.register(Reshape(), "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze",
                  torch.reshape, torch.flatten, torch.unflatten, torch.squeeze, torch.unsqueeze)
REGISTRY.register(ReshapeModule(), nn.Flatten, nn.Unflatten)
REGISTRY.register(Rearrange(), "permute", "transpose", "swapaxes", "swapdims", "t", "movedim",
                  torch.permute, torch.transpose, torch.swapaxes, torch.t, torch.movedim,
                  "sum", "mean", "amax", "amin", "prod", "std", "var", "logsumexp", "norm", "nansum", "nanmean",
                  torch.sum, torch.mean, torch.amax, torch.amin, torch.prod, torch.std, torch.var,
                  torch.logsumexp, torch.norm, torch.nansum, torch.nanmean)
REGISTRY.register(AlongDim(), F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.cumsum,
                  torch.cumprod, "softmax", "log_softmax", "cumsum", "cumprod")
REGISTRY.register(AlongDimModule(), nn.Softmax, nn.LogSoftmax)
REGISTRY.register(ShapeRead(), getattr, "size", "dim", "ndimension", "numel")
_NORMALISES = "normalises over the channels, which couples them (lumos_fx keeps them)"
REGISTRY.register(CouplesModule(f"LayerNorm {_NORMALISES}"), nn.LayerNorm, nn.RMSNorm)
REGISTRY.register(Couples(f"layer_norm {_NORMALISES}"), F.layer_norm, F.normalize)
