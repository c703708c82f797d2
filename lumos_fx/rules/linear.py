"""nn.Linear: a consumer of its input channels and a producer of its output channels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import fx, nn

from .api import LIVE, Connecting, FoldedCall, ModuleRule, Outcome, Pruning, const
from .registry import REGISTRY


def consume_last_dim(node: fx.Node, x: fx.Node, w_ins: list, an: Connecting) -> None:
    """`node` multiplies the last dim of `x` by the columns `w_ins` of its weights: tie
    them to x's channels and gate x in front of `node`, folded into those columns. Channels
    on another dim of x cannot be read this way: both sides are kept."""
    space = an.space(x)
    if space is None or space.dim != len(an.shape(x)) - 1:
        for w_in in w_ins:
            an.block(w_in, f"{an.describe(node)} reads the last dim of an input whose channels are elsewhere")
        if space is not None:
            an.block(space, f"read along a non-channel dim by {an.describe(node)}")
        return
    for w_in in w_ins:
        an.tie(space, w_in)
    an.consume(node, x, fold=w_ins)


class LinearRule(ModuleRule):
    r"""``y = x W^T + b``, with ``W`` of shape (out, in).

    The input channels (last dim of ``x``) are tied to ``W[:, j]``: a gate ``z`` on the input
    folds exactly into the weight, ``W (z \odot x) = (W \operatorname{diag} z) x``. The output
    channels are tied to ``W[i, :]`` and ``b[i]``. With every input channel closed the layer
    computes the constant ``b``; with a constant input ``c`` it computes ``W c + b``.
    """

    channels_at = -1

    def connect(self, node: fx.Node, an: Connecting) -> None:
        module = an.module(node)
        out = an.new_space(node, -1, producer=True)
        an.tie(out, an.param_space(module.weight, 0))
        if module.bias is not None:
            an.tie(out, an.param_space(module.bias, 0))
        consume_last_dim(node, node.args[0], [an.param_space(module.weight, 1)], an)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        module = pc.module(node)
        x = node.args[0]
        if pc.is_empty(x):
            bias = module.bias if module.bias is not None else module.weight.new_zeros(module.out_features)
            return const(pc.broadcast_form(node, bias.detach()))
        if pc.is_const(x):
            return const(F.linear(pc.const(x), module.weight, module.bias).detach())
        return LIVE

    def folded(self, module: nn.Linear) -> FoldedCall:
        return FoldedCall(F.linear, ())

    def resize(self, module: nn.Linear) -> None:
        module.out_features, module.in_features = module.weight.shape

    def source(self, module: nn.Linear) -> str:
        return f"nn.Linear({module.in_features}, {module.out_features}, bias={module.bias is not None})"


REGISTRY.register(LinearRule(), nn.Linear)
