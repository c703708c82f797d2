"""Ops that join or split tensors: cat, stack, split / chunk, unbind."""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch import fx

from .api import (EMPTY, LIVE, Connecting, HeadRole, Outcome, Pruning, Rule, Unsupported, arg, const, kept_in_range,
    normalize_dim, set_arg, shape_of)
from .registry import REGISTRY


def joined_spaces(node: fx.Node, an: Connecting):
    """The spaces of the tensors a cat or stack joins (channels on one dim), and its dim."""
    spaces = [an.space(t) for t in arg(node, 0, "tensors")]
    if any(s is None for s in spaces) or len({s.dim for s in spaces}) != 1:
        raise Unsupported("inputs carry channels on different dims")
    return spaces, normalize_dim(arg(node, 1, "dim", 0), len(an.shape(node)))


class Cat(Rule):
    r"""``torch.cat(xs, dim)``. On the channel dim, input ``i``'s channel ``j`` is output
    channel ``o_i + j`` with ``o_i = \sum_{k<i} C_k`` (the paper's Fig. 7: 50 + 47 kept
    channels become 97 at the consumer). On another dim, every input shares the output's
    channels.

    An input without channels on the joined dim where another has them (an FNO's coordinate
    grid joined to its input features) gives the output channels of their own, a producer
    space (:meth:`Connecting.new_part`): a closed one is cut from that input before the join,
    so the features beside it stay selectable."""

    def connect(self, node: fx.Node, an: Connecting) -> None:
        tensors = arg(node, 0, "tensors")
        dim = normalize_dim(arg(node, 1, "dim", 0), len(an.shape(node)))
        spaces = [an.space(t) for t in tensors]
        if any(s is not None and s.dim == dim for s in spaces):
            out = an.new_space(node, dim)
        else:
            spaces, dim = joined_spaces(node, an)
            out = an.new_space(node, spaces[0].dim)
        offset = 0
        for i, (t, s) in enumerate(zip(tensors, spaces)):
            if out.dim != dim:
                an.tie(s, out)
                continue
            if s is None or s.dim != dim:
                if s is not None:
                    an.block(s, f"joined whole along dim {dim} by {an.describe(node)}")
                s = an.new_part(node, i, t, dim)
            an.tie(s, out, None, offset + np.arange(s.size))
            offset += s.size

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        tensors = [self._cut_part(node, i, t, pc) for i, t in enumerate(arg(node, 0, "tensors"))]
        out = pc.space(node)
        on_channels = normalize_dim(arg(node, 1, "dim", 0), len(shape_of(node))) == out.dim
        nonempty = [t for t in tensors if t is not None and not pc.is_empty(t)]
        if on_channels and all(pc.is_const(t) for t in nonempty):
            # Constants in broadcast form concatenate along the channel dim exactly; an empty
            # input's channels (or a part's, all closed) are all cut, so zeros stand in for them.
            like = pc.const(nonempty[0])
            parts = [pc.const(t) if t is not None and pc.is_const(t) else pc.broadcast_form(node, like.new_zeros(
                (pc.space(t) if t is not None else pc.part(node, i)).size)) for i, t in enumerate(tensors)]
            shape = list(torch.broadcast_shapes(*(p.shape[:out.dim] + (1,) + p.shape[out.dim + 1:] for p in parts)))
            full = [p.expand(shape[:out.dim] + [p.shape[out.dim]] + shape[out.dim + 1:]) for p in parts]
            return const(torch.cat(full, dim=out.dim))
        if on_channels:
            set_arg(node, 0, "tensors", nonempty)
        return super().prune(node, pc)

    @staticmethod
    def _cut_part(node: fx.Node, index: int, value, pc: Pruning):
        """Input `index` of the join, with the channels of its part space that closed cut off
        (None when all did); inputs with channels of their own come back as they are."""
        part = pc.part(node, index)
        if part is None or pc.n_kept(part) == part.size:
            return value
        kept = pc.kept(part)
        if len(kept) == 0:
            return None
        index = (slice(None),) * part.dim + (kept.tolist(),)
        return pc.insert(node, "call_function", operator.getitem, (value, index))


class Stack(Rule):
    """``torch.stack(xs, dim)``: inputs share the output's channels, shifted by the new dim."""

    def connect(self, node: fx.Node, an: Connecting) -> None:
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

    def head_role(self, node: fx.Node) -> HeadRole:
        return HeadRole.MOVE  # picks channels: a fused projection's q, k and v (GPT-2's c_attn)

    def connect(self, node: fx.Node, an: Connecting) -> None:
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
            an.claim(user)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        x = node.args[0]
        if pc.is_empty(x):
            return EMPTY
        src = pc.space(x)
        dim = normalize_dim(arg(node, 2, "dim", 0), len(shape_of(x)))
        if dim == src.dim and pc.is_const(x):
            return const(pc.evaluate(node))  # a tuple of constant pieces, read by the getitem rule
        result = super().prune(node, pc)
        if dim != src.dim or not result.live:
            return result
        kept = pc.kept(src)
        sizes = [p.shape[dim] for p in node.meta["tensor_meta"]]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        new_sizes = [kept_in_range(kept, offsets[i], offsets[i + 1]) for i in range(len(sizes))]
        node.target = "split" if node.op == "call_method" else torch.split
        node.args = (node.args[0], new_sizes)
        node.kwargs = {"dim": dim}
        return LIVE


class Unbind(Rule):
    """``x.unbind(dim)`` read through ``[i]``: on a dim other than the channels, every piece
    keeps the channels (one dim to the left if ``dim`` was before them)."""

    def head_role(self, node: fx.Node) -> HeadRole:
        return HeadRole.MOVE

    def connect(self, node: fx.Node, an: Connecting) -> None:
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
            an.claim(user)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        x = node.args[0]
        if pc.is_empty(x):
            return EMPTY
        if pc.is_const(x):
            return const(pc.evaluate(node))  # a tuple of constant pieces, read by the getitem rule
        return super().prune(node, pc)


REGISTRY.register(Cat(), torch.cat, torch.concat, torch.concatenate)
REGISTRY.register(Stack(), torch.stack)
REGISTRY.register(Split(), torch.split, torch.functional.split, torch.chunk, "split", "chunk")
REGISTRY.register(Unbind(), torch.unbind, "unbind")
