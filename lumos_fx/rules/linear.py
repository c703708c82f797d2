"""nn.Linear and its functional forms: a consumer of its input channels and a producer of its output channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from .api import (LIVE, Connecting, FoldedCall, ModuleRule, Outcome, Projection, Pruning, Rule, Unsupported, arg,
    const, normalize_dim, parameter_behind, shape_of)
from .registry import REGISTRY


def consume_channels(node: fx.Node, x: fx.Node, w_ins: list, an: Connecting, dim: int = -1) -> None:
    """`node` multiplies dim `dim` of `x` (by default its last) by the columns `w_ins` of its
    weights: tie them to x's channels and gate x in front of `node`, folded into those
    columns. Channels on another dim of x cannot be read this way: both sides are kept."""
    space = an.space(x)
    if space is None or space.dim != normalize_dim(dim, len(an.shape(x))):
        where = "the last dim" if dim == -1 else f"dim {dim}"
        for w_in in w_ins:
            an.block(w_in, f"{an.describe(node)} reads {where} of an input whose channels are elsewhere")
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
        consume_channels(node, node.args[0], [an.param_space(module.weight, 1)], an)

    def projection(self, node: fx.Node, an: Connecting) -> Projection:
        module = an.module(node)
        return Projection(module.weight, module.bias, 0)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        module = pc.module(node)
        x = node.args[0]
        if pc.is_empty(x):
            bias = module.bias if module.bias is not None else module.weight.new_zeros(module.weight.shape[0])
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


class FunctionalLinear(Rule):
    r"""A linear map on parameters read in forward:

    .. math::
        \operatorname{F.linear}(x, W, b) = x W^T + b \quad (W: \text{out} \times \text{in}),
        \qquad
        \operatorname{torch.addmm}(b, x, W) = b + x W \quad (W: \text{in} \times \text{out}),

    the latter transformers' ``Conv1D`` (GPT-2). As :class:`LinearRule`: the last dim of ``x``
    is tied to the weight's in dim, into which its gate folds, and the output channels to the
    weight's out dim and the bias. A weight or bias computed in forward keeps the channels.
    """

    channels_at = -1

    def __init__(self, x_at: tuple[int, str], weight_at: tuple[int, str], bias_at: tuple[int, str],
                 in_dim: int) -> None:
        self.x_at, self.weight_at, self.bias_at, self.in_dim = x_at, weight_at, bias_at, in_dim

    def _parameters(self, node: fx.Node) -> tuple[fx.Node, fx.Node | None] | None:
        weight, bias = arg(node, *self.weight_at), arg(node, *self.bias_at)
        if not _is_attr(weight) or not (bias is None or _is_attr(bias)):
            return None
        return weight, bias

    def ties_parameter(self, node: fx.Node, value: fx.Node) -> bool:
        params = self._parameters(node)
        return params is not None and value in params and arg(node, *self.x_at) is not value

    def _refused(self, node: fx.Node, an: Connecting) -> str | None:
        """Why this call is not such a map, or None."""
        params = self._parameters(node)
        if params is None:
            return "its weight or bias is computed in forward"
        if any(node.kwargs.get(k, 1) != 1 for k in ("alpha", "beta")):
            return "it scales its terms (alpha, beta)"
        dims = an.attribute(params[0]).dim()
        return f"its weight has {dims} dims" if dims != 2 else None

    def connect(self, node: fx.Node, an: Connecting) -> None:
        why = self._refused(node, an)
        if why is not None:
            raise Unsupported(why)
        weight, bias = (an.attribute(p) if p is not None else None for p in self._parameters(node))
        out = an.new_space(node, -1, producer=True)
        an.tie(out, an.param_space(weight, 1 - self.in_dim))
        if bias is not None:
            if bias.dim() != 1:
                raise Unsupported("its bias is not one value per output channel")
            an.tie(out, an.param_space(bias, 0))
        consume_channels(node, arg(node, *self.x_at), [an.param_space(weight, self.in_dim)], an)

    def projection(self, node: fx.Node, an: Connecting) -> Projection | None:
        if self._refused(node, an) is not None:
            return None
        weight, bias = (an.attribute(p) if p is not None else None for p in self._parameters(node))
        return Projection(weight, bias, 1 - self.in_dim)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        weight, bias = self._parameters(node)
        return _affine_prune(node, arg(node, *self.x_at), weight, bias, 1 - self.in_dim, pc)


class ParameterProduct(Rule):
    r"""``x @ W`` with ``W`` a 2-D parameter read in forward, maybe times or divided by a
    number or transposed (e3nn's ``x @ (self.weight / \sqrt{fan_{in}})``, PyG PMLP's
    ``x @ self.lin.weight.t()``): :math:`y = x (sW)`, a linear map of
    :class:`FunctionalLinear`'s form without bias. Asked by the ``@`` rule
    (:class:`lumos_fx.rules.attention.MatMul`) for such products."""

    def weight(self, node: fx.Node) -> tuple[fx.Node, int] | None:
        """The ``get_attr`` of ``W`` when `node` is such a product, and its dim that ``x``'s
        channels multiply."""
        b = node.args[1] if len(node.args) == 2 else None
        found = parameter_behind(b)
        meta = shape_of(b) if isinstance(b, fx.Node) else None
        if found is None or meta is None or len(meta) != 2 or node.args[0] is b:
            return None
        w, transposed = found
        return w, 1 if transposed else 0

    def ties_parameter(self, node: fx.Node, value: fx.Node) -> bool:
        return value is node.args[1] and self.weight(node) is not None

    def connect(self, node: fx.Node, an: Connecting) -> None:
        w, in_dim = self.weight(node)
        weight = an.attribute(w)
        out = an.new_space(node, -1, producer=True)
        an.tie(out, an.param_space(weight, 1 - in_dim))
        if an.space(node.args[0]) is not None:
            consume_channels(node, node.args[0], [an.param_space(weight, in_dim)], an)

    def prune(self, node: fx.Node, pc: Pruning) -> Outcome:
        w, in_dim = self.weight(node)
        return _affine_prune(node, node.args[0], w, None, 1 - in_dim, pc)


def _affine_prune(node: fx.Node, x: fx.Node, weight: fx.Node, bias: fx.Node | None, out_dim: int,
                  pc: Pruning) -> Outcome:
    """A linear map of parameters read in forward on a closed input is its bias (or zero),
    on a constant one the constant it computes."""
    if pc.is_empty(x):
        w = pc.value(weight)
        vector = pc.value(bias).detach() if bias is not None else w.new_zeros(w.shape[out_dim])
        return const(pc.broadcast_form(node, vector))
    if pc.is_const(x):
        return const(pc.evaluate(node))
    return LIVE


def _is_attr(value) -> bool:
    return isinstance(value, fx.Node) and value.op == "get_attr"


REGISTRY.register(LinearRule(), nn.Linear)
REGISTRY.register(FunctionalLinear((0, "input"), (1, "weight"), (2, "bias"), in_dim=1), F.linear)
REGISTRY.register(FunctionalLinear((1, "mat1"), (2, "mat2"), (0, "input"), in_dim=0), torch.addmm)
