"""Reshapes: view / reshape / flatten / unflatten / squeeze / unsqueeze, and the algebra of
where they move the channel dim."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import fx, nn

from .api import (LIVE, Connecting, HeadRole, ModuleRule, Outcome, Pruning, Rule, Unsupported, arg,
    channel_count_read, check_read_counts, const, normalize_dim, reads_count_of, shape_of, target_name, varargs)
from .indexing import index_items
from .registry import REGISTRY


def preserved_dim(in_shape, d: int, out_shape) -> int | None:
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


def _reshape_const(node: fx.Node, x: fx.Node, pc: Pruning) -> torch.Tensor:
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
            pc.holds_at_example_size(node)
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
    k = preserved_dim(in_shape, c, out_shape)
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
                    items = index_items(user.args[1], len(origin))
                except Unsupported:
                    continue
                found.update(origin[in_dim] for _, in_dim, _, item in items if isinstance(item, int))
            elif name == "unbind" and _int_arg(user, 1, "dim") is not None:
                found.add(origin[normalize_dim(_int_arg(user, 1, "dim"), len(origin))])
    return found


def target_shape(node: fx.Node) -> list | None:
    """The target shape of view/reshape as a list, or None for the other ops."""
    if node.op == "call_method" and node.target in ("view", "reshape"):
        return varargs(node.args[1:])
    if node.op == "call_function" and node.target is torch.reshape:
        return list(arg(node, 1, "shape"))
    return None


class Reshape(Rule):
    """view / reshape / flatten / unflatten / squeeze / unsqueeze (see :func:`channel_map`).

    A literal channel count in the target shape is rewritten to the kept count; one computed
    in forward (``reshape(B, N, C)`` with ``C`` read off another tensor) becomes ``-1``, and
    a channel count read off a tensor next to a ``-1`` (``x.view(-1, x.size(-1))``) stays,
    reading the kept count (:func:`~lumos_fx.rules.api.check_read_counts`).
    Merging the batch dim into the channels, or a reshape that regroups the channel dim with
    others in any other way, is refused.
    """

    def head_role(self, node: fx.Node) -> HeadRole | None:
        return HeadRole.SPLIT if target_name(node) in ("view", "reshape", "flatten") else None

    def connect(self, node: fx.Node, an: Connecting) -> None:
        x = node.args[0]
        src = an.space(x)
        if src is None:
            check_read_counts(node, target_shape(node) or [], None, an)  # a count read here sizes no channels
            return
        mapping = channel_map(an.shape(x), src.dim, an.shape(node), indexed_away(node))
        if mapping is None:
            raise Unsupported("regroups the channel dim with other dims")
        k, in_idx, out_idx = mapping
        shape = target_shape(node)
        if shape is not None and len(shape) != len(an.shape(node)):
            raise Unsupported("its whole target shape is computed in forward")
        if (shape is not None and isinstance(shape[k], fx.Node) and -1 in shape
                and not reads_count_of(node, k, channel_count_read(shape[k], an))):
            raise Unsupported("its channel count is computed in forward, next to a -1")
        out = an.new_space(node, k)
        an.tie(src, out, in_idx, out_idx)
        if shape is not None:
            check_read_counts(node, shape, out, an, stays=-1 in shape)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        x = node.args[0]
        if pc.is_const(x):
            return const(_reshape_const(node, x, pc))
        result = super().prune(node, pc)
        shape = target_shape(node)
        out = pc.space(node)
        if not result.live or shape is None or out is None:
            return result
        if isinstance(shape[out.dim], fx.Node):
            # A size computed in forward may vary with the input (merged with a sequence dim):
            # -1 lets the other sizes decide it. Next to a -1 it is a count read off channels
            # tied to these (connect): it reads the kept count.
            if -1 not in shape:
                shape[out.dim] = -1
        elif shape[out.dim] != -1:
            shape[out.dim] = pc.n_kept(out)
        for extra in pc.extra_spaces(node):
            shape[extra.dim] = pc.n_kept(extra)  # a head's width is fixed, whatever computed it
        node.args = (node.args[0], tuple(shape)) if node.op == "call_function" else (node.args[0], *shape)
        return LIVE


class ReshapeModule(Reshape, ModuleRule):
    """``nn.Flatten`` / ``nn.Unflatten`` (no literal shape to rewrite)."""


REGISTRY.register(Reshape(), "view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze",
                  torch.reshape, torch.flatten, torch.unflatten, torch.squeeze, torch.unsqueeze)
REGISTRY.register(ReshapeModule(), nn.Flatten, nn.Unflatten)
