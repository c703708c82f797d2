"""Batched products and attention, with channels (heads) on a batch dim."""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx

from .api import Attention, Connecting, Outcome, Pruning, Rule, Unsupported, arg, const, shape_of
from .linear import ParameterProduct
from .registry import REGISTRY

_BY_PARAMETER = ParameterProduct()


class MatMul(Rule):
    r"""``a @ b`` with ``a`` (..., M, K) and ``b`` (..., K, N): ``out[..., m, n] = \sum_k
    a[..., m, k] b[..., k, n]``.

    Channels on a batch dim (the heads of ``q @ k^T`` and ``attn @ v``) pass through: both
    operands and the output share them, and a head closed at the consumer of the output
    removes its slices of both operands. Channels on ``a``'s rows or ``b``'s columns are the
    output's rows or columns. Channels on the contracted dim are summed over: refused (the
    product would need both operands cut alike, which no rule here proves), unless ``b`` is a
    weight read in forward (:class:`lumos_fx.rules.linear.ParameterProduct`).
    """

    def ties_parameter(self, node: fx.Node, value: fx.Node) -> bool:
        return _BY_PARAMETER.ties_parameter(node, value)

    def connect(self, node: fx.Node, an: Connecting) -> None:
        if _BY_PARAMETER.weight(node) is not None:
            return _BY_PARAMETER.connect(node, an)
        operands = [a for a in node.args[:2] if an.space(a) is not None]
        out_ndim = len(an.shape(node))
        positions = {}
        for i, a in enumerate(node.args[:2]):
            space = an.space(a)
            if space is None:
                continue
            ndim = len(an.shape(a))
            if ndim < 2:
                raise Unsupported("multiplies a vector")
            contracted = ndim - 1 if i == 0 else ndim - 2
            if space.dim == contracted:
                raise Unsupported("sums over the channel dim")
            positions[a] = space.dim + out_ndim - ndim
        where = set(positions.values())
        if len(where) != 1:
            raise Unsupported("its operands carry channels on different dims")
        (pos,) = where
        out = an.new_space(node, pos)
        for a in operands:
            an.tie(an.space(a), out)


    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        if _BY_PARAMETER.weight(node) is not None:
            return _BY_PARAMETER.prune(node, pc)
        return super().prune(node, pc)

    def attention(self, node: fx.Node) -> Attention | None:
        """A product of two batched operands may be ``q @ k^T`` (k's head dims on its dim -2)."""
        a, b = node.args[:2]
        if not all(isinstance(t, fx.Node) and shape_of(t) is not None and len(shape_of(t)) >= 3 for t in (a, b)):
            return None
        return Attention(a, b, -2, b, loud=False)


class ScaledDotProductAttention(Rule):
    r"""``F.scaled_dot_product_attention(q, k, v)``: ``softmax(q k^T s + M) v`` per head, with
    ``s`` the scale the call gives or ``1/\sqrt{D}`` of the unpruned head dim. Heads (a batch
    dim of q, k and v) pass through; a mask is read whole. Grouped-query attention (fewer K/V
    heads) has no one-to-one head map: refused.
    """

    def connect(self, node: fx.Node, an: Connecting) -> None:
        q, k, v = (arg(node, i, name) for i, name in enumerate(("query", "key", "value")))
        spaces = [an.space(t) for t in (q, k, v)]
        if all(s is None for s in spaces):
            return
        if any(s is None or s.dim >= len(an.shape(t)) - 2 for s, t in zip(spaces, (q, k, v))):
            raise Unsupported("q, k and v do not all carry their heads on a batch dim")
        if len({s.size for s in spaces}) != 1 or len({s.dim for s in spaces}) != 1:
            raise Unsupported("q, k and v have different head counts (grouped-query attention)")
        mask = arg(node, 3, "attn_mask")
        if isinstance(mask, fx.Node) and an.shape(mask) is not None:
            out_ndim, mask_shape = len(an.shape(node)), an.shape(mask)
            at = spaces[0].dim - out_ndim + len(mask_shape)
            if at >= 0 and mask_shape[at] > 1:
                raise Unsupported("its attention mask differs per head")
        out = an.follow(node, spaces[0], spaces[0].dim)
        for s in spaces[1:]:
            an.tie(s, out)
        if an.space(mask) is not None:
            an.block(an.space(mask), f"attention mask read whole by {an.describe(node)}")

    def attention(self, node: fx.Node) -> Attention:
        q, k, v = (arg(node, i, name) for i, name in enumerate(("query", "key", "value")))
        return Attention(q, k, -1, v, loud=True)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        """The scale stays :math:`1/\\sqrt{D}` of the unpruned head dim when dims are cut.
        Keys and values that are constants, the same at every position (closed inputs
        upstream), give every query uniform weights over equal values: the output is ``v``."""
        k, v = arg(node, 1, "key"), arg(node, 2, "value")
        if (all(pc.is_const(t) and pc.const(t).shape[-2] == 1 for t in (k, v)) and arg(node, 3, "attn_mask") is None
                and not arg(node, 4, "dropout_p") and not arg(node, 5, "is_causal")):
            return const(pc.const(v))
        result = super().prune(node, pc)
        q = arg(node, 0, "query")
        if result.live and arg(node, 6, "scale") is None and any(
                pc.n_kept(s) < s.size for s in pc.extra_spaces(q)):
            node.kwargs = {**node.kwargs, "scale": shape_of(q)[-1] ** -0.5}
        return result


REGISTRY.register(MatMul(), operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm")
REGISTRY.register(ScaledDotProductAttention(), F.scaled_dot_product_attention)
